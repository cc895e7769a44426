//! Reading kernel memory at the offsets the agent computed, and the
//! current task's open files.
use agent_ebpf::config::UNKNOWN_OFFSET;
use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_get_current_task_btf},
};

/// Reads a `T` at `base + offset` in kernel memory; `None` when the
/// offset is unknown on this kernel or the read faults.
#[inline(always)]
pub fn read_kernel<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == UNKNOWN_OFFSET {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// Follows a pointer field, then reads a `T` at `offset` in its target.
#[inline(always)]
pub fn read_via<T>(base: *const u8, ptr_offset: u32, offset: u32) -> Option<T> {
    let p: *const u8 = read_kernel(base, ptr_offset)?;
    read_kernel(p, offset)
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `current->files->fdt->fd[fd]`.
#[inline(always)]
pub fn fd_file(fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let files: *const u8 = read_kernel(current_task(), config!(task_files))?;
    let fdt: *const u8 = read_kernel(files, config!(files_fdt))?;
    let max: u32 = read_kernel(fdt, config!(fdt_max_fds))?;
    if fd as u32 >= max {
        return None;
    }
    let array: *const u8 = read_kernel(fdt, config!(fdt_fd))?;
    let file: *const u8 = read_kernel(array, fd as u32 * 8)?;
    (!file.is_null()).then_some(file)
}

/// The current task as a BTF-typed pointer: fields read through it (and
/// through pointers read from it) with [`load`] are plain loads the
/// verifier checks against the kernel's BTF, not helper calls.
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A direct load of a `T` at `base + offset`, for `base` reached from
/// [`current_task_btf`]. The offset is a constant of the read-only
/// `CONFIG`, so the verifier knows the field; a faulting load reads 0.
#[inline(always)]
pub fn load<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == UNKNOWN_OFFSET {
        return None;
    }
    Some(unsafe { core::ptr::read_volatile(base.add(offset as usize) as *const T) })
}

#[inline(always)]
pub fn load_via<T: Copy>(base: *const u8, ptr_offset: u32, offset: u32) -> Option<T> {
    let p: *const u8 = load(base, ptr_offset)?;
    load(p, offset)
}
