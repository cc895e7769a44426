//! The investigation store at scale, on a real SQLite file or a real
//! PostgreSQL database (`--store postgres`: a throwaway cluster with fsync
//! on; or `--db postgres://...`):
//!
//! 1. **Ingest**: a generator makes a fleet's activity (`--hosts` hosts,
//!    a week of process starts and exits, connections (most to a few
//!    popular addresses, the rest over 20 000), DNS queries (likewise over
//!    5 000 names), most events from a few busy processes per host, most
//!    execs of a few programs (70% among the first 32 of 400), an alert
//!    every `--alert-every` events; process ids laid out as the agent
//!    makes them) and stores it the way the
//!    collector does, in agent-sized batches (`insert_batch` for alerts,
//!    `insert_activity` for events, each a committed transaction); prints
//!    events per second.
//! 2. **Queries**: each investigation query, `--runs` times with varied
//!    arguments, against the filled store; prints p50, p95 and max.
//!
//! `cargo bench -p vigil-collector --bench investigate -- --events 10000000`
//! (`--db PATH` keeps the file; an existing file is reused without
//! ingesting again: `--reuse`).
use std::time::{Duration, Instant};

use vigil_collector::{activity::ActivityStore, investigate, sql::SqlStore, store::AlertStore};
use vigil_proto::v1::{
    Activity, ActivityKind, Alert, Ancestor, ExecutableInfo, HostInfo, PivotQuery, ProcessInfo,
    Severity, TimelineQuery, TreeQuery,
};

const S: i64 = 1_000_000_000;
const WEEK: i64 = 7 * 86_400 * S;
const BATCH: usize = 2048;

struct Opts {
    events: u64,
    hosts: u32,
    alert_every: u64,
    runs: usize,
    db: Option<String>,
    reuse: bool,
    postgres: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        events: 1_000_000,
        hosts: 50,
        alert_every: 10_000,
        runs: 40,
        db: None,
        reuse: false,
        postgres: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => o.events = v().parse().expect("--events N"),
            "--hosts" => o.hosts = v().parse().expect("--hosts N"),
            "--alert-every" => o.alert_every = v().parse().expect("--alert-every N"),
            "--runs" => o.runs = v().parse().expect("--runs N"),
            "--db" => o.db = Some(v()),
            "--store" => o.postgres = v() == "postgres",
            "--reuse" => {
                o.reuse = true;
                i += 1;
                continue;
            }
            // cargo bench passes --bench.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// xorshift64*: deterministic, fast enough not to be measured.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// As traffic is: most of it to a few popular destinations (70% to
    /// the first 64 of `n`), the rest spread over all of them.
    fn skewed(&mut self, n: u64) -> u64 {
        self.skewed_within(n, 64)
    }

    /// 70% among the first `top` of `n`, 30% among all.
    fn skewed_within(&mut self, n: u64, top: u64) -> u64 {
        if self.below(10) < 7 {
            self.below(top.min(n))
        } else {
            self.below(n)
        }
    }
}

fn sha(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4)
}

