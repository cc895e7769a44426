//! Enrichment against this machine: events wait for uncached lookups,
//! within their time and count bounds, and leave complete.
use super::*;
use crate::event::{ExitInfo, ProcessContext};

/// An exit event of this test process, as the probe would report it.
fn my_event(cgroup_id: u64) -> Event {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, ppid, ticks) = crate::util::proc_text::parse_stat(&stat).unwrap();
    Event {
        time_unix_ns: 0,
        num: 0,
        process: ProcessContext {
            pid: std::process::id(),
            tid: std::process::id(),
            ppid,
            uid: 0,
            gid: 0,
            euid: Some(0),
            egid: Some(0),
            loginuid: Some(-1),
            comm: "test".into(),
            cgroup_id,
            mnt_ns: read_ns_inode(std::path::Path::new("/proc/self/ns/mnt")),
            pid_ns: None,
            start_boottime_ns: Some(ticks * crate::util::clock::tick_ns() + 1),
            exe_deleted: false,
            tty: None,
            vpid: None,
            caps: None,
            detail: None,
        },
        ancestry: Arc::from([]),
        container: None,
        body: EventBody::Exit(ExitInfo {
            exit_code: Some(0),
            signal: None,
        }),
    }
}

fn enricher(wait: Duration, max_waiting: usize) -> Enricher {
    Enricher::start(EnrichConfig {
        k8s_log_dir: None,
        runtime_root: PathBuf::from("/nonexistent"),
        wait,
        max_waiting,
        ..EnrichConfig::default()
    })
}

fn next_ready(e: &mut Enricher, within: Duration) -> Option<Event> {
    let until = Instant::now() + within;
    loop {
        e.poll(Instant::now());
        if let Some(ev) = e.pop_ready() {
            return Some(ev);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn event_waits_for_an_uncached_lookup_then_leaves_complete() {
    let mut e = enricher(Duration::from_secs(10), 100);
    e.push(my_event(1), Instant::now());
    assert!(e.pop_ready().is_none(), "the root cgroup is not cached yet");
    assert_eq!(e.waiting(), 1);
    let ev = next_ready(&mut e, Duration::from_secs(10)).expect("released once answered");
    let c = ev.container.expect("container filled in");
    assert_eq!(
        (c.id.as_str(), c.runtime),
        ("host", crate::event::Runtime::Host)
    );
    let d = ev.process.detail.expect("process detail");
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(d.exe.as_deref(), me.to_str(), "named from the bootstrap");
    assert!(d.cwd.is_some());
    assert_eq!(e.counters.waited, 1);
    assert_eq!(e.counters.timed_out, 0);
    // Cached now: the next event of the same cgroup leaves at once.
    e.push(my_event(1), Instant::now());
    assert!(e.pop_ready().is_some());
}

#[test]
fn wait_is_bounded_by_time_and_by_count() {
    let mut e = enricher(Duration::ZERO, 100);
    e.push(my_event(u64::MAX - 1), Instant::now());
    e.poll(Instant::now());
    assert!(e.pop_ready().is_some(), "out of time: leaves without it");
    assert_eq!(e.counters.timed_out, 1);

    let mut e = enricher(Duration::from_secs(10), 0);
    e.push(my_event(u64::MAX - 1), Instant::now());
    assert!(e.pop_ready().is_some(), "no room to wait: leaves at once");
    assert_eq!(e.counters.wait_overflow, 1);
}

#[test]
fn a_vanished_cgroup_resolves_to_unknown() {
    let mut e = enricher(Duration::from_secs(10), 100);
    e.push(my_event(u64::MAX - 1), Instant::now());
    let ev = next_ready(&mut e, Duration::from_secs(10)).unwrap();
    assert_eq!(
        ev.container.unwrap().runtime,
        crate::event::Runtime::Unknown
    );
}
