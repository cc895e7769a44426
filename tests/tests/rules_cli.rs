//! Rules as code: `rules test` replays recordings, `--baseline` fails on
//! false positives, and a running agent reloads its rules on file change
//! and on SIGHUP without losing its process table.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use vigil_tests::*;

fn vigil(args: &[&str]) -> Output {
    Command::new(bin("vigil-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const BASELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../rules/baseline/benign.jsonl.gz"
);

/// A busier host: package installs and a reinstall, ssh logins, podman
/// starting containers, cron jobs, log rotation, tar and rsync backups of
/// /etc and /home, a Cargo CI build and its tests (docs/rules.md).
const BUSY_BASELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../rules/baseline/busy-host.jsonl.gz"
);

#[test]
fn default_rules_are_silent_on_the_benign_baselines() {
    for baseline in [BASELINE, BUSY_BASELINE] {
        let o = vigil(&["rules", "test", "--baseline", baseline]);
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains("0 at warning or above"), "{err}");
        let events: u64 = err
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(events > 8000, "{baseline}: {err}");
    }
}

#[test]
fn baseline_fails_on_a_noisy_rule() {
    let dir = tempfile::tempdir().unwrap();
    let noisy = dir.path().join("noisy.yaml");
    std::fs::write(
        &noisy,
        "- rule: Any shell\n  desc: d\n  priority: warning\n  condition: evt.type = execve and proc.name = bash\n",
    )
    .unwrap();
    let o = vigil(&[
        "rules",
        "test",
        "--rules",
        noisy.to_str().unwrap(),
        "--baseline",
        BASELINE,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("benign.jsonl.gz:") && out.contains("Any shell [warning]"),
        "{out}"
    );
    // Below --fail-on it only reports.
    let o = vigil(&[
        "rules",
        "test",
        "--rules",
        noisy.to_str().unwrap(),
        "--baseline",
        BASELINE,
        "--fail-on",
        "error",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn replay_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("events.jsonl");
    std::fs::write(
        &f,
        "{\"type\":\"lost\",\"kind\":\"exec\",\"count\":1,\"total\":1}\n{\"type\":\"exec\"\n",
    )
    .unwrap();
    let o = vigil(&["rules", "test", "--events", f.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains(&format!("{}:2: not a Vigil event", f.display())),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn recorded_attack_replays_to_the_same_alerts() {
    if !kernel_tests_enabled("recorded_attack_replays_to_the_same_alerts") {
        return;
    }
    let mut agent = start_agent(&["--events", "--drain-interval-ms", "10"]);
    let cat = Command::new("cat").arg("/etc/shadow").output().unwrap();
    assert!(cat.status.success());
    agent.wait_json(
        Duration::from_secs(15),
        |v| v["type"] == "alert" && v["rule"] == "Read sensitive file by unexpected program",
        |f| !f.is_empty(),
    );
    agent.stop();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    std::fs::write(&rec, agent.stdout_lines().join("\n")).unwrap();
    let o = vigil(&["rules", "test", "--events", rec.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let alerts: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let a = alerts
        .iter()
        .find(|a| a["rule"] == "Read sensitive file by unexpected program")
        .unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(a["fields"]["fd.name"], "/etc/shadow");
    assert!(a["line"].as_u64().unwrap() > 0);
    // The same recording as a baseline is a failure: it holds an attack.
    let o = vigil(&["rules", "test", "--baseline", rec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

fn marker_rule(path: &Path, name: &str, marker: &str) {
    std::fs::write(
        path,
        format!(
            "- rule: {name}\n  desc: d\n  priority: critical\n  condition: evt.type = execve and proc.args contains \"{marker}\"\n"
        ),
    )
    .unwrap();
}

/// An agent (with `--events`) on a rule file `r.yaml` in a fresh directory
/// holding the marker rule `rule`, polled every `poll` seconds; with the
/// file and the test's own marker.
fn agent_on_rule_file(rule: &str, poll: &str) -> (tempfile::TempDir, PathBuf, String, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    let marker = unique("--reload-marker");
    marker_rule(&f, rule, &marker);
    let agent = start_agent(&[
        "--events",
        "--rules",
        f.to_str().unwrap(),
        "--rules-poll",
        poll,
        "--drain-interval-ms",
        "10",
    ]);
    (dir, f, marker, agent)
}

fn fire(agent: &Proc, rule: &str, marker: &str) -> bool {
    let _ = Command::new("/bin/true").arg(marker).status();
    !agent
        .wait_json(
            Duration::from_secs(10),
            |v| v["type"] == "alert" && v["rule"] == rule,
            |f| !f.is_empty(),
        )
        .is_empty()
}

#[test]
fn rules_reload_on_change_and_keep_the_old_set_on_error() {
    if !kernel_tests_enabled("rules_reload_on_change_and_keep_the_old_set_on_error") {
        return;
    }
    let (_dir, f, marker, mut agent) = agent_on_rule_file("First", "1");
    let marker = marker.as_str();
    // A process started before the reload is still known after it.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    assert!(fire(&agent, "First", marker));

    marker_rule(&f, "Second", marker);
    agent.wait_stderr("rules reloaded", Duration::from_secs(20), |l| {
        l.contains("rules reloaded")
    });
    assert!(fire(&agent, "Second", marker));

    std::fs::write(
        &f,
        "- rule: Broken\n  priority: info\n  condition: proc.nme = x\n",
    )
    .unwrap();
    let line = agent.wait_stderr("reload error", Duration::from_secs(20), |l| {
        l.contains("rules not reloaded")
    });
    assert!(line.contains("r.yaml:3:14"), "{line}");
    let before = agent.json_lines().len();
    let _ = Command::new("/bin/true").arg(marker).status();
    let hits = agent.wait_json(
        Duration::from_secs(10),
        |v| v["type"] == "alert" && v["rule"] == "Second",
        |f| f.len() >= 2,
    );
    assert!(
        hits.len() >= 2,
        "the old rules stay in force ({before} lines before)"
    );

    // Reloads never restarted the probe or rebuilt the process table: the
    // sleeper, started before them, exits named by its exec.
    let pid = sleeper.id();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = sleeper.wait();
    let exit = agent.expect_json("the sleeper's exit", |v| {
        v["type"] == "exit" && v["process"]["pid"] == pid
    });
    assert_eq!(exit["process"]["argv"][1], "30");
    let log = agent.stderr_lines();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("process table bootstrapped"), 1);
    assert_eq!(count("probe attached family=\"process\""), 1);
    assert!(agent.alive());
}

#[test]
fn sighup_reloads_rules_when_polling_is_off() {
    if !kernel_tests_enabled("sighup_reloads_rules_when_polling_is_off") {
        return;
    }
    let (_dir, f, marker, mut agent) = agent_on_rule_file("Before", "0");
    let marker = marker.as_str();
    assert!(fire(&agent, "Before", marker));
    marker_rule(&f, "After", marker);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !agent
            .stderr_lines()
            .iter()
            .any(|l| l.contains("rules reloaded")),
        "no polling"
    );
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    agent.wait_stderr("rules reloaded", Duration::from_secs(20), |l| {
        l.contains("rules reloaded")
    });
    assert!(fire(&agent, "After", marker));
    assert!(agent.alive());
}

/// A reload changes what the kernel sends, not only what the agent
/// matches: the probe attaches only the syscalls the rules need and drops
/// opens outside their paths before copying them, so a rule on opens that
/// arrives by reload fires only if the reload reached the kernel.
#[test]
fn a_reload_reaches_the_kernel_filter() {
    if !kernel_tests_enabled("a_reload_reaches_the_kernel_filter") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vigil-reload-")
        .tempdir_in("/tmp")
        .unwrap();
    let f = dir.path().join("r.yaml");
    let marker = unique("--reload-marker");
    // Opens followed by nothing at first: only an exec rule is loaded.
    marker_rule(&f, "Exec only", &marker);
    let mut agent = start_agent(&["--rules", f.to_str().unwrap(), "--rules-poll", "1"]);
    assert!(fire(&agent, "Exec only", &marker));

    let open_rule = |name: &str, leaf: &str| {
        format!(
            "- rule: {name}\n  desc: d\n  priority: critical\n  condition: evt.type in (open, openat) and fd.name = \"{}\"\n",
            dir.path().join(leaf).display()
        )
    };
    // Whether opening `leaf` raises a new alert of `rule` for it.
    let opened = |agent: &Proc, leaf: &str, rule: &str| {
        let p = dir.path().join(leaf);
        let p = p.to_str().unwrap();
        let is_hit = |v: &serde_json::Value| {
            v["type"] == "alert" && v["rule"] == rule && v["process"]["argv"][1] == p
        };
        let before = agent.json_lines().iter().filter(|v| is_hit(v)).count();
        let st = Command::new("sh")
            .args(["-c", &format!("cat {p} > /dev/null")])
            .status()
            .unwrap();
        assert!(st.success());
        agent
            .wait_json(Duration::from_secs(5), is_hit, |f| f.len() > before)
            .len()
            > before
    };
    std::fs::write(dir.path().join("first"), "x").unwrap();
    std::fs::write(dir.path().join("second"), "x").unwrap();

    std::fs::write(&f, open_rule("Open first", "first")).unwrap();
    agent.wait_stderr("first reload", Duration::from_secs(20), |l| {
        l.contains("rules reloaded")
    });
    assert!(
        opened(&agent, "first", "Open first"),
        "the open of `first` passed the kernel after the reload"
    );

    // The second reload moves the filter: `second` passes, and `first`
    // no longer raises anything.
    std::fs::write(&f, open_rule("Open second", "second")).unwrap();
    let reloads = |a: &Proc| {
        a.stderr_lines()
            .iter()
            .filter(|l| l.contains("rules reloaded"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reloads(&agent) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reloads(&agent), 2, "second reload");
    assert!(opened(&agent, "second", "Open second"));
    assert!(!opened(&agent, "first", "Open first"));
    assert!(agent.alive());
}

/// The kernel filter compares the first 63 bytes of a path: a `..` past
/// them (`/tmp/<long name>/../<watched dir>/file`) must not hide an open
/// of a watched file from the rules, which see the normalised path.
#[test]
fn a_dotdot_past_the_filter_window_does_not_hide_an_open() {
    if !kernel_tests_enabled("a_dotdot_past_the_filter_window_does_not_hide_an_open") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("vigil-window-")
        .tempdir_in("/tmp")
        .unwrap();
    let watched = dir.path().join("watched");
    let decoy = dir.path().join("d".repeat(80));
    std::fs::create_dir(&watched).unwrap();
    std::fs::create_dir(&decoy).unwrap();
    std::fs::write(watched.join("secret"), "x").unwrap();
    let f = dir.path().join("r.yaml");
    std::fs::write(
        &f,
        format!(
            "- rule: Watched open\n  desc: d\n  priority: critical\n  condition: evt.type in (open, openat) and fd.name startswith \"{}/\"\n",
            watched.display()
        ),
    )
    .unwrap();
    let agent = start_agent(&["--rules", f.to_str().unwrap()]);
    let sneaky = format!("{}/../watched/secret", decoy.display());
    assert!(
        sneaky.find("..").unwrap() > 63,
        "the `..` lies past the window"
    );
    let st = Command::new("cat").arg(&sneaky).output().unwrap();
    assert!(st.status.success());
    let want = watched.join("secret");
    let hits = agent.wait_json(
        Duration::from_secs(10),
        |v| {
            v["type"] == "alert"
                && v["rule"] == "Watched open"
                && v["process"]["argv"][1] == sneaky.as_str()
        },
        |f| !f.is_empty(),
    );
    assert_eq!(
        hits.len(),
        1,
        "the open of {} through {sneaky}",
        want.display()
    );
}
