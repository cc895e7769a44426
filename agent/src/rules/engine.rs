//! Matching events against a compiled rule set: the `evt.type` index,
//! per-event field slots, sequences across a process tree, and dedup.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
};

use super::{
    compile::{render, Ctx, Slots},
    fields::{self, evt_type},
    load::{self, CompiledRule, LoadOptions, RuleKind, Skipped},
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
    root_pid: u32,
    started_ns: i64,
    next: usize,
    key: Option<String>,
}

struct DedupEntry {
    first_ns: i64,
    window_ns: i64,
    suppressed: u64,
    last: Option<Box<Event>>,
}

pub struct RuleSet {
    rules: Vec<CompiledRule>,
    by_type: HashMap<String, Vec<usize>>,
    any_type: Vec<usize>,
    slots: Slots,
    /// The files the rules came from, in load order.
    pub sources: Vec<String>,
    /// Rules left out (unsupported source, or unsupported fields with
    /// `skip_unsupported`), with reasons.
    pub skipped: Vec<Skipped>,
    partials: Vec<VecDeque<Partial>>,
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
    /// The rules embedded in the agent binary.
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
        let mut by_type: HashMap<String, Vec<usize>> = HashMap::new();
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
            partials: loaded.rules.iter().map(|_| VecDeque::new()).collect(),
            rules: loaded.rules,
            by_type,
            any_type,
            slots: loaded.slots,
            sources: sources.iter().map(|(o, _)| o.clone()).collect(),
            skipped: loaded.skipped,
            dedup: HashMap::new(),
            counters: EngineCounters::default(),
        })
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

    fn sequence_step(&mut self, i: usize, cx: &mut Ctx, out: &mut Vec<Hit>) {
        let RuleKind::Sequence(seq) = &self.rules[i].kind else {
            return;
        };
        let ev = cx.ev;
        let now = ev.time_unix_ns;
        let partials = &mut self.partials[i];
        partials.retain(|p| now - p.started_ns <= seq.window_ns);
        let in_scope = |root: u32| {
            ev.process.pid == root
                || (!seq.same_process && ev.ancestry.iter().any(|a| a.pid == root))
        };
        let mut done = false;
        let mut k = 0;
        while k < partials.len() {
            let p = &partials[k];
            let (node, key) = &seq.steps[p.next];
            if in_scope(p.root_pid) && node.eval(cx) {
                let value = key
                    .as_ref()
                    .map(|f| render(fields::extract(ev, f).as_ref()).into_owned());
                if p.key.is_none() || value.is_none() || p.key == value {
                    let p = &mut partials[k];
                    p.next += 1;
                    if value.is_some() {
                        p.key = value;
                    }
                    if p.next == seq.steps.len() {
                        partials.remove(k);
                        done = true;
                        continue;
                    }
                }
            }
            k += 1;
        }
        if done {
            out.push(Hit {
                rule: self.rules[i].meta.clone(),
                count: 1,
                event: None,
            });
        }
        let (first, key) = &seq.steps[0];
        if first.eval(cx) {
            if partials.len() >= MAX_PARTIALS {
                partials.pop_front();
                self.counters.sequence_evicted += 1;
            }
            partials.push_back(Partial {
                root_pid: ev.process.pid,
                started_ns: now,
                next: 1,
                key: key
                    .as_ref()
                    .map(|f| render(fields::extract(ev, f).as_ref()).into_owned()),
            });
        }
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
                .map(|f| render(fields::extract(ev, f).as_ref()).into_owned())
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
        // Index lists are cloned cheaply as ranges of indices into rules.
        let candidates: Vec<usize> = typed.iter().chain(&self.any_type).copied().collect();
        let slots = std::mem::take(&mut self.slots);
        let mut cx = Ctx::new(event, &slots);
        let mut matched = Vec::new();
        for i in candidates {
            match &self.rules[i].kind {
                RuleKind::Single(n) => {
                    if n.eval(&mut cx) {
                        matched.push(i);
                    }
                }
                RuleKind::Sequence(_) => {
                    let mut seq_hits = Vec::new();
                    self.sequence_step(i, &mut cx, &mut seq_hits);
                    if !seq_hits.is_empty() {
                        matched.push(i);
                    }
                }
            }
        }
        drop(cx);
        self.slots = slots;
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
