//! Nothing lost: alerts survive an agent killed during a collector outage
//! (the disk spool), and a collector killed mid-stream (acks only after a
//! commit, re-sends stored once).
use std::{path::Path, process::Command, time::Duration};

use vigil_tests::*;

fn marker_rules(dir: &Path, rule: &str, marker: &str) -> std::path::PathBuf {
    let p = dir.join("marker.yaml");
    std::fs::write(
        &p,
        format!(
            "- rule: {rule}\n  desc: delivery test\n  priority: warning\n  condition: evt.type = execve and proc.args contains \"{marker}\"\n"
        ),
    )
    .unwrap();
    p
}

/// Runs `/bin/true MARKER N` for each N in `range`.
fn fire(marker: &str, range: std::ops::Range<usize>) {
    for i in range {
        let st = Command::new("/bin/true")
            .args([marker, &i.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// The stored alerts of `rule`, once their count has stayed at `want` or
/// more for two seconds (so a duplicate arriving late is seen).
fn stored_settled(url: &str, rule: &str, want: usize) -> Vec<serde_json::Value> {
    let got = query_until(url, &["--rule", rule], Duration::from_secs(60), |a| {
        a.len() >= want
    });
    if got.len() < want {
        return got;
    }
    std::thread::sleep(Duration::from_secs(2));
    query_until(url, &["--rule", rule], Duration::from_secs(1), |_| true)
}

fn assert_each_once(alerts: &[serde_json::Value], n: usize, log: &str) {
    let mut nums: Vec<String> = alerts
        .iter()
        .map(|a| a["process"]["argv"][2].as_str().unwrap_or("?").to_string())
        .collect();
    nums.sort();
    let mut want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(
        nums, want,
        "each alert stored exactly once; agent log:\n{log}"
    );
}

fn alerts_survive_an_agent_killed_during_a_collector_outage() {
    if !kernel_tests_enabled("alerts_survive_an_agent_killed_during_a_collector_outage") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let spool = data.path().join("spool");
    let spool_s = spool.to_str().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let rule = unique("spooled rule");
    let marker = unique("--vigil-spool");
    let rules = marker_rules(data.path(), &rule, &marker);
    let rules_s = rules.to_str().unwrap();
    let args = [
        "--collector",
        &url,
        "--spool-dir",
        spool_s,
        "--rules",
        rules_s,
    ];

    // No collector: the alerts go to the spool, then the agent is killed.
    let mut agent = start_agent(&args);
    agent.wait_stderr("outage", Duration::from_secs(20), |l| {
        l.contains("collector unreachable")
    });
    fire(&marker, 0..5);
    std::thread::sleep(Duration::from_secs(3));
    agent.kill();

    // The collector comes up; a new agent on the same spool delivers them.
    let (mut collector, url2) = start_collector(data.path(), &format!("127.0.0.1:{port}"));
    assert_eq!(url, url2);
    let mut agent = start_agent(&args);
    let alerts = stored_settled(&url, &rule, 5);
    let log = agent.stderr_lines().join("\n");
    assert!(
        log.contains("alerts from an earlier run are in the spool"),
        "{log}"
    );
    assert_each_once(&alerts, 5, &log);
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}

fn alerts_survive_a_collector_killed_mid_stream() {
    if !kernel_tests_enabled("alerts_survive_a_collector_killed_mid_stream") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (mut collector, url) = start_collector(data.path(), &listen);
    let rule = unique("mid-stream rule");
    let marker = unique("--vigil-midstream");
    let rules = marker_rules(data.path(), &rule, &marker);
    let mut agent = start_agent(&["--collector", &url, "--rules", rules.to_str().unwrap()]);
    fire(&marker, 0..10);
    let first = query_until(&url, &["--rule", &rule], Duration::from_secs(30), |a| {
        a.len() >= 10
    });
    assert_eq!(first.len(), 10);

    // Killed with batches possibly in flight; alerts raised while it is down.
    collector.kill();
    fire(&marker, 10..20);
    std::thread::sleep(Duration::from_secs(1));
    let (mut collector, _) = start_collector(data.path(), &listen);
    fire(&marker, 20..30);
    let alerts = stored_settled(&url, &rule, 30);
    assert_each_once(&alerts, 30, &agent.stderr_lines().join("\n"));
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}

/// A TCP proxy that can stop forwarding without closing anything, as a
/// half-open connection or a stalled middlebox does.
struct Proxy {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(to: u16) -> Proxy {
        use std::{
            io::{Read, Write},
            net::{TcpListener, TcpStream},
            sync::{atomic::Ordering, Arc},
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                // A connection made while frozen stays frozen: it is the
                // network that is stuck, not one socket.
                let born_frozen = f.load(Ordering::SeqCst);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        from.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        loop {
                            if born_frozen || f.load(Ordering::SeqCst) {
                                // Holds the connection open, moving nothing.
                                std::thread::sleep(Duration::from_millis(100));
                                if born_frozen && !f.load(Ordering::SeqCst) {
                                    return;
                                }
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

fn a_stalled_connection_is_detected_and_everything_delivered_after() {
    if !kernel_tests_enabled("a_stalled_connection_is_detected_and_everything_delivered_after") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (mut collector, url) = start_collector(data.path(), "127.0.0.1:0");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::start(port);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let rule = unique("stalled rule");
    let marker = unique("--vigil-stalled");
    let rules = marker_rules(data.path(), &rule, &marker);
    let mut agent = start_agent(&["--collector", &via, "--rules", rules.to_str().unwrap()]);
    fire(&marker, 0..3);
    let first = query_until(&url, &["--rule", &rule], Duration::from_secs(30), |a| {
        a.len() >= 3
    });
    assert_eq!(first.len(), 3);

    // The network stalls: nothing moves, nothing closes.
    proxy.freeze(true);
    let stalled = std::time::Instant::now();
    fire(&marker, 3..6);
    let line = agent.wait_stderr("dead connection found", Duration::from_secs(45), |l| {
        l.contains("collector unreachable")
    });
    let found = stalled.elapsed();
    assert!(found <= Duration::from_secs(35), "took {found:?}: {line}");

    // It heals: everything arrives, once.
    proxy.freeze(false);
    let alerts = stored_settled(&url, &rule, 6);
    assert_each_once(&alerts, 6, &agent.stderr_lines().join("\n"));
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallDisk { _dir: dir, path }
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_collector_disk_loses_nothing_once_space_returns() {
    if !kernel_tests_enabled("a_full_collector_disk_loses_nothing_once_space_returns") {
        return;
    }
    let disk = SmallDisk::mount("8m");
    let (mut collector, url) = start_collector(&disk.path, "127.0.0.1:0");
    let data = tempfile::tempdir().unwrap();
    let rule = unique("full disk rule");
    let marker = unique("--vigil-fulldisk");
    let rules = marker_rules(data.path(), &rule, &marker);
    let mut agent = start_agent(&["--collector", &url, "--rules", rules.to_str().unwrap()]);
    fire(&marker, 0..2);
    assert_eq!(stored_settled(&url, &rule, 2).len(), 2);

    disk.fill();
    fire(&marker, 2..8);
    collector.wait_stderr("the failure", Duration::from_secs(30), |l| {
        l.contains("cannot store alert batches")
    });
    // The agent keeps re-sending; the collector says it once.
    std::thread::sleep(Duration::from_secs(4));
    let said = collector
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("cannot store alert batches"))
        .count();
    assert_eq!(said, 1, "{}", collector.stderr_lines().join("\n"));

    disk.free();
    let alerts = stored_settled(&url, &rule, 8);
    assert_each_once(&alerts, 8, &agent.stderr_lines().join("\n"));
    assert!(collector
        .stderr_lines()
        .iter()
        .any(|l| l.contains("storage recovered")));
    assert!(agent.stop().success());
    assert!(collector.stop().success());
}

vigil_tests::on_both_stores!(
    alerts_survive_an_agent_killed_during_a_collector_outage,
    alerts_survive_a_collector_killed_mid_stream,
    a_stalled_connection_is_detected_and_everything_delivered_after,
);
