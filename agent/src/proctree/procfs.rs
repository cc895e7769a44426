//! Reading processes from `/proc`: the table's bootstrap at start-up and
//! the completion of processes first seen through an event.
//!
//! `/proc` is read directly rather than through `sysinfo`: the table keys
//! processes by their start time in clock ticks (`/proc/PID/stat` field 22,
//! the same `start_boottime` the probe reports in ns), and needs the audit
//! login uid and the executable's inode, none of which `sysinfo` exposes.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    event::ExeFile,
    util::proc_text::{parse_stat, split_argv, status_field},
};

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

/// Reads one process; None when it is gone or is a kernel thread's
/// unreadable remains.
pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcSnapshot> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, ppid, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status_field(&status, "Uid:").unwrap_or(0);
    let argv = fs::read(dir.join("cmdline"))
        .map(|b| split_argv(&b))
        .unwrap_or_default();
    let loginuid = fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|v| if v == u32::MAX { -1 } else { v as i64 });
    let exe_link = dir.join("exe");
    let exe = read_link(&exe_link);
    // stat through the link reaches the file even when it was deleted.
    let exe_file = fs::metadata(&exe_link)
        .ok()
        .map(|m| ExeFile::from_metadata(&m));
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

fn read_link(p: &PathBuf) -> Option<String> {
    fs::read_link(p)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
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
