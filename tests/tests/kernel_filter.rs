//! The kernel's open filter by file name, on the real probe: a rule that
//! tests a path's last component (`fd.filename`, `fd.name endswith /x`)
//! is narrowed in the kernel by that name, and every open the rule can
//! match still reaches it, including a directory opened through a path
//! ending in `/`, whose name the probe does not isolate.
use std::{process::Command, time::Duration};

use vigil_tests::*;

const RULES: &str = r#"
- rule: Named file opened
  desc: t
  priority: WARNING
  output: named %fd.name
  condition: evt.type in (open, openat, openat2) and fd.filename = vigil-named-probe
- rule: Named directory opened
  desc: t
  priority: WARNING
  output: dir %fd.name
  condition: evt.type in (open, openat, openat2) and fd.name endswith /vigil-dir-probe
"#;

#[test]
fn opens_a_name_rule_matches_pass_the_kernel_filter() {
    if !kernel_tests_enabled("opens_a_name_rule_matches_pass_the_kernel_filter") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let agent = start_agent(&[
        "--events",
        "process",
        "--rules",
        rules.to_str().unwrap(),
        "--drain-interval-ms",
        "10",
    ]);
    assert!(
        agent
            .stderr_lines()
            .iter()
            .any(|l| l.contains("2 file names")),
        "the rules' names go to the kernel: {:?}",
        agent.stderr_lines()
    );
    let named = dir.path().join("vigil-named-probe");
    let longer = dir.path().join("vigil-named-probe2");
    let sub = dir.path().join("vigil-dir-probe");
    std::fs::write(&named, b"x").unwrap();
    std::fs::write(&longer, b"x").unwrap();
    std::fs::create_dir(&sub).unwrap();
    let cat = |p: &str| Command::new("cat").arg(p).output().unwrap();
    cat(longer.to_str().unwrap());
    cat(named.to_str().unwrap());
    // `ls DIR/` opens the directory through a path ending in `/`.
    let with_slash = format!("{}/", sub.display());
    assert!(Command::new("ls")
        .arg(&with_slash)
        .status()
        .unwrap()
        .success());
    let alerts = |rule: &'static str| {
        agent.wait_json(
            Duration::from_secs(15),
            move |v| v["type"] == "alert" && v["rule"] == rule,
            |f| !f.is_empty(),
        )
    };
    let a = alerts("Named file opened");
    assert_eq!(a[0]["fields"]["fd.name"], named.to_str().unwrap());
    let d = alerts("Named directory opened");
    assert_eq!(d[0]["fields"]["fd.name"], sub.to_str().unwrap());
    agent.settle(Duration::from_millis(500));
    // The test's own writes of the file alert too; the longer name never.
    let longer = longer.to_str().unwrap();
    let wrong: Vec<_> = agent
        .json_lines()
        .into_iter()
        .filter(|v| v["type"] == "alert" && v["fields"]["fd.name"] == longer)
        .collect();
    assert!(wrong.is_empty(), "only the exact name: {wrong:#?}");
}
