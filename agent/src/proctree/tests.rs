//! The process table against events built in the test: forks, execs,
//! exits, pid reuse, `/proc` bootstrap, eviction and ancestry.
use super::*;
use crate::event::{ExecInfo, ExitInfo, FileInfo, ForkInfo};

fn ctx(pid: u32, ppid: u32, start: u64) -> ProcessContext {
    ProcessContext {
        pid,
        tid: pid,
        ppid,
        uid: 1000,
        gid: 1000,
        euid: Some(1000),
        egid: Some(1000),
        loginuid: Some(1000),
        comm: "x".into(),
        cgroup_id: 1,
        mnt_ns: None,
        pid_ns: None,
        start_boottime_ns: Some(start),
        exe_deleted: false,
        tty: None,
        vpid: None,
        caps: None,
        detail: None,
    }
}

fn ev(p: ProcessContext, body: EventBody) -> Event {
    Event {
        time_unix_ns: 0,
        num: 0,
        process: p,
        ancestry: Arc::from([]),
        container: None,
        body,
    }
}

fn fork(child: u32, start: u64) -> EventBody {
    EventBody::Fork(ForkInfo {
        child_pid: child,
        clone_flags: None,
        child_start_boottime_ns: Some(start),
    })
}

fn exec(exe: &str, argv: &[&str]) -> EventBody {
    EventBody::Exec(ExecInfo {
        exe: Some(exe.into()),
        exe_unreachable: false,
        exe_memfd: false,
        exe_truncated: false,
        filename: exe.into(),
        filename_truncated: false,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        argv_truncated: false,
        argv_unreadable: false,
        argv_bytes: 0,
        env: Vec::new(),
        env_truncated: false,
        exe_file: None,
    })
}

fn exit() -> EventBody {
    EventBody::Exit(ExitInfo {
        exit_code: Some(0),
        signal: None,
    })
}

fn table() -> ProcessTable {
    let mut t = ProcessTable::new(TableConfig::default());
    t.insert_bootstrapped(procfs::ProcSnapshot {
        pid: 1,
        ppid: 0,
        start_ticks: 0,
        comm: "init".into(),
        exe: Some("/sbin/init".into()),
        argv: vec!["/sbin/init".into()],
        cwd: Some("/".into()),
        uid: 0,
        loginuid: None,
        exe_file: None,
    });
    t
}

/// init -> sh (100) -> sh (200) -> marker (300), built from events.
fn three_levels(t: &mut ProcessTable, now: Instant) -> ProcKey {
    t.apply(&ev(ctx(1, 0, 5), fork(100, 1_000)), now);
    t.apply(
        &ev(ctx(100, 1, 1_000), exec("/bin/sh", &["sh", "-c", "a"])),
        now,
    );
    t.apply(&ev(ctx(100, 1, 1_000), fork(200, 2_000)), now);
    t.apply(
        &ev(ctx(200, 100, 2_000), exec("/bin/sh", &["sh", "-c", "b"])),
        now,
    );
    t.apply(&ev(ctx(200, 100, 2_000), fork(300, 3_000)), now);
    let (k, need) = t.apply(&ev(ctx(300, 200, 3_000), exec("/tmp/m", &["m"])), now);
    assert_eq!(need, None, "known from the fork: no /proc read");
    k
}

#[test]
fn ancestry_follows_creators_to_init() {
    let mut t = table();
    let now = Instant::now();
    let k = three_levels(&mut t, now);
    let a = t.ancestry(&k);
    let pids: Vec<u32> = a.iter().map(|x| x.pid).collect();
    assert_eq!(pids, vec![200, 100, 1]);
    assert_eq!(&*a[0].argv, ["sh", "-c", "b"]);
    assert_eq!(a[2].exe.as_deref(), Some("/sbin/init"));
    assert_eq!(t.get(&k).unwrap().image.exe.as_deref(), Some("/tmp/m"));
}

#[test]
fn a_kept_ancestry_follows_an_ancestor_that_execs() {
    let mut t = table();
    let now = Instant::now();
    let k = three_levels(&mut t, now);
    let first = t.ancestry(&k);
    assert!(Arc::ptr_eq(&first, &t.ancestry(&k)), "kept between events");
    // The parent (200) runs something else: the child's parent is now that.
    t.apply(
        &ev(ctx(200, 100, 2_000), exec("/usr/bin/python3", &["python3"])),
        now,
    );
    let after = t.ancestry(&k);
    assert_eq!(after[0].exe.as_deref(), Some("/usr/bin/python3"));
    assert_eq!(first[0].exe.as_deref(), Some("/bin/sh"));
}

#[test]
fn exited_process_stays_nameable_for_its_grace_period() {
    let mut t = table();
    let now = Instant::now();
    let k = three_levels(&mut t, now);
    t.apply(&ev(ctx(200, 100, 2_000), exit()), now);
    // A late event of the exited process still finds it, and its
    // child's ancestry still names it.
    let e = t.find(200, Some(2_000)).expect("exited entry kept");
    assert!(e.exited);
    assert_eq!(t.ancestry(&k)[0].pid, 200);
    t.expire(now + Duration::from_secs(31));
    assert!(t.find(200, Some(2_000)).is_none());
    assert_eq!(t.counters.expired, 1);
}

