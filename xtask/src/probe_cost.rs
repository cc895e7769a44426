//! `cargo xtask probe-cost`: what each of the probe's programs costs per
//! run, from the kernel's own BPF statistics (`kernel.bpf_stats_enabled`:
//! `run_time_ns` / `run_cnt` of every program, as `bpftool prog show`
//! reports them). Finer than the host-level rows of `cargo xtask bench`:
//! a change of a few loads in the probe shows here, where a syscall
//! loop's ±15% noise would hide it.
//!
//! Workloads per round, each measured on its own: 100 000 reads of
//! /etc/hostname (no rule can match them: the kernel filter's cost),
//! 100 000 opens for writing of a file in /tmp (each reported by the
//! default rules) and 300 execs of /bin/true.
use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

/// Runs `agent run` at its defaults and prints, per program that ran, the
/// median over `rounds` of its mean time per run.
pub fn run(agent: &str, args: &[String], rounds: u32) -> anyhow::Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("probe-cost needs root (it loads the probe and sets kernel.bpf_stats_enabled)");
    }
    Command::new("bpftool")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .context("bpftool is needed (Debian: apt-get install bpftool)")?;
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("cannot enable kernel.bpf_stats_enabled")?;
    let mut child = Command::new(agent)
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {agent}"))?;
    let result = measure(rounds);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let per_prog = result?;
    println!(
        "\n`cargo xtask probe-cost --rounds {rounds} -- {}` ({agent}): mean ns per program run, median of {rounds} rounds\n",
        args.join(" ")
    );
    println!("| workload | program | ns per run | rounds |");
    println!("|---|---|---|---|");
    for ((w, name), mut v) in per_prog {
        v.sort_by(f64::total_cmp);
        let all: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "| {w} | {name} | {:.0} | {} |",
            v[v.len() / 2],
            all.join(", ")
        );
    }
    Ok(())
}

/// The workloads, each measured on its own so a program's mean is that
/// workload's: opens no rule can match (reads of /etc/hostname), opens
/// that are reported (created for writing in /tmp), and execs.
const WORKLOADS: [&str; 3] = ["unmatched read", "reported open", "exec"];

fn workload(which: &str, path: &std::ffi::CStr) -> anyhow::Result<()> {
    let open = |p: &std::ffi::CStr, flags: i32| {
        // SAFETY: valid C string; the fd is closed at once.
        unsafe {
            let fd = libc::open(p.as_ptr(), flags, 0o600);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    };
    match which {
        "unmatched read" => {
            for _ in 0..100_000 {
                open(c"/etc/hostname", libc::O_RDONLY);
            }
        }
        "reported open" => {
            for _ in 0..100_000 {
                open(path, libc::O_WRONLY | libc::O_CREAT);
            }
        }
        _ => {
            for _ in 0..300 {
                Command::new("/bin/true").status()?;
            }
        }
    }
    Ok(())
}

/// (workload, program) -> mean ns per run, one per round.
fn measure(rounds: u32) -> anyhow::Result<BTreeMap<(String, String), Vec<f64>>> {
    // Loading and attaching; the first seconds also hash executables.
    std::thread::sleep(Duration::from_secs(8));
    let file = format!("/tmp/vigil-probe-cost-{}", std::process::id());
    let path = std::ffi::CString::new(file.clone())?;
    let mut out: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for w in WORKLOADS {
            let before = stats()?;
            workload(w, &path)?;
            let after = stats()?;
            for (id, (name, ns, runs)) in after {
                let Some((_, ns0, runs0)) = before.get(&id) else {
                    continue;
                };
                let n = runs - runs0;
                // The workload's own programs, not the odd run of another.
                let min = if w == "exec" { 200 } else { 50_000 };
                if n >= min {
                    out.entry((w.to_string(), name))
                        .or_default()
                        .push((ns - ns0) as f64 / n as f64);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&file);
    if out.is_empty() {
        bail!("no BPF program ran: did the agent start?");
    }
    Ok(out)
}

/// id -> (name, run_time_ns, run_cnt) of every loaded program.
fn stats() -> anyhow::Result<BTreeMap<u64, (String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("bpftool prog show")?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut map = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let field = |k: &str| p[k].as_u64().unwrap_or(0);
        map.insert(
            field("id"),
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                field("run_time_ns"),
                field("run_cnt"),
            ),
        );
    }
    Ok(map)
}
