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
    let (mut collector, url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--silent-after", "4s"]);
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

/// The agent's own bpf objects of one kind (`map_id` or `link_id` in
/// their fdinfo): (descriptor, id).
fn agent_bpf_fds(pid: u32, kind: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{kind}:")))
            .and_then(|v| v.trim().parse().ok());
        out.extend(id.map(|id| (fd, id)));
    }
    out
}

/// The probe changed from outside the agent, as an attacker with root
/// would: a key added to an exclusion map (hiding a cgroup from every
/// rule), then a program's link closed inside the agent through gdb. Each
/// raises "Probe detached or modified" within two heartbeats.
#[test]
fn a_probe_changed_from_outside_raises_an_alert() {
    if !kernel_tests_enabled("a_probe_changed_from_outside_raises_an_alert") {
        return;
    }
    const HEARTBEAT: u64 = 5;
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let host = hostname();
    let mut agent = start_agent(&[
        "--collector",
        &url,
        "--heartbeat-interval",
        &format!("{HEARTBEAT}s"),
    ]);
    wait_agent(&url, &host, 30, |a| a["state"] == "ok");
    let within_two_heartbeats = |rule_text: &str| {
        let t = Instant::now();
        let found = query_until(
            &url,
            &["--rule", "Probe detached or modified"],
            Duration::from_secs(2 * HEARTBEAT),
            |v| {
                v.iter()
                    .any(|a| a["output"].as_str().unwrap_or("").contains(rule_text))
            },
        );
        let a = found
            .iter()
            .find(|a| a["output"].as_str().unwrap_or("").contains(rule_text))
            .unwrap_or_else(|| {
                panic!("no alert naming {rule_text:?} within two heartbeats: {found:?}")
            });
        assert_eq!(a["host"]["hostname"], host.as_str());
        assert_eq!(a["severity"], "critical");
        t.elapsed()
    };

    // A cgroup id slipped into the agent's exclusion map.
    let (_, map_id) = agent_bpf_fds(agent.pid(), "map_id")
        .into_iter()
        .find(|(_, id)| {
            aya::maps::MapInfo::from_id(*id)
                .ok()
                .is_some_and(|i| i.name_as_str() == Some("EXCLUDED_CGROUP")) // 15 characters kept
        })
        .expect("the agent holds EXCLUDED_CGROUPS");
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_id(map_id).unwrap()).unwrap();
    let mut excluded: aya::maps::HashMap<_, u64, u8> = aya::maps::HashMap::try_from(map).unwrap();
    excluded.insert(4242u64, 1, 0).unwrap();
    let took = within_two_heartbeats("EXCLUDED_CGROUPS: 1 keys added");
    eprintln!("exclusion map change reported after {took:?}");
    let a = wait_agent(&url, &host, 2 * HEARTBEAT, |a| a["state"] == "degraded");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("probe maps changed from outside the agent"),
        "{a}"
    );
    // Put back: the agent is whole again.
    excluded.remove(&4242u64).unwrap();
    wait_agent(&url, &host, 3 * HEARTBEAT, |a| a["state"] == "ok");
    agent.wait_stderr("whole again", Duration::from_secs(10), |l| {
        l.contains("the probe is whole again")
    });

    // A program's link closed inside the agent (the only reference that
    // keeps it attached): the kernel detaches it.
    let links = agent_bpf_fds(agent.pid(), "link_id");
    assert!(links.len() > 3, "the agent's links: {links:?}");
    let (fd, _) = links[0];
    let gdb = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &agent.pid().to_string()])
        .args(["-ex", &format!("call (int)close({fd})")])
        .output()
        .expect("gdb (on the image; apt-get install gdb)");
    assert!(
        gdb.status.success(),
        "gdb: {}",
        String::from_utf8_lossy(&gdb.stderr)
    );
    let took = within_two_heartbeats("probe programs missing");
    eprintln!("detached program reported after {took:?}");
    agent.wait_stderr("detached", Duration::from_secs(10), |l| {
        l.contains("probe programs detached from outside the agent")
    });
    assert!(agent.alive(), "the agent keeps running with what is left");
    agent.kill();
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

