//! The syscall hooks, kept in step with what the rules need: each followed
//! syscall's spec in `SYSCALL_SPECS`, its `syscalls:*` tracepoints attached
//! or detached, the open filter and its path prefixes. Applied at start and
//! again on every rule reload; the probe itself is never reloaded.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use agent_ebpf::{
    config::{ProbeConfig, UNKNOWN_OFFSET},
    syscall::{
        ArgSpec, OpenClause as WireClause, OpenFilter, PathKeyData, CLAUSE_SUCCESS_ONLY,
        CLAUSE_WAKE, HOOK_AT_ENTER, HOOK_OPEN_FILTER, HOOK_WAKE, OPEN_CLAUSES, PATH_FILTER_BYTES,
        SPEC_VIA_RAW,
    },
    EventKind,
};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, MapData,
    },
    programs::{
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, RawTracePoint,
        TracePoint,
    },
    Ebpf,
};

use super::{program_error, ProbeError};
use crate::kernel::{
    interest::KernelInterest,
    syscalls::{Syscall, SyscallDef, TABLE},
    tracefs,
};

const ENTER_PROG: &str = "syscall_enter";
const EXIT_PROG: &str = "syscall_exit";
const RAW_ENTER_PROG: &str = "raw_sys_enter";
const RAW_EXIT_PROG: &str = "raw_sys_exit";

/// How a syscall can be caught on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// Its `syscalls:sys_{enter,exit}_*` tracepoints exist, with the
    /// record layout the probe expects.
    Tracepoint,
    /// Only through the raw `sys_enter`/`sys_exit` hooks, which run on
    /// every syscall of the host.
    RawOnly,
    /// Not at all (why).
    No(String),
}

/// The syscall hooks of a loaded probe.
pub struct SyscallHooks {
    reach: BTreeMap<Syscall, Reach>,
    /// Attached tracepoint links, by syscall: exit, and entry where the
    /// spec stashes at entry.
    exit_links: BTreeMap<Syscall, TracePointLinkId>,
    enter_links: BTreeMap<Syscall, TracePointLinkId>,
    raw_links: Option<(RawTracePointLinkId, RawTracePointLinkId)>,
    /// Follow syscalls reachable only through the raw hooks.
    raw_allowed: bool,
    /// Prefix keys written to `PATH_PREFIXES`, to remove on the next apply.
    prefix_keys: Vec<(u32, PathKeyData)>,
    /// What the last apply wrote to `SYSCALL_SPECS` and `OPEN_FILTER`, to
    /// check them against.
    specs: BTreeMap<u32, ArgSpec>,
    open_filter: Option<OpenFilter>,
    /// What was applied last, for the log.
    pub applied: Option<KernelInterest>,
}

impl SyscallHooks {
    /// Finds how each syscall of the table can be caught, and loads the
    /// programs (attaching nothing yet).
    pub fn prepare(
        ebpf: &mut Ebpf,
        tracefs_root: &Path,
        config: &ProbeConfig,
        raw_allowed: bool,
    ) -> Result<SyscallHooks, ProbeError> {
        let regs_known = !config.regs_args.contains(&UNKNOWN_OFFSET);
        let mut reach = BTreeMap::new();
        for def in TABLE {
            let Some(sc) = Syscall::by_name(def.name) else {
                continue;
            };
            reach.insert(sc, reach_of(def, tracefs_root, regs_known));
        }
        for prog_name in [ENTER_PROG, EXIT_PROG] {
            let err = |source| program_error(prog_name, source);
            let prog: &mut TracePoint = ebpf
                .program_mut(prog_name)
                .ok_or(ProbeError::MissingProgram(prog_name))?
                .try_into()
                .map_err(err)?;
            prog.load().map_err(err)?;
        }
        Ok(SyscallHooks {
            reach,
            exit_links: BTreeMap::new(),
            enter_links: BTreeMap::new(),
            raw_links: None,
            raw_allowed,
            prefix_keys: Vec::new(),
            specs: BTreeMap::new(),
            open_filter: None,
            applied: None,
        })
    }

