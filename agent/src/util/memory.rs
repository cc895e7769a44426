//! Giving freed memory back to the system. glibc's allocator keeps what
//! the program freed for reuse: after start-up (parsing the kernel's BTF
//! and the probe's object, tens of MiB) or a flood, the agent would go on
//! holding that memory while using a tenth of it. `release` asks the
//! allocator to return every free page it can.

/// Returns the allocator's free memory to the system; whether any was
/// (false, too, where the C library cannot).
pub fn release() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
