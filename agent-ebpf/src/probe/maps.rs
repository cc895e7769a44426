//! Every map the probe shares with the agent, the start-up `CONFIG`, and
//! how records are submitted and counted.
use agent_ebpf::{
    config::{ExeKey, ProbeConfig, MAX_EXCLUSIONS},
    syscall::{
        ArgSpec, OpenFilter, PathKeyData, PendingSyscall, SyscallRecord, MAX_SYSCALL_NR,
        WAKE_GAP_NS,
    },
    EventKind, ProbeCounter, DEFAULT_PROCESS_RING_BYTES, DEFAULT_RING_BYTES, LOST_SLOTS,
    PROBE_COUNTER_SLOTS,
};
use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// File, control and network records.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Exec, fork and exit records: a ring of their own, so no flood of other
/// events can take their room.
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_PROCESS_RING_BYTES, 0);

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

/// When each CPU last woke the agent for a record that may raise an
/// alert, per ring ([`Ring`]): an exec is not held back because a syscall
/// record of the same process woke the agent just before.
#[map]
static LAST_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// The two rings.
#[derive(Clone, Copy)]
pub enum Ring {
    /// [`EVENTS`]: file, control and network records.
    Syscalls = 0,
    /// [`PROCESS_EVENTS`]: exec, fork and exit.
    Process = 1,
}

impl Ring {
    fn buf(self) -> &'static RingBuf {
        match self {
            Ring::Syscalls => &EVENTS,
            Ring::Process => &PROCESS_EVENTS,
        }
    }
}

/// Submit flags for a record on `ring`. A record that may raise an alert
/// (`may_alert`) wakes the agent at once, at most once per `WAKE_GAP_NS`
/// on this CPU (the agent polls again shortly after each wake-up, which
/// picks up what the gap held back). Everything else wakes it only when
/// `wakeup_bytes` are waiting: each wake-up costs the submitting task an
/// irq_work, so batching them is most of the probe's saving.
#[inline(always)]
pub fn submit_flags(ring: Ring, may_alert: bool) -> u64 {
    let threshold = config!(wakeup_bytes) as u64;
    if threshold == 0 {
        return 0;
    }
    if may_alert {
        if let Some(last) = LAST_WAKE.get_ptr_mut(ring as u32) {
            let now = unsafe { bpf_ktime_get_ns() };
            if now.wrapping_sub(unsafe { *last }) >= WAKE_GAP_NS {
                unsafe { *last = now };
                return BPF_RB_FORCE_WAKEUP;
            }
        }
    }
    if ring.buf().query(BPF_RB_AVAIL_DATA) >= threshold {
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

/// Exec options (one entry, `EXEC_*` bits of `agent_ebpf::process`),
/// written by the agent from the loaded rules: today whether to copy the
/// environment.
#[map]
pub static EXEC_OPTIONS: Array<u32> = Array::with_max_entries(1, 0);

/// What an open must match to be reported (one entry), written by the
/// agent from the loaded rules.
#[map]
pub static OPEN_FILTER: Array<OpenFilter> = Array::with_max_entries(1, 0);

/// Path prefixes of the open filter's clauses: the key's first byte is the
/// clause's set id, the rest the prefix.
#[map]
pub static PATH_PREFIXES: LpmTrie<PathKeyData, u8> = LpmTrie::with_max_entries(4096, 0);

/// Arguments stashed at entry (`HOOK_AT_ENTER` syscalls only), by thread.
/// LRU bounds it even when an exit is never seen (a thread killed in the
/// syscall).
#[map]
pub static PENDING: LruHashMap<u64, PendingSyscall> = LruHashMap::with_max_entries(16384, 0);

/// The last destination each process sent to on each unconnected inet
/// socket (`tgid << 32 | fd` → a hash of the address): a send is reported
/// only when its destination changed (Falco's `fd.name_changed`), so a
/// socket sending to one peer in a loop costs one event. LRU, so a
/// process that closed the fd and opened another one of the same number
/// can at worst miss, or repeat, one event.
#[map]
pub static SEND_DESTS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

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
    /// A send to a new destination: the user address it names, which the
    /// record carries instead of the syscall's own arguments; 0 otherwise.
    /// Here rather than an argument: a BPF call takes five.
    pub send_addr: u64,
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
