//! Investigation over a real SQLite file and a real PostgreSQL database
//! (a throwaway cluster): activity and alerts from an agent's batches
//! become a process view, and the timeline, tree and pivot queries answer
//! from it, bounded, after a reopen, and pruned by retention.
use vigil_collector::{
    activity::ActivityStore,
    investigate::{self, InvestigateError},
    sql::{throwaway, SqlStore},
    store::AlertStore,
};

/// A fresh store on each engine.
fn both() -> Vec<SqlStore> {
    let url = throwaway::database().expect("PostgreSQL for the investigation tests");
    vec![
        SqlStore::in_memory().unwrap(),
        SqlStore::connect(&url).unwrap(),
    ]
}
use vigil_proto::v1::{
    timeline_entry::Entry, Activity, ActivityKind, Alert, Ancestor, ContainerInfo, ExecutableInfo,
    HostInfo, PivotQuery, ProcessInfo, Severity, TimelineQuery, TreeQuery,
};

const S: i64 = 1_000_000_000;
/// A fixed "now" so the spans are exact: 2026-01-01.
const T0: i64 = 1_767_225_600 * S;

fn host(name: &str) -> HostInfo {
    HostInfo {
        hostname: name.into(),
        ..Default::default()
    }
}

fn proc(pid: u32, id: &str, parent: &str, argv: &[&str]) -> ProcessInfo {
    ProcessInfo {
        pid,
        proc_id: id.into(),
        parent_proc_id: parent.into(),
        exe: argv[0].into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        user: "root".into(),
        start_unix_ns: T0,
        ..Default::default()
    }
}

fn exec(id: &str, t: i64, p: ProcessInfo) -> Activity {
    Activity {
        id: id.into(),
        time_unix_ns: t,
        kind: ActivityKind::Exec as i32,
        event_type: "execve".into(),
        path: p.exe.clone(),
        process: Some(p),
        ..Default::default()
    }
}

