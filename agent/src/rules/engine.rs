//! Matching events against a compiled rule set: the `evt.type` index,
//! per-event field slots, sequences across a process tree, and dedup.
use std::{collections::HashMap, path::PathBuf};

use super::{
    extract::{self, evt_type},
    load::{self, CompiledRule, LoadOptions, RuleKind, Skipped},
    matcher::{render, Ctx, Slots},
    Hit, Matcher, RuleError, RuleMeta,
};
use crate::event::Event;

/// The rules shipped in the binary, used when no `--rules` is given.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.yaml");
/// Name under which the embedded rules appear in errors and alerts.
pub const DEFAULT_RULES_ORIGIN: &str = "<embedded>/rules/default.yaml";

/// Most open sequences per rule, and most dedup windows in all; past
/// them the oldest sequence is dropped (counted), and a new alert is sent
/// without dedup rather than lost.
const MAX_PARTIALS: usize = 4096;
const MAX_DEDUP: usize = 16384;

/// What noise control and sequences did, reported with the loss counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    /// Alerts folded into a later summary by dedup.
    pub dedup_suppressed: u64,
    /// Alerts sent without dedup because its table was full.
    pub dedup_untracked: u64,
    /// Open sequences dropped because a rule had too many.
    pub sequence_evicted: u64,
}

struct Partial {
    started_ns: i64,
    /// The value of the last keyed step so far.
    key: Option<String>,
}

/// A rule's open sequences, by (the pid whose tree they watch, the step
/// they wait for, the key value that step must show).
#[derive(Default)]
struct OpenSequences {
    by_slot: HashMap<(u32, usize, Option<String>), Vec<Partial>>,
    len: usize,
}

impl OpenSequences {
    fn insert(&mut self, root: u32, next: usize, keyed: bool, p: Partial) {
        let key = if keyed { p.key.clone() } else { None };
        self.by_slot.entry((root, next, key)).or_default().push(p);
        self.len += 1;
    }

    /// Drops expired sequences, then, if still full, whole slots until
    /// there is room; returns how many live ones were dropped.
    fn make_room(&mut self, now: i64, window_ns: i64) -> u64 {
        self.by_slot.retain(|_, list| {
            list.retain(|p| now - p.started_ns <= window_ns);
            !list.is_empty()
        });
        self.len = self.by_slot.values().map(Vec::len).sum();
        let mut dropped = 0;
        while self.len >= MAX_PARTIALS {
            let Some(slot) = self.by_slot.keys().next().cloned() else {
                break;
            };
            let n = self.by_slot.remove(&slot).map_or(0, |l| l.len());
            self.len -= n;
            dropped += n as u64;
        }
        dropped
    }
}

struct DedupEntry {
    first_ns: i64,
    window_ns: i64,
    suppressed: u64,
    last: Option<Box<Event>>,
}

