//! Reading processes from `/proc`: the table's bootstrap at start-up and
//! the completion of processes first seen through an event.
//!
//! `/proc` is read directly rather than through `sysinfo`: the table keys
//! processes by their start time in clock ticks (`/proc/PID/stat` field 22,
//! the same `start_boottime` the probe reports in ns), and needs the audit
//! login uid and the executable's inode, none of which `sysinfo` exposes.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{event::ExeFile, kernel::exclusions::kernel_dev};

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    /// Start time since boot, in clock ticks.
    pub start_ticks: u64,
    pub comm: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub loginuid: Option<i64>,
    pub exe_file: Option<ExeFile>,
}

/// Length of a clock tick (`USER_HZ`) in ns: the unit of `/proc` start times.
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// Reads one process; None when it is gone or is a kernel thread's
/// unreadable remains.
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcSnapshot> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, ppid, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status_field(&status, "Uid:").unwrap_or(0);
    let argv = fs::read(dir.join("cmdline"))
        .map(|b| crate::event::process::split_argv(&b))
        .unwrap_or_default();
    let loginuid = fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|v| if v == u32::MAX { -1 } else { v as i64 });
    let exe_link = dir.join("exe");
    let exe = read_link(&exe_link);
    // stat through the link reaches the file even when it was deleted.
    let exe_file = fs::metadata(&exe_link).ok().map(|m| ExeFile {
        dev: kernel_dev(m.dev()),
        ino: m.ino(),
        size: m.size(),
        ctime_ns: stat_time_ns(m.ctime(), m.ctime_nsec()),
        mtime_ns: stat_time_ns(m.mtime(), m.mtime_nsec()),
        deleted: m.nlink() == 0,
    });
    Some(ProcSnapshot {
        pid,
        ppid,
        start_ticks,
        comm,
        exe: exe.map(|e| e.trim_end_matches(" (deleted)").to_string()),
        argv,
        cwd: read_link(&dir.join("cwd")),
        uid,
        loginuid,
        exe_file,
    })
}

/// A file time (`st_ctime` + `st_ctime_nsec`, …) as ns since the epoch,
/// the unit the probe reports inode times in.
pub fn stat_time_ns(sec: i64, nsec: i64) -> u64 {
    (sec.max(0) as u64) * 1_000_000_000 + nsec.max(0) as u64
}

fn read_link(p: &PathBuf) -> Option<String> {
    fs::read_link(p)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// `comm`, ppid and start time from `/proc/PID/stat`. The comm is in
/// parentheses and may itself contain ") ", so the rest is split after the
/// last one.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// The first number after `name` in `/proc/PID/status` (the real id for
/// `Uid:`/`Gid:`).
fn status_field(status: &str, name: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Every process under `proc_root`, parents before children (by pid order
/// is not enough: pids wrap), kernel threads left out.
pub fn read_all(proc_root: &Path) -> Vec<ProcSnapshot> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut procs: Vec<ProcSnapshot> = dir
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(proc_root, pid))
        .filter(|p| !is_kernel_thread(p))
        .collect();
    // A parent starts before its children: sorting by start orders them.
    procs.sort_by_key(|p| (p.start_ticks, p.pid));
    procs
}

/// Kernel threads have no command line and no executable; kthreadd (pid 2)
/// is their parent.
fn is_kernel_thread(p: &ProcSnapshot) -> bool {
    p.pid == 2 || p.ppid == 2 || (p.exe.is_none() && p.argv.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_comm() {
        let s = "4242 (evil) (x) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        assert_eq!(parse_stat(s), Some(("evil) (x".into(), 17, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read_process(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.exe.is_some());
        assert!(me.cwd.is_some());
        assert!(!me.argv.is_empty());
        assert!(me.exe_file.is_some());
        assert_eq!(me.uid, unsafe { libc::getuid() });
    }

    #[test]
    fn bootstrap_orders_parents_first() {
        let all = read_all(Path::new("/proc"));
        let me = std::process::id();
        let pos = |pid| all.iter().position(|p| p.pid == pid);
        let mine = pos(me).expect("this process is listed");
        let parent = all[mine].ppid;
        if let Some(pp) = pos(parent) {
            assert!(pp < mine);
        }
        assert!(all.iter().all(|p| p.pid != 2), "kernel threads left out");
    }
}
