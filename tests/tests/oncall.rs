//! On call, end to end: alerts from the real agent fold into one group in
//! the real collector, and a responder moves the group through its
//! lifecycle with the real CLI; every change lands in the group's audit
//! trail with who made it (the local user over plaintext loopback, the
//! certificate's name over mutual TLS).
use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use vigil_tests::*;

/// `vigil-collector ARGS...` (the caller adds the connection flags).
fn cli(args: &[&str]) -> Output {
    Command::new(bin("vigil-collector"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected a refusal containing {needle:?}"
    );
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A rule file firing on every run of `marker`.
fn marker_rules(dir: &Path, rule: &str, marker: &Path) -> String {
    let f = dir.join("oncall.yaml");
    std::fs::write(
        &f,
        format!(
            "- rule: {rule}\n  desc: d\n  priority: error\n  condition: evt.type = execve and proc.exepath = \"{}\"\n  output: marker ran (%proc.exepath)\n",
            marker.display()
        ),
    )
    .unwrap();
    f.display().to_string()
}

fn run(marker: &Path, times: usize) {
    for _ in 0..times {
        assert!(Command::new(marker).status().unwrap().success());
    }
}

fn alerts_fold_into_a_group_that_responders_work_and_audit() {
    if !kernel_tests_enabled("alerts_fold_into_a_group_that_responders_work_and_audit") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let (dir, marker) = marker_binary("/bin/true", "oncall-marker");
    let rule = unique("Oncall marker");
    let rules = marker_rules(dir.path(), &rule, &marker);
    let mut agent = start_agent(&["--collector", &url, "--rules", &rules]);
    run(&marker, 3);
    let alerts = query_until(&url, &["--rule", &rule], Duration::from_secs(20), |v| {
        v.len() >= 3
    });
    assert_eq!(alerts.len(), 3);

    // One group: same rule, host and key.
    let q = |extra: &[&str]| {
        let mut args = vec!["query", "--server", &url, "groups", "--json"];
        args.extend_from_slice(extra);
        json_lines(&ok(&cli(&args)))
    };
    let groups: Vec<_> = q(&[])
        .into_iter()
        .filter(|g| g["rule"] == rule.as_str())
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    let id = g["id"].as_str().unwrap().to_string();
    assert_eq!(g["state"], "open");
    assert_eq!(g["count"], 3);
    assert_eq!(g["severity"], "error");
    assert_eq!(g["host"], hostname().as_str());
    assert_eq!(g["container"], "host");
    assert_eq!(g["key"]["proc.exepath"], marker.to_str().unwrap(), "{g}");
    for a in &alerts {
        assert_eq!(a["group_id"], id.as_str(), "{a}");
    }

    let alert = |args: &[&str]| {
        let mut all = vec!["alert", "--server", &url];
        all.extend_from_slice(args);
        cli(&all)
    };
    // Acknowledged through one of its alerts' ids.
    let out = ok(&alert(&[
        "ack",
        alerts[0]["id"].as_str().unwrap(),
        "--note",
        "looking",
    ]));
    assert!(out.contains("acknowledged"), "{out}");
    refused(&alert(&["ack", &id]), "acknowledged already");
    ok(&alert(&["assign", &id, "--to", "alice"]));
    ok(&alert(&["note", &id, "the backup job runs it"]));
    refused(
        &alert(&["resolve", &id, "--reason", "maybe"]),
        "false_positive",
    );
    let out = ok(&alert(&[
        "resolve",
        &id,
        "--reason",
        "false_positive",
        "--note",
        "backup",
    ]));
    assert!(out.contains("resolved/false_positive"), "{out}");
    assert!(out.contains("alice"), "{out}");
    refused(
        &alert(&["close", &id, "--reason", "benign"]),
        "is resolved (false_positive)",
    );
    refused(
        &alert(&["ack", "no-such-id"]),
        "no alert group or alert with id no-such-id",
    );
    assert!(q(&["--state", "open"])
        .iter()
        .all(|g| g["id"] != id.as_str()));

    // A new alert reopens the group, and says so.
    run(&marker, 1);
    query_until(&url, &["--rule", &rule], Duration::from_secs(20), |v| {
        v.len() >= 4
    });
    let open = q(&["--state", "open"]);
    let g = open
        .iter()
        .find(|g| g["id"] == id.as_str())
        .unwrap_or_else(|| panic!("not reopened: {open:?}"));
    assert_eq!(g["count"], 4);
    assert_eq!(g["assignee"], "alice", "the assignee stays");

    // The trail survives a restart of the collector.
    assert!(collector.stop().success());
    let (mut collector, url2) = start_collector(data.path(), "127.0.0.1:0");
    let trail = json_lines(&ok(&cli(&[
        "alert", "--server", &url2, "history", &id, "--json",
    ])));
    let actions: Vec<&str> = trail
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "opened",
            "acknowledged",
            "assigned",
            "note",
            "resolved",
            "reopened"
        ],
        "{trail:?}"
    );
    let me = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    for e in &trail {
        match e["action"].as_str().unwrap() {
            "opened" | "reopened" => assert_eq!(e["actor"], "vigil"),
            _ => {
                assert_eq!(e["actor"], format!("local:{me}").as_str(), "{e}");
                assert!(
                    e["client"].as_str().unwrap().starts_with("127.0.0.1:"),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(trail[1]["detail"], "looking");
    assert_eq!(trail[2]["detail"], "to alice");
    assert_eq!(trail[4]["detail"], "as false_positive: backup");
    assert!(
        trail[5]["detail"]
            .as_str()
            .unwrap()
            .contains("was resolved as false_positive"),
        "{}",
        trail[5]
    );
    // The table form names the same changes.
    let table = ok(&cli(&["alert", "--server", &url2, "history", &id]));
    assert_eq!(table.lines().count(), 6, "{table}");
    agent.kill();
    assert!(collector.stop().success());
}

fn over_mutual_tls_the_certificate_names_the_actor() {
    if !kernel_tests_enabled("over_mutual_tls_the_certificate_names_the_actor") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let p = pki_dir.to_str().unwrap();
    let host = hostname();
    pki(&["init", p]);
    pki(&["issue", p, "--agent", &host]);
    pki(&["issue", p, "--responder", "alice"]);
    let (mut collector, url) = start_tls_collector(dir.path(), &pki_dir);
    let (mdir, marker) = marker_binary("/bin/true", "oncall-tls-marker");
    let rule = unique("Oncall TLS marker");
    let rules = marker_rules(mdir.path(), &rule, &marker);
    let agent_files = |ext: &str| pki_dir.join(format!("agents/{host}.{ext}"));
    let mut agent = start_agent(&[
        "--collector",
        &url,
        "--tls-cert",
        agent_files("crt").to_str().unwrap(),
        "--tls-key",
        agent_files("key").to_str().unwrap(),
        "--ca",
        pki_dir.join("ca.crt").to_str().unwrap(),
        "--rules",
        &rules,
    ]);
    run(&marker, 1);
    let as_alice = |args: &[&str]| {
        let mut all = vec![args[0], "--server", &url, "--pki", p, "--as", "alice"];
        all.extend_from_slice(&args[1..]);
        cli(&all)
    };
    let mut groups = Vec::new();
    for _ in 0..100 {
        groups = json_lines(&ok(&as_alice(&["query", "groups", "--json"])))
            .into_iter()
            .filter(|g| g["rule"] == rule.as_str())
            .collect();
        if !groups.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(groups.len(), 1, "no group for the alert");
    let id = groups[0]["id"].as_str().unwrap();
    ok(&as_alice(&["alert", "ack", id]));
    // An agent's certificate may not change groups.
    let agent_says = cli(&[
        "alert",
        "--server",
        &url,
        "--tls-cert",
        agent_files("crt").to_str().unwrap(),
        "--tls-key",
        agent_files("key").to_str().unwrap(),
        "--ca",
        pki_dir.join("ca.crt").to_str().unwrap(),
        "ack",
        id,
    ]);
    refused(&agent_says, "permission denied");
    let trail = json_lines(&ok(&as_alice(&["alert", "history", id, "--json"])));
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[1]["action"], "acknowledged");
    assert_eq!(trail[1]["actor"], "responder:alice");
    agent.kill();
    assert!(collector.stop().success());
}

fn a_silence_marks_the_alerts_it_matches_and_ends_when_expired() {
    if !kernel_tests_enabled("a_silence_marks_the_alerts_it_matches_and_ends_when_expired") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let (dir, marker) = marker_binary("/bin/true", "oncall-silenced");
    let rule = unique("Oncall silenced marker");
    let rules = marker_rules(dir.path(), &rule, &marker);
    let mut agent = start_agent(&["--collector", &url, "--rules", &rules]);
    let silence = |args: &[&str]| {
        let mut all = vec!["silence", "--server", &url];
        all.extend_from_slice(args);
        cli(&all)
    };
    refused(
        &silence(&["add", "--match", "nonsense", "--for", "1h", "--reason", "x"]),
        "FIELD=VALUE",
    );
    refused(
        &silence(&[
            "add",
            "--match",
            "severity>=loud",
            "--for",
            "1h",
            "--reason",
            "x",
        ]),
        "not a severity",
    );
    let rule_m = format!("rule={rule}");
    let host_m = format!("host={}", hostname());
    ok(&silence(&[
        "add",
        "--match",
        &rule_m,
        "--match",
        &host_m,
        "--match",
        "severity>=warning",
        "--for",
        "1h",
        "--reason",
        "deploy window",
    ]));
    // Another silence that must not match (another host).
    ok(&silence(&[
        "add",
        "--match",
        &rule_m,
        "--match",
        "host=elsewhere",
        "--for",
        "1h",
        "--reason",
        "other",
    ]));
    let list = json_lines(&ok(&silence(&["list", "--json"])));
    let id = list
        .iter()
        .find(|s| s["reason"] == "deploy window")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    run(&marker, 1);
    let stored = query_until(&url, &["--rule", &rule], Duration::from_secs(20), |v| {
        !v.is_empty()
    });
    assert_eq!(stored[0]["silenced_by"], id.as_str(), "{}", stored[0]);
    let list = json_lines(&ok(&silence(&["list", "--json"])));
    let s = list.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(s["matched"], 1);
    assert_eq!(s["active"], true);
    assert!(
        s["created_by"].as_str().unwrap().starts_with("local:"),
        "{s}"
    );
    assert_eq!(
        s["matchers"],
        serde_json::json!([rule_m, host_m, "severity>=warning"])
    );
    // Stored and counted in its group like any alert.
    let groups = json_lines(&ok(&cli(&["query", "--server", &url, "groups", "--json"])));
    assert_eq!(
        groups.iter().find(|g| g["rule"] == rule.as_str()).unwrap()["count"],
        1
    );

    // Ended: gone from the live list, kept with --all, and the next alert
    // is not silenced.
    let out = ok(&silence(&["expire", &id]));
    assert!(out.contains(&id), "{out}");
    refused(&silence(&["expire", &id]), "has ended already");
    refused(&silence(&["expire", "nope"]), "no silence with id nope");
    let live = json_lines(&ok(&silence(&["list", "--json"])));
    assert!(live.iter().all(|s| s["id"] != id.as_str()));
    let all = json_lines(&ok(&silence(&["list", "--all", "--json"])));
    let s = all.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(s["active"], false);
    assert!(
        s["expired_by"].as_str().unwrap().starts_with("local:"),
        "{s}"
    );
    run(&marker, 1);
    let stored = query_until(&url, &["--rule", &rule], Duration::from_secs(20), |v| {
        v.len() >= 2
    });
    assert!(stored[0].get("silenced_by").is_none(), "{}", stored[0]);
    agent.kill();
    assert!(collector.stop().success());
}

vigil_tests::on_both_stores!(
    alerts_fold_into_a_group_that_responders_work_and_audit,
    over_mutual_tls_the_certificate_names_the_actor,
    a_silence_marks_the_alerts_it_matches_and_ends_when_expired,
);
