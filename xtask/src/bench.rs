//! `cargo xtask bench`: what the agent costs the host, every row in one run.
//!
//! Each cost is measured with no agent and with the release agent at its
//! defaults (the default rules, alerts on stdout), in alternating rounds,
//! because a small VM's figures move by ±15% between runs; the table shows
//! the median of the rounds. Rows:
//!
//! - a syscall no rule follows (`getppid`);
//! - `open` + `close` of a file no rule can match (`/etc/hostname`, read),
//!   and of one that is reported (a file created for writing in /tmp);
//! - redis-benchmark SET and GET (when `redis-server` is installed);
//! - process spawns (fork + exec + exit of `/bin/true`);
//! - a flood: two threads opening files for writing at full speed while
//!   1 000 distinct programs are executed from /tmp: every exec must raise
//!   its alert; losses per kind, agent CPU per 100k events/s and RSS are
//!   reported;
//! - the agent's idle RSS, and alert latency (exec to alert line read).
//!
//! Results go to docs/benchmarks.md by hand, with the machine they came
//! from.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};

/// Options from the command line.
pub struct BenchOptions {
    /// Alternating rounds per side.
    pub rounds: u32,
    /// Programs executed during the flood.
    pub flood_execs: u32,
    /// Process spawns per round.
    pub spawns: u32,
}

/// A running release agent, its stdout lines on a channel, each with the
/// time it was read (ns since the Unix epoch).
struct Agent {
    child: Child,
    lines: mpsc::Receiver<(i64, String)>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    fn start(extra: &[&str]) -> anyhow::Result<Agent> {
        let mut child = Command::new("target/release/vigil-agent")
            .args(["run", "--stats-interval", "1", "--log-format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start target/release/vigil-agent")?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("stdout")?;
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((unix_ns(), l));
            }
        });
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready) = mpsc::channel();
        let stderr = child.stderr.take().context("stderr")?;
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if l.contains("agent running") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(l);
            }
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .context("the agent did not start within 60 s")?;
        // Let the start-up settle (bootstrap, first hashes).
        std::thread::sleep(Duration::from_millis(500));
        Ok(Agent { child, lines, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> anyhow::Result<Vec<String>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        // Give the reader threads the last lines.
        std::thread::sleep(Duration::from_millis(200));
        Ok(self.log.lock().unwrap().clone())
    }
}

/// Now, in ns since the Unix epoch.
fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// utime + stime of `pid` in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// ns per getppid.
fn getppid_loop(n: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// ns per open + close of `path` with `flags`.
fn open_loop(path: &str, flags: i32, n: u64) -> f64 {
    let c = std::ffi::CString::new(path).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: valid C string; the fd is closed at once.
        unsafe {
            let fd = libc::open(c.as_ptr(), flags, 0o600);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// µs per fork + exec + exit of /bin/true.
fn spawn_loop(n: u32) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        let st = Command::new("/bin/true")
            .env_remove("LD_LIBRARY_PATH")
            .status()?;
        if !st.success() {
            bail!("/bin/true failed");
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// The syscall micro-benchmarks: (getppid ns, unmatched open+close ns,
/// reported open+close ns, spawn µs).
fn micro(spawns: u32) -> anyhow::Result<[f64; 4]> {
    let created = format!("/tmp/vigil-bench-{}", std::process::id());
    let r = [
        getppid_loop(2_000_000),
        open_loop("/etc/hostname", libc::O_RDONLY, 300_000),
        open_loop(&created, libc::O_WRONLY | libc::O_CREAT, 100_000),
        spawn_loop(spawns)?,
    ];
    let _ = std::fs::remove_file(&created);
    Ok(r)
}

/// redis-benchmark SET and GET requests/s against a throwaway server.
fn redis() -> anyhow::Result<Option<(f64, f64)>> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--bind", "127.0.0.1", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("redis-server did not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "20",
            "-n",
            "100000",
            "-t",
            "set,get",
            "-q",
        ])
        .output()?;
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines like "SET: 53191.49 requests per second, p50=0.199 msec".
    let rate = |name: &str| {
        text.split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix(name))
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .next_back()
    };
    Ok(rate("SET:").zip(rate("GET:")))
}