fn ip(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// The fleet as it runs: per host, the live processes (recent ones), so
/// events come from running processes and children from live parents.
struct Fleet {
    rng: Rng,
    hosts: Vec<HostInfo>,
    /// Per host: live processes (their ProcessInfo).
    live: Vec<Vec<ProcessInfo>>,
    next_pid: u32,
    next_id: u64,
}

const EXES: u64 = 400;
const USERS: u64 = 25;
const IPS: u64 = 20_000;
const DOMAINS: u64 = 5_000;

impl Fleet {
    fn new(hosts: u32) -> Fleet {
        let mut f = Fleet {
            rng: Rng(0x5eed),
            hosts: (0..hosts)
                .map(|i| HostInfo {
                    hostname: format!("host-{i:03}"),
                    ..Default::default()
                })
                .collect(),
            live: vec![Vec::new(); hosts as usize],
            next_pid: 2,
            next_id: 0,
        };
        for h in 0..hosts as usize {
            let init = f.process(h, None, 0, 0);
            f.live[h].push(init);
        }
        f
    }

    fn process(&mut self, h: usize, parent: Option<&ProcessInfo>, exe: u64, t: i64) -> ProcessInfo {
        self.next_id += 1;
        self.next_pid = self.next_pid % 4_000_000 + 1;
        let user = self.rng.below(USERS);
        ProcessInfo {
            pid: if parent.is_none() { 1 } else { self.next_pid },
            ppid: parent.map_or(0, |p| p.pid),
            exe: format!("/usr/bin/prog{exe}"),
            argv: vec![
                format!("prog{exe}"),
                "--flag".into(),
                format!("arg{}", self.next_id % 97),
            ],
            user: format!("user{user}"),
            uid: user as u32 + 1000,
            // The agent's layout: host, start tick, pid.
            proc_id: format!(
                "{:012x}{:09x}{:06x}",
                h as u64 * 0x9e37_79b9,
                (t.max(0) / 10_000_000) & 0xf_ffff_ffff,
                self.next_pid
            ),
            parent_proc_id: parent.map(|p| p.proc_id.clone()).unwrap_or_default(),
            start_unix_ns: t,
            cwd: "/srv".into(),
            executable: Some(ExecutableInfo {
                path: format!("/usr/bin/prog{exe}"),
                sha256: sha(exe),
                size: 100_000 + exe,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ident(p: &ProcessInfo) -> ProcessInfo {
        ProcessInfo {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe.clone(),
            user: p.user.clone(),
            proc_id: p.proc_id.clone(),
            parent_proc_id: p.parent_proc_id.clone(),
            start_unix_ns: p.start_unix_ns,
            ..Default::default()
        }
    }

    /// One event on host `h` at `t`.
    fn event(&mut self, n: u64, h: usize, t: i64) -> Activity {
        let mut a = Activity {
            id: format!("{:012x}-{n:012x}", h as u64 + 1),
            time_unix_ns: t,
            ..Default::default()
        };
        let live = self.live[h].len();
        let roll = self.rng.below(100);
        if roll < 20 || live < 8 {
            // exec: a child of a live process.
            let parent = self.live[h][self.rng.below(live as u64) as usize].clone();
            let exe = self.rng.skewed_within(EXES, 32);
            let p = self.process(h, Some(&parent), exe, t);
            a.kind = ActivityKind::Exec as i32;
            a.event_type = "execve".into();
            a.path = p.exe.clone();
            a.process = Some(p.clone());
            self.live[h].push(p);
        } else if roll < 38 && live > 16 {
            // exit: a recent process (not init).
            let i = live - 1 - self.rng.below((live - 1).min(8) as u64) as usize;
            let p = self.live[h].remove(i);
            a.kind = ActivityKind::Exit as i32;
            a.event_type = "exit".into();
            a.process = Some(Self::ident(&p));
        } else {
            // Most of a host's events come from a few busy processes (its
            // daemons, the first started), the rest from any live one.
            let i = self.rng.skewed_within(live as u64, 16);
            let p = self.live[h][i as usize].clone();
            a.process = Some(Self::ident(&p));
            if roll < 78 {
                a.kind = ActivityKind::Connect as i32;
                a.event_type = "connect".into();
                a.protocol = "tcp".into();
                a.remote_addr = ip(self.rng.skewed(IPS));
                a.remote_port = 443;
            } else if roll < 82 {
                a.kind = ActivityKind::Accept as i32;
                a.event_type = "accept4".into();
                a.protocol = "tcp".into();
                a.remote_addr = ip(self.rng.below(IPS));
                a.remote_port = 40_000 + self.rng.below(20_000) as u32;
            } else {
                a.kind = ActivityKind::Dns as i32;
                a.event_type = "sendto".into();
                a.domain = format!("svc{}.example.com", self.rng.skewed(DOMAINS));
                a.detail = "A".into();
            }
        }
        // Hosts keep a bounded set of live processes (daemons stay).
        if self.live[h].len() > 400 {
            self.live[h].remove(17);
        }
        a
    }

    fn alert(&mut self, n: u64, h: usize, t: i64) -> Alert {
        let live = self.live[h].len();
        let p = self.live[h][self.rng.below(live as u64) as usize].clone();
        let ancestry = self.live[h]
            .iter()
            .filter(|x| x.proc_id == p.parent_proc_id)
            .map(|x| Ancestor {
                pid: x.pid,
                comm: x.comm.clone(),
                exe: x.exe.clone(),
                argv: x.argv.clone(),
                proc_id: x.proc_id.clone(),
            })
            .collect();
        Alert {
            id: format!("alert-{n}"),
            rule: "Bench rule".into(),
            severity: Severity::Warning as i32,
            output: format!("bench alert {n}"),
            time_unix_ns: t,
            event_type: "exec".into(),
            process: Some(p),
            ancestry,
            ..Default::default()
        }
    }
}

fn pct(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.95), *v.last().unwrap())
}

fn main() {
    let o = opts();
    let tmp = tempfile::tempdir().unwrap();
    let db = match &o.db {
        Some(db) => db.clone(),
        None if o.postgres => vigil_collector::sql::throwaway::database_with(
            vigil_collector::sql::throwaway::Durability::Full,
        )
        .unwrap(),
        None => tmp.path().join("bench.db").display().to_string(),
    };
    let store = SqlStore::open_db(&db).unwrap();
    let fresh = !(o.reuse && store.count().unwrap() > 0);
    let start_t = vigil_collector::store::now_ns() - WEEK;
    let step = (WEEK / o.events.max(1) as i64).max(1);
    let mut alerts: Vec<String> = Vec::new();
    if fresh {
        let mut fleet = Fleet::new(o.hosts);
        let t0 = Instant::now();
        let mut stored = 0u64;
        let mut n = 0u64;
        let mut batches: Vec<(Vec<Activity>, Vec<Alert>)> =
            vec![(Vec::new(), Vec::new()); o.hosts as usize];
        let mut report = Instant::now();
        // Time inside the store, apart from the generator's.
        let mut in_store = Duration::ZERO;
        while n < o.events {
            let h = fleet.rng.below(o.hosts as u64) as usize;
            let t = start_t + n as i64 * step;
            let ev = fleet.event(n, h, t);
            batches[h].0.push(ev);
            n += 1;
            if n.is_multiple_of(o.alert_every) {
                let a = fleet.alert(n, h, t);
                alerts.push(a.id.clone());
                batches[h].1.push(a);
            }
            if batches[h].0.len() >= BATCH || n == o.events {
                let (acts, als) = std::mem::take(&mut batches[h]);
                let host = &fleet.hosts[h];
                let t = Instant::now();
                store.insert_batch(host, &als).unwrap();
                stored += store.insert_activity(host, &acts, &als).unwrap() as u64;
                in_store += t.elapsed();
            }
            if report.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "  {n} events, {:.0}/s",
                    n as f64 / t0.elapsed().as_secs_f64()
                );
                report = Instant::now();
            }
        }
        for (h, (acts, als)) in batches.into_iter().enumerate() {
            let host = &fleet.hosts[h];
            let t = Instant::now();
            store.insert_batch(host, &als).unwrap();
            stored += store.insert_activity(host, &acts, &als).unwrap() as u64;
            in_store += t.elapsed();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "ingest: {stored} events ({} alerts) from {} hosts in {secs:.1} s, {:.1} s of it in the store: {:.0} events/s stored (batches of {BATCH}, one transaction each, durable commits)",
            alerts.len(),
            o.hosts,
            in_store.as_secs_f64(),
            stored as f64 / in_store.as_secs_f64()
        );
    } else {
        alerts = (1..=o.events / o.alert_every)
            .map(|i| format!("alert-{}", i * o.alert_every))
            .collect();
    }
    let size = store.size_bytes().unwrap();
    println!("database: {:.1} GiB", size as f64 / (1u64 << 30) as f64);

    let mut rng = Rng(0xabcd);
    let now = vigil_collector::store::now_ns();
    let mut run = |name: &str, f: &mut dyn FnMut(&mut Rng) -> usize| {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..o.runs {
            let t = Instant::now();
            rows += f(&mut rng);
            times.push(t.elapsed());
        }
        let (p50, p95, max) = pct(times);
        println!(
            "{name:<34} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms  ({} rows/answer)",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            rows / o.runs.max(1)
        );
    };
    let pick = |rng: &mut Rng| alerts[rng.below(alerts.len() as u64) as usize].clone();
    run("timeline --host H --since 15m", &mut |rng| {
        let h = format!("host-{:03}", rng.below(o.hosts as u64));
        let to = start_t + rng.below(WEEK as u64) as i64;
        let q = TimelineQuery {
            host: h,
            from_unix_ns: to - 15 * 60 * S,
            to_unix_ns: to,
            ..Default::default()
        };
        investigate::timeline(&store, &q, now)
            .unwrap()
            .entries
            .len()
    });
    run("timeline --around A (5m)", &mut |rng| {
        let q = TimelineQuery {
            around_alert: pick(rng),
            ..Default::default()
        };
        investigate::timeline(&store, &q, now)
            .unwrap()
            .entries
            .len()
    });
    run("timeline --around A --pid P", &mut |rng| {
        let id = pick(rng);
        let a = store.alert_by_id(&id).unwrap().unwrap();
        let q = TimelineQuery {
            around_alert: id,
            pid: a.process.unwrap().pid,
            ..Default::default()
        };
        investigate::timeline(&store, &q, now)
            .unwrap()
            .entries
            .len()
    });
    run("tree A", &mut |rng| {
        let q = TreeQuery {
            alert_id: pick(rng),
            ..Default::default()
        };
        investigate::tree(&store, &q).unwrap().nodes.len()
    });
    let since = now - WEEK - 3600 * S;
    let mut pivot = |name: &str, make: &dyn Fn(&mut Rng) -> PivotQuery| {
        run(name, &mut |rng| {
            let mut q = make(rng);
            q.since_unix_ns = since;
            let p = investigate::pivot(&store, &q, now).unwrap();
            p.hosts.len() + p.processes.len()
        });
    };
    pivot("pivot --sha256", &|rng| PivotQuery {
        sha256: sha(rng.below(EXES)),
        ..Default::default()
    });
    pivot("pivot --exe", &|rng| PivotQuery {
        exe: format!("/usr/bin/prog{}", rng.below(EXES)),
        ..Default::default()
    });
    pivot("pivot --user (bounded scan)", &|rng| PivotQuery {
        user: format!("user{}", rng.below(USERS)),
        ..Default::default()
    });
    pivot("pivot --ip", &|rng| PivotQuery {
        ip: ip(rng.below(IPS)),
        ..Default::default()
    });
    pivot("pivot --domain", &|rng| PivotQuery {
        domain: format!("svc{}.example.com", rng.below(DOMAINS)),
        ..Default::default()
    });
}
