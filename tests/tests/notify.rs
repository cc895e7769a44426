//! Notifications, end to end: the real collector with a notification file
//! sends to small HTTP receivers run by the test, which record every
//! request and answer as scripted (500, 429 with Retry-After, 200).
//! Alerts come from the real agent, or from a client speaking the agent's
//! protocol where only the collector's side is under test.
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use vigil_proto::v1::{collector_client::CollectorClient, Alert, AlertBatch, HostInfo};
use vigil_tests::*;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Script = Mutex<VecDeque<(u16, Option<(String, String)>)>>;

/// Reads one request from `conn`, records it, and answers it with the
/// next scripted status.
fn serve_one(mut conn: std::net::TcpStream, got: &Mutex<Vec<Got>>, script: &Script) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    // Answered under the lock, so requests take the script in order.
    let mut script = script.lock().unwrap();
    got.lock().unwrap().push(Got {
        at: Instant::now(),
        path: line.split(' ').nth(1).unwrap_or_default().to_string(),
        headers,
        body,
    });
    let (status, extra) = script.pop_front().unwrap_or((200, None));
    let extra = extra.map_or(String::new(), |(k, v)| format!("{k}: {v}\r\n"));
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n"
    );
    let _ = conn.flush();
}

/// A receiver on a fresh loopback port: (port, what it gets).
fn listening(script: Vec<(u16, Option<(&str, &str)>)>) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (l.local_addr().unwrap().port(), receiver(l, script))
}

/// An HTTP receiver on `listener`: answers each request with the next
/// scripted (status, extra headers), then 200.
fn receiver(
    listener: TcpListener,
    script: Vec<(u16, Option<(&str, &str)>)>,
) -> Arc<Mutex<Vec<Got>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let script: VecDeque<(u16, Option<(String, String)>)> = script
        .into_iter()
        .map(|(s, h)| (s, h.map(|(k, v)| (k.to_string(), v.to_string()))))
        .collect();
    let g = got.clone();
    let script = Arc::new(Mutex::new(script));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (g, script) = (g.clone(), script.clone());
            // A connection of its own thread: one that stalls cannot hold
            // up the next.
            std::thread::spawn(move || serve_one(conn, &g, &script));
        }
    });
    got
}

/// A plaintext collector whose notification file (in `dir`) is `yaml`.
fn collector_notifying(dir: &Path, yaml: &str) -> (Proc, String) {
    let f = dir.join("notify.yaml");
    std::fs::write(&f, yaml).unwrap();
    start_collector_with(dir, "127.0.0.1:0", &["--notify", f.to_str().unwrap()])
}

fn notify_file(dir: &Path, port: u16, min_severity: &str) -> String {
    std::fs::write(dir.join("hook.secret"), "s3cret\n").unwrap();
    let f = dir.join("notify.yaml");
    std::fs::write(
        &f,
        format!(
            "receivers:\n  - name: ops-hook\n    webhook: {{ url: \"http://127.0.0.1:{port}/hook\", secret_file: hook.secret }}\nroutes:\n  - match: {{ severity: \">={min_severity}\" }}\n    receivers: [ops-hook]\n"
        ),
    )
    .unwrap();
    f.display().to_string()
}

/// Waits until `got` holds `n` requests, then a little longer to see that
/// no more come; returns them.
fn settle(got: &Arc<Mutex<Vec<Got>>>, n: usize, within: Duration) -> Vec<Got> {
    let deadline = Instant::now() + within;
    while got.lock().unwrap().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    got.lock().unwrap().clone()
}