#[test]
fn reused_pid_is_a_new_process() {
    let mut t = table();
    let now = Instant::now();
    t.apply(&ev(ctx(1, 0, 5), fork(100, 1_000)), now);
    t.apply(&ev(ctx(100, 1, 1_000), exec("/bin/old", &["old"])), now);
    t.apply(&ev(ctx(100, 1, 1_000), exit()), now);
    t.apply(&ev(ctx(1, 0, 5), fork(100, 9_000)), now);
    t.apply(&ev(ctx(100, 1, 9_000), exec("/bin/new", &["new"])), now);
    let new = t.find(100, Some(9_000)).unwrap();
    let old = t.find(100, Some(1_000)).unwrap();
    assert_eq!(new.image.exe.as_deref(), Some("/bin/new"));
    assert_eq!(old.image.exe.as_deref(), Some("/bin/old"));
    // Without an exit event, a new start replaces the stale entry.
    let (k, _) = t.apply(&ev(ctx(100, 1, 12_000), exec("/bin/third", &[])), now);
    assert_eq!(k.start_ns, 12_000);
    assert!(t.find(100, Some(9_000)).unwrap().exited);
}

#[test]
fn unknown_process_is_created_from_its_event_and_asks_for_proc() {
    let mut t = table();
    let (k, need) = t.apply(
        &ev(
            ctx(777, 1, 4_000),
            EventBody::Exit(ExitInfo {
                exit_code: None,
                signal: Some(9),
            }),
        ),
        Instant::now(),
    );
    assert_eq!(need, Some(NeedsProcRead(k)));
    assert_eq!(t.counters.unknown_process, 1);
    assert_eq!(t.ancestry(&k)[0].pid, 1, "linked to its live parent");
}

#[test]
fn coarse_bootstrap_start_matches_exact_kernel_start() {
    let mut t = table();
    let tick = t.tick_ns;
    t.insert_bootstrapped(procfs::ProcSnapshot {
        pid: 50,
        ppid: 1,
        start_ticks: 7,
        comm: "sshd".into(),
        exe: Some("/usr/sbin/sshd".into()),
        argv: vec!["sshd".into()],
        cwd: Some("/".into()),
        uid: 0,
        loginuid: None,
        exe_file: None,
    });
    let exact = 7 * tick + tick / 3;
    let e = t.find(50, Some(exact)).unwrap();
    assert_eq!(e.image.exe.as_deref(), Some("/usr/sbin/sshd"));
    assert!(
        t.find(50, Some(9 * tick)).is_none(),
        "another tick: pid reuse"
    );
}

#[test]
fn chdir_updates_cwd_and_fork_inherits_it() {
    let mut t = table();
    let now = Instant::now();
    t.apply(&ev(ctx(1, 0, 5), fork(100, 1_000)), now);
    let chdir = EventBody::File(FileInfo {
        op: FileOp::Chdir,
        syscall: crate::kernel::syscalls::Syscall::by_name("chdir").unwrap(),
        path: "/srv/app".into(),
        path_raw: None,
        new_path: None,
        target: None,
        open: None,
        flags: 0,
        mode: None,
        uid: None,
        gid: None,
        times: None,
        result: 0,
        error: None,
        path_truncated: false,
        path_unresolved: false,
    });
    t.apply(&ev(ctx(100, 1, 1_000), chdir), now);
    t.apply(&ev(ctx(100, 1, 1_000), fork(101, 1_500)), now);
    let c = t.find(101, Some(1_500)).unwrap();
    assert_eq!(c.cwd.as_deref(), Some("/srv/app"));
}

#[test]
fn cap_evicts_exited_first_and_counts() {
    let mut t = ProcessTable::new(TableConfig {
        max_entries: 4,
        ..TableConfig::default()
    });
    let now = Instant::now();
    for pid in 10..13 {
        t.apply(&ev(ctx(pid, 1, pid as u64), exec("/x", &[])), now);
    }
    t.apply(&ev(ctx(10, 1, 10), exit()), now);
    t.apply(&ev(ctx(13, 1, 13), exec("/x", &[])), now);
    t.apply(&ev(ctx(14, 1, 14), exec("/x", &[])), now);
    assert!(t.len() <= 4);
    assert!(t.find(10, Some(10)).is_none(), "the exited one went first");
    assert!(t.find(14, Some(14)).is_some());
    assert!(t.counters.evicted >= 1);
    // Only live entries left and still over: oldest starts go.
    for pid in 20..30 {
        t.apply(&ev(ctx(pid, 1, pid as u64), exec("/x", &[])), now);
    }
    assert!(t.len() <= 4);
    assert!(t.find(29, Some(29)).is_some());
}