pub struct RuleSet {
    rules: Vec<CompiledRule>,
    by_type: foldhash::HashMap<String, Vec<usize>>,
    any_type: Vec<usize>,
    /// Reused per event: the rules to test.
    scratch: Vec<usize>,
    slots: Slots,
    /// The files the rules came from, in load order.
    pub sources: Vec<String>,
    /// Rules left out (unsupported source, or unsupported fields with
    /// `Unsupported::Skip`), with reasons.
    pub skipped: Vec<Skipped>,
    /// Rules loaded with unsupported fields taken as absent
    /// (`Unsupported::Absent`), with the fields.
    pub partial: Vec<Skipped>,
    partials: Vec<OpenSequences>,
    dedup: HashMap<(usize, String), DedupEntry>,
    pub counters: EngineCounters,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl RuleSet {
    /// The rules embedded in the agent binary (tests; the agent loads them
    /// through [`RuleSet::load`], which reports errors).
    #[cfg(test)]
    pub fn embedded_default() -> RuleSet {
        Self::from_sources(
            &[(DEFAULT_RULES_ORIGIN.to_string(), DEFAULT_RULES.to_string())],
            LoadOptions::default(),
        )
        .expect("embedded default rules are valid (checked by tests)")
    }

    /// Loads rule files and directories, in the order given; the embedded
    /// default set when `paths` is empty.
    pub fn load(paths: &[PathBuf], opts: LoadOptions) -> Result<RuleSet, Vec<RuleError>> {
        if paths.is_empty() {
            return Self::from_sources(
                &[(DEFAULT_RULES_ORIGIN.to_string(), DEFAULT_RULES.to_string())],
                opts,
            );
        }
        Self::from_sources(&load::read_sources(paths)?, opts)
    }

    /// Parses and compiles `(origin, text)` pairs; origins name the text in
    /// errors.
    pub fn from_sources(
        sources: &[(String, String)],
        opts: LoadOptions,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let loaded = load::load(sources, opts)?;
        let mut by_type: foldhash::HashMap<String, Vec<usize>> = Default::default();
        let mut any_type = Vec::new();
        for (i, r) in loaded.rules.iter().enumerate() {
            match load::rule_evt_types(r) {
                Some(types) => {
                    for t in types {
                        by_type.entry(t).or_default().push(i);
                    }
                }
                None => any_type.push(i),
            }
        }
        Ok(RuleSet {
            partials: loaded
                .rules
                .iter()
                .map(|_| OpenSequences::default())
                .collect(),
            rules: loaded.rules,
            by_type,
            any_type,
            scratch: Vec::new(),
            slots: loaded.slots,
            sources: sources.iter().map(|(o, _)| o.clone()).collect(),
            skipped: loaded.skipped,
            partial: loaded.partial,
            dedup: HashMap::new(),
            counters: EngineCounters::default(),
        })
    }

    /// The compiled rules and their field slots (for `interest.rs`).
    pub(super) fn compiled(&self) -> (&[CompiledRule], &Slots) {
        (&self.rules, &self.slots)
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &*r.meta)
    }

    /// Rules that match every event type (no `evt.type` condition): each
    /// costs a test on every event.
    pub fn unindexed(&self) -> impl Iterator<Item = &str> {
        self.any_type
            .iter()
            .map(|&i| self.rules[i].meta.name.as_str())
    }

    /// Advances rule `i`'s open sequences with this event, and opens one
    /// if it matches the first step. Open sequences are filed by the pid
    /// whose tree they watch, the step they wait for and the key value that
    /// step must show, so an event costs a few hash lookups per ancestor,
    /// however many sequences are open. True when a sequence completed.
    fn sequence_step(&mut self, i: usize, cx: &mut Ctx) -> bool {
        let RuleKind::Sequence(seq) = &self.rules[i].kind else {
            return false;
        };
        let ev = cx.ev;
        let now = ev.time_unix_ns;
        let open = &mut self.partials[i];
        let key_of = |k: usize| {
            seq.steps[k]
                .1
                .as_ref()
                .map(|f| render(extract::extract(ev, f).as_ref()).into_owned())
        };
        let depth = if seq.same_process {
            0
        } else {
            ev.ancestry.len()
        };
        let roots =
            std::iter::once(ev.process.pid).chain(ev.ancestry[..depth].iter().map(|a| a.pid));
        let mut done = false;
        for k in (1..seq.steps.len()).rev() {
            if open.len == 0 || !seq.steps[k].0.eval(cx) {
                continue;
            }
            let value = key_of(k);
            for root in roots.clone() {
                // Sequences whose key matches, and those with no key yet.
                for slot in [value.clone(), None] {
                    let Some(list) = open.by_slot.remove(&(root, k, slot.clone())) else {
                        continue;
                    };
                    open.len -= list.len();
                    for mut p in list {
                        if now - p.started_ns > seq.window_ns {
                            continue;
                        }
                        if value.is_some() {
                            p.key = value.clone();
                        }
                        if k + 1 == seq.steps.len() {
                            done = true;
                        } else {
                            open.insert(root, k + 1, seq.steps[k + 1].1.is_some(), p);
                        }
                    }
                    if slot.is_none() {
                        break;
                    }
                }
            }
        }
        if seq.steps[0].0.eval(cx) {
            if open.len >= MAX_PARTIALS {
                self.counters.sequence_evicted += open.make_room(now, seq.window_ns);
            }
            // Tree scope covers the first process's siblings too: a file
            // fetched by one child of a shell and run by another.
            let root = match ev.process.ppid {
                0 | 1 => ev.process.pid,
                _ if seq.same_process => ev.process.pid,
                ppid => ppid,
            };
            let p = Partial {
                started_ns: now,
                key: key_of(0),
            };
            open.insert(root, 1, seq.steps[1].1.is_some(), p);
        }
        done
    }