    /// Makes the probe report what `interest` asks for: specs and filters
    /// first (so a newly attached hook never runs with an old spec), then
    /// hooks attached, then hooks no longer needed detached.
    pub fn apply(&mut self, ebpf: &mut Ebpf, interest: &KernelInterest) -> Result<(), ProbeError> {
        let wanted = |sc: &Syscall| interest.syscalls.get(sc).copied();
        let mut raw_needed = false;
        // Specs.
        {
            let map = ebpf
                .map_mut("SYSCALL_SPECS")
                .ok_or(ProbeError::MissingMap("SYSCALL_SPECS"))?;
            let mut specs: Array<&mut MapData, ArgSpec> =
                Array::try_from(map).map_err(|source| map_error("SYSCALL_SPECS", source))?;
            for (sc, reach) in &self.reach {
                let def = sc.def();
                let spec = match (wanted(sc), reach) {
                    (Some(f), Reach::Tracepoint) => spec_for(def, f.wake, f.open_filter, false),
                    (Some(f), Reach::RawOnly) if self.raw_allowed => {
                        raw_needed = true;
                        spec_for(def, f.wake, f.open_filter, true)
                    }
                    _ => ArgSpec::NONE,
                };
                specs
                    .set(def.nr, spec, 0)
                    .map_err(|source| map_error("SYSCALL_SPECS", source))?;
                self.specs.insert(def.nr, spec);
            }
        }
        self.write_open_filter(ebpf, interest)?;
        write_exec_options(ebpf, interest)?;
        // Hooks wanted now.
        for (sc, reach) in &self.reach {
            if *reach != Reach::Tracepoint {
                continue;
            }
            let def = sc.def();
            let want = wanted(sc).is_some();
            let want_enter = want && def.args.at_entry;
            toggle(
                ebpf,
                EXIT_PROG,
                def,
                "exit",
                want,
                &mut self.exit_links,
                *sc,
            )?;
            toggle(
                ebpf,
                ENTER_PROG,
                def,
                "enter",
                want_enter,
                &mut self.enter_links,
                *sc,
            )?;
        }
        match (raw_needed, self.raw_links.is_some()) {
            (true, false) => self.raw_links = Some(attach_raw(ebpf)?),
            (false, true) => {
                if let Some((enter, exit)) = self.raw_links.take() {
                    detach_raw(ebpf, RAW_ENTER_PROG, enter)?;
                    detach_raw(ebpf, RAW_EXIT_PROG, exit)?;
                }
            }
            _ => {}
        }
        self.log(interest);
        self.applied = Some(interest.clone());
        Ok(())
    }

    /// `OPEN_FILTER` and `PATH_PREFIXES` from the interest's open clauses.
    fn write_open_filter(
        &mut self,
        ebpf: &mut Ebpf,
        interest: &KernelInterest,
    ) -> Result<(), ProbeError> {
        let mut filter = OpenFilter::default();
        let mut keys: Vec<(u32, PathKeyData)> = Vec::new();
        for (i, c) in interest.open.iter().take(OPEN_CLAUSES).enumerate() {
            let set = (i + 1) as u32;
            // Name sets are numbered after the prefix sets.
            let name_set = set + OPEN_CLAUSES as u32;
            filter.clauses[i] = WireClause {
                flags_any: c.flags_any,
                path_set: if c.prefixes.is_some() { set } else { 0 },
                name_set: if c.names.is_some() { name_set } else { 0 },
                _pad: 0,
                name_lens: c
                    .names
                    .iter()
                    .flatten()
                    .fold(0, |m, n| m | 1 << (n.len() & 63)),
                name_firsts: c
                    .names
                    .iter()
                    .flatten()
                    .fold(0, |m, n| m | 1 << (n.as_bytes()[0] & 63)),
                opts: if c.success_only {
                    CLAUSE_SUCCESS_ONLY
                } else {
                    0
                } | if c.wake { CLAUSE_WAKE } else { 0 },
            };
            for p in c.prefixes.iter().flatten() {
                keys.push(prefix_key(set as u8, p));
            }
            for n in c.names.iter().flatten() {
                keys.push(name_key(name_set as u8, n));
            }
            filter.count = (i + 1) as u32;
        }
        {
            let map = ebpf
                .map_mut("PATH_PREFIXES")
                .ok_or(ProbeError::MissingMap("PATH_PREFIXES"))?;
            let mut trie: LpmTrie<&mut MapData, PathKeyData, u8> =
                LpmTrie::try_from(map).map_err(|source| map_error("PATH_PREFIXES", source))?;
            // New prefixes go in before the filter names them; old ones
            // (not in the new set) leave after it stops naming them.
            let new: BTreeSet<(u32, PathKeyData)> = keys.iter().copied().collect();
            for (len, data) in &keys {
                trie.insert(&Key::new(*len, *data), 1, 0)
                    .map_err(|source| map_error("PATH_PREFIXES", source))?;
            }
            let map = ebpf
                .map_mut("OPEN_FILTER")
                .ok_or(ProbeError::MissingMap("OPEN_FILTER"))?;
            let mut open: Array<&mut MapData, OpenFilter> =
                Array::try_from(map).map_err(|source| map_error("OPEN_FILTER", source))?;
            open.set(0, filter, 0)
                .map_err(|source| map_error("OPEN_FILTER", source))?;
            self.open_filter = Some(filter);
            let map = ebpf
                .map_mut("PATH_PREFIXES")
                .ok_or(ProbeError::MissingMap("PATH_PREFIXES"))?;
            let mut trie: LpmTrie<&mut MapData, PathKeyData, u8> =
                LpmTrie::try_from(map).map_err(|source| map_error("PATH_PREFIXES", source))?;
            for old in self.prefix_keys.iter().filter(|k| !new.contains(k)) {
                let _ = trie.remove(&Key::new(old.0, old.1));
            }
        }
        self.prefix_keys = keys;
        Ok(())
    }

