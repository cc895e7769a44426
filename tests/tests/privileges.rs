//! After start-up the agent holds, in every thread, only the capabilities
//! docs/security.md lists, and still does its work with them: a program
//! run by another user is named from /proc (CAP_SYS_PTRACE), and a rule
//! reload attaches a syscall hook the agent did not have (CAP_BPF,
//! CAP_PERFMON).
use std::{os::unix::fs::PermissionsExt, process::Command, time::Duration};

use vigil_tests::*;

/// CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON,
/// CAP_BPF: the set docs/security.md documents.
const KEPT: u64 = 1 << 2 | 1 << 19 | 1 << 21 | 1 << 38 | 1 << 39;

/// A capability set of a thread's status (`CapEff:` and so on).
fn cap_set(status: &str, name: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn the_agent_keeps_only_the_capabilities_it_needs_and_still_works() {
    if !kernel_tests_enabled("the_agent_keeps_only_the_capabilities_it_needs_and_still_works") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vigil-caps-")
        .tempdir_in("/tmp")
        .unwrap();
    // World-readable and searchable: nobody runs the marker from here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("caps-marker");
    copy_executable("/bin/true", &marker);
    let m = marker.display().to_string();
    let rules = dir.path().join("r.yaml");
    let exec_rule = format!(
        "- rule: Marker run by nobody\n  desc: d\n  priority: warning\n  condition: evt.type = execve and proc.exepath = \"{m}\" and user.name = nobody\n  output: ran as %user.name\n"
    );
    std::fs::write(&rules, &exec_rule).unwrap();
    let mut agent = start_agent(&["--rules", rules.to_str().unwrap(), "--rules-poll", "1"]);

    // Every thread, the event loop and those it started.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .unwrap()
        .flatten()
        .collect();
    assert!(tasks.len() >= 4, "the agent's threads: {}", tasks.len());
    for t in &tasks {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let name = status.lines().next().unwrap_or_default().to_string();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                cap_set(&status, set),
                KEPT,
                "{name}: {set} is {:x}, not {KEPT:x}",
                cap_set(&status, set)
            );
        }
        for set in ["CapInh", "CapAmb"] {
            assert_eq!(cap_set(&status, set), 0, "{name}: {set}");
        }
    }
    agent.wait_stderr("capabilities dropped", Duration::from_secs(5), |l| {
        l.contains("capabilities dropped") && l.contains("CAP_SYS_PTRACE")
    });

    // A program of another user, named from its own /proc entries.
    let st = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", &m])
        .status()
        .unwrap();
    assert!(st.success());
    let hit = agent.wait_json(
        Duration::from_secs(10),
        |v| v["type"] == "alert" && v["rule"] == "Marker run by nobody",
        |f| !f.is_empty(),
    );
    assert_eq!(hit.len(), 1, "no alert for nobody's exec");
    assert!(
        hit[0]["output"]
            .as_str()
            .unwrap_or("")
            .contains("ran as nobody"),
        "{}",
        hit[0]
    );

    // A reload that needs hooks the probe did not have: unlink, unlinkat.
    let gone = dir.path().join(unique("unlinked"));
    std::fs::write(
        &rules,
        format!(
            "{exec_rule}- rule: Marker unlinked\n  desc: d\n  priority: warning\n  condition: evt.type in (unlink, unlinkat) and fd.name = \"{}\"\n  output: unlinked %fd.name\n",
            gone.display()
        ),
    )
    .unwrap();
    let line = agent.wait_stderr("reloaded", Duration::from_secs(20), |l| {
        l.contains("rules reloaded") || l.contains("could not follow")
    });
    assert!(line.contains("rules reloaded"), "{line}");
    // The hooks are attached just after that line: wait for the second
    // filter summary (the first is the start's).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("kernel filter from the rules"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            agent.stderr_lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&gone, b"x").unwrap();
    std::fs::remove_file(&gone).unwrap();
    let hit = agent.wait_json(
        Duration::from_secs(10),
        |v| v["type"] == "alert" && v["rule"] == "Marker unlinked",
        |f| !f.is_empty(),
    );
    assert_eq!(
        hit.len(),
        1,
        "no alert from the hook attached after the drop"
    );
    assert!(
        !agent
            .stderr_lines()
            .iter()
            .any(|l| l.contains("could not follow")),
        "{:?}",
        agent.stderr_lines()
    );
    assert!(agent.stop().success());
}