    /// Passes a hit through the rule's dedup window.
    fn deduplicate(&mut self, i: usize, ev: &Event, out: &mut Vec<Hit>) {
        let rule = &self.rules[i];
        let Some(d) = &rule.dedup else {
            out.push(Hit {
                rule: rule.meta.clone(),
                count: 1,
                event: None,
            });
            return;
        };
        let key: Vec<String> =
            d.by.iter()
                .map(|f| render(extract::extract(ev, f).as_ref()).into_owned())
                .collect();
        let key = (i, key.join("\u{1f}"));
        let now = ev.time_unix_ns;
        if let Some(e) = self.dedup.get_mut(&key) {
            if now - e.first_ns < d.window_ns {
                e.suppressed += 1;
                e.last = Some(Box::new(ev.clone()));
                self.counters.dedup_suppressed += 1;
                return;
            }
            if e.suppressed > 0 {
                out.push(Hit {
                    rule: rule.meta.clone(),
                    count: e.suppressed,
                    event: e.last.take(),
                });
            }
            self.dedup.remove(&key);
        }
        if self.dedup.len() < MAX_DEDUP {
            self.dedup.insert(
                key,
                DedupEntry {
                    first_ns: now,
                    window_ns: d.window_ns,
                    suppressed: 0,
                    last: None,
                },
            );
        } else {
            self.counters.dedup_untracked += 1;
        }
        out.push(Hit {
            rule: rule.meta.clone(),
            count: 1,
            event: None,
        });
    }
}

impl Matcher for RuleSet {
    fn matches(&mut self, event: &Event, out: &mut Vec<Hit>) {
        let ty = evt_type(event);
        let typed = self.by_type.get(ty).map(Vec::as_slice).unwrap_or_default();
        if typed.is_empty() && self.any_type.is_empty() {
            return;
        }
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        candidates.extend(typed.iter().chain(&self.any_type));
        let slots = std::mem::take(&mut self.slots);
        let mut cx = Ctx::new(event, &slots);
        let mut matched = Vec::new();
        for &i in &candidates {
            match &self.rules[i].kind {
                RuleKind::Single(n) => {
                    if n.eval(&mut cx) {
                        matched.push(i);
                    }
                }
                RuleKind::Sequence(_) => {
                    if self.sequence_step(i, &mut cx) {
                        matched.push(i);
                    }
                }
            }
        }
        drop(cx);
        self.slots = slots;
        self.scratch = candidates;
        for i in matched {
            self.deduplicate(i, event, out);
        }
    }

    fn tick(&mut self, now_unix_ns: i64, out: &mut Vec<Hit>) {
        let rules = &self.rules;
        self.dedup.retain(|(i, _), e| {
            if now_unix_ns - e.first_ns < e.window_ns {
                return true;
            }
            if e.suppressed > 0 {
                out.push(Hit {
                    rule: rules[*i].meta.clone(),
                    count: e.suppressed,
                    event: e.last.take(),
                });
            }
            false
        });
    }

    fn len(&self) -> usize {
        self.rules.len()
    }
}