    /// One line per family with what is followed, and what cannot be.
    fn log(&self, interest: &KernelInterest) {
        for family in [EventKind::File, EventKind::Control, EventKind::Network] {
            let of = |sc: &&Syscall| sc.def().op.family() == family;
            let attached: Vec<&str> = self
                .exit_links
                .keys()
                .filter(of)
                .map(|s| s.name())
                .collect();
            let raw: Vec<&str> = if self.raw_links.is_some() {
                self.reach
                    .iter()
                    .filter(|(sc, r)| of(sc) && **r == Reach::RawOnly && interest.follows(**sc))
                    .map(|(sc, _)| sc.name())
                    .collect()
            } else {
                Vec::new()
            };
            let unwatched: Vec<String> = self
                .reach
                .iter()
                .filter(|(sc, _)| of(sc) && interest.follows(**sc))
                .filter_map(|(sc, r)| match r {
                    Reach::No(why) => Some(format!("{} ({why})", sc.name())),
                    Reach::RawOnly if !self.raw_allowed => Some(format!(
                        "{} (this kernel has no syscalls tracepoint for it; --raw-syscall-hooks \
                         follows it through hooks that run on every syscall)",
                        sc.name()
                    )),
                    _ => None,
                })
                .collect();
            let hooks = if attached.is_empty() {
                "none (no loaded rule needs this family)".to_string()
            } else {
                format!("syscalls:sys_exit_{{{}}}", attached.join(","))
            };
            if unwatched.is_empty() {
                tracing::info!(family = family.name(), %hooks, raw = ?raw, "probe attached");
            } else {
                tracing::warn!(family = family.name(), %hooks, raw = ?raw, not_watched = %unwatched.join("; "), "probe attached; some syscalls the rules name are not watched");
            }
        }
        tracing::info!(summary = %interest.summary(), "kernel filter from the rules");
        for note in &interest.notes {
            tracing::info!(%note, "kernel filter");
        }
    }

    /// One entry per attached hook, for the heartbeat and tests.
    /// How many attachments each syscall program should have now.
    pub fn expected_attachments(&self) -> Vec<(&'static str, u32)> {
        let mut out = vec![
            (EXIT_PROG, self.exit_links.len() as u32),
            (ENTER_PROG, self.enter_links.len() as u32),
        ];
        if self.raw_links.is_some() {
            out.push((RAW_ENTER_PROG, 1));
            out.push((RAW_EXIT_PROG, 1));
        }
        out
    }

