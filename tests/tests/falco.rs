//! Falco's own upstream rules on the real agent: loaded as they are
//! (`--unsupported absent`), their file rules fire on real opens, through
//! Falco's open_read/open_write macros (`fd.num >= 0`) and its
//! `never_true` exceptions (`evt.num = 0`), and stay quiet on near misses.
use std::{process::Command, time::Duration};

use vigil_tests::*;

const FALCO_STABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/falco/falco_rules.yaml");

#[test]
fn falco_upstream_file_rules_fire_on_the_real_agent() {
    if !kernel_tests_enabled("falco_upstream_file_rules_fire_on_the_real_agent") {
        return;
    }
    let mut agent = start_agent(&[
        "--events",
        "process",
        "--rules",
        FALCO_STABLE,
        "--unsupported",
        "absent",
        "--drain-interval-ms",
        "10",
    ]);
    let alert_of = |agent: &Proc, rule: &str, pid: u32| {
        agent.wait_json(
            Duration::from_secs(15),
            |v| v["type"] == "alert" && v["rule"] == rule && v["process"]["pid"] == pid,
            |f| !f.is_empty(),
        )
    };
    // Near misses first: a file that is not sensitive, a log appended to.
    let quiet_read = Command::new("cat").arg("/etc/hostname").output().unwrap();
    assert!(quiet_read.status.success());
    let log = format!("/var/log/{}.log", unique("vigil-falco"));
    let append = Command::new("sh")
        .args(["-c", &format!("echo x >> {log}")])
        .spawn()
        .unwrap();
    let append_pid = append.id();
    append.wait_with_output().unwrap();

    let shadow = Command::new("cat")
        .arg("/etc/shadow")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let shadow_pid = shadow.id();
    shadow.wait_with_output().unwrap();
    let a = alert_of(&agent, "Read sensitive file untrusted", shadow_pid);
    assert_eq!(a.len(), 1, "{:?}", agent.stderr_lines());
    assert_eq!(a[0]["fields"]["fd.name"], "/etc/shadow");

    let truncate = Command::new("sh")
        .args(["-c", &format!(": > {log}")])
        .spawn()
        .unwrap();
    let truncate_pid = truncate.id();
    truncate.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&log);
    let a = alert_of(&agent, "Clear Log Activities", truncate_pid);
    assert_eq!(a.len(), 1);

    agent.settle(ENRICH_WAIT);
    let wrong: Vec<_> = agent
        .json_lines()
        .into_iter()
        .filter(|v| {
            v["type"] == "alert"
                && (v["process"]["pid"] == append_pid || v["fields"]["fd.name"] == "/etc/hostname")
        })
        .collect();
    assert!(wrong.is_empty(), "near misses alerted: {wrong:#?}");
    assert!(agent.alive());
    agent.stop();
}