/// What the flood did.
struct Flood {
    execs: u32,
    alerts: u32,
    opens_per_s: f64,
    /// Events the probe reported per second: the opens and each program's
    /// fork, exec and exit.
    events_per_s: f64,
    agent_cores: f64,
    peak_rss: f64,
    after_rss: f64,
    lost: Vec<(String, u64)>,
}

/// Two threads open files for writing at full speed while `execs`
/// distinct programs run from /tmp; every exec must raise its alert.
fn flood(agent: &Agent, execs: u32) -> anyhow::Result<Flood> {
    let dir = std::path::Path::new("/tmp/vigil-bench-flood");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for t in 0..2 {
        let (stop, opens) = (stop.clone(), opens.clone());
        let path = std::ffi::CString::new(format!("/tmp/vigil-bench-flood/f{t}")).unwrap();
        loops.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    // SAFETY: valid C string; the fd is closed at once.
                    unsafe {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                    }
                }
                n += 256;
            }
            opens.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut peak: f64 = 0.0;
    let tag = format!("vigil-flood-{}", std::process::id());
    for i in 0..execs {
        let p = dir.join(format!("prog-{i}"));
        std::fs::copy("/bin/true", &p)?;
        Command::new(&p).arg(&tag).status()?;
        if i % 50 == 0 {
            peak = peak.max(rss_mib(pid));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.join();
    }
    let took = t0.elapsed().as_secs_f64();
    peak = peak.max(rss_mib(pid));
    let cpu = cpu_seconds(pid)? - cpu0;
    // Alerts for the flood's programs, until they stop coming.
    let mut alerts = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alerts < execs && Instant::now() < deadline {
        if let Ok((_, l)) = agent.lines.recv_timeout(Duration::from_millis(500)) {
            if l.contains("Execution from a temporary directory") && l.contains(&tag) {
                alerts += 1;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_mib(pid);
    let _ = std::fs::remove_dir_all(dir);
    let total_opens = opens.load(Ordering::Relaxed) as f64;
    let events = total_opens + execs as f64 * 3.0;
    Ok(Flood {
        execs,
        alerts,
        opens_per_s: total_opens / took,
        events_per_s: events / took,
        agent_cores: cpu / took,
        peak_rss: peak,
        after_rss: after,
        lost: Vec::new(),
    })
}

/// Kernel losses per kind, from the agent's log.
fn losses(log: &[String]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for l in log {
        if !l.contains("events lost in the kernel") {
            continue;
        }
        let field = |k: &str| {
            l.split(&format!("\"{k}\":")).nth(1).map(|r| {
                r.trim_start_matches('"')
                    .split(['"', ',', '}'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        };
        if let (Some(kind), Some(total)) = (field("kind"), field("total")) {
            let total: u64 = total.parse().unwrap_or(0);
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 = e.1.max(total),
                None => out.push((kind, total)),
            }
        }
    }
    out
}

/// Exec to alert line, for `n` programs from /tmp spaced out: (p50, p99)
/// in ms.
fn latency(agent: &Agent, n: u32) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile_dir("vigil-bench-lat")?;
    let prog = dir.join("marker");
    std::fs::copy("/bin/true", &prog)?;
    let tag = format!("vigil-lat-{}", std::process::id());
    while agent.lines.try_recv().is_ok() {}
    let mut lat = Vec::new();
    for i in 0..n {
        let arg = format!("{tag}-{i}");
        Command::new(&prog).arg(&arg).status()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Timed when read, not when this loop gets to it: the program
            // is still running (and then waited for) when the alert leaves.
            let Ok((now, l)) = agent.lines.recv_timeout(left) else {
                break;
            };
            if !l.contains(&format!("\"{arg}\"")) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&l)?;
            if let Some(t) = v["time_unix_ns"].as_i64() {
                lat.push((now - t) as f64 / 1e6);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_by(|a, b| a.total_cmp(b));
    if lat.is_empty() {
        bail!("no latency samples: the alerts did not arrive");
    }
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    Ok((p(0.5), p(0.99)))
}

fn tempfile_dir(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let d = std::path::PathBuf::from(format!("/tmp/{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

pub fn run(o: BenchOptions) -> anyhow::Result<()> {
    if !super::is_root() {
        bail!("the benchmark loads the eBPF probe and needs root");
    }
    super::setup()?;
    super::step(
        "cargo build --release --bins",
        super::cargo().args(["build", "--release", "--bins"]),
    )?;
    // Warm the page cache and the fork path.
    spawn_loop(100)?;
    let mut base: Vec<[f64; 4]> = Vec::new();
    let mut with: Vec<[f64; 4]> = Vec::new();
    let mut redis_base = Vec::new();
    let mut redis_with = Vec::new();
    let mut idle_rss = Vec::new();
    for round in 1..=o.rounds {
        eprintln!("==> round {round}/{}: no agent", o.rounds);
        base.push(micro(o.spawns)?);
        if let Some(r) = redis()? {
            redis_base.push(r);
        }
        eprintln!("==> round {round}/{}: agent at its defaults", o.rounds);
        let agent = Agent::start(&[])?;
        idle_rss.push(rss_mib(agent.pid()));
        with.push(micro(o.spawns)?);
        if let Some(r) = redis()? {
            redis_with.push(r);
        }
        agent.stop()?;
    }
    eprintln!("==> flood and latency");
    let agent = Agent::start(&[])?;
    let lat = latency(&agent, 200)?;
    let mut fl = flood(&agent, o.flood_execs)?;
    let log = agent.stop()?;
    fl.lost = losses(&log);

    let col = |v: &[[f64; 4]], i: usize| median(v.iter().map(|r| r[i]).collect());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\n`cargo xtask bench --rounds {} --flood-execs {} --spawns {}` on {cores} cores, kernel {} (medians of {} alternating rounds)\n",
        o.rounds,
        o.flood_execs,
        o.spawns,
        kernel.trim(),
        o.rounds
    );
    println!("| measure | no agent | agent | difference |");
    println!("|---|---|---|---|");
    let row = |name: &str, unit: &str, i: usize, scale: f64| {
        let (a, b) = (col(&base, i), col(&with, i));
        println!(
            "| {name} | {:.0} {unit} | {:.0} {unit} | {:+.0} {unit} ({:+.1}%) |",
            a * scale,
            b * scale,
            (b - a) * scale,
            (b / a - 1.0) * 100.0
        );
    };
    row("getppid (no rule follows it)", "ns", 0, 1.0);
    row(
        "open + close, /etc/hostname read (no rule can match)",
        "ns",
        1,
        1.0,
    );
    row(
        "open + close, a /tmp file created for writing (reported)",
        "ns",
        2,
        1.0,
    );
    row("fork + exec + exit of /bin/true", "µs", 3, 1.0);
    if !redis_base.is_empty() && !redis_with.is_empty() {
        for (name, pick) in [("SET", 0usize), ("GET", 1)] {
            let get = |v: &[(f64, f64)]| {
                median(
                    v.iter()
                        .map(|r| if pick == 0 { r.0 } else { r.1 })
                        .collect(),
                )
            };
            let (a, b) = (get(&redis_base), get(&redis_with));
            println!(
                "| redis-benchmark {name}, 20 clients | {a:.0} req/s | {b:.0} req/s | {:+.1}% |",
                (b / a - 1.0) * 100.0
            );
        }
    } else {
        println!("| redis-benchmark | – | – | redis-server not installed |");
    }
    println!(
        "| agent RSS, idle | | {:.1} MiB | |",
        median(idle_rss.clone())
    );
    println!(
        "| flood: {} execs from /tmp during two write-open loops ({:.0} opens/s) | | {} of {} exec alerts | agent {:.2} cores, {:.2} cores per 100k events/s |",
        fl.execs,
        fl.opens_per_s,
        fl.alerts,
        fl.execs,
        fl.agent_cores,
        fl.agent_cores / (fl.events_per_s / 1e5).max(1e-9)
    );
    println!(
        "| flood: agent RSS peak / 3 s after | | {:.1} / {:.1} MiB | |",
        fl.peak_rss, fl.after_rss
    );
    let lost = if fl.lost.is_empty() {
        "none".to_string()
    } else {
        fl.lost
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| flood: events lost in the kernel | | {lost} | |");
    println!(
        "| alert latency, exec to alert line (200 execs) | | p50 {:.2} ms, p99 {:.2} ms | |",
        lat.0, lat.1
    );
    Ok(())
}
