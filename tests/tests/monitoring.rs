//! Silence means nothing happened: the collector's agent registry, fed by
//! heartbeats, and its own alerts when an agent falls silent, reports a
//! probe program missing, or reports losses.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use vigil_proto::v1::{
    collector_client::CollectorClient, AgentHeartbeat, HostInfo, LossCount, ProbeProgram,
};
use vigil_tests::*;

/// `vigil-collector query agents --json` against `url` (plaintext).
fn agents(url: &str) -> Vec<serde_json::Value> {
    let out = Command::new(bin("vigil-collector"))
        .args(["query", "--server", url, "agents", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the agent of `host` satisfies `pred`; returns it.
fn wait_agent(
    url: &str,
    host: &str,
    secs: u64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let list = agents(url);
        if let Some(a) = list.iter().find(|a| a["host"] == host && pred(a)) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "agent {host} never got there: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_agent_is_reported_silent() {
    if !kernel_tests_enabled("a_killed_agent_is_reported_silent") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("vigil-collector"));
    cmd.args([
        "serve",
        "--insecure-plaintext",
        "--listen",
        "127.0.0.1:0",
        "--silent-after",
        "4s",
        "--db",
    ])
    .arg(data.path().join("a.db"));
    let mut collector = Proc::spawn("vigil-collector", cmd);
    let line = collector.wait_stderr("serving", Duration::from_secs(20), |l| {
        l.contains("collector serving")
    });
    let addr = line
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let url = format!("http://{addr}");
    let host = hostname();
    let mut agent = start_agent(&["--collector", &url, "--heartbeat-interval", "1s"]);

    // Alive, every program attached (read from the kernel's link table).
    let a = wait_agent(&url, &host, 20, |a| a["state"] == "ok");
    let programs = a["programs"].as_array().unwrap();
    assert!(
        programs
            .iter()
            .any(|p| p["name"] == "syscall_exit" && p["attached"].as_u64() > Some(0)),
        "{a}"
    );
    for p in programs {
        assert_eq!(p["attached"], p["expected"], "{a}");
    }
    assert_eq!(a["version"], env!("CARGO_PKG_VERSION"));
    assert!(a["rules"].as_u64().unwrap() > 10);
    assert_eq!(a["rules_digest"].as_str().unwrap().len(), 64);
    assert!(a["rss_bytes"].as_u64().unwrap() > 1 << 20);

    // Killed: silent within the configured time, with an alert of its own.
    let killed = Instant::now();
    agent.kill();
    let a = wait_agent(&url, &host, 15, |a| a["state"] == "silent");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert!(
        a["reason"].as_str().unwrap().contains("no heartbeat"),
        "{a}"
    );
    let silent = query_until(
        &url,
        &["--rule", "Agent silent"],
        Duration::from_secs(5),
        |v| !v.is_empty(),
    );
    assert_eq!(silent.len(), 1, "raised once");
    assert_eq!(silent[0]["host"]["hostname"], host.as_str());
    assert_eq!(silent[0]["severity"], "critical");

    // Back: ok again.
    let mut agent = start_agent(&["--collector", &url, "--heartbeat-interval", "1s"]);
    wait_agent(&url, &host, 20, |a| a["state"] == "ok");
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}

#[test]
fn detached_programs_and_losses_raise_alerts() {
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let hb = |attached: u32, lost: u64| AgentHeartbeat {
        host: Some(HostInfo {
            hostname: "web-7".into(),
            agent_version: "9.9.9".into(),
            ..Default::default()
        }),
        interval_ms: 60_000,
        programs: vec![ProbeProgram {
            name: "syscall_exit".into(),
            expected: 30,
            attached,
        }],
        losses: (lost > 0)
            .then(|| LossCount {
                place: "kernel:file".into(),
                count: lost,
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |h: AgentHeartbeat| {
        rt.block_on(async {
            let mut c = CollectorClient::connect(url.clone()).await.unwrap();
            c.heartbeat(h).await.unwrap();
        })
    };
    send(hb(30, 0));
    assert_eq!(wait_agent(&url, "web-7", 5, |_| true)["state"], "ok");
    send(hb(12, 0));
    let a = wait_agent(&url, "web-7", 5, |a| a["state"] == "degraded");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("syscall_exit (12 of 30"),
        "{a}"
    );
    let d = query_until(
        &url,
        &["--rule", "Probe detached or modified"],
        Duration::from_secs(5),
        |v| !v.is_empty(),
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["host"]["hostname"], "web-7");

    send(hb(30, 4096));
    let l = query_until(
        &url,
        &["--rule", "Events lost"],
        Duration::from_secs(5),
        |v| !v.is_empty(),
    );
    assert_eq!(l.len(), 1);
    assert!(
        l[0]["output"]
            .as_str()
            .unwrap()
            .contains("4096 kernel:file"),
        "{}",
        l[0]
    );
    send(hb(30, 0));
    assert_eq!(
        wait_agent(&url, "web-7", 5, |a| a["state"] == "ok")["version"],
        "9.9.9"
    );
    assert!(collector.stop().success());
}