    /// The filter maps whose content is no longer what the last apply
    /// wrote (see `Probe::tampered`).
    pub fn tampered(&self, ebpf: &Ebpf) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(specs) = ebpf
            .map("SYSCALL_SPECS")
            .and_then(|m| Array::<&MapData, ArgSpec>::try_from(m).ok())
        {
            let changed: Vec<&str> = self
                .specs
                .iter()
                .filter(|(nr, want)| specs.get(nr, 0).is_ok_and(|have| have != **want))
                .map(|(nr, _)| TABLE.iter().find(|d| d.nr == *nr).map_or("?", |d| d.name))
                .collect();
            if !changed.is_empty() {
                out.push(format!("SYSCALL_SPECS: changed for {}", changed.join(", ")));
            }
        }
        if let (Some(want), Some(open)) = (
            self.open_filter,
            ebpf.map("OPEN_FILTER")
                .and_then(|m| Array::<&MapData, OpenFilter>::try_from(m).ok()),
        ) {
            if open.get(&0, 0).is_ok_and(|have| have != want) {
                out.push("OPEN_FILTER: changed".to_string());
            }
        }
        if let Some(trie) = ebpf
            .map("PATH_PREFIXES")
            .and_then(|m| LpmTrie::<&MapData, PathKeyData, u8>::try_from(m).ok())
        {
            let want: BTreeSet<(u32, PathKeyData)> = self.prefix_keys.iter().copied().collect();
            let have: BTreeSet<(u32, PathKeyData)> = trie
                .keys()
                .filter_map(Result::ok)
                .map(|k| (k.prefix_len(), k.data()))
                .collect();
            out.extend(super::describe_drift("PATH_PREFIXES", &want, &have));
        }
        out
    }

    pub fn hooks(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .exit_links
            .keys()
            .map(|s| format!("tracepoint syscalls:sys_exit_{}", s.def().tracepoint))
            .collect();
        out.extend(
            self.enter_links
                .keys()
                .map(|s| format!("tracepoint syscalls:sys_enter_{}", s.def().tracepoint)),
        );
        if self.raw_links.is_some() {
            out.push("raw_tracepoint sys_enter".into());
            out.push("raw_tracepoint sys_exit".into());
        }
        out
    }
}

fn map_error(name: &'static str, source: aya::maps::MapError) -> ProbeError {
    ProbeError::Map { name, source }
}

/// The probe's spec for `def` with the hook bits the interest asks for.
fn spec_for(def: &SyscallDef, wake: bool, open_filter: bool, via_raw: bool) -> ArgSpec {
    let mut spec = def.spec();
    if wake {
        spec.hook |= HOOK_WAKE;
    }
    if open_filter {
        spec.hook |= HOOK_OPEN_FILTER;
    }
    if via_raw {
        spec.spec_flags |= SPEC_VIA_RAW;
        spec.hook |= HOOK_AT_ENTER;
    }
    spec
}

/// An LPM key for prefix `p` of set `set`: the set id (four bytes), then
/// at most `PATH_FILTER_BYTES` of the prefix (a longer one is cut, which
/// only widens it; the probe compares that many bytes of each path).
fn prefix_key(set: u8, p: &str) -> (u32, PathKeyData) {
    let bytes = p.as_bytes();
    let n = bytes.len().min(PATH_FILTER_BYTES);
    let mut data = [0u8; 80];
    data[..4].copy_from_slice(&(set as u32).to_le_bytes());
    data[4..4 + n].copy_from_slice(&bytes[..n]);
    ((32 + 8 * n) as u32, data)
}

/// `EXEC_OPTIONS` from the interest: whether execs copy the environment.
fn write_exec_options(ebpf: &mut Ebpf, interest: &KernelInterest) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut("EXEC_OPTIONS")
        .ok_or(ProbeError::MissingMap("EXEC_OPTIONS"))?;
    let mut options: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|source| map_error("EXEC_OPTIONS", source))?;
    let bits = if interest.exec_env {
        agent_ebpf::process::EXEC_CAPTURE_ENV
    } else {
        0
    };
    options
        .set(0, bits, 0)
        .map_err(|source| map_error("EXEC_OPTIONS", source))
}

