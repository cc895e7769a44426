//! Every map the probe shares with the agent, the start-up `CONFIG`, and
//! how records are submitted and counted.
use agent_ebpf::{
    config::{ExeKey, ProbeConfig, MAX_EXCLUSIONS},
    syscall::{ArgSpec, PendingSyscall, SyscallRecord, MAX_SYSCALL_NR},
    EventKind, ProbeCounter, DEFAULT_RING_BYTES, LOST_SLOTS, PROBE_COUNTER_SLOTS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Records that could not be reserved, indexed by `EventKind`.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// The probe's own error counters, indexed by `ProbeCounter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_COUNTER_SLOTS, 0);

/// Filled in by the agent before load (read-only data section); read with
/// `config!`.
#[no_mangle]
pub static CONFIG: ProbeConfig = ProbeConfig::UNSET;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Submit flags: wake the agent only when enough data is waiting.
#[inline(always)]
pub fn submit_flags() -> u64 {
    let threshold = config!(wakeup_bytes) as u64;
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// A record of `kind` that found no room in the ring.
#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(slot) = LOST.get_ptr_mut(kind.lost_slot()) {
        unsafe { *slot += 1 };
    }
}

/// Something the probe could not do, for the agent to report.
#[inline(always)]
pub fn count(what: ProbeCounter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(what as u32) {
        unsafe { *slot += 1 };
    }
}

/// cgroup v2 ids whose processes are not reported (`--exclude-cgroup`).
#[map]
pub static EXCLUDED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_EXCLUSIONS, 0);

/// Executables (device, inode) whose processes are not reported
/// (`--exclude-exe`).
#[map]
pub static EXCLUDED_EXES: HashMap<ExeKey, u8> = HashMap::with_max_entries(MAX_EXCLUSIONS, 0);

/// Per syscall number: which argument is what, and which family the
/// record belongs to (filled by the agent from its syscall table).
#[map]
pub static SYSCALL_SPECS: Array<ArgSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Arguments of followed syscalls in flight, by thread. LRU bounds it even
/// when an exit is never seen (a thread killed in the syscall).
#[map]
pub static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

/// Where a syscall record is assembled before its variable-size output.
/// The slack lets masked writes stay inside the value for the verifier.
#[repr(C)]
pub struct SyscallScratch {
    pub rec: SyscallRecord,
    pub data: [u8; SCRATCH_DATA],
    /// Write position in `data`. Kept in map memory, not a register:
    /// the verifier does not track its value, so loop iterations that
    /// did and did not copy a name reach the same state and are pruned
    /// instead of doubling at every directory level.
    pub pos: u64,
    /// Whether the current walk passed the task's root; in map memory
    /// for the same reason.
    pub reached: u64,
}
const SCRATCH_DATA: usize = 8192 + 1024;
/// Writes land at `pos & DATA_MASK`, and no single copy exceeds 1024
/// bytes, so every write stays inside `data`.
const DATA_MASK: usize = 8191;

#[map]
pub static SCRATCH: PerCpuArray<SyscallScratch> = PerCpuArray::with_max_entries(1, 0);

/// The scratch write position, masked into `data`'s bounds.
#[inline(always)]
pub fn get_pos(s: *mut SyscallScratch) -> usize {
    (unsafe { core::ptr::read_volatile(&raw const (*s).pos) } as usize) & DATA_MASK
}

#[inline(always)]
pub fn set_pos(s: *mut SyscallScratch, v: usize) {
    unsafe { core::ptr::write_volatile(&raw mut (*s).pos, v as u64) };
}
