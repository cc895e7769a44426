//! Leaf helpers that know nothing of events: the clocks the probe stamps
//! with, the text formats of `/proc` files, device numbers. Every other
//! module may use them; they use no other module of the agent.
pub mod cap_names;
pub mod caps;
pub mod clock;
pub mod files;
pub mod memory;
pub mod proc_text;
pub mod procid;
pub mod sched;

/// The kernel's `dev_t` for a userspace `st_dev` (`MKDEV`: major << 20 |
/// minor), the encoding the probe reports devices in.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
    (major << 20) | minor
}
