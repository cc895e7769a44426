//! Investigation, end to end: the real agent streams activity beside its
//! alerts over mutual TLS to the real collector, and a responder asks with
//! the real CLI what a dropped program and its family did (`query tree`),
//! what happened around its alert (`query timeline --around`), where the
//! program shows up (`query pivot --sha256`) and exports it all; after the
//! processes are gone and the agent restarted, the answers are the same.
use std::{
    io::Read,
    net::TcpListener,
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest, Sha256};
use vigil_tests::*;

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Asks `f` until `done` holds for its answer, for up to 30 s.
fn until<T: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = f();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never came; last answer: {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn argv(node: &Value) -> String {
    node["process"]["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[test]
fn a_dropped_program_is_traced_through_its_tree_timeline_and_pivot() {
    if !kernel_tests_enabled("a_dropped_program_is_traced_through_its_tree_timeline_and_pivot") {
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
    let agent_files = |ext: &str| pki_dir.join(format!("agents/{host}.{ext}"));
    let spool = tempfile::tempdir().unwrap();
    let agent_args = [
        "--collector",
        &url,
        "--tls-cert",
        agent_files("crt").to_str().unwrap(),
        "--tls-key",
        agent_files("key").to_str().unwrap(),
        "--ca",
        pki_dir.join("ca.crt").to_str().unwrap(),
        "--spool-dir",
        spool.path().to_str().unwrap(),
        "--heartbeat-interval",
        "1s",
        // Hashing the payload (a 5 MB debug binary) takes a debug agent
        // longer than the default wait.
        "--enrich-wait-ms",
        "5000",
    ]
    .map(String::from);
    let agent_argv: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let mut agent = start_agent(&agent_argv);
    let cli = |args: &[&str]| -> String {
        let mut all = vec![args[0], "--server", &url, "--pki", p, "--as", "alice"];
        all.extend_from_slice(&args[1..]);
        ok(&Command::new(bin("vigil-collector"))
            .args(&all)
            .output()
            .unwrap())
    };

    // Where the payload phones home.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut b = [0u8; 2];
            let _ = s.read(&mut b);
        }
    });
    // The payload: a copy of the helper made unique (its hash is this
    // test's alone), dropped in /tmp and run by sh from a bash script.
    let (drop_dir, dropper) = marker_binary(bin("vigil-test-helper").to_str().unwrap(), "payload");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&dropper)
            .unwrap();
        f.write_all(unique("payload").as_bytes()).unwrap();
    }
    let sha = hex(&Sha256::digest(std::fs::read(&dropper).unwrap()));
    let script = drop_dir.path().join("stage.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nsh -c '{} connect-read {port} /etc/shadow; true'\necho staged\n",
            dropper.display()
        ),
    )
    .unwrap();
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("staged"));
    let exe = dropper.to_str().unwrap();

    // The alert for the run from /tmp.
    let alerts = until(
        "the alert for the dropped program",
        || {
            json_lines(&cli(&[
                "query",
                "alerts",
                "--rule",
                "Execution from a temporary directory",
                "--json",
            ]))
        },
        |v| v.iter().any(|a| a["process"]["exe"] == exe),
    );
    let alert = alerts.iter().find(|a| a["process"]["exe"] == exe).unwrap();
    let id = alert["id"].as_str().unwrap().to_string();
    let dropper_pid = alert["process"]["pid"].as_u64().unwrap();

    // The tree: bash → sh → payload, with command lines and the
    // connection; asked until every process's exit has arrived.
    let tree = until(
        "the tree with all three generations exited and the connection",
        || json_lines(&cli(&["query", "tree", &id, "--json"])),
        |nodes| {
            let me = nodes.iter().find(|n| n["role"] == "alerting");
            let connected = me.is_some_and(|n| {
                n["events"].as_array().unwrap().iter().any(|e| {
                    e["kind"] == "connect"
                        && e["remote_port"] == port
                        && e["remote_addr"] == "127.0.0.1"
                })
            });
            let exited = nodes
                .iter()
                .filter(|n| {
                    let a = argv(n);
                    a.contains("stage.sh") || a.starts_with("sh -c") || n["process"]["exe"] == exe
                })
                .filter(|n| n["exited"] == true)
                .count();
            connected && exited >= 3
        },
    );
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| {
        tree.iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {tree:#?}"))
    };
    let b = find("bash", &|n| {
        argv(n).starts_with("bash ") && argv(n).contains("stage.sh")
    });
    let s = find("sh", &|n| argv(n).starts_with("sh -c"));
    let d = find("payload", &|n| n["process"]["exe"] == exe);
    assert!(b < s && s < d, "ancestors come first: {tree:#?}");
    assert_eq!(tree[d]["role"], "alerting");
    assert_eq!(tree[b]["role"], "ancestor");
    assert_eq!(tree[s]["role"], "ancestor");
    let depth = |i: usize| tree[i]["depth"].as_u64().unwrap();
    assert_eq!((depth(s), depth(d)), (depth(b) + 1, depth(b) + 2));
    assert_eq!(tree[0]["process"]["pid"], 1, "up to init: {:#?}", tree[0]);
    assert_eq!(tree[d]["process"]["executable"]["sha256"], sha.as_str());
    assert_eq!(tree[d]["process"]["user"], "root");
    // The file it read came with the alert its read raised, as context.
    let events: Vec<&str> = tree[d]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e.contains("/etc/shadow")),
        "{events:?}"
    );
    let drawn = cli(&["query", "tree", &id]);
    let line = |pat: &str| drawn.lines().any(|l| l.contains("└─ ") && l.contains(pat));
    assert!(line(") bash ") && line(") sh -c "), "{drawn}");
    assert!(
        drawn.contains(&format!("⚠ payload (pid {dropper_pid}")),
        "{drawn}"
    );
    assert!(
        drawn.contains(&format!("connect tcp 127.0.0.1:{port}")),
        "{drawn}"
    );

    // The timeline around the alert holds what came before it.
    let timeline = json_lines(&cli(&["query", "timeline", "--around", &id, "--json"]));
    let at = timeline
        .iter()
        .position(|e| e["id"] == id.as_str())
        .unwrap();
    let before: Vec<String> = timeline[..at]
        .iter()
        .map(|e| e["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        before
            .iter()
            .any(|s| s.contains("exec") && s.contains("stage.sh")),
        "{before:#?}"
    );
    assert!(
        before.iter().any(|s| s.starts_with("exec sh -c")),
        "{before:#?}"
    );
    let table = cli(&[
        "query",
        "timeline",
        "--host",
        &host,
        "--since",
        "10m",
        "--pid",
        &dropper_pid.to_string(),
    ]);
    assert!(table.contains("ALERT"), "{table}");

    // The pivot finds the program on this host.
    let pivot = json_lines(&cli(&["query", "pivot", "--sha256", &sha, "--json"]));
    let hosts: Vec<&Value> = pivot.iter().filter(|v| v["type"] == "host").collect();
    assert_eq!(hosts.len(), 1, "{pivot:#?}");
    assert_eq!(hosts[0]["hostname"], host.as_str());
    assert!(pivot
        .iter()
        .any(|v| v["type"] == "process" && v["process"]["pid"] == dropper_pid));

    // The export bundles all of it.
    let export = json_lines(&cli(&["export", &id]));
    let types: Vec<&str> = export.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types[..3], ["export", "alert", "group"], "{types:?}");
    assert!(types.contains(&"process") && types.contains(&"activity"));

    // The processes are gone; the agent restarts: the same answers.
    let pid_timeline = |c: &dyn Fn(&[&str]) -> String| {
        c(&[
            "query",
            "timeline",
            "--around",
            &id,
            "--pid",
            &dropper_pid.to_string(),
            "--json",
        ])
    };
    // A process still running (this test's own) may gain events between
    // the two answers; every process of the tree, and everything about
    // those that have exited, must be the same.
    let stable_tree = |text: String| -> Vec<Value> {
        json_lines(&text)
            .into_iter()
            .map(|n| {
                if n["exited"] == true {
                    n
                } else {
                    serde_json::json!([n["process"]["proc_id"], n["role"], n["depth"]])
                }
            })
            .collect()
    };
    let answers = |c: &dyn Fn(&[&str]) -> String| {
        (
            stable_tree(c(&["query", "tree", &id, "--json"])),
            pid_timeline(c),
            c(&["query", "pivot", "--sha256", &sha, "--json"]),
        )
    };
    let first = answers(&cli);
    assert!(agent.stop().success());
    let mut agent = start_agent(&agent_argv);
    std::thread::sleep(Duration::from_secs(2));
    let second = answers(&cli);
    assert_eq!(first.0, second.0, "tree");
    assert_eq!(first.1, second.1, "timeline");
    assert_eq!(first.2, second.2, "pivot");
    agent.kill();
    assert!(collector.stop().success());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `GET /metrics` over plain HTTP.
fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_rate_cap_and_exclusions_leave_out_activity_and_count_it() {
    if !kernel_tests_enabled("the_rate_cap_and_exclusions_leave_out_activity_and_count_it") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    // Outside /tmp, /var/tmp and /dev/shm (where the checkout itself may
    // be), and under true's own name (a renamed copy of a system binary
    // alerts): no default rule alerts on them, and an alert would name the
    // process whatever the activity settings.
    let dir = tempfile::Builder::new()
        .prefix("vigil-activity-")
        .tempdir_in("/run")
        .unwrap();
    std::fs::create_dir(dir.path().join("noisy")).unwrap();
    std::fs::create_dir(dir.path().join("capped")).unwrap();
    let noisy = dir.path().join("noisy/true");
    let capped = dir.path().join("capped/true");
    copy_executable("/bin/true", &noisy);
    copy_executable("/bin/true", &capped);
    let exclude = format!("proc.exepath = \"{}\"", noisy.display());
    let mut agent = start_agent(&[
        "--collector",
        &url,
        "--metrics-listen",
        "127.0.0.1:0",
        "--activity-rate",
        "20",
        "--activity-exclude",
        &exclude,
    ]);
    let maddr = agent.logged_addr("metrics on /metrics", "metrics");
    let pivot = |exe: &std::path::Path| -> Vec<Value> {
        let out = Command::new(bin("vigil-collector"))
            .args(["query", "--server", &url, "pivot", "--json", "--exe"])
            .arg(exe)
            .output()
            .unwrap();
        json_lines(&ok(&out))
    };
    for _ in 0..5 {
        assert!(Command::new(&noisy).status().unwrap().success());
    }
    // Far over 20 a second: most are left out, and counted.
    for _ in 0..300 {
        assert!(Command::new(&capped).status().unwrap().success());
    }
    let seen = until(
        "some of the capped tool's activity",
        || pivot(&capped),
        |v| v.iter().any(|x| x["type"] == "process"),
    );
    let runs = seen.iter().filter(|x| x["type"] == "process").count();
    assert!(runs < 300, "the cap let all {runs} through");
    let dropped = until(
        "activity_rate drops in the agent's metrics",
        || {
            counter(
                &scrape(&maddr),
                "vigil_agent_lost_total{place=\"activity_rate\"}",
            )
        },
        // The agent publishes its metrics once a second, so the first
        // non-zero figure may be from the flood's first moments: wait for
        // a figure only a working cap reaches (300 runs are 900 fork, exec
        // and exit records, far over 20 a second plus the burst).
        |n| *n >= 100.0,
    );
    assert!(dropped >= 100.0, "{dropped}");
    assert!(pivot(&noisy).is_empty(), "excluded activity was sent");
    agent.kill();
    assert!(collector.stop().success());
}
