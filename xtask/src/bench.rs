//! `cargo xtask bench`: what the probe costs the host.
//!
//! Spawns `/bin/true` N times (fork + exec + exit each) with no agent, with
//! the agent at its defaults, and with the agent waking on every event, and
//! reports µs per spawn, the kernel's ns per program run (BPF run-time
//! statistics) and the agent's CPU time. Results go to docs/benchmarks.md by
//! hand, with the machine they came from.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

fn spawn_loop(n: u32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..n {
        // cargo run puts toolchain dirs on LD_LIBRARY_PATH, which would make
        // every spawn probe dozens of library paths.
        let st = Command::new("/bin/true")
            .env_remove("LD_LIBRARY_PATH")
            .status()?;
        if !st.success() {
            bail!("/bin/true failed");
        }
    }
    Ok(start.elapsed())
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

struct Phase {
    name: String,
    per_spawn_us: f64,
    programs: Vec<(String, u64, u64)>,
    agent_cpu_ms: Option<f64>,
}

fn agent_phase(name: &str, n: u32, extra: &[&str]) -> anyhow::Result<Phase> {
    let mut agent = Command::new("target/release/vigil-agent")
        .args([
            "run",
            "--bpf-stats",
            "--stats-interval",
            "1",
            "--log-format",
            "json",
            "--rules",
            "rules",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start target/release/vigil-agent")?;
    let pid = agent.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = agent.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .context("agent did not start")?;
        if line.contains("agent running") {
            break;
        }
        if Instant::now() > deadline {
            bail!("agent did not start");
        }
    }
    let cpu0 = cpu_ticks(pid)?;
    let took = spawn_loop(n)?;
    std::thread::sleep(Duration::from_millis(1500));
    let cpu1 = cpu_ticks(pid)?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    agent.wait()?;
    let mut programs: Vec<(String, u64, u64)> = Vec::new();
    while let Ok(line) = rx.try_recv() {
        if !line.contains("bpf program cost") {
            continue;
        }
        let field = |k: &str| {
            line.split(&format!("\"{k}\":")).nth(1).map(|r| {
                r.trim_start_matches('"')
                    .split(['"', ',', '}'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        };
        if let (Some(p), Some(runs), Some(avg)) = (field("program"), field("runs"), field("avg_ns"))
        {
            let entry = (
                p.clone(),
                runs.parse().unwrap_or(0),
                avg.parse().unwrap_or(0),
            );
            match programs.iter_mut().find(|(q, _, _)| *q == p) {
                Some(e) => *e = entry,
                None => programs.push(entry),
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(Phase {
        name: name.into(),
        per_spawn_us: took.as_secs_f64() * 1e6 / n as f64,
        programs,
        agent_cpu_ms: Some((cpu1 - cpu0) as f64 * 1000.0 / hz),
    })
}

pub fn run(n: u32) -> anyhow::Result<()> {
    if !super::is_root() {
        bail!("the benchmark loads the eBPF probe and needs root");
    }
    super::setup()?;
    super::step(
        "cargo build --release --bins",
        super::cargo().args(["build", "--release", "--bins"]),
    )?;
    // Warm the page cache and the fork path.
    spawn_loop(200)?;
    let base = spawn_loop(n)?;
    let mut phases = vec![Phase {
        name: "no agent".into(),
        per_spawn_us: base.as_secs_f64() * 1e6 / n as f64,
        programs: Vec::new(),
        agent_cpu_ms: None,
    }];
    phases.push(agent_phase(
        "agent, defaults (--wakeup-bytes 256K)",
        n,
        &[],
    )?);
    phases.push(agent_phase(
        "agent, --wakeup-bytes 0 (wake per event)",
        n,
        &["--wakeup-bytes", "0"],
    )?);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\n`cargo xtask bench --spawns {n}` on {cores} cores, kernel {}\n",
        kernel.trim()
    );
    println!("| phase | µs per spawn | overhead | exec ns/run | fork ns/run | exit ns/run | syscall enter ns/run (runs) | syscall exit ns/run (runs) | agent CPU ms ({n} spawns) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let base_us = phases[0].per_spawn_us;
    for p in &phases {
        let ns = |prog: &str| {
            p.programs
                .iter()
                .find(|(q, _, _)| q == prog)
                .map_or("–".to_string(), |(_, _, avg)| avg.to_string())
        };
        let runs = |prog: &str| {
            p.programs
                .iter()
                .find(|(q, _, _)| q == prog)
                .map_or("–".to_string(), |(_, r, avg)| format!("{avg} ({r})"))
        };
        println!(
            "| {} | {:.1} | {:+.1}% | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.per_spawn_us,
            (p.per_spawn_us / base_us - 1.0) * 100.0,
            ns("sched_process_exec"),
            ns("sched_process_fork"),
            ns("sched_process_exit"),
            runs("syscall_enter"),
            runs("syscall_exit"),
            p.agent_cpu_ms.map_or("–".into(), |c| format!("{c:.0}")),
        );
    }
    Ok(())
}
