//! The process context every event carries, checked against what /proc
//! says about the same process.
use std::{os::unix::fs::MetadataExt, process::Command, time::Duration};

use serde_json::Value;
use vigil_tests::*;

/// Events of `pid` seen by `agent` (waits until one of type `want` shows).
fn events_of(agent: &Proc, pid: u32, want: &str) -> Vec<Value> {
    agent.wait_json(
        Duration::from_secs(20),
        |v| v["process"]["pid"] == pid && v["type"] != "alert",
        |evs| evs.iter().any(|e| e["type"] == want),
    )
}

fn ns_inode(kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .ino()
}

#[test]
fn context_matches_proc() {
    if !kernel_tests_enabled("context_matches_proc") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, sleeper) = marker_binary("/bin/sleep", "ctx-sleep");
    let mut child = Command::new(&sleeper).arg("1").spawn().unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_ticks: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    child.wait().unwrap();

    let evs = events_of(&agent, pid, "exit");
    let exec = evs
        .iter()
        .find(|e| e["type"] == "exec")
        .expect("exec event");
    let exit = evs
        .iter()
        .find(|e| e["type"] == "exit")
        .expect("exit event");
    let p = &exec["process"];
    assert_eq!(p["euid"], 0);
    assert_eq!(p["egid"], 0);
    let loginuid: u32 = std::fs::read_to_string("/proc/self/loginuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let expected = if loginuid == u32::MAX {
        -1
    } else {
        loginuid as i64
    };
    assert_eq!(p["loginuid"], expected, "inherited from the test process");
    assert_eq!(p["mnt_ns"], ns_inode("mnt"));
    assert_eq!(p["pid_ns"], ns_inode("pid"));
    // /proc's starttime is the same clock in USER_HZ ticks (100 Hz on Linux).
    let start_ns = p["start_boottime_ns"].as_u64().unwrap();
    assert_eq!(
        start_ns / 10_000_000,
        start_ticks,
        "start time {start_ns} ns vs {start_ticks} ticks"
    );
    assert_eq!(
        exit["process"]["start_boottime_ns"], p["start_boottime_ns"],
        "same process, same start"
    );
}

#[test]
fn effective_uid_and_new_mount_namespace() {
    if !kernel_tests_enabled("effective_uid_and_new_mount_namespace") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, marker) = marker_binary("/bin/true", "ctx-true");

    // setpriv (util-linux) changes only the effective uid before exec.
    let child = Command::new("setpriv")
        .args(["--euid=65534", "--egid=65534", "--keep-groups"])
        .arg(&marker)
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let evs = events_of(&agent, pid, "exit");
    let exec = evs
        .iter()
        .rev()
        .find(|e| e["type"] == "exec" && e["filename"] == marker.to_str().unwrap())
        .expect("exec");
    assert_eq!(exec["process"]["uid"], 0);
    assert_eq!(exec["process"]["euid"], 65534);
    assert_eq!(exec["process"]["egid"], 65534);

    let child = Command::new("unshare")
        .arg("-m")
        .arg(&marker)
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let evs = events_of(&agent, pid, "exit");
    let exec = evs
        .iter()
        .rev()
        .find(|e| e["type"] == "exec" && e["filename"] == marker.to_str().unwrap())
        .expect("exec");
    let mnt = exec["process"]["mnt_ns"].as_u64().unwrap();
    assert_ne!(
        mnt,
        ns_inode("mnt"),
        "unshare -m gives the process a new mount namespace"
    );
    assert_ne!(mnt, 0);
}

#[test]
fn reused_pid_has_a_different_start_time() {
    if !kernel_tests_enabled("reused_pid_has_a_different_start_time") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let (_dir, marker) = marker_binary("/bin/true", "ctx-reuse");
    let first = Command::new(&marker).spawn().unwrap();
    let pid = first.id();
    first.wait_with_output().unwrap();
    // Other processes may take the pid first; try a few times.
    let mut reused = None;
    for _ in 0..20 {
        next_pid_will_be(pid);
        let c = Command::new(&marker).spawn().unwrap();
        let got = c.id();
        c.wait_with_output().unwrap();
        if got == pid {
            reused = Some(got);
            break;
        }
    }
    assert_eq!(reused, Some(pid), "could not get pid {pid} reused");
    let path = marker.to_str().unwrap();
    let execs = agent.wait_json(
        Duration::from_secs(20),
        |e| e["type"] == "exec" && e["process"]["pid"] == pid && e["filename"] == path,
        |f| f.len() >= 2,
    );
    assert_eq!(execs.len(), 2, "two processes with pid {pid}");
    let t0 = execs[0]["process"]["start_boottime_ns"].as_u64().unwrap();
    let t1 = execs[1]["process"]["start_boottime_ns"].as_u64().unwrap();
    assert!(
        t1 > t0,
        "the second process with pid {pid} started later: {t0} vs {t1}"
    );
}

/// `proc.tty`: a process on a pseudo-terminal reports the terminal
/// /proc/PID/stat names; one without a terminal reports 0.
#[test]
fn controlling_terminal_matches_proc_stat() {
    if !kernel_tests_enabled("controlling_terminal_matches_proc_stat") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    // python's pty.fork gives the child a new session on a fresh pty; the
    // child prints its own tty_nr and pid, then sleeps a moment.
    let script = r#"
import os, pty
pid, fd = pty.fork()
if pid == 0:
    os.execv('/bin/sh', ['sh', '-c', 'read a b c d e f g rest < /proc/self/stat; echo "$a $g"; sleep 0.3'])
out = b''
while True:
    try:
        d = os.read(fd, 1000)
    except OSError:
        break
    if not d:
        break
    out += d
os.waitpid(pid, 0)
print(out.decode().strip())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let pid: u32 = it.next().unwrap().parse().unwrap();
    let tty_nr: u64 = it.next().unwrap().parse().unwrap();
    assert_ne!(tty_nr, 0, "the child has a terminal");
    let evs = events_of(&agent, pid, "exec");
    let exec = evs.iter().find(|e| e["type"] == "exec").unwrap();
    assert_eq!(exec["process"]["tty"], tty_nr);
    // This test process has no terminal under the harness.
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let child_pid = child.id();
    child.wait().unwrap();
    let evs = events_of(&agent, child_pid, "exec");
    let mine = std::fs::read_to_string("/proc/self/stat").unwrap();
    let my_tty: u64 = mine
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(evs[0]["process"]["tty"], my_tty);
}

/// `proc.vpid`: a process's id in its own pid namespace; 1 for the first
/// process of a new namespace (a container's init), the pid on the host.
#[test]
fn namespace_pid_is_one_for_a_new_namespace_init() {
    if !kernel_tests_enabled("namespace_pid_is_one_for_a_new_namespace_init") {
        return;
    }
    let agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let tag = unique("vpid");
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "/bin/true", &tag])
        .status()
        .unwrap();
    assert!(ok.success());
    let exec = agent.expect_json("exec in the new pid namespace", |v| {
        v["type"] == "exec" && v["process"]["argv"][1] == tag.as_str()
    });
    assert_eq!(exec["process"]["vpid"], 1, "{exec:#}");
    assert_ne!(exec["process"]["pid"], 1);
    let mut host = Command::new("/bin/true").spawn().unwrap();
    let pid = host.id();
    host.wait().unwrap();
    let evs = events_of(&agent, pid, "exec");
    assert_eq!(evs[0]["process"]["vpid"], pid);
}
