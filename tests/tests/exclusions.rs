//! User exclusions applied in the kernel: an excluded executable and an
//! excluded cgroup produce no events; everything else still does.
use std::process::Command;

use vigil_tests::*;

/// Where cgroup v2 is mounted (unified or hybrid layout).
fn cgroup2_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
    })
}

/// Exec events whose first argument is `marker` (not the shell whose
/// script merely mentions it).
fn execs_with(agent: &Proc, marker: &str) -> usize {
    agent
        .json_lines()
        .iter()
        .filter(|v| v["type"] == "exec" && v["argv"][1] == marker)
        .count()
}

#[test]
fn excluded_exe_and_cgroup_are_silent() {
    if !kernel_tests_enabled("excluded_exe_and_cgroup_are_silent") {
        return;
    }
    let root = cgroup2_root().expect("a cgroup2 mount");
    let cg = format!("{root}/{}", unique("vigil-test-cg"));
    std::fs::create_dir(&cg).unwrap();
    let (_d1, quiet) = marker_binary("/bin/true", "excluded-true");
    let (_d2, loud) = marker_binary("/bin/true", "visible-true");
    let agent = start_agent(&[
        "--events",
        "--drain-interval-ms",
        "10",
        "--exclude-exe",
        quiet.to_str().unwrap(),
        "--exclude-cgroup",
        &cg,
    ]);
    assert!(agent
        .stderr_lines()
        .iter()
        .any(|l| l.contains("exclusions applied in the kernel")));

    let quiet_child = Command::new(&quiet).arg("--quiet-marker").spawn().unwrap();
    let quiet_pid = quiet_child.id();
    quiet_child.wait_with_output().unwrap();
    // A shell that moves itself into the excluded cgroup, then execs.
    let script = format!(
        "echo $$ > {cg}/cgroup.procs && exec {} --cgroup-marker",
        loud.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    assert!(Command::new(&loud)
        .arg("--visible-marker")
        .status()
        .unwrap()
        .success());

    agent.expect_json("the visible marker's exec", |v| {
        v["type"] == "exec" && v["argv"][1] == "--visible-marker"
    });
    // Everything that ran before is matched and printed by now, so what is
    // missing was never reported.
    agent.settle(ENRICH_WAIT);
    assert_eq!(
        execs_with(&agent, "--quiet-marker"),
        0,
        "excluded executable reported"
    );
    assert_eq!(
        execs_with(&agent, "--cgroup-marker"),
        0,
        "excluded cgroup reported"
    );
    let from_quiet = agent
        .json_lines()
        .into_iter()
        .filter(|v| v["process"]["pid"] == quiet_pid && v["type"] != "fork")
        .count();
    assert_eq!(
        from_quiet, 0,
        "no file or exit events from the excluded process either"
    );
    let _ = std::fs::remove_dir(&cg);
}

#[test]
fn bad_exclusions_name_the_culprit() {
    let o = Command::new(bin("vigil-agent"))
        .args(["run", "--exclude-exe", "/nonexistent/bin"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("--exclude-exe /nonexistent/bin"),
        "{e}"
    );
    let o = Command::new(bin("vigil-agent"))
        .args(["run", "--exclude-cgroup", "/tmp"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a cgroup v2 directory"),
        "{e}"
    );
}
