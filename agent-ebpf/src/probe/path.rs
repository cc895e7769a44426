//! Paths the kernel way: the components of a dentry up to the top of its
//! mount tree, crossing mount points, written leaf first into the scratch
//! buffer; and the path strings and base directories of syscall arguments.
use core::{ffi::c_void, ptr};

use agent_ebpf::{
    config::UNKNOWN_OFFSET,
    syscall::{
        AT_FDCWD, BASE1_TRUNCATED, BASE1_UNKNOWN, BASE_MAX_KEPT, PATH1_TRUNCATED, PATH_MAX_KEPT,
    },
};
use aya_ebpf::helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str};

use super::{
    maps::{get_pos, set_pos, SyscallScratch},
    task::{current_task, fd_file, read_kernel},
};

/// Longest path component the walk copies (NAME_MAX + NUL).
const NAME_MAX_KEPT: u32 = 256;
/// Deepest directory the walk follows.
const WALK_DEPTH: u32 = 48;

/// Copies a user path string and, when it is relative, the components
/// of the directory it is relative to. Returns (path bytes, base bytes,
/// PATH1_*/BASE1_* flags).
#[inline(always)]
pub fn copy_path_and_base(
    s: *mut SyscallScratch,
    user: Option<u64>,
    dirfd: i32,
    plain: bool,
) -> (usize, usize, u32) {
    let Some(ptr) = user else {
        return (0, 0, 0);
    };
    if ptr == 0 {
        return (0, 0, 0);
    }
    let data = unsafe { (&raw mut (*s).data) as *mut u8 };
    let mut flags = 0;
    let start = get_pos(s);
    let n = unsafe {
        bpf_probe_read_user_str(
            data.add(start) as *mut c_void,
            PATH_MAX_KEPT as u32,
            ptr as *const c_void,
        )
    };
    if n <= 0 {
        return (0, 0, 0);
    }
    let n = (n as usize).min(PATH_MAX_KEPT);
    if n == PATH_MAX_KEPT {
        flags |= PATH1_TRUNCATED;
    }
    let first = unsafe { *data.add(start) };
    set_pos(s, start + n);
    if first == b'/' || plain {
        return (n, 0, flags);
    }
    let base = if dirfd == AT_FDCWD {
        cwd_path()
    } else {
        fd_path(dirfd)
    };
    let Some((mnt, dentry)) = base else {
        return (n, 0, flags | BASE1_UNKNOWN);
    };
    let (b, truncated, _) = walk_path(s, mnt, dentry);
    if truncated {
        flags |= BASE1_TRUNCATED;
    }
    (n, b, flags)
}

/// The path of the file behind fd argument `fd` (e.g. finit_module's
/// module file): an empty path string and the file's components.
#[inline(always)]
pub fn copy_fd_path(s: *mut SyscallScratch, fd: Option<u64>) -> (usize, usize, u32) {
    let Some(fd) = fd else {
        return (0, 0, 0);
    };
    let start = get_pos(s);
    let data = unsafe { (&raw mut (*s).data) as *mut u8 };
    unsafe { *data.add(start) = 0 };
    set_pos(s, start + 1);
    let Some((mnt, dentry)) = fd_path(fd as i32) else {
        return (1, 0, BASE1_UNKNOWN);
    };
    let (b, truncated, _) = walk_path(s, mnt, dentry);
    (1, b, if truncated { BASE1_TRUNCATED } else { 0 })
}

/// `current->fs->pwd` as (vfsmount, dentry).
#[inline(always)]
fn cwd_path() -> Option<(*const u8, *const u8)> {
    let fs: *const u8 = read_kernel(current_task(), config!(task_fs))?;
    let path = unsafe { fs.add(config!(fs_pwd) as usize) };
    if config!(fs_pwd) == UNKNOWN_OFFSET {
        return None;
    }
    Some((
        read_kernel(path, config!(path_mnt))?,
        read_kernel(path, config!(path_dentry))?,
    ))
}

/// `current->files->fdt->fd[fd]->f_path` as (vfsmount, dentry).
#[inline(always)]
fn fd_path(fd: i32) -> Option<(*const u8, *const u8)> {
    let file = fd_file(fd)?;
    if config!(file_f_path) == UNKNOWN_OFFSET {
        return None;
    }
    let path = unsafe { file.add(config!(file_f_path) as usize) };
    Some((
        read_kernel(path, config!(path_mnt))?,
        read_kernel(path, config!(path_dentry))?,
    ))
}

