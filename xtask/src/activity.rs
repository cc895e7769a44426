//! `cargo xtask bench-activity`: what streaming activity costs a busy
//! build host. A release collector (plaintext loopback, SQLite) and the
//! release agent at its defaults; a workload that starts programs at a
//! build's pace (`--rate` per second, `/bin/sh -c true`: an exec and an
//! exit each, and a fork); in alternating rounds, the agent with
//! `--activity none` (alerts only) and with the default activity. Prints
//! the agent's CPU (percent of one core, median of the rounds), and what
//! reached the collector: activity events and bytes per second.
use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::bench::{cpu_seconds, median};

pub struct Options {
    pub rounds: u32,
    pub seconds: u32,
    pub rate: u32,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A counter from the collector's /metrics.
fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}

/// Starts programs at `rate` per second for `seconds`, from two threads;
/// returns how many ran.
fn workload(rate: u32, seconds: u32) -> u64 {
    let per_thread = rate as f64 / 2.0;
    let until = Instant::now() + Duration::from_secs(seconds as u64);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u64;
                while Instant::now() < until {
                    let due = start + Duration::from_secs_f64(n as f64 / per_thread);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let _ = Command::new("/bin/sh").args(["-c", "true"]).status();
                    n += 1;
                }
                n
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
}

struct Round {
    cpu_percent: f64,
    programs_per_s: f64,
    events_per_s: f64,
    kib_per_s: f64,
}

fn round(
    url: &str,
    metrics_port: u16,
    dir: &std::path::Path,
    activity: &str,
    o: &Options,
) -> anyhow::Result<Round> {
    let spool = dir.join(format!("spool-{activity}"));
    let mut agent = Killed(
        Command::new("target/release/vigil-agent")
            .args(["run", "--collector", url, "--activity", activity])
            .arg("--spool-dir")
            .arg(&spool)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start target/release/vigil-agent")?,
    );
    let (tx, rx) = mpsc::channel();
    let stderr = agent.0.stderr.take().context("stderr")?;
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("agent running") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .context("the agent did not start")?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = agent.0.id();
    let (ev0, b0) = (
        metric(metrics_port, "vigil_collector_activity_stored_total")?,
        metric(metrics_port, "vigil_collector_activity_bytes_total")?,
    );
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let ran = workload(o.rate, o.seconds);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid)?;
    // What is in flight reaches the collector.
    std::thread::sleep(Duration::from_secs(2));
    let (ev1, b1) = (
        metric(metrics_port, "vigil_collector_activity_stored_total")?,
        metric(metrics_port, "vigil_collector_activity_bytes_total")?,
    );
    drop(agent);
    Ok(Round {
        cpu_percent: (cpu1 - cpu0) / secs * 100.0,
        programs_per_s: ran as f64 / secs,
        events_per_s: (ev1 - ev0) / secs,
        kib_per_s: (b1 - b0) / secs / 1024.0,
    })
}

pub fn run(o: Options) -> anyhow::Result<()> {
    crate::step(
        "cargo build --release --bins",
        crate::cargo().args(["build", "--release", "--bins"]),
    )?;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        bail!("the agent needs root: run as root");
    }
    let dir = std::env::temp_dir().join(format!("vigil-bench-activity-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let _collector = Killed(
        Command::new("target/release/vigil-collector")
            .args(["serve", "--insecure-plaintext"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--db")
            .arg(dir.join("bench.db"))
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start target/release/vigil-collector")?,
    );
    std::thread::sleep(Duration::from_secs(1));
    let url = format!("http://127.0.0.1:{port}");
    let modes = ["none", "exec,exit,connect,accept,listen,dns"];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
    for r in 0..o.rounds {
        for (i, m) in modes.iter().enumerate() {
            eprintln!("==> round {} of {}: --activity {m}", r + 1, o.rounds);
            results[i].push(round(&url, metrics_port, &dir, m, &o)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\n`cargo xtask bench-activity --rounds {} --seconds {} --rate {}` ({} rounds each, medians)\n",
        o.rounds, o.seconds, o.rate, o.rounds
    );
    println!("| --activity | programs/s | agent CPU (% of one core) | activity events/s stored | KiB/s to the collector |");
    println!("|---|---|---|---|---|");
    for (i, m) in modes.iter().enumerate() {
        let rs = &results[i];
        let med = |f: fn(&Round) -> f64| median(rs.iter().map(f).collect());
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.0} |",
            if i == 0 { "none" } else { "default" },
            med(|r| r.programs_per_s),
            med(|r| r.cpu_percent),
            med(|r| r.events_per_s),
            med(|r| r.kib_per_s),
        );
        let _ = m;
    }
    Ok(())
}
