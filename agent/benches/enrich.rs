//! Events per second through decode + process table + enrichment, on the
//! calling thread (one core), with warm caches: the agent's per-event cost
//! in userspace before rules.
//!
//! Each iteration replays one process lifecycle as the probe would record
//! it: a fork, the child's exec, eight file opens and its exit (11 events),
//! with a fresh pid each time so the table keeps inserting and expiring.
use std::{
    hint::black_box,
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use agent_ebpf::{
    file::FileOp,
    process::{ExecRecord, ExitRecord, ForkRecord, ARGV_MAX, EXE_MAX, FILENAME_MAX},
    syscall::SyscallRecord,
    EventHeader, EventKind,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_agent::{
    enrich::{EnrichConfig, Enricher},
    event,
    util::clock::BootClock,
};

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-old-data wire record.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()).to_vec() }
}

fn mnt_ns() -> u32 {
    std::fs::metadata("/proc/self/ns/mnt").unwrap().ino() as u32
}

fn header(kind: EventKind, pid: u32, ppid: u32, start: u64) -> EventHeader {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"true");
    EventHeader {
        kind: kind as u32,
        flags: 0,
        pid,
        tgid: pid,
        ppid,
        uid: 0,
        gid: 0,
        euid: 0,
        egid: 0,
        loginuid: u32::MAX,
        boot_ns: start,
        cgroup_id: 1,
        start_boottime_ns: start,
        mnt_ns: mnt_ns(),
        pid_ns: 0,
        comm,
        tty: 0,
        vpid: pid,
        caps: [0; 4],
    }
}

/// The records of one lifecycle of process `pid`, child of `parent`.
fn lifecycle(parent: u32, parent_start: u64, pid: u32, start: u64) -> Vec<Vec<u8>> {
    let meta = std::fs::metadata("/bin/true").unwrap();
    let mut out = Vec::new();
    out.push(bytes_of(&ForkRecord {
        header: header(EventKind::Fork, parent, 1, parent_start),
        child_pid: pid,
        flags_known: 1,
        clone_flags: 0x0120_0011,
        child_start_boottime_ns: start,
    }));
    let mut exec = ExecRecord {
        header: header(EventKind::Exec, pid, parent, start),
        filename_len: 9,
        argv_len: 0,
        flags: 0,
        argv_total_len: 0,
        exe_len: 0,
        exe_nlink: 1,
        exe_ino: meta.ino(),
        exe_dev: vigil_agent::util::kernel_dev(meta.dev()),
        exe_size: meta.size(),
        exe_ctime_ns: vigil_agent::util::clock::stat_time_ns(meta.ctime(), meta.ctime_nsec()),
        exe_mtime_ns: 0,
        filename: [0; FILENAME_MAX],
        argv: [0; ARGV_MAX],
        exe: [0; EXE_MAX],
        env_len: 0,
        env_total_len: 0,
        env: [0; agent_ebpf::process::ENV_MAX],
    };
    exec.filename[..9].copy_from_slice(b"/bin/true");
    let argv = b"/bin/true\0--quiet\0";
    exec.argv[..argv.len()].copy_from_slice(argv);
    exec.argv_len = argv.len() as u32;
    exec.argv_total_len = argv.len() as u32;
    let exe = b"true\0bin\0";
    exec.exe[..exe.len()].copy_from_slice(exe);
    exec.exe_len = exe.len() as u32;
    out.push(bytes_of(&exec));
    for i in 0..8 {
        let path = format!("lib/x86_64-linux-gnu/libc.so.{i}");
        let rec = SyscallRecord {
            header: header(EventKind::File, pid, parent, start),
            op: FileOp::Open as u32,
            syscall_nr: libc::SYS_openat as u32,
            args: [0; 6],
            old_ids: [0; 4],
            old_caps: [0; 3],
            result: 3,
            flags: libc::O_RDONLY as u64,
            mode: 0,
            uid: 0,
            gid: 0,
            dirfd: -100,
            dirfd2: -100,
            path_flags: 0,
            path1_len: path.len() as u16,
            base1_len: 4,
            path2_len: 0,
            base2_len: 0,
        };
        let mut v = bytes_of(&rec);
        v.extend_from_slice(path.as_bytes());
        v.extend_from_slice(b"usr\0");
        out.push(v);
    }
    out.push(bytes_of(&ExitRecord {
        header: header(EventKind::Exit, pid, parent, start),
        exit_code: 0,
        exit_code_unknown: 0,
    }));
    out
}

fn run_all(enricher: &mut Enricher, recs: &[Vec<u8>], clock: BootClock) -> usize {
    let now = Instant::now();
    for r in recs {
        let ev = event::decode(r, clock).expect("valid record");
        enricher.push(ev, now);
    }
    enricher.poll(now);
    let mut n = 0;
    while let Some(ev) = enricher.pop_ready() {
        black_box(&ev);
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut enricher = Enricher::start(EnrichConfig {
        k8s_log_dir: None,
        ..EnrichConfig::default()
    });
    let clock = BootClock::now();
    // The parent is this process, as the table bootstrapped it from /proc.
    let me = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, _, ticks) = vigil_agent::util::proc_text::parse_stat(&stat).unwrap();
    let my_start = ticks * vigil_agent::util::clock::tick_ns();
    // Warm the caches (container of cgroup 1, host users, /bin/true's hash).
    let warm = lifecycle(me, my_start, 4_000_000, 2);
    run_all(&mut enricher, &warm, clock);
    let until = Instant::now() + Duration::from_secs(5);
    while enricher.waiting() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
        enricher.poll(Instant::now());
        while enricher.pop_ready().is_some() {}
    }
    assert_eq!(enricher.waiting(), 0, "caches did not warm up");

    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(11));
    let mut pid = 100_000u32;
    let mut start = 1_000_000u64;
    group.bench_function("decode_enrich_lifecycle", |b| {
        b.iter_batched(
            || {
                pid = if pid >= 3_000_000 { 100_000 } else { pid + 1 };
                start += 1_000;
                lifecycle(me, my_start, pid, start)
            },
            |recs| {
                let n = run_all(&mut enricher, &recs, clock);
                assert_eq!(n, recs.len(), "an event waited: caches not warm");
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
    eprintln!(
        "table entries: {}, counters: {:?}",
        enricher.table().len(),
        enricher.table().counters
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