fn ident(p: &ProcessInfo) -> ProcessInfo {
    ProcessInfo {
        pid: p.pid,
        proc_id: p.proc_id.clone(),
        parent_proc_id: p.parent_proc_id.clone(),
        exe: p.exe.clone(),
        ..Default::default()
    }
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// bash → sh → /tmp/dropper (connects, asks DNS, raises an alert) →
/// child (exits); init known only from the alert's ancestry.
fn scenario(s: &SqlStore) -> Alert {
    let h = host("web-1");
    let bash = proc(100, "p-bash", "p-init", &["/bin/bash", "/tmp/x.sh"]);
    let sh = proc(101, "p-sh", "p-bash", &["/bin/sh", "-c", "/tmp/dropper"]);
    let mut dropper = proc(
        102,
        "p-drop",
        "p-sh",
        &["/tmp/dropper", "127.0.0.1", "4444"],
    );
    dropper.executable = Some(ExecutableInfo {
        path: "/tmp/dropper".into(),
        sha256: SHA.into(),
        ..Default::default()
    });
    let child = proc(103, "p-child", "p-drop", &["/tmp/dropper", "--child"]);
    let mut first = exec("e1", T0 + S, bash.clone());
    first.container = Some(ContainerInfo {
        id: "host".into(),
        image: String::new(),
        ..Default::default()
    });
    let activity = vec![
        first,
        exec("e2", T0 + 2 * S, sh.clone()),
        exec("e3", T0 + 3 * S, dropper.clone()),
        Activity {
            id: "e4".into(),
            time_unix_ns: T0 + 4 * S,
            kind: ActivityKind::Connect as i32,
            protocol: "tcp".into(),
            remote_addr: "127.0.0.1".into(),
            remote_port: 4444,
            process: Some(ident(&dropper)),
            ..Default::default()
        },
        Activity {
            id: "e5".into(),
            time_unix_ns: T0 + 4 * S + 1,
            kind: ActivityKind::Dns as i32,
            domain: "pool.miner.example".into(),
            process: Some(ident(&dropper)),
            ..Default::default()
        },
        exec("e6", T0 + 6 * S, child.clone()),
        Activity {
            id: "e7".into(),
            time_unix_ns: T0 + 7 * S,
            kind: ActivityKind::Exit as i32,
            exit_code: 3,
            process: Some(ident(&child)),
            ..Default::default()
        },
    ];
    let alert = Alert {
        id: "alert-1".into(),
        rule: "Dropped program connects".into(),
        severity: Severity::Warning as i32,
        output: "dropper connected".into(),
        time_unix_ns: T0 + 5 * S,
        process: Some(dropper.clone()),
        ancestry: vec![
            Ancestor {
                pid: 101,
                comm: "sh".into(),
                exe: "/bin/sh".into(),
                argv: sh.argv.clone(),
                proc_id: "p-sh".into(),
            },
            Ancestor {
                pid: 100,
                comm: "bash".into(),
                exe: "/bin/bash".into(),
                argv: bash.argv.clone(),
                proc_id: "p-bash".into(),
            },
            Ancestor {
                pid: 1,
                comm: "init".into(),
                exe: "/sbin/init".into(),
                argv: vec!["/sbin/init".into()],
                proc_id: "p-init".into(),
            },
        ],
        context: vec![Activity {
            id: "c1".into(),
            time_unix_ns: T0 + 4 * S + 5,
            kind: ActivityKind::File as i32,
            path: "/etc/hostname".into(),
            detail: "open read".into(),
            process: Some(ident(&dropper)),
            ..Default::default()
        }],
        ..Default::default()
    };
    s.insert_batch(&h, std::slice::from_ref(&alert)).unwrap();
    assert_eq!(
        s.insert_activity(&h, &activity, std::slice::from_ref(&alert))
            .unwrap(),
        8,
        "seven events and one context event"
    );
    // A re-send stores nothing twice.
    assert_eq!(
        s.insert_activity(&h, &activity, std::slice::from_ref(&alert))
            .unwrap(),
        0
    );
    // Another host ran the same binary.
    let mut other = dropper.clone();
    other.proc_id = "q-drop".into();
    other.parent_proc_id = String::new();
    s.insert_activity(&host("db-2"), &[exec("f1", T0 + 9 * S, other)], &[])
        .unwrap();
    alert
}

fn check_answers(s: &SqlStore) {
    // The tree: init (partial) → bash → sh → dropper (alerting) → child.
    let t = investigate::tree(
        s,
        &TreeQuery {
            alert_id: "alert-1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let line: Vec<(u32, String, u32)> = t
        .nodes
        .iter()
        .map(|n| (n.process.as_ref().unwrap().pid, n.role.clone(), n.depth))
        .collect();
    assert_eq!(
        line,
        vec![
            (1, "ancestor".into(), 0),
            (100, "ancestor".into(), 1),
            (101, "ancestor".into(), 2),
            (102, "alerting".into(), 3),
            (103, "descendant".into(), 4),
        ]
    );
    assert!(t.nodes[0].partial, "init is known only from the ancestry");
    assert_eq!(
        t.nodes[2].process.as_ref().unwrap().argv,
        ["/bin/sh", "-c", "/tmp/dropper"]
    );
    let me = &t.nodes[3];
    let what: Vec<String> = me.events.iter().map(investigate::describe).collect();
    assert_eq!(
        what,
        [
            "exec /tmp/dropper 127.0.0.1 4444",
            "connect tcp 127.0.0.1:4444",
            "dns pool.miner.example ",
            "open read /etc/hostname",
        ]
    );
    assert_eq!(me.alerts.len(), 1);
    assert!(
        me.alerts[0].context.is_empty(),
        "context is stored as events"
    );
    assert!(t.nodes[4].exited && t.nodes[4].exit_code == 3);

    // The timeline around the alert, and a pid's share of it.
    let tl = investigate::timeline(
        s,
        &TimelineQuery {
            around_alert: "alert-1".into(),
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(tl.host, "web-1");
    let kinds: Vec<String> = tl
        .entries
        .iter()
        .map(|e| match e.entry.as_ref().unwrap() {
            Entry::Alert(a) => format!("alert {}", a.id),
            Entry::Activity(a) => a.id.clone(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "e1",
            "e2",
            "e3",
            "e4",
            "e5",
            "c1",
            "alert alert-1",
            "e6",
            "e7"
        ]
    );
    assert!(!tl.cut);
    let only = investigate::timeline(
        s,
        &TimelineQuery {
            around_alert: "alert-1".into(),
            pid: 102,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(only.entries.len(), 5, "exec, connect, dns, open, alert");
    // Cut to the limit around the alert: one before, one after.
    let cut = investigate::timeline(
        s,
        &TimelineQuery {
            around_alert: "alert-1".into(),
            limit: 2,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert!(cut.cut);
    assert_eq!(cut.entries.len(), 2);
    // --since: the newest, in time order.
    let since = investigate::timeline(
        s,
        &TimelineQuery {
            host: "web-1".into(),
            from_unix_ns: T0,
            to_unix_ns: T0 + 10 * S,
            limit: 3,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert!(since.cut);
    let t: Vec<i64> = since
        .entries
        .iter()
        .map(|e| match e.entry.as_ref().unwrap() {
            Entry::Alert(a) => a.time_unix_ns,
            Entry::Activity(a) => a.time_unix_ns,
        })
        .collect();
    assert_eq!(t, [T0 + 5 * S, T0 + 6 * S, T0 + 7 * S]);
    let wrong = investigate::timeline(
        s,
        &TimelineQuery {
            around_alert: "alert-1".into(),
            host: "db-2".into(),
            ..Default::default()
        },
        T0,
    );
    assert!(matches!(wrong, Err(InvestigateError::Invalid(m)) if m.contains("web-1")));

    // Pivots: the binary on both hosts; the address and the domain on one.
    let p = investigate::pivot(
        s,
        &PivotQuery {
            sha256: SHA.to_uppercase(),
            since_unix_ns: T0,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    let hosts: Vec<(&str, u64)> = p
        .hosts
        .iter()
        .map(|h| (h.hostname.as_str(), h.count))
        .collect();
    assert_eq!(hosts, [("db-2", 1), ("web-1", 1)]);
    assert_eq!(p.processes.len(), 2);
    assert_eq!(p.processes[1].process.as_ref().unwrap().pid, 102);
    let ip = investigate::pivot(
        s,
        &PivotQuery {
            ip: "127.0.0.1".into(),
            since_unix_ns: T0,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(ip.hosts.len(), 1);
    assert_eq!(ip.processes[0].detail, "connect tcp 127.0.0.1:4444");
    let dns = investigate::pivot(
        s,
        &PivotQuery {
            domain: "POOL.miner.example.".into(),
            since_unix_ns: T0,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert_eq!(dns.processes[0].process.as_ref().unwrap().proc_id, "p-drop");
    let user = investigate::pivot(
        s,
        &PivotQuery {
            user: "root".into(),
            since_unix_ns: T0,
            limit: 2,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    assert!(user.processes_cut, "five root processes, two listed");
}

#[test]
fn timeline_tree_and_pivot_answer_from_stored_activity_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    {
        let s = SqlStore::open(&db).unwrap();
        scenario(&s);
        check_answers(&s);
    }
    let s = SqlStore::open(&db).unwrap();
    check_answers(&s);
    // The same on PostgreSQL, through a second connection.
    let url = throwaway::database().unwrap();
    {
        let pg = SqlStore::open_db(&url).unwrap();
        scenario(&pg);
        check_answers(&pg);
    }
    check_answers(&SqlStore::open_db(&url).unwrap());
    assert!(matches!(
        investigate::tree(
            &s,
            &TreeQuery {
                alert_id: "nope".into(),
                ..Default::default()
            }
        ),
        Err(InvestigateError::NotFound(_))
    ));
}

#[test]
fn retention_prunes_events_and_exited_processes() {
    for s in both() {
        retention_prunes_events_and_exited_processes_on(&s);
    }
}

fn retention_prunes_events_and_exited_processes_on(s: &SqlStore) {
    scenario(s);
    // Everything before T0 + 6.5 s goes but the child's exit (and the other
    // host's exec); the child, which exited at 7 s, stays.
    let n = s.prune_activity(T0 + 6 * S + S / 2, 1000).unwrap();
    assert_eq!(n, 7, "six events and the context event before the cutoff");
    let (events, _) = s.process_events("web-1", "p-drop", 100).unwrap();
    assert!(events.is_empty());
    assert!(s.process("web-1", "p-child").unwrap().is_some());
    s.prune_activity(T0 + 8 * S, 1000).unwrap();
    assert!(
        s.process("web-1", "p-child").unwrap().is_none(),
        "exited before the cutoff"
    );
    assert!(
        s.process("web-1", "p-drop").unwrap().is_some(),
        "its exit was never seen"
    );
}

#[test]
fn one_host_cannot_rewrite_another_hosts_processes() {
    for s in both() {
        one_host_cannot_rewrite_another_hosts_processes_on(&s);
    }
}

fn one_host_cannot_rewrite_another_hosts_processes_on(s: &SqlStore) {
    scenario(s);
    // db-2 claims web-1's payload: a new program, and an exit.
    let mut forged = proc(102, "p-drop", "", &["/usr/bin/innocent"]);
    forged.user = "nobody".into();
    let exit = Activity {
        id: "forged-exit".into(),
        time_unix_ns: T0 + 8 * S,
        kind: ActivityKind::Exit as i32,
        process: Some(ident(&forged)),
        ..Default::default()
    };
    s.insert_activity(
        &host("db-2"),
        &[exec("forged", T0 + 8 * S, forged), exit],
        &[],
    )
    .unwrap();
    let row = s.process("web-1", "p-drop").unwrap().unwrap();
    assert_eq!(row.process.exe, "/tmp/dropper");
    assert_eq!(row.exit_ns, None, "no exit from another host");
    assert!(s.process("db-2", "p-drop").unwrap().is_none());
}

#[test]
fn an_event_names_the_program_its_process_ran_then() {
    for s in both() {
        an_event_names_the_program_its_process_ran_then_on(&s);
    }
}

fn an_event_names_the_program_its_process_ran_then_on(s: &SqlStore) {
    let h = host("web-1");
    // A loader connects, then execs a harmless-looking program.
    let loader = proc(300, "p-300", "", &["/tmp/loader"]);
    let connect = Activity {
        id: "n1".into(),
        time_unix_ns: T0 + S,
        kind: ActivityKind::Connect as i32,
        protocol: "tcp".into(),
        remote_addr: "203.0.113.9".into(),
        remote_port: 443,
        process: Some(ident(&loader)),
        ..Default::default()
    };
    s.insert_activity(&h, &[exec("n0", T0, loader), connect], &[])
        .unwrap();
    let later = proc(300, "p-300", "", &["/usr/bin/sleep", "60"]);
    s.insert_activity(&h, &[exec("n2", T0 + 2 * S, later)], &[])
        .unwrap();
    let p = investigate::pivot(
        s,
        &PivotQuery {
            ip: "203.0.113.9".into(),
            since_unix_ns: T0,
            ..Default::default()
        },
        T0,
    )
    .unwrap();
    let who = p.processes[0].process.as_ref().unwrap();
    assert_eq!(who.exe, "/tmp/loader", "the program that connected");
    assert!(who.argv.is_empty(), "not the later program's argv");
    assert_eq!(
        s.process("web-1", "p-300").unwrap().unwrap().process.exe,
        "/usr/bin/sleep"
    );
}

/// A connection at `t`, by one process of web-1.
fn connect_at(id: &str, t: i64) -> Activity {
    Activity {
        id: id.into(),
        time_unix_ns: t,
        kind: ActivityKind::Connect as i32,
        protocol: "tcp".into(),
        remote_addr: "198.51.100.7".into(),
        remote_port: 443,
        process: Some(ident(&proc(7, "p-7", "", &["/usr/bin/curl"]))),
        ..Default::default()
    }
}

fn timeline_ids(s: &SqlStore, from: i64, to: i64) -> Vec<String> {
    s.span_activity(&vigil_collector::activity::Span {
        host: "web-1".into(),
        from_ns: from,
        to_ns: to,
        pid: None,
        limit: 100,
        order: vigil_collector::activity::Order::Forward,
    })
    .unwrap()
    .into_iter()
    .map(|a| a.id)
    .collect()
}

#[test]
fn postgres_keeps_activity_by_day_and_retention_drops_whole_days() {
    let url = throwaway::database().unwrap();
    let s = SqlStore::connect(&url).unwrap();
    let now = vigil_collector::store::now_ns();
    let day = 86_400 * S;
    // Today and three days ago have partitions from the start; thirty days
    // ago has none and waits in the default partition.
    let (old, recent, today) = (now - 30 * day, now - 3 * day, now);
    s.insert_activity(
        &host("web-1"),
        &[
            connect_at("old", old),
            connect_at("recent", recent),
            connect_at("today", today),
        ],
        &[],
    )
    .unwrap();
    // A longer retention makes the older days' partitions: the waiting
    // event moves into its own, and nothing is lost.
    assert!(s.maintain(Some(now - 40 * day)).unwrap() >= 30);
    assert_eq!(
        timeline_ids(&s, old - S, now + S),
        ["old", "recent", "today"]
    );
    // Re-sent after the move: still once.
    s.insert_activity(&host("web-1"), &[connect_at("old", old)], &[])
        .unwrap();
    assert_eq!(timeline_ids(&s, old - S, old + S), ["old"]);
    // Retention of two days: the old days' partitions go whole.
    s.prune_activity(now - 2 * day, 10_000).unwrap();
    assert_eq!(timeline_ids(&s, old - S, now + S), ["today"]);
}
