//! Loading and attaching the embedded eBPF probe.
//!
//! Checks what is missing before touching the kernel (privileges, BTF, the
//! probe object itself), computes the kernel layout, loads the probe with it,
//! attaches the process hooks, and then the syscall hooks the rules need
//! ([`syscalls`]), again on every rule reload. Logs what is in use.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use agent_ebpf::{config::ProbeConfig, EventKind, ProbeCounter, LOST_SLOTS};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::kernel::{
    interest::KernelInterest,
    layout::{StructOffsets, VMLINUX_BTF},
    tracefs,
};

mod process_ring;
mod syscalls;

pub use process_ring::ProcessRing;
use syscalls::SyscallHooks;

/// The probe object built by `build.rs`; empty under `AYA_BUILD_SKIP=1`.
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil-probe"));

/// True when this binary carries the probe (not built with AYA_BUILD_SKIP=1).
pub fn embedded() -> bool {
    !PROBE_OBJECT.is_empty()
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this vigil-agent was built with AYA_BUILD_SKIP=1 and has no eBPF probe; rebuild without it")]
    NotEmbedded,
    #[error("loading the eBPF probe needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN); running as uid {uid} without them")]
    NotPrivileged { uid: u32 },
    #[error("no kernel BTF at {0}; Vigil needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8 or newer), or a BTF file for this kernel given with --btf")]
    NoBtf(String),
    #[error(transparent)]
    Layout(#[from] crate::kernel::layout::LayoutError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("ring buffer size {0} must be a power of two and a multiple of 4096 bytes")]
    RingSize(u32),
    #[error("loading the eBPF probe into the kernel failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name}: {message}")]
    Program { name: &'static str, message: String },
    #[error("eBPF map {0} is missing from the probe object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the probe object")]
    MissingProgram(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Size of the EVENTS ring buffer (file, control, network) in bytes.
    pub ring_bytes: u32,
    /// Size of the PROCESS_EVENTS ring buffer (exec, fork, exit) in bytes.
    pub process_ring_bytes: u32,
    /// Follow syscalls this kernel has no `syscalls:*` tracepoint for
    /// through the raw `sys_enter`/`sys_exit` hooks, which run on every
    /// syscall of the host.
    pub raw_syscall_hooks: bool,
    /// The running kernel's BTF (default `/sys/kernel/btf/vmlinux`).
    pub btf_path: PathBuf,
    /// Bytes waiting in the ring before the probe wakes the agent; 0 wakes
    /// it on every record.
    pub wakeup_bytes: u32,
    /// Processes the probe skips in the kernel.
    pub exclusions: crate::kernel::exclusions::Exclusions,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_bytes: agent_ebpf::DEFAULT_RING_BYTES,
            process_ring_bytes: agent_ebpf::DEFAULT_PROCESS_RING_BYTES,
            raw_syscall_hooks: false,
            btf_path: PathBuf::from(VMLINUX_BTF),
            wakeup_bytes: 0,
            exclusions: Default::default(),
        }
    }
}

/// A loaded and attached probe. Dropping it detaches every hook.
pub struct Probe {
    ebpf: Ebpf,
    lost: Option<PerCpuArray<MapData, u64>>,
    /// The probe's own error counters (`ProbeCounter` slots).
    counters: Option<PerCpuArray<MapData, u64>>,
    /// The process hooks, e.g. `tracepoint sched:sched_process_exec`.
    process_hooks: Vec<String>,
    syscalls: SyscallHooks,
    /// What the exclusion maps were given, to check them against.
    exclusions: crate::kernel::exclusions::Exclusions,
}

/// The probe's two ring buffers.
pub struct Rings {
    /// exec, fork, exit.
    pub process: RingBuf<MapData>,
    /// file, control, network.
    pub syscalls: RingBuf<MapData>,
}

const EXEC_PROG: &str = "sched_process_exec";
const FORK_PROG: &str = "sched_process_fork";
const EXIT_PROG: &str = "sched_process_exit";

impl Probe {
    pub fn load(opts: &ProbeOptions) -> Result<Probe, ProbeError> {
        preflight(&opts.btf_path)?;
        for size in [opts.ring_bytes, opts.process_ring_bytes] {
            if !size.is_power_of_two() || !size.is_multiple_of(4096) {
                return Err(ProbeError::RingSize(size));
            }
        }
        warn_if_ring_small(opts.process_ring_bytes);
        raise_memlock_limit();
        let tracefs_root = tracefs::ensure_mounted()?;
        let mut config = probe_config(&tracefs_root, &opts.btf_path)?;
        config.wakeup_bytes = opts.wakeup_bytes.min(opts.ring_bytes / 2);
        let ex = &opts.exclusions;
        if !ex.cgroups.is_empty() {
            config.exclusions |= agent_ebpf::config::EXCLUDE_CGROUPS;
        }
        if !ex.exes.is_empty() {
            config.exclusions |= agent_ebpf::config::EXCLUDE_EXES;
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("PROCESS_EVENTS", opts.process_ring_bytes)
            .load(PROBE_OBJECT)
            .map_err(ProbeError::Load)?;
        fill_exclusions(&mut ebpf, ex)?;
        let mut process_hooks = Vec::new();
        attach_tracepoint(&mut ebpf, EXEC_PROG, "sched", &mut process_hooks)?;
        attach_raw_tracepoint(&mut ebpf, FORK_PROG, &mut process_hooks)?;
        attach_tracepoint(&mut ebpf, EXIT_PROG, "sched", &mut process_hooks)?;
        tracing::info!(family = "process", hooks = %process_hooks.join(", "), "probe attached");
        let syscalls =
            SyscallHooks::prepare(&mut ebpf, &tracefs_root, &config, opts.raw_syscall_hooks)?;
        let lost = take_per_cpu(&mut ebpf, "LOST")?;
        let counters = take_per_cpu(&mut ebpf, "COUNTERS")?;
        Ok(Probe {
            ebpf,
            lost: Some(lost),
            counters: Some(counters),
            process_hooks,
            syscalls,
            exclusions: opts.exclusions.clone(),
        })
    }

    /// Attaches, detaches and filters the syscall hooks to report what
    /// `interest` asks for (at start, and after each rule reload).
    pub fn apply_interest(&mut self, interest: &KernelInterest) -> Result<(), ProbeError> {
        self.syscalls.apply(&mut self.ebpf, interest)
    }

    /// Every hook attached now, e.g. `tracepoint sched:sched_process_exec`.
    pub fn hooks(&self) -> Vec<String> {
        let mut out = self.process_hooks.clone();
        out.extend(self.syscalls.hooks());
        out
    }

    /// Takes the two ring buffers (once).
    pub fn take_rings(&mut self) -> Result<Rings, ProbeError> {
        let mut take = |name: &'static str| {
            let map = self
                .ebpf
                .take_map(name)
                .ok_or(ProbeError::MissingMap(name))?;
            RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })
        };
        Ok(Rings {
            process: take("PROCESS_EVENTS")?,
            syscalls: take("EVENTS")?,
        })
    }

    /// Each program the agent attached, with the attachments it made and
    /// those the kernel still has (its link table, read now): a program
    /// detached from outside the agent shows as fewer attached than
    /// expected.
    pub fn attachments(&self) -> Vec<(String, u32, u32)> {
        let mut links: std::collections::HashMap<u32, u32> = Default::default();
        for l in aya::programs::loaded_links().flatten() {
            *links.entry(l.program_id()).or_default() += 1;
        }
        let mut expected: Vec<(&str, u32)> = vec![(EXEC_PROG, 1), (FORK_PROG, 1), (EXIT_PROG, 1)];
        expected.extend(self.syscalls.expected_attachments());
        expected
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| {
                let attached = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .map_or(0, |i| links.get(&i.id()).copied().unwrap_or(0));
                (name.to_string(), n, attached)
            })
            .collect()
    }

    /// The maps the agent wrote whose content is no longer what it wrote,
    /// each with what changed: another process with the map's id (root,
    /// or CAP_BPF) can update a map, and a key added to an exclusion map
    /// or a filter emptied hides a process or a syscall from every rule.
    /// `CONFIG` needs no check: it is read-only and frozen at load.
    pub fn tampered(&self) -> Vec<String> {
        let mut out = Vec::new();
        let want: BTreeSet<u64> = self.exclusions.cgroups.iter().copied().collect();
        if let Some(d) = key_drift::<u64>(&self.ebpf, "EXCLUDED_CGROUPS", &want) {
            out.push(d);
        }
        let want: BTreeSet<agent_ebpf::config::ExeKey> =
            self.exclusions.exes.iter().copied().collect();
        if let Some(d) = key_drift(&self.ebpf, "EXCLUDED_EXES", &want) {
            out.push(d);
        }
        out.extend(self.syscalls.tampered(&self.ebpf));
        out
    }

    /// Per-program kernel cost so far: (program, runs, total run time).
    /// Counts only grow while BPF statistics are enabled (see
    /// [`enable_run_time_stats`]).
    pub fn program_stats(&self) -> Vec<(String, u64, std::time::Duration)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                p.info()
                    .ok()
                    .map(|i| (name.to_string(), i.run_count(), i.run_time()))
            })
            .collect()
    }

    /// Events lost in the kernel so far (ring buffer full), per kind, summed
    /// over CPUs.
    pub fn lost_counts(&self) -> Vec<(EventKind, u64)> {
        let Some(map) = &self.lost else {
            return Vec::new();
        };
        EventKind::ALL
            .iter()
            .filter(|k| k.lost_slot() < LOST_SLOTS)
            .map(|k| (*k, per_cpu_total(map, k.lost_slot())))
            .collect()
    }

    /// What the probe could not do so far (see [`ProbeCounter`]), summed
    /// over CPUs.
    pub fn probe_counters(&self) -> Vec<(ProbeCounter, u64)> {
        let Some(map) = &self.counters else {
            return Vec::new();
        };
        ProbeCounter::ALL
            .iter()
            .map(|c| (*c, per_cpu_total(map, *c as u32)))
            .collect()
    }
}