#[test]
fn the_collector_serves_metrics_and_health() {
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let maddr = collector.logged_addr("metrics on /metrics", "metrics");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = CollectorClient::connect(url.clone()).await.unwrap();
        let host = HostInfo {
            hostname: "m-1".into(),
            ..Default::default()
        };
        let batch = vigil_proto::v1::AlertBatch {
            activity: Vec::new(),
            host: Some(host.clone()),
            seq: 1,
            alerts: vec![vigil_proto::v1::Alert {
                id: unique("metric-alert"),
                rule: "Shell \"spawned\"".into(),
                severity: 4,
                time_unix_ns: 1,
                ..Default::default()
            }],
        };
        let mut acks = c
            .stream_alerts(tokio_stream::iter(vec![batch]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(acks.message().await.unwrap().unwrap().seq, 1);
        c.heartbeat(AgentHeartbeat {
            host: Some(host),
            interval_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let (code, body) = http_get(&maddr, "/metrics");
    assert_eq!(code, 200, "{body}");
    for want in [
        "vigil_collector_batches_total{result=\"stored\"} 1",
        "vigil_collector_alerts_stored_total 1",
        "vigil_collector_alerts_total{rule=\"Shell \\\"spawned\\\"\",severity=\"warning\"} 1",
        "vigil_collector_agents{state=\"ok\"} 1",
        "vigil_collector_ingest_seconds_count 1",
        "# TYPE vigil_collector_ingest_seconds histogram",
        "vigil_collector_store_bytes ",
    ] {
        assert!(body.contains(want), "no `{want}` in:\n{body}");
    }
    assert_eq!(http_get(&maddr, "/healthz").0, 200);
    assert_eq!(http_get(&maddr, "/readyz").0, 200);
    assert_eq!(http_get(&maddr, "/nope").0, 404);
    assert!(collector.stop().success());
}

#[test]
fn the_agent_serves_metrics_when_asked() {
    if !kernel_tests_enabled("the_agent_serves_metrics_when_asked") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let marker = unique("--vigil-metrics");
    let rule = unique("metrics rule");
    let rules = data.path().join("r.yaml");
    std::fs::write(
        &rules,
        format!("- rule: {rule}\n  desc: d\n  priority: notice\n  condition: evt.type = execve and proc.args contains \"{marker}\"\n"),
    )
    .unwrap();
    // A collector that is not there: the alert waits in the spool.
    let mut agent = start_agent(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--collector",
        &format!("http://127.0.0.1:{}", free_port()),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let maddr = agent.logged_addr("metrics on /metrics", "metrics");
    Command::new("/bin/true").arg(&marker).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("vigil_agent_alerts_total{{rule=\"{rule}\",severity=\"notice\"}} 1");
    loop {
        let (code, body) = http_get(&maddr, "/metrics");
        assert_eq!(code, 200);
        if body.contains(&want) {
            assert!(
                body.contains("vigil_agent_events_total{kind=\"exec\"}"),
                "{body}"
            );
            assert!(
                body.contains(
                    "vigil_agent_probe_attachments{program=\"syscall_exit\",kind=\"attached\"}"
                ),
                "{body}"
            );
            assert!(
                body.contains("vigil_agent_lost_total{place=\"kernel:exec\"} 0"),
                "{body}"
            );
            if !body.contains("vigil_agent_spool_alerts 1") {
                // The forwarder has not spooled it yet.
                assert!(Instant::now() < deadline, "{body}");
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            assert!(!body.contains("vigil_agent_spool_bytes 0\n"), "{body}");
            assert!(body.contains("vigil_agent_spool_bytes "), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no `{want}` in:\n{body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(http_get(&maddr, "/readyz").0, 200);
    assert!(agent.stop().success());
}
