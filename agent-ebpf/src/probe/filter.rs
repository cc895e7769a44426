//! Which tasks are not reported: the agent itself, and what the user
//! excluded (`--exclude-exe`, `--exclude-cgroup`). Checked before anything
//! is copied, so ignored activity costs one or two map lookups.
use agent_ebpf::config::{ExeKey, EXCLUDE_CGROUPS, EXCLUDE_EXES};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;

use super::{
    maps::{EXCLUDED_CGROUPS, EXCLUDED_EXES},
    task::{current_task, read_kernel},
};

/// The agent's own process, or an excluded one.
#[inline(always)]
pub fn is_ignored(tgid: u32) -> bool {
    let agent = config!(agent_tgid);
    (agent != 0 && agent == tgid) || is_excluded()
}

#[inline(always)]
fn is_excluded() -> bool {
    let which = config!(exclusions);
    if which == 0 {
        return false;
    }
    if which & EXCLUDE_CGROUPS != 0 {
        let id = unsafe { bpf_get_current_cgroup_id() };
        if unsafe { EXCLUDED_CGROUPS.get(&id) }.is_some() {
            return true;
        }
    }
    if which & EXCLUDE_EXES != 0 {
        if let Some(key) = current_exe_key() {
            if unsafe { EXCLUDED_EXES.get(&key) }.is_some() {
                return true;
            }
        }
    }
    false
}

/// `current->mm->exe_file->f_inode`: (i_sb->s_dev, i_ino).
#[inline(always)]
fn current_exe_key() -> Option<ExeKey> {
    let mm: *const u8 = read_kernel(current_task(), config!(task_mm))?;
    let file: *const u8 = read_kernel(mm, config!(mm_exe_file))?;
    let inode: *const u8 = read_kernel(file, config!(file_inode))?;
    let ino: u64 = read_kernel(inode, config!(inode_ino))?;
    let sb: *const u8 = read_kernel(inode, config!(inode_sb))?;
    let dev: u32 = read_kernel(sb, config!(sb_dev))?;
    Some(ExeKey {
        dev: dev as u64,
        ino,
    })
}