/// Takes a per-CPU counter array out of the object.
fn take_per_cpu(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, u64>, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    PerCpuArray::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

/// Sums one slot of a per-CPU counter array over CPUs.
fn per_cpu_total(map: &PerCpuArray<MapData, u64>, slot: u32) -> u64 {
    map.get(&slot, 0)
        .map(|v| v.iter().sum::<u64>())
        .unwrap_or(0)
}

/// Turns on the kernel's BPF run-time accounting (`kernel.bpf_stats_enabled`)
/// for as long as the returned fd is held. It costs about 20 ns per program
/// run, so it is opt-in.
pub fn enable_run_time_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A program error whose verifier log is cut to its last lines: the full
/// log can run to megabytes, and its end says why the program was refused.
pub(super) fn program_error(name: &'static str, source: aya::programs::ProgramError) -> ProbeError {
    const KEEP: usize = 25;
    let text = source.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let message = if lines.len() > KEEP + 1 {
        format!(
            "{} [... {} verifier log lines omitted ...] {}",
            lines[0],
            lines.len() - KEEP - 1,
            lines[lines.len() - KEEP..].join(" | ")
        )
    } else {
        text
    };
    ProbeError::Program { name, message }
}

/// Checks the object, privileges and BTF, naming exactly what is missing.
pub fn preflight(btf_path: &Path) -> Result<(), ProbeError> {
    if PROBE_OBJECT.is_empty() {
        return Err(ProbeError::NotEmbedded);
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 && !has_bpf_capabilities() {
        return Err(ProbeError::NotPrivileged { uid });
    }
    if !btf_path.is_file() {
        return Err(ProbeError::NoBtf(btf_path.display().to_string()));
    }
    Ok(())
}

/// CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON, in the effective set.
fn has_bpf_capabilities() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |c: u32| eff & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// A ring that holds few records loses events in any burst.
fn warn_if_ring_small(ring_bytes: u32) {
    let largest = std::mem::size_of::<agent_ebpf::process::ExecRecord>() as u32;
    if ring_bytes < 64 * largest {
        tracing::warn!(
            ring_bytes,
            largest_record = largest,
            "ring buffer is small: it holds fewer than 64 of the largest records, so bursts will lose events"
        );
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialized rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

/// The probe's start-up configuration for this kernel and this agent.
fn probe_config(tracefs_root: &Path, btf_path: &Path) -> Result<ProbeConfig, ProbeError> {
    let offsets = StructOffsets::from_btf_file(btf_path)?;
    if !offsets.missing.is_empty() {
        tracing::warn!(missing = ?offsets.missing, "kernel lacks some fields; they are reported as unknown");
    }
    let mut cfg = offsets.config;
    cfg.agent_tgid = std::process::id();
    let exec = tracefs::read_format(tracefs_root, "sched", "sched_process_exec")?;
    cfg.tp_exec_filename = tracefs::field_offset(&exec, "filename").unwrap_or(cfg.tp_exec_filename);
    let exit = tracefs::read_format(tracefs_root, "sched", "sched_process_exit")?;
    match tracefs::field_offset(&exit, "group_dead") {
        Some(off) => cfg.tp_exit_group_dead = off,
        None => tracing::info!(
            "sched_process_exit has no group_dead field; process exit is the leader's exit"
        ),
    }
    Ok(cfg)
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    hooks: &mut Vec<String>,
) -> Result<(), ProbeError> {
    let err = |source| program_error(name, source);
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    prog.attach(category, name).map_err(err)?;
    hooks.push(format!("tracepoint {category}:{name}"));
    Ok(())
}

/// How the keys of hash map `name` differ from `want` (None: they match,
/// or the map cannot be read, which the next check retries).
fn key_drift<K: aya::Pod + Ord>(ebpf: &Ebpf, name: &str, want: &BTreeSet<K>) -> Option<String> {
    let map = ebpf.map(name)?;
    let m: aya::maps::HashMap<&MapData, K, u8> = aya::maps::HashMap::try_from(map).ok()?;
    let have: BTreeSet<K> = m.keys().filter_map(Result::ok).collect();
    describe_drift(name, want, &have)
}

/// "NAME: 2 keys added, 1 removed", or None when `want` and `have` match.
fn describe_drift<K: Ord>(name: &str, want: &BTreeSet<K>, have: &BTreeSet<K>) -> Option<String> {
    let added = have.difference(want).count();
    let removed = want.difference(have).count();
    (added + removed > 0).then(|| format!("{name}: {added} keys added, {removed} removed"))
}

/// Writes the exclusion keys into the probe's maps (before any hook runs).
fn fill_exclusions(
    ebpf: &mut Ebpf,
    ex: &crate::kernel::exclusions::Exclusions,
) -> Result<(), ProbeError> {
    use aya::maps::HashMap;
    {
        let map = ebpf
            .map_mut("EXCLUDED_CGROUPS")
            .ok_or(ProbeError::MissingMap("EXCLUDED_CGROUPS"))?;
        let mut m: HashMap<&mut MapData, u64, u8> =
            HashMap::try_from(map).map_err(|source| ProbeError::Map {
                name: "EXCLUDED_CGROUPS",
                source,
            })?;
        for id in &ex.cgroups {
            m.insert(id, 1, 0).map_err(|source| ProbeError::Map {
                name: "EXCLUDED_CGROUPS",
                source,
            })?;
        }
    }
    let map = ebpf
        .map_mut("EXCLUDED_EXES")
        .ok_or(ProbeError::MissingMap("EXCLUDED_EXES"))?;
    let mut m: HashMap<&mut MapData, agent_ebpf::config::ExeKey, u8> = HashMap::try_from(map)
        .map_err(|source| ProbeError::Map {
            name: "EXCLUDED_EXES",
            source,
        })?;
    for key in &ex.exes {
        m.insert(key, 1, 0).map_err(|source| ProbeError::Map {
            name: "EXCLUDED_EXES",
            source,
        })?;
    }
    if !ex.is_empty() {
        tracing::info!(
            exes = ex.exes.len(),
            cgroups = ex.cgroups.len(),
            "exclusions applied in the kernel"
        );
    }
    Ok(())
}

fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    hooks: &mut Vec<String>,
) -> Result<(), ProbeError> {
    let err = |source| program_error(name, source);
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    prog.attach(name).map_err(err)?;
    hooks.push(format!("raw_tracepoint {name}"));
    Ok(())
}
