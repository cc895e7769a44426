//! Process events never share fate with a flood of other events: two
//! `open` loops at full speed, whose opens a loaded rule follows (so each
//! one travels through the syscall ring and is matched), while 1 000
//! distinct programs run from `/tmp`. Every exec must raise its alert,
//! and the process kinds must never appear among the kernel's losses;
//! losses of other kinds, if the flood causes any, must be reported.
//!
//! Everything runs on one CPU, the agent included, as on a starved host:
//! the agent then gets a fraction of a CPU and its event loop can take a
//! second over one slice of the flood. The process ring must still not
//! fill (its own reader thread empties it).
use std::{
    collections::HashSet,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use vigil_tests::*;

const PROGRAMS: usize = 1000;

#[test]
fn every_exec_alerts_while_opens_flood_the_probe() {
    if !kernel_tests_enabled("every_exec_alerts_while_opens_flood_the_probe") {
        return;
    }
    pin_to_one_cpu();
    let dir = tempfile::Builder::new()
        .prefix("vigil-flood-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().display().to_string();
    // The programs, copied by one shell (see `copy_executable` for why
    // not from this process).
    let st = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt $2 ]; do cp /bin/true \"$1/prog-$i\" || exit 1; i=$((i+1)); done",
            "sh",
            &d,
            &PROGRAMS.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "copying the programs");

    let exec_rule = unique("flood exec");
    let rules = dir.path().join("flood.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: {exec_rule}\n  desc: a program of the flood test ran\n  priority: warning\n  condition: evt.type = execve and proc.exepath startswith \"{d}/prog-\"\n\
             - rule: flood opens\n  desc: follows the flood's opens so that each one is sent and matched, and never fires\n  priority: debug\n  condition: evt.type in (open, openat) and fd.name startswith \"{d}/f\" and proc.name = vigil-no-such-process\n"
        ),
    )
    .unwrap();
    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let mut agent = start_agent(&[
        "--rules",
        default_rules,
        "--rules",
        rules.to_str().unwrap(),
        "--bpf-stats",
        "--stats-interval",
        "1",
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..2)
        .map(|t| {
            let (stop, opens) = (stop.clone(), opens.clone());
            let path = std::ffi::CString::new(format!("{d}/f{t}")).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        // SAFETY: a valid C string; the descriptor is closed at once.
                        unsafe {
                            let fd =
                                libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
                            if fd >= 0 {
                                libc::close(fd);
                            }
                        }
                    }
                    opens.fetch_add(256, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let tag = unique("vigil-flood");
    let mut pids = HashSet::new();
    for i in 0..PROGRAMS {
        let mut child = Command::new(dir.path().join(format!("prog-{i}")))
            .arg(&tag)
            .spawn()
            .unwrap();
        pids.insert(child.id());
        assert!(child.wait().unwrap().success());
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().unwrap();
    }
    let opened = opens.load(Ordering::Relaxed);

    let alerts = agent.wait_json(
        Duration::from_secs(60),
        |v| v["type"] == "alert" && v["rule"] == exec_rule.as_str(),
        |f| f.len() >= PROGRAMS,
    );
    let alerted: HashSet<u32> = alerts
        .iter()
        .filter_map(|v| v["process"]["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let missing = pids.difference(&alerted).count();
    // The next loss report, then the lines so far.
    std::thread::sleep(Duration::from_millis(1500));
    let log = agent.stderr_lines();
    assert_eq!(
        missing,
        0,
        "{missing} of {PROGRAMS} execs raised no alert while {opened} opens ran; agent log:\n{}",
        log.join("\n")
    );
    assert_eq!(alerts.len(), PROGRAMS, "one alert per exec");

    // The flood was real: the probe ran on every open (the default rules
    // and the flood rule both follow opens) ...
    assert!(opened > 20_000, "only {opened} opens: no flood");
    let exit_runs = log
        .iter()
        .filter(|l| l.contains("bpf program cost") && l.contains("syscall_exit"))
        .filter_map(|l| field(l, "runs")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        exit_runs >= opened,
        "the syscall exit program ran {exit_runs} times for {opened} opens"
    );
    // ... and whatever it cost was not paid by the process kinds.
    for l in log
        .iter()
        .filter(|l| l.contains("events lost in the kernel"))
    {
        let kind = field(l, "kind").unwrap_or_default();
        assert!(
            !["exec", "fork", "exit"].contains(&kind.as_str()),
            "process events lost: {l}"
        );
    }
    assert!(agent.alive(), "the agent survived the flood");
    agent.stop();
}

/// Pins this process (the test has it to itself) and so the agent it
/// starts, the flood and the programs to the first CPU it may use.
fn pin_to_one_cpu() {
    // SAFETY: cpu_set_t is plain data; the calls read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("an allowed CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// A field's value in a log line, text (`k=v`, `k="v"`) or JSON (`"k":v`).
fn field(line: &str, key: &str) -> Option<String> {
    let rest = line
        .split(&format!(" {key}="))
        .nth(1)
        .or_else(|| line.split(&format!("\"{key}\":")).nth(1))?;
    let v = rest
        .trim_start_matches('"')
        .split(['"', ',', '}', ' '])
        .next()?;
    Some(v.to_string())
}

/// An exec wakes the agent at once: its alert does not wait for the timed
/// drain, here set to 10 s. (The process ring's reader empties the ring
/// before the event loop's poll sees it; it must wake the loop itself.)
#[test]
fn exec_alerts_do_not_wait_for_the_timed_drain() {
    if !kernel_tests_enabled("exec_alerts_do_not_wait_for_the_timed_drain") {
        return;
    }
    let agent = start_agent(&["--drain-interval-ms", "10000"]);
    let (_dir, marker) = marker_binary("/bin/true", "wake-marker");
    for i in 0..5 {
        let tag = unique(&format!("wake-{i}"));
        let pid = {
            let mut c = std::process::Command::new(&marker)
                .arg(&tag)
                .spawn()
                .unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let found = agent.wait_json(
            std::time::Duration::from_secs(2),
            |v| v["type"] == "alert" && v["process"]["pid"] == pid,
            |f| !f.is_empty(),
        );
        assert!(
            !found.is_empty(),
            "exec {i}: no alert within 2 s with a 10 s drain interval: the exec did not wake the agent"
        );
    }
}
