//! The whole path: kernel exec -> probe -> agent -> rule -> gRPC over
//! mutual TLS -> collector -> SQLite -> query CLI.
use std::{process::Command, time::Duration};

use vigil_tests::*;

fn marker_rule(
    dir: &std::path::Path,
    rule: &str,
    exe_dir: &str,
    marker: &str,
) -> std::path::PathBuf {
    let p = dir.join("marker.yaml");
    std::fs::write(
        &p,
        format!(
            "- rule: {rule}\n  desc: test marker\n  priority: critical\n  condition: evt.type = execve and proc.exepath startswith \"{exe_dir}/\" and proc.args contains \"{marker}\"\n  tags: [test]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn exec_marker_is_stored_with_pid_path_and_argv() {
    if !kernel_tests_enabled("exec_marker_is_stored_with_pid_path_and_argv") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // The deployment the README describes: a PKI, an agent certificate
    // for this host, a responder certificate to query with.
    let pki_dir = data.path().join("pki");
    let pki_dir_s = pki_dir.to_str().unwrap();
    let host = hostname();
    pki(&["init", pki_dir_s]);
    pki(&["issue", pki_dir_s, "--agent", &host]);
    pki(&["issue", pki_dir_s, "--responder", "oncall"]);
    let (mut collector, url) = start_tls_collector(data.path(), &pki_dir);
    let as_responder = ["--pki", pki_dir_s, "--as", "oncall"];
    let marker = unique("--vigil-marker");
    let rule = unique("e2e marker rule");
    let (bin_dir, marker_bin) = marker_binary("/bin/true", "marker-true");
    let rules = marker_rule(
        data.path(),
        &rule,
        &bin_dir.path().display().to_string(),
        &marker,
    );
    let default_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
    let agent_crt = pki_dir.join(format!("agents/{host}.crt"));
    let agent_key = pki_dir.join(format!("agents/{host}.key"));
    let ca = pki_dir.join("ca.crt");
    let mut agent = start_agent(&[
        "--collector",
        &url,
        "--tls-cert",
        agent_crt.to_str().unwrap(),
        "--tls-key",
        agent_key.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
        "--rules",
        default_rules,
        "--rules",
        rules.to_str().unwrap(),
    ]);

    let child = Command::new(&marker_bin)
        .args([marker.as_str(), "two words"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());

    let alerts = query_until(
        &url,
        &[&as_responder[..], &["--rule", &rule]].concat(),
        Duration::from_secs(30),
        |a| !a.is_empty(),
    );
    assert_eq!(
        alerts.len(),
        1,
        "exactly one alert for the marker; agent log:\n{}",
        agent.stderr_lines().join("\n")
    );
    let a = &alerts[0];
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["event_type"], "exec");
    assert_eq!(a["process"]["pid"], pid);
    assert_eq!(a["process"]["ppid"], std::process::id());
    assert_eq!(a["process"]["exe"], marker_bin.to_str().unwrap());
    let argv: Vec<&str> = a["process"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        argv,
        vec![marker_bin.to_str().unwrap(), marker.as_str(), "two words"]
    );
    assert_eq!(a["process"]["argv_truncated"], false);
    assert_eq!(
        a["host"]["hostname"],
        host.as_str(),
        "stored under the certificate's host"
    );
    assert!(a["id"].as_str().unwrap().len() >= 32);

    // The default rule fired for the same exec (a binary under /tmp).
    let tmp = query_until(
        &url,
        &[
            "--pki",
            pki_dir_s,
            "--as",
            "oncall",
            "--rule",
            "Execution from a temporary directory",
            "--severity",
            "warning",
        ],
        Duration::from_secs(10),
        |a| a.iter().any(|x| x["process"]["pid"] == pid),
    );
    assert!(
        tmp.iter().any(|x| x["process"]["pid"] == pid),
        "default rule alert missing"
    );

    // Human output names the rule and the command line.
    let table = Command::new(bin("vigil-collector"))
        .args(["query", "--server", &url])
        .args(as_responder)
        .args(["alerts", "--rule", &rule])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&rule) && table.contains("two words"),
        "{table}"
    );

    assert!(
        agent.stop().success(),
        "agent exits 0 on SIGTERM:\n{}",
        agent.stderr_lines().join("\n")
    );
    assert!(collector.stop().success());
}

#[test]
fn agent_keeps_running_and_delivers_once_collector_appears() {
    if !kernel_tests_enabled("agent_keeps_running_and_delivers_once_collector_appears") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let marker = unique("--vigil-late");
    let rule = unique("late collector rule");
    let (bin_dir, marker_bin) = marker_binary("/bin/true", "late-true");
    let rules = marker_rule(
        data.path(),
        &rule,
        &bin_dir.path().display().to_string(),
        &marker,
    );
    let mut agent = start_agent(&["--collector", &url, "--rules", rules.to_str().unwrap()]);
    agent.wait_stderr("retry log", Duration::from_secs(20), |l| {
        l.contains("collector unreachable")
    });

    let status = Command::new(&marker_bin).arg(&marker).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.alive(), "agent must keep running without a collector");

    let (mut collector, url2) = start_collector(data.path(), &format!("127.0.0.1:{port}"));
    assert_eq!(url, url2);
    let alerts = query_until(&url, &["--rule", &rule], Duration::from_secs(45), |a| {
        !a.is_empty()
    });
    assert_eq!(
        alerts.len(),
        1,
        "alert kept and delivered after the collector came up:\n{}",
        agent.stderr_lines().join("\n")
    );
    assert_eq!(alerts[0]["process"]["exe"], marker_bin.to_str().unwrap());
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}