/// A name entry: the set, the name and its NUL, so that only a last
/// component equal to the name matches (the interest keeps names short
/// enough to fit).
fn name_key(set: u8, name: &str) -> (u32, PathKeyData) {
    let bytes = name.as_bytes();
    let n = bytes.len().min(PATH_FILTER_BYTES - 1);
    let mut data = [0u8; 80];
    data[..4].copy_from_slice(&(set as u32).to_le_bytes());
    data[4..4 + n].copy_from_slice(&bytes[..n]);
    ((32 + 8 * (n + 1)) as u32, data)
}

fn reach_of(def: &SyscallDef, tracefs_root: &Path, regs_known: bool) -> Reach {
    let enter = tracefs::read_format(
        tracefs_root,
        "syscalls",
        &format!("sys_enter_{}", def.tracepoint),
    );
    let exit = tracefs::read_format(
        tracefs_root,
        "syscalls",
        &format!("sys_exit_{}", def.tracepoint),
    );
    let checked = match (enter, exit) {
        (Ok(e), Ok(x)) => {
            tracefs::check_sys_enter_layout(&e).and_then(|_| tracefs::check_sys_exit_layout(&x))
        }
        _ => Err("no syscalls tracepoint".to_string()),
    };
    match checked {
        Ok(()) => Reach::Tracepoint,
        Err(_) if def.raw_fallback && regs_known => Reach::RawOnly,
        Err(why) => Reach::No(why),
    }
}

/// Attaches or detaches one tracepoint of `def` to match `want`.
fn toggle(
    ebpf: &mut Ebpf,
    prog_name: &'static str,
    def: &SyscallDef,
    dir: &str,
    want: bool,
    links: &mut BTreeMap<Syscall, TracePointLinkId>,
    sc: Syscall,
) -> Result<(), ProbeError> {
    let err = |source| program_error(prog_name, source);
    let has = links.contains_key(&sc);
    if want == has {
        return Ok(());
    }
    let prog: &mut TracePoint = ebpf
        .program_mut(prog_name)
        .ok_or(ProbeError::MissingProgram(prog_name))?
        .try_into()
        .map_err(err)?;
    if want {
        let link = prog
            .attach("syscalls", &format!("sys_{dir}_{}", def.tracepoint))
            .map_err(err)?;
        links.insert(sc, link);
    } else if let Some(link) = links.remove(&sc) {
        prog.detach(link).map_err(err)?;
    }
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf) -> Result<(RawTracePointLinkId, RawTracePointLinkId), ProbeError> {
    let mut ids = Vec::new();
    for (prog_name, tp) in [(RAW_ENTER_PROG, "sys_enter"), (RAW_EXIT_PROG, "sys_exit")] {
        let err = |source| program_error(prog_name, source);
        let prog: &mut RawTracePoint = ebpf
            .program_mut(prog_name)
            .ok_or(ProbeError::MissingProgram(prog_name))?
            .try_into()
            .map_err(err)?;
        if prog.fd().is_err() {
            prog.load().map_err(err)?;
        }
        ids.push(prog.attach(tp).map_err(err)?);
    }
    let exit = ids.pop().expect("two links");
    let enter = ids.pop().expect("two links");
    Ok((enter, exit))
}

fn detach_raw(
    ebpf: &mut Ebpf,
    prog_name: &'static str,
    link: RawTracePointLinkId,
) -> Result<(), ProbeError> {
    let err = |source| program_error(prog_name, source);
    let prog: &mut RawTracePoint = ebpf
        .program_mut(prog_name)
        .ok_or(ProbeError::MissingProgram(prog_name))?
        .try_into()
        .map_err(err)?;
    prog.detach(link).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_keys_include_the_nul() {
        let (len, data) = name_key(9, "environ");
        assert_eq!(len, 32 + 8 * 8);
        assert_eq!(&data[..12], b"\x09\0\0\0environ\0");
    }

    #[test]
    fn prefix_keys_hold_the_set_then_the_bytes() {
        let (len, data) = prefix_key(3, "/etc/");
        assert_eq!(len, 32 + 8 * 5);
        assert_eq!(&data[..9], b"\x03\0\0\0/etc/");
        let long = "/x".repeat(100);
        let (len, _) = prefix_key(1, &long);
        assert_eq!(len as usize, 32 + 8 * PATH_FILTER_BYTES);
    }
}