fn history(url: &str, id: &str) -> Vec<serde_json::Value> {
    let o = Command::new(bin("vigil-collector"))
        .args(["alert", "--server", url, "history", id, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends one alert of `rule` as host `host`, as an agent would.
fn send_alert(url: &str, host: &str, rule: &str, severity: i32) {
    send_alerts(url, host, rule, severity, 1);
}

/// Sends `n` alerts of `rule` in one batch.
fn send_alerts(url: &str, host: &str, rule: &str, severity: i32, n: usize) {
    let ids: Vec<String> = (0..n).map(|_| unique("id")).collect();
    send_alerts_with_ids(url, host, rule, severity, &ids);
}

/// Sends alerts of `rule` with these ids in one batch (the same ids twice:
/// a re-send).
fn send_alerts_with_ids(url: &str, host: &str, rule: &str, severity: i32, ids: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = CollectorClient::connect(url.to_string()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(AlertBatch {
            activity: Vec::new(),
            host: Some(HostInfo {
                hostname: host.into(),
                ..Default::default()
            }),
            seq: 1,
            alerts: ids
                .iter()
                .map(|id| Alert {
                    id: id.clone(),
                    rule: rule.into(),
                    severity,
                    output: "something happened".into(),
                    // Now: an old time would be pruned by the retention at once.
                    time_unix_ns: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as i64,
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap();
        let mut acks = c
            .stream_alerts(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        assert!(acks.message().await.unwrap().is_some(), "acknowledged");
    });
}

fn a_warning_reaches_the_webhook_once_signed_and_a_silenced_one_does_not() {
    if !kernel_tests_enabled(
        "a_warning_reaches_the_webhook_once_signed_and_a_silenced_one_does_not",
    ) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![]);
    let notify = notify_file(data.path(), port, "warning");
    let (mut collector, url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--notify", &notify]);
    let (dir, marker) = marker_binary("/bin/true", "notify-marker");
    let rule = unique("Notify marker");
    let quiet = unique("Notify quiet");
    let rules = dir.path().join("r.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: {rule}\n  desc: d\n  priority: warning\n  condition: evt.type = execve and proc.exepath = \"{m}\" and proc.args contains loud\n  output: marker ran loud\n\
             - rule: {quiet}\n  desc: d\n  priority: critical\n  condition: evt.type = execve and proc.exepath = \"{m}\" and proc.args contains quiet\n  output: marker ran quiet\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let mut agent = start_agent(&["--collector", &url, "--rules", rules.to_str().unwrap()]);
    let silence = Command::new(bin("vigil-collector"))
        .args([
            "silence",
            "--server",
            &url,
            "add",
            "--match",
            &format!("rule={quiet}"),
        ])
        .args(["--for", "1h", "--reason", "maintenance"])
        .output()
        .unwrap();
    assert!(
        silence.status.success(),
        "{}",
        String::from_utf8_lossy(&silence.stderr)
    );

    // Three loud runs: one group, one notification.
    for _ in 0..3 {
        assert!(Command::new(&marker)
            .arg("loud")
            .status()
            .unwrap()
            .success());
    }
    assert!(Command::new(&marker)
        .arg("quiet")
        .status()
        .unwrap()
        .success());
    query_until(&url, &["--rule", &quiet], Duration::from_secs(20), |v| {
        !v.is_empty()
    });
    query_until(&url, &["--rule", &rule], Duration::from_secs(20), |v| {
        v.len() >= 3
    });
    let reqs = settle(&got, 1, Duration::from_secs(10));
    assert_eq!(
        reqs.len(),
        1,
        "one notification for the group, none for the silenced alert: {reqs:?}"
    );
    let r = &reqs[0];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        r.header("x-vigil-signature"),
        Some(format!("sha256={want}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["event"], "opened");
    assert_eq!(body["rule"], rule.as_str());
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["host"], hostname().as_str());
    assert_eq!(body["state"], "open");
    assert_eq!(body["output"], "marker ran loud");
    let id = body["group_id"].as_str().unwrap().to_string();
    let trail = history(&url, &id);
    let sent = trail
        .iter()
        .find(|e| e["action"] == "notified")
        .expect("delivery in the history");
    assert!(
        sent["detail"]
            .as_str()
            .unwrap()
            .contains("sent to ops-hook (HTTP 200)"),
        "{sent}"
    );

    // Resolved, then seen again: the reopening notifies.
    let o = Command::new(bin("vigil-collector"))
        .args([
            "alert", "--server", &url, "resolve", &id, "--reason", "benign",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(Command::new(&marker)
        .arg("loud")
        .status()
        .unwrap()
        .success());
    let reqs = settle(&got, 2, Duration::from_secs(20));
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].json()["event"], "reopened");
    assert_eq!(reqs[1].json()["group_id"], id.as_str());
    agent.kill();
    assert!(collector.stop().success());
}

fn failures_are_retried_429_is_honoured_and_4xx_is_not_retried() {
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![
        (500, None),
        (429, Some(("Retry-After", "2"))),
        (200, None),
        (400, None),
    ]);
    let notify = notify_file(data.path(), port, "warning");
    let (mut collector, url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--notify", &notify]);
    send_alert(&url, "web-1", "Retried", 4);
    let reqs = settle(&got, 3, Duration::from_secs(20));
    assert_eq!(
        reqs.len(),
        3,
        "500, 429, then delivered: {reqs:?}\n{}",
        collector.stderr_lines().join("\n")
    );
    assert!(
        reqs[2].at - reqs[1].at >= Duration::from_millis(1900),
        "Retry-After: 2 honoured ({:?})",
        reqs[2].at - reqs[1].at
    );
    assert_eq!(reqs[0].body, reqs[2].body, "the same message each time");
    let id = reqs[2].json()["group_id"].as_str().unwrap().to_string();
    let trail = history(&url, &id);
    assert!(
        trail.iter().any(|e| e["action"] == "notified"
            && e["detail"].as_str().unwrap().contains("after 3 attempts")),
        "{trail:?}"
    );

    // A 400 is the receiver refusing the message: given up at once, and
    // said in the group's history.
    send_alert(&url, "web-2", "Refused", 5);
    let reqs = settle(&got, 4, Duration::from_secs(10));
    assert_eq!(
        reqs.len(),
        4,
        "{reqs:?}\n{}",
        collector.stderr_lines().join("\n")
    );
    let id = reqs[3].json()["group_id"].as_str().unwrap().to_string();
    let trail = history(&url, &id);
    assert!(
        trail.iter().any(|e| e["action"] == "notification failed"
            && e["detail"].as_str().unwrap().contains("HTTP 400")),
        "{trail:?}"
    );
    // Below the route's severity: nobody is told.
    send_alert(&url, "web-3", "Too quiet", 3);
    assert_eq!(settle(&got, 5, Duration::from_secs(3)).len(), 4);
    // The counts reach /metrics: one sent after two retries, one dead.
    let metrics = collector.logged_addr("metrics on", "metrics");
    let mut c = std::net::TcpStream::connect(&metrics).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    c.read_to_string(&mut page).unwrap();
    for (result, n) in [("sent", 1), ("retried", 2), ("dead", 1)] {
        let line = format!("vigil_collector_notifications_total{{result=\"{result}\"}} {n}");
        assert!(page.contains(&line), "no `{line}` in:\n{page}");
    }
    assert!(collector.stop().success());
}

fn notifications_queued_before_a_restart_are_delivered_once_after_it() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let notify = notify_file(data.path(), port, "warning");
    let (mut collector, url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--notify", &notify]);
    send_alert(&url, "web-1", "Queued", 4);
    // Nobody listens yet: the first try fails and is logged.
    collector.wait_stderr("retry", Duration::from_secs(10), |l| {
        l.contains("notification not delivered; will retry")
    });
    assert!(collector.stop().success());
    let got = receiver(TcpListener::bind(("127.0.0.1", port)).unwrap(), vec![]);
    let (mut collector, _url) =
        start_collector_with(data.path(), "127.0.0.1:0", &["--notify", &notify]);
    let reqs = settle(&got, 1, Duration::from_secs(15));
    assert_eq!(reqs.len(), 1, "delivered once after the restart: {reqs:?}");
    assert_eq!(reqs[0].json()["rule"], "Queued");
    assert!(collector.stop().success());
}

#[test]
fn a_bad_notification_file_stops_the_collector_and_names_the_place() {
    let data = tempfile::tempdir().unwrap();
    let bad = data.path().join("bad.yaml");
    let serve = |text: &str| {
        std::fs::write(&bad, text).unwrap();
        let o = Command::new(bin("vigil-collector"))
            .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "off", "--db"])
            .arg(data.path().join("a.db"))
            .arg("--notify")
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!o.status.success(), "started with {text}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = serve("receivers:\n  - name: a\n    webhok: {}\n");
    assert!(e.contains(&format!("{}:3:5: ", bad.display())), "{e}");
    let e = serve(
        "receivers:\n  - name: a\n    webhook: { url: \"http://127.0.0.1:1/\" }\nroutes:\n  - receivers: [pagr]\n",
    );
    assert!(e.contains("routes[0]: unknown receiver `pagr`"), "{e}");
}

fn pagerduty_gets_one_incident_per_group_kept_in_step_with_it() {
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![(202, None), (202, None), (202, None)]);
    std::fs::write(data.path().join("pd.key"), "R0UT1NGKEY\n").unwrap();
    let (mut collector, url) = collector_notifying(
        data.path(),
        &format!(
            "receivers:\n  - name: pager\n    pagerduty: {{ routing_key_file: pd.key, url: \"http://127.0.0.1:{port}/v2/enqueue\" }}\nroutes:\n  - match: {{ severity: \">=error\" }}\n    receivers: [pager]\n"
        ),
    );
    // Three alerts of one group: one trigger.
    for _ in 0..3 {
        send_alert(&url, "db-1", "Paged rule", 5);
    }
    let reqs = settle(&got, 1, Duration::from_secs(10));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let t = reqs[0].json();
    assert_eq!(t["routing_key"], "R0UT1NGKEY");
    assert_eq!(t["event_action"], "trigger");
    let key = t["dedup_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 20, "the group id");
    assert_eq!(t["payload"]["source"], "db-1");
    assert_eq!(t["payload"]["severity"], "error");
    assert_eq!(
        t["payload"]["summary"],
        "Paged rule on db-1: something happened"
    );
    assert!(t["payload"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(t["payload"]["custom_details"]["group_id"], key.as_str());
    assert_eq!(reqs[0].path, "/v2/enqueue");

    let cli = |args: &[&str]| {
        let o = Command::new(bin("vigil-collector"))
            .args(["alert", "--server", &url])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    cli(&["ack", &key]);
    let reqs = settle(&got, 2, Duration::from_secs(10));
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let a = reqs[1].json();
    assert_eq!(a["event_action"], "acknowledge");
    assert_eq!(a["dedup_key"], key.as_str());
    assert_eq!(a["routing_key"], "R0UT1NGKEY");
    cli(&["resolve", &key, "--reason", "true_positive"]);
    let reqs = settle(&got, 3, Duration::from_secs(10));
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].json()["event_action"], "resolve");
    assert_eq!(reqs[2].json()["dedup_key"], key.as_str());
    // Below the route's severity: not paged, and its acknowledgement is
    // not sent either.
    send_alert(&url, "db-1", "Quiet rule", 4);
    assert_eq!(settle(&got, 4, Duration::from_secs(3)).len(), 3);
    let trail = history(&url, &key);
    let sent = trail.iter().filter(|e| e["action"] == "notified").count();
    assert_eq!(sent, 3, "{trail:?}");
    assert!(collector.stop().success());
}

fn slack_gets_block_kit_within_its_limits_and_its_rate() {
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![]);
    std::fs::write(
        data.path().join("slack.url"),
        format!("http://127.0.0.1:{port}/services/T0/B0/X\n"),
    )
    .unwrap();
    let (mut collector, url) = collector_notifying(
        data.path(),
        "receivers:\n  - name: chat\n    slack: { webhook_url_file: slack.url }\nroutes:\n  - receivers: [chat]\n",
    );
    // Three groups at once (three hosts), and an output that tries to
    // mention the channel.
    for host in ["a-1", "a-2", "a-3"] {
        send_alert(&url, host, "Chatty <!channel> rule", 5);
    }
    let reqs = settle(&got, 3, Duration::from_secs(15));
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    for pair in reqs.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(900),
            "one message a second: {:?}",
            pair[1].at - pair[0].at
        );
    }
    assert_eq!(reqs[0].path, "/services/T0/B0/X");
    let m = reqs[0].json();
    assert!(
        m["text"]
            .as_str()
            .unwrap()
            .starts_with("[error] Chatty &lt;!channel&gt; rule on a-"),
        "{m}"
    );
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    assert_eq!(blocks[1]["text"]["text"], "something happened");
    let fields = blocks[2]["fields"].as_array().unwrap();
    assert!(fields.len() <= 10);
    assert_eq!(fields[0]["text"], "*Severity*\nerror");
    assert_eq!(blocks[3]["type"], "context");
    // Nothing reaches mrkdwn unescaped (the header is plain_text, which
    // Slack does not parse).
    let all = serde_json::to_string(&(&m["text"], &blocks[1..])).unwrap();
    assert!(!all.contains("<!channel>"), "{all}");
    assert!(collector.stop().success());
}

#[test]
fn notify_test_sends_in_the_receivers_format_and_prints_its_answer() {
    let data = tempfile::tempdir().unwrap();
    let (pd_port, pd_got) = listening(vec![(202, None), (202, None)]);
    let (hook_port, _hook_got) = listening(vec![(500, None)]);
    std::fs::write(data.path().join("pd.key"), "K\n").unwrap();
    let f = data.path().join("notify.yaml");
    std::fs::write(
        &f,
        format!(
            "receivers:\n  - name: pager\n    pagerduty: {{ routing_key_file: pd.key, url: \"http://127.0.0.1:{pd_port}/v2/enqueue\" }}\n  - name: hook\n    webhook: {{ url: \"http://127.0.0.1:{hook_port}/\" }}\n"
        ),
    )
    .unwrap();
    let test = |name: &str| {
        Command::new(bin("vigil-collector"))
            .args(["notify", "test", name, "--notify"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let o = test("pager");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("pager: HTTP 202"))
            .count(),
        2,
        "{out}"
    );
    let reqs = pd_got.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].json()["event_action"], "trigger");
    assert_eq!(
        reqs[1].json()["event_action"],
        "resolve",
        "no incident left open"
    );
    assert_eq!(reqs[0].json()["dedup_key"], reqs[1].json()["dedup_key"]);
    let o = test("hook");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("hook: HTTP 500"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = test("nobody");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no receiver `nobody` in the file (it has: pager, hook)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn alertmanager_fires_while_the_group_is_open_and_ends_when_it_is_resolved() {
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![]);
    let (mut collector, url) = collector_notifying(
        data.path(),
        &format!(
            "receivers:\n  - name: am\n    alertmanager: {{ url: \"http://127.0.0.1:{port}/\", refresh: 1s }}\nroutes:\n  - receivers: [am]\n"
        ),
    );
    send_alert(&url, "db-2", "Managed rule", 6);
    // The first send, then refreshes about every second.
    let reqs = settle(&got, 3, Duration::from_secs(10));
    assert!(reqs.len() >= 3, "{reqs:?}");
    let first = &reqs[0].json()[0];
    assert_eq!(reqs[0].path, "/api/v2/alerts");
    assert_eq!(first["labels"]["alertname"], "Managed rule");
    assert_eq!(first["labels"]["severity"], "critical");
    assert_eq!(first["labels"]["host"], "db-2");
    assert_eq!(first["annotations"]["description"], "something happened");
    let id = first["labels"]["vigil_group"].as_str().unwrap().to_string();
    let ends = |r: &Got| r.json()[0]["endsAt"].as_str().unwrap().to_string();
    let starts = first["startsAt"].as_str().unwrap();
    assert!(
        ends(&reqs[0]).as_str() > starts,
        "firing: endsAt after startsAt"
    );
    for r in &reqs[1..] {
        assert_eq!(r.json()[0]["labels"]["vigil_group"], id.as_str());
        assert!(ends(r) >= ends(&reqs[0]), "each refresh moves endsAt on");
    }
    let o = Command::new(bin("vigil-collector"))
        .args([
            "alert", "--server", &url, "resolve", &id, "--reason", "benign",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let resolved_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let reqs = got.lock().unwrap().clone();
    let last = reqs.last().unwrap();
    assert!(last.at >= resolved_at, "the resolution was sent");
    let last_ends = ends(last);
    // Ended: endsAt is now (not in the future), and refreshes stopped.
    let now = vigil_proto::json::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64,
    );
    assert!(last_ends <= now, "endsAt {last_ends} is not past ({now})");
    let after: Vec<_> = reqs.iter().filter(|r| r.at >= resolved_at).collect();
    assert_eq!(after.len(), 1, "no refresh after the resolution: {after:?}");
    // Refreshes are routine: the history has the first send and the end.
    let trail = history(&url, &id);
    let notified = trail.iter().filter(|e| e["action"] == "notified").count();
    assert_eq!(notified, 2, "{trail:?}");
    assert!(collector.stop().success());
}

fn repeats_within_the_window_make_one_summary() {
    let data = tempfile::tempdir().unwrap();
    let (port, got) = listening(vec![]);
    let (mut collector, url) = collector_notifying(
        data.path(),
        &format!(
            "group_window: 2s\nreceivers:\n  - name: hook\n    webhook: {{ url: \"http://127.0.0.1:{port}/\" }}\nroutes:\n  - receivers: [hook]\n"
        ),
    );
    send_alert(&url, "web-9", "Noisy rule", 4);
    let first = settle(&got, 1, Duration::from_secs(10));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].json()["event"], "opened");
    // 49 repeats at once, then 10 more a little later: still one summary
    // per window, never one message per alert.
    send_alerts(&url, "web-9", "Noisy rule", 4, 49);
    let reqs = settle(&got, 2, Duration::from_secs(10));
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let s = reqs[1].json();
    assert_eq!(s["event"], "summary");
    assert_eq!(s["new_alerts"], 49);
    assert_eq!(s["count"], 50);
    assert_eq!(s["group_id"], first[0].json()["group_id"]);
    assert!(
        reqs[1].at - first[0].at >= Duration::from_millis(1900),
        "not before the window ({:?})",
        reqs[1].at - first[0].at
    );
    send_alerts(&url, "web-9", "Noisy rule", 4, 10);
    let reqs = settle(&got, 3, Duration::from_secs(10));
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].json()["new_alerts"], 10);
    assert!(reqs[2].at - reqs[1].at >= Duration::from_millis(1900));
    // Quiet now: nothing more.
    assert_eq!(settle(&got, 4, Duration::from_secs(3)).len(), 3);
    assert!(collector.stop().success());
}

fn a_changed_notification_file_is_reloaded_and_a_bad_one_keeps_the_last() {
    let data = tempfile::tempdir().unwrap();
    let ((p1, got1), (p2, got2)) = (listening(vec![]), listening(vec![]));
    let f = data.path().join("notify.yaml");
    let file = |port: u16| {
        format!(
            "receivers:\n  - name: hook\n    webhook: {{ url: \"http://127.0.0.1:{port}/\" }}\nroutes:\n  - receivers: [hook]\n"
        )
    };
    std::fs::write(&f, file(p1)).unwrap();
    let (mut collector, url) = start_collector_with(
        data.path(),
        "127.0.0.1:0",
        &["--notify", f.to_str().unwrap()],
    );
    send_alert(&url, "h-1", "Before reload", 4);
    assert_eq!(settle(&got1, 1, Duration::from_secs(10)).len(), 1);

    std::fs::write(&f, file(p2)).unwrap();
    collector.wait_stderr("reloaded", Duration::from_secs(10), |l| {
        l.contains("notification file reloaded")
    });
    send_alert(&url, "h-1", "After reload", 4);
    assert_eq!(settle(&got2, 1, Duration::from_secs(10)).len(), 1);
    assert_eq!(got2.lock().unwrap()[0].json()["rule"], "After reload");

    // A broken edit: logged with its place, and the last good file stays.
    std::fs::write(&f, "receivers:\n  - name: hook\n    webhok: {}\n").unwrap();
    let line = collector.wait_stderr("not reloaded", Duration::from_secs(10), |l| {
        l.contains("notification file not reloaded")
    });
    assert!(line.contains(":3:5:"), "{line}");
    send_alert(&url, "h-1", "After a bad edit", 4);
    assert_eq!(settle(&got2, 2, Duration::from_secs(10)).len(), 2);
    assert_eq!(got1.lock().unwrap().len(), 1);
    assert!(collector.stop().success());
}

/// A TCP proxy on a loopback port, as a load balancer in front of
/// collectors: new connections go to the backend `switch` last chose, and
/// a switch cuts the open ones, so their clients reconnect there.
struct Balancer {
    port: u16,
    backend: Arc<std::sync::atomic::AtomicU16>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Balancer {
    fn new(backend: u16) -> Balancer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let backend = Arc::new(std::sync::atomic::AtomicU16::new(backend));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (b, o) = (backend.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { continue };
                let to = b.load(std::sync::atomic::Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut open = o.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Balancer {
            port,
            backend,
            open,
        }
    }

    /// Sends new connections to `backend` and cuts the open ones.
    fn switch(&self, backend: u16) {
        self.backend
            .store(backend, std::sync::atomic::Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn two_collectors_on_one_postgres_database_notify_each_group_once() {
    if !kernel_tests_enabled("two_collectors_on_one_postgres_database_notify_each_group_once") {
        return;
    }
    // Two collectors, each with the same notification file, on one
    // database, behind a balancer the real agent streams through.
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = vigil_collector::sql::throwaway::database().unwrap();
    for d in [&a_dir, &b_dir] {
        std::fs::write(d.path().join("postgres-url"), &db).unwrap();
    }
    let (port, got) = listening(vec![]);
    let (mut a, a_url) = start_collector_with(
        a_dir.path(),
        "127.0.0.1:0",
        &["--notify", &notify_file(a_dir.path(), port, "warning")],
    );
    let (mut b, b_url) = start_collector_with(
        b_dir.path(),
        "127.0.0.1:0",
        &["--notify", &notify_file(b_dir.path(), port, "warning")],
    );
    let lb = Balancer::new(port_of(&a_url));
    let (dir, marker) = marker_binary("/bin/true", "fleet-marker");
    let groups: Vec<String> = (0..6).map(|i| unique(&format!("Fleet {i}"))).collect();
    let rules = dir.path().join("r.yaml");
    let text: String = groups
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "- rule: {r}\n  desc: d\n  priority: warning\n  condition: evt.type = execve and proc.exepath = \"{m}\" and proc.args contains g{i}x\n  output: marker ran g{i}\n",
                m = marker.display()
            )
        })
        .collect();
    std::fs::write(&rules, text).unwrap();
    let lb_url = format!("http://127.0.0.1:{}", lb.port);
    let mut agent = start_agent(&["--collector", &lb_url, "--rules", rules.to_str().unwrap()]);
    let run = |i: usize| {
        for _ in 0..2 {
            assert!(Command::new(&marker)
                .arg(format!("g{i}x"))
                .status()
                .unwrap()
                .success());
        }
    };
    // Half the groups through A; then the balancer moves the agent to B
    // mid-stream; the rest through B.
    for i in 0..3 {
        run(i);
    }
    query_until(
        &a_url,
        &["--rule", &groups[2]],
        Duration::from_secs(20),
        |v| v.len() >= 2,
    );
    lb.switch(port_of(&b_url));
    for i in 3..6 {
        run(i);
    }
    // A second host's agent alternates between the collectors by itself,
    // re-sending each batch to the other one as after a lost ack.
    let other = unique("fleet-host");
    for (i, (first, then)) in [(&a_url, &b_url), (&b_url, &a_url), (&a_url, &b_url)]
        .into_iter()
        .enumerate()
    {
        let ids = [unique("fleet-id"), unique("fleet-id")];
        send_alerts_with_ids(first, &other, &groups[i], 4, &ids);
        send_alerts_with_ids(then, &other, &groups[i], 4, &ids);
    }
    for rule in &groups[3..] {
        query_until(&b_url, &["--rule", rule], Duration::from_secs(30), |v| {
            v.len() >= 2
        });
    }
    // Both collectors answer from the one store.
    for url in [&a_url, &b_url] {
        query_until(url, &["--rule", &groups[5]], Duration::from_secs(5), |v| {
            v.len() == 2
        });
    }
    // One of the two runs the fleet-wide jobs, and says so.
    let lease = |c: &mut Proc| {
        let addr = c.logged_addr("metrics on /metrics", "metrics");
        let (_, body) = http_get(&addr, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("vigil_collector_fleet_lease "))
            .unwrap_or_else(|| panic!("no lease gauge in {body}"))
            .trim()
            .to_string()
    };
    let mut held = vec![lease(&mut a), lease(&mut b)];
    held.sort();
    assert_eq!(held, ["0", "1"]);
    // Nine groups (six on this host, three on the other): nine
    // notifications, each once, from whichever collector sent it.
    let reqs = settle(&got, 9, Duration::from_secs(30));
    let mut ids: Vec<String> = reqs
        .iter()
        .map(|r| {
            let j = r.json();
            assert_eq!(j["event"], "opened", "{j}");
            j["group_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (reqs.len(), ids.len()),
        (9, 9),
        "each group notified exactly once: {reqs:?}"
    );
    agent.kill();
    assert!(a.stop().success());
    assert!(b.stop().success());
}

vigil_tests::on_both_stores!(
    a_warning_reaches_the_webhook_once_signed_and_a_silenced_one_does_not,
    failures_are_retried_429_is_honoured_and_4xx_is_not_retried,
    notifications_queued_before_a_restart_are_delivered_once_after_it,
    pagerduty_gets_one_incident_per_group_kept_in_step_with_it,
    slack_gets_block_kit_within_its_limits_and_its_rate,
    alertmanager_fires_while_the_group_is_open_and_ends_when_it_is_resolved,
    repeats_within_the_window_make_one_summary,
    a_changed_notification_file_is_reloaded_and_a_bad_one_keeps_the_last,
);
