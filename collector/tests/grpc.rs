//! The collector over real gRPC and a real SQLite file (and PostgreSQL,
//! shared by two collectors): acks after commit, idempotent re-sends,
//! hostile batches rejected without losing what was stored, queries with
//! filters.
use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::wrappers::ReceiverStream;
use vigil_collector::{query, server, sql::SqlStore, tls::Listener};
use vigil_proto::v1::{
    collector_client::CollectorClient, Alert, AlertBatch, AlertQuery, HostInfo, ProcessInfo,
    Severity,
};

struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(db: &std::path::Path) -> Running {
    start_on(db.to_str().unwrap()).await
}

/// A collector on `db`: a SQLite path or a PostgreSQL address.
async fn start_on(db: &str) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let db = db.to_string();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || SqlStore::open_db(&db))
            .await
            .unwrap()
            .unwrap(),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::run(
            Listener {
                tcp: listener,
                tls: None,
            },
            store,
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    Running {
        url,
        stop: Some(tx),
        task,
    }
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn host(name: &str) -> HostInfo {
    HostInfo {
        hostname: name.into(),
        machine_id: "m".into(),
        kernel: "6.18".into(),
        agent_version: "test".into(),
    }
}

fn alert(id: &str, rule: &str, sev: Severity, pid: u32) -> Alert {
    Alert {
        id: id.into(),
        rule: rule.into(),
        severity: sev as i32,
        time_unix_ns: 1_800_000_000_000_000_000 + pid as i64,
        event_type: "exec".into(),
        process: Some(ProcessInfo {
            pid,
            exe: format!("/tmp/p{pid}"),
            argv: vec![format!("/tmp/p{pid}"), "--flag".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn stream_ack_query_and_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("alerts.db");
    let srv = start(&db).await;
    let mut client = CollectorClient::connect(srv.url.clone()).await.unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut acks = client
        .stream_alerts(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(AlertBatch {
        activity: Vec::new(),
        host: Some(host("web-1")),
        seq: 1,
        alerts: vec![
            alert("a1", "tmp exec", Severity::Warning, 10),
            alert("a2", "other", Severity::Notice, 11),
        ],
    })
    .await
    .unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.seq, ack.stored, ack.duplicates), (1, 2, 0));

    // A re-send after a reconnect is acked but stored once.
    tx.send(AlertBatch {
        activity: Vec::new(),
        host: Some(host("web-1")),
        seq: 2,
        alerts: vec![
            alert("a1", "tmp exec", Severity::Warning, 10),
            alert("a3", "tmp exec", Severity::Critical, 12),
        ],
    })
    .await
    .unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.seq, ack.stored, ack.duplicates), (2, 1, 1));

    // A hostile batch ends the stream with a clear error...
    tx.send(AlertBatch {
        activity: Vec::new(),
        host: None,
        seq: 3,
        alerts: vec![alert("bad", "x", Severity::Error, 1)],
    })
    .await
    .unwrap();
    let err = acks.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("no host"), "{}", err.message());

    // ...and loses nothing already accepted.
    let all = query::fetch(&srv.url, None, AlertQuery::default())
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["a3", "a2", "a1"]);
    assert_eq!(all[0].host.as_ref().unwrap().hostname, "web-1");
    assert_eq!(
        all[2].process.as_ref().unwrap().argv,
        vec!["/tmp/p10", "--flag"]
    );

    let warn_up = query::fetch(
        &srv.url,
        None,
        AlertQuery {
            min_severity: Severity::Warning as i32,
            rule: "tmp exec".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(warn_up.len(), 2);
    let other_host = query::fetch(
        &srv.url,
        None,
        AlertQuery {
            host: "db-1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(other_host.is_empty());

    // An oversized message is refused by the transport, not stored.
    let (tx2, rx2) = tokio::sync::mpsc::channel(1);
    let mut acks2 = client
        .stream_alerts(ReceiverStream::new(rx2))
        .await
        .unwrap()
        .into_inner();
    let mut huge = alert("huge", "x", Severity::Error, 1);
    huge.output = "x".repeat(server::MAX_MESSAGE_BYTES + 1);
    tx2.send(AlertBatch {
        activity: Vec::new(),
        host: Some(host("web-1")),
        seq: 1,
        alerts: vec![huge],
    })
    .await
    .unwrap();
    assert!(acks2.message().await.is_err());

    srv.stop().await;
    // Acked means committed: a fresh collector on the same file sees it all.
    let srv = start(&db).await;
    assert_eq!(
        query::fetch(&srv.url, None, AlertQuery::default())
            .await
            .unwrap()
            .len(),
        3
    );
    srv.stop().await;
}

#[tokio::test]
async fn query_names_an_unreachable_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = query::fetch(&url, None, AlertQuery::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&url), "{e}");
    let e = query::fetch("127.0.0.1:1", None, AlertQuery::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected https://HOST:PORT"), "{e}");
}

#[tokio::test]
async fn many_agents_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(&dir.path().join("alerts.db")).await;
    const AGENTS: usize = 8;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 20;
    let mut tasks = Vec::new();
    for agent in 0..AGENTS {
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = CollectorClient::connect(url).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(BATCHES);
            let mut acks = client
                .stream_alerts(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            for b in 0..BATCHES {
                let alerts = (0..PER_BATCH)
                    .map(|i| {
                        alert(
                            &format!("{agent}-{b}-{i}"),
                            "r",
                            Severity::Warning,
                            i as u32,
                        )
                    })
                    .collect();
                tx.send(AlertBatch {
                    activity: Vec::new(),
                    host: Some(host(&format!("host-{agent}"))),
                    seq: b as u64 + 1,
                    alerts,
                })
                .await
                .unwrap();
            }
            for b in 0..BATCHES {
                let ack = acks.message().await.unwrap().unwrap();
                assert_eq!(ack.seq, b as u64 + 1, "acks come in order");
                assert_eq!(ack.stored as usize, PER_BATCH);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = query::fetch(
        &srv.url,
        None,
        AlertQuery {
            limit: 100_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(all.len(), AGENTS * BATCHES * PER_BATCH);
    let one = query::fetch(
        &srv.url,
        None,
        AlertQuery {
            host: "host-3".into(),
            limit: 100_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(one.len(), BATCHES * PER_BATCH);
    srv.stop().await;
}

#[tokio::test]
async fn alerts_past_the_retention_are_deleted_and_the_rest_kept() {
    use vigil_collector::store::AlertStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    {
        let store = SqlStore::open(&db).unwrap();
        let alerts: Vec<Alert> = (0..12_000)
            .map(|i| Alert {
                id: format!("old-{i}"),
                rule: "old".into(),
                time_unix_ns: now - 2 * hour,
                ..Default::default()
            })
            .chain(std::iter::once(Alert {
                id: "new".into(),
                rule: "new".into(),
                time_unix_ns: now,
                ..Default::default()
            }))
            .collect();
        store.insert_batch(&host("h"), &alerts).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let store = Arc::new(SqlStore::open(&db).unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run_with(
        Listener {
            tcp: listener,
            tls: None,
        },
        store.clone(),
        server::ServerOptions {
            retention: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
        async {
            let _ = rx.await;
        },
    ));
    // Pruned at start, in chunks (12 000 is more than one).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.count().unwrap() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} left",
            store.count().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = query::fetch(&url, None, AlertQuery::default())
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, "new");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Sends one batch on a new stream to `url` and returns its ack's
/// (stored, duplicates).
async fn send_batch(url: &str, seq: u64, alerts: Vec<Alert>) -> (u32, u32) {
    let mut client = CollectorClient::connect(url.to_string()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut acks = client
        .stream_alerts(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(AlertBatch {
        activity: Vec::new(),
        host: Some(host("web-1")),
        seq,
        alerts,
    })
    .await
    .unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    (ack.stored, ack.duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_postgres_store_each_alert_once() {
    let db = tokio::task::spawn_blocking(vigil_collector::sql::throwaway::database)
        .await
        .unwrap()
        .unwrap();
    let (a, b) = (start_on(&db).await, start_on(&db).await);
    // The agent streams to A, loses it after its second batch was stored
    // but before the ack, and re-sends that batch to B: stored once.
    let batch = |n: u32| -> Vec<Alert> {
        (0..5)
            .map(|i| alert(&format!("x{n}-{i}"), "tmp exec", Severity::Warning, 7))
            .collect()
    };
    assert_eq!(send_batch(&a.url, 1, batch(1)).await, (5, 0));
    assert_eq!(send_batch(&a.url, 2, batch(2)).await, (5, 0));
    assert_eq!(send_batch(&b.url, 2, batch(2)).await, (0, 5));
    assert_eq!(send_batch(&b.url, 3, batch(3)).await, (5, 0));
    // Both answer from the same store: 15 alerts, one group counting 15.
    for url in [&a.url, &b.url] {
        let all = query::fetch(
            url,
            None,
            AlertQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 15, "from {url}");
    }
    let s = SqlStore::open_db(&db).unwrap();
    let groups = tokio::task::spawn_blocking(move || {
        vigil_collector::store::AlertStore::groups(
            &s,
            &vigil_collector::groups::GroupFilter {
                limit: 10,
                ..Default::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].count, 15);
    a.stop().await;
    b.stop().await;
}
