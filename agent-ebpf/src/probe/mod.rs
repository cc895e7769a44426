//! The probe's programs and maps, one module per concern:
//!
//! - [`maps`]: every map the agent and the programs share, the `CONFIG`
//!   the agent writes before load, and the ring buffer's submit policy;
//! - [`task`]: reading kernel memory, and the current task's files;
//! - [`filter`]: which tasks are not reported (the agent, exclusions);
//! - [`header`]: the process context at the head of every record;
//! - [`process`]: exec, fork and exit;
//! - [`syscalls`]: the one enter/exit pair that serves every followed
//!   syscall, driven by the agent's per-syscall specs;
//! - [`path`]: absolute paths from dentry walks;
//! - [`network`]: socket addresses, ports and payloads.
//!
//! Modules change nothing the verifier sees: what is inlined and what is a
//! BPF-to-BPF call is set per function, as before the split.

/// Reads one `CONFIG` field; volatile so the compiler cannot fold the
/// placeholder value in at build time. Named for what it reads, not to be
/// mistaken for the built-in `cfg!`.
macro_rules! config {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::probe::maps::CONFIG.$field) };
        v
    }};
}

pub mod filter;
pub mod header;
pub mod maps;
pub mod network;
pub mod path;
pub mod process;
pub mod syscalls;
pub mod task;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
