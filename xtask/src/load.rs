//! `cargo xtask load`: many simulated agents streaming alerts (and, with
//! `--activity-rate`, activity) to real collectors (release build, mutual
//! TLS; SQLite on disk, or `--store postgres` with `--collectors N`
//! sharing one PostgreSQL database) at a steady rate; checks that every
//! alert is stored exactly once and prints the throughput and the ack
//! latency percentiles (batch sent to its ack, which comes after the
//! commit). Each agent has a certificate of its own.
use std::{
    path::Path,
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use tokio::sync::Mutex;
use vigil_proto::{
    tls::{endpoint, ClientTls, Role},
    v1::{
        collector_client::CollectorClient, Activity, ActivityKind, Alert, AlertBatch, AlertQuery,
        HostInfo, ProcessInfo,
    },
};

pub struct LoadOptions {
    pub agents: u32,
    pub rate: u32,
    pub seconds: u32,
    pub activity_rate: u32,
    pub postgres: bool,
    pub collectors: u32,
}

/// Alerts per batch: an agent sends `rate / BATCHES_PER_S` alerts at a
/// time, as a forwarder batching a steady stream does.
const BATCHES_PER_S: u32 = 10;

pub fn run(o: LoadOptions) -> anyhow::Result<()> {
    crate::step(
        "cargo build --release --bins",
        crate::cargo().args(["build", "--release", "--bins"]),
    )?;
    let dir = tempdir()?;
    let bin = Path::new("target/release/vigil-collector");
    let pki = dir.join("pki");
    let pki_s = pki.display().to_string();
    let quiet = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(bin).args(args).output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    eprintln!("==> a PKI with {} agent certificates", o.agents);
    quiet(&["pki", "init", &pki_s])?;
    quiet(&["pki", "issue", &pki_s, "--responder", "load"])?;
    for i in 0..o.agents {
        quiet(&["pki", "issue", &pki_s, "--agent", &format!("load-{i}")])?;
    }
    if o.collectors > 1 && !o.postgres {
        bail!("--collectors above 1 needs --store postgres: a SQLite file has one collector");
    }
    let db = if o.postgres {
        eprintln!("==> a throwaway PostgreSQL cluster (fsync on)");
        vigil_collector::sql::throwaway::database_with(
            vigil_collector::sql::throwaway::Durability::Full,
        )
        .map_err(anyhow::Error::msg)?
    } else {
        dir.join("alerts.db").display().to_string()
    };
    // The first creates the schema; the rest start against it.
    quiet(&["migrate", "--db", &db])?;
    let mut collectors = Vec::new();
    let mut urls = Vec::new();
    for n in 0..o.collectors {
        let log = std::fs::File::create(dir.join(format!("collector-{n}.log")))?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        collectors.push(Collector(
            Command::new(bin)
                .args(["serve", "--metrics-listen", "off", "--pki", &pki_s])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--db", &db])
                .stderr(log)
                .spawn()
                .context("cannot start the collector")?,
        ));
        urls.push(format!("https://127.0.0.1:{port}"));
    }
    let url = urls[0].clone();
    // Serving once the port accepts (after the schema and partitions).
    for u in &urls {
        let addr = u.trim_start_matches("https://");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "collector {u} did not start within 30 s (its log: {})",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let total = u64::from(o.agents) * u64::from(o.rate) * u64::from(o.seconds);
    let activity_total = u64::from(o.agents) * u64::from(o.activity_rate) * u64::from(o.seconds);
    eprintln!(
        "==> {} agents x ({} alerts/s + {} activity events/s) x {} s = {total} alerts, {activity_total} events, over {} collector(s)",
        o.agents, o.rate, o.activity_rate, o.seconds, o.collectors
    );
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let streamed = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..o.agents {
            let tls = ClientTls::from_pki(&pki, Role::Agent, &format!("load-{i}"));
            let ep = endpoint(&urls[i as usize % urls.len()], Some(&tls))?;
            let lat = latencies.clone();
            let (rate, activity, seconds) = (o.rate, o.activity_rate, o.seconds);
            tasks.push(tokio::spawn(async move {
                agent(ep, i, rate, activity, seconds, lat).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    });
    if let Err(e) = streamed {
        for n in 0..o.collectors {
            let log =
                std::fs::read_to_string(dir.join(format!("collector-{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- collector {n}'s log, last lines:");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        return Err(e);
    }
    let took = started.elapsed();
    // Every alert stored, once: count them through the query API.
    let tls = ClientTls::from_pki(&pki, Role::Responder, "load");
    let stored = rt.block_on(async {
        let mut c = CollectorClient::new(endpoint(&url, Some(&tls))?.connect().await?)
            .max_decoding_message_size(64 << 20);
        let mut n = 0u64;
        for i in 0..o.agents {
            let mut s = c
                .query_alerts(AlertQuery {
                    host: format!("load-{i}"),
                    limit: 100_000,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {
                n += 1;
            }
        }
        anyhow::Ok(n)
    })?;
    for c in &mut collectors {
        c.stop();
    }
    let mut l = rt.block_on(latencies.lock()).clone();
    l.sort();
    let p = |q: f64| l[((l.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
    println!(
        "\n`cargo xtask load --agents {} --rate {} --activity-rate {} --seconds {} --store {} --collectors {}` on {} cores\n",
        o.agents,
        o.rate,
        o.activity_rate,
        o.seconds,
        if o.postgres { "postgres" } else { "sqlite" },
        o.collectors,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| measure | value |\n|---|---|");
    println!("| alerts sent / stored | {total} / {stored} |");
    println!(
        "| throughput | {:.0} alerts/s and {:.0} activity events/s over {:.1} s |",
        total as f64 / took.as_secs_f64(),
        activity_total as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    println!(
        "| ack latency (batch of {} sent to its ack) | p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
        o.rate / BATCHES_PER_S,
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    if stored != total {
        bail!("{stored} of {total} alerts stored");
    }
    Ok(())
}

/// One simulated agent: a batch every 1/BATCHES_PER_S s on one stream;
/// a second task times each ack against its batch's send time (acks come
/// in order).
async fn agent(
    ep: tonic::transport::Endpoint,
    i: u32,
    rate: u32,
    activity_rate: u32,
    seconds: u32,
    lat: Arc<Mutex<Vec<Duration>>>,
) -> anyhow::Result<()> {
    let mut c = CollectorClient::new(ep.connect().await?);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut acks = c
        .stream_alerts(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let timer = tokio::spawn(async move {
        let mut mine = Vec::new();
        while let Some(ack) = acks.message().await? {
            match sent_rx.recv().await {
                Some((seq, t)) if seq == ack.seq => mine.push(t.elapsed()),
                other => bail!("ack {} does not match the batch sent ({other:?})", ack.seq),
            }
        }
        lat.lock().await.extend(mine);
        anyhow::Ok(())
    });
    let per_batch = (rate / BATCHES_PER_S).max(1);
    let host = HostInfo {
        hostname: format!("load-{i}"),
        ..Default::default()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(BATCHES_PER_S)));
    for seq in 1..=u64::from(seconds * BATCHES_PER_S) {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i64;
        let alerts = (0..per_batch)
            .map(|k| Alert {
                id: format!("load-{i}-{seq}-{k}"),
                rule: "Load test".into(),
                severity: 4,
                output: "a load-test alert of ordinary size ".repeat(20),
                time_unix_ns: now,
                ..Default::default()
            })
            .collect();
        // Connections by a few processes, as a busy service makes them.
        let activity = (0..activity_rate / BATCHES_PER_S)
            .map(|k| {
                let pid = 1000 + k % 8;
                Activity {
                    id: format!("load-{i}-{seq}-a{k}"),
                    time_unix_ns: now + i64::from(k),
                    kind: ActivityKind::Connect as i32,
                    event_type: "connect".into(),
                    protocol: "tcp".into(),
                    remote_addr: format!("198.51.100.{}", k % 200),
                    remote_port: 443,
                    process: Some(ProcessInfo {
                        pid,
                        proc_id: format!("load-{i}-{pid}"),
                        exe: "/usr/bin/curl".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect();
        let _ = sent_tx.send((seq, Instant::now()));
        tx.send(AlertBatch {
            activity,
            host: Some(host.clone()),
            seq,
            alerts,
        })
        .await?;
    }
    drop(tx);
    timer.await?
}

struct Collector(Child);

impl Collector {
    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("vigil-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