/// Writes the names from `dentry` up to the top of its mount tree,
/// crossing mount points, as NUL-terminated components at the scratch
/// position: host paths, also for a chrooted process (a container that
/// pivoted its root ends at its own tree's top). Returns the bytes
/// written, whether the walk hit its bounds, and whether it passed the
/// task's root: a file that never does lives on an internal mount (a
/// memfd) or outside the task's mount tree.
#[inline(never)]
pub fn walk_path(
    s: *mut SyscallScratch,
    vfsmnt: *const u8,
    dentry: *const u8,
) -> (usize, bool, bool) {
    let data = unsafe { (&raw mut (*s).data) as *mut u8 };
    let start = get_pos(s);
    let mnt_off = config!(mount_mnt);
    if mnt_off == UNKNOWN_OFFSET || vfsmnt.is_null() {
        return (0, true, false);
    }
    let (root_vfs, root_d) = task_root().unwrap_or((core::ptr::null(), core::ptr::null()));
    let mut mnt = unsafe { vfsmnt.sub(mnt_off as usize) };
    let mut vfs = vfsmnt;
    let mut d = dentry;
    let mut done = false;
    unsafe { ptr::write_volatile(&raw mut (*s).reached, 0) };
    for _ in 0..WALK_DEPTH {
        // Compared through XOR: a direct `d == root_d` would make the
        // verifier link the two registers and stop pruning iterations.
        let diff = ((d as u64) ^ (root_d as u64)) | ((vfs as u64) ^ (root_vfs as u64));
        if core::hint::black_box(diff) == 0 {
            unsafe { ptr::write_volatile(&raw mut (*s).reached, 1) };
        }
        let Some(mnt_root) = read_kernel::<*const u8>(vfs, config!(vfsmount_root)) else {
            break;
        };
        if d == mnt_root {
            let Some(parent) = read_kernel::<*const u8>(mnt, config!(mount_parent)) else {
                break;
            };
            if parent == mnt {
                // Top of the mount tree. A file that is itself the root
                // of an internal mount is named by itself, as d_path does.
                if get_pos(s) == start {
                    copy_name(s, d);
                }
                done = true;
                break;
            }
            let Some(mp) = read_kernel::<*const u8>(mnt, config!(mount_mountpoint)) else {
                break;
            };
            d = mp;
            mnt = parent;
            vfs = unsafe { parent.add(mnt_off as usize) };
            continue;
        }
        let Some(parent) = read_kernel::<*const u8>(d, config!(dentry_parent)) else {
            break;
        };
        if get_pos(s).wrapping_sub(start) + NAME_MAX_KEPT as usize > BASE_MAX_KEPT {
            break;
        }
        if !copy_name(s, d) {
            break;
        }
        if parent == d {
            // A pseudo or disconnected dentry (memfd, deleted tree).
            done = true;
            break;
        }
        d = parent;
    }
    let _ = data;
    let reached = unsafe { ptr::read_volatile(&raw const (*s).reached) } != 0;
    (get_pos(s).wrapping_sub(start) & 0xffff, !done, reached)
}

/// Appends `d`'s name and a NUL at the scratch position.
#[inline(always)]
fn copy_name(s: *mut SyscallScratch, d: *const u8) -> bool {
    let Some(name) = read_kernel::<*const u8>(d, config!(dentry_name_ptr)) else {
        return false;
    };
    let data = unsafe { (&raw mut (*s).data) as *mut u8 };
    let at = get_pos(s);
    let n = unsafe {
        bpf_probe_read_kernel_str(
            data.add(at) as *mut c_void,
            NAME_MAX_KEPT,
            name as *const c_void,
        )
    };
    if n <= 0 {
        return false;
    }
    set_pos(s, at + (n as usize & 0x1ff));
    true
}

/// `current->fs->root` as (vfsmount, dentry).
#[inline(always)]
fn task_root() -> Option<(*const u8, *const u8)> {
    let fs: *const u8 = read_kernel(current_task(), config!(task_fs))?;
    if config!(fs_root) == UNKNOWN_OFFSET {
        return None;
    }
    let root = unsafe { fs.add(config!(fs_root) as usize) };
    Some((
        read_kernel(root, config!(path_mnt))?,
        read_kernel(root, config!(path_dentry))?,
    ))
}
