//! Matching events against a compiled rule set: the `evt.type` index,
//! per-event field slots, sequences across a process tree, thresholds,
//! and dedup.
use std::{collections::VecDeque, hash::BuildHasher, path::PathBuf};

/// Looked up on every event: foldhash, not SipHash.
use foldhash::{HashMap, HashSet};

use super::{
    extract::{self, evt_type},
    index::{Bucket, Entry, Index},
    load::{self, CompiledRule, LoadOptions, RuleKind, Skipped},
    matcher::{render, Ctx, CtxBuffers, Slots},
    program::{Op, Program},
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
/// Most events counted toward thresholds at once, over all rules and
/// keys (each costs a timestamp and a hash); past it, new matches are not
/// counted (`threshold_untracked`).
const MAX_BURST_EVENTS: usize = 1 << 18;

/// What noise control and sequences did, reported with the loss counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    /// Alerts folded into a later summary by dedup.
    pub dedup_suppressed: u64,
    /// Alerts sent without dedup because its table was full.
    pub dedup_untracked: u64,
    /// Open sequences dropped because a rule had too many.
    pub sequence_evicted: u64,
    /// Matches of a threshold rule not counted because the engine held
    /// as many as it keeps.
    pub threshold_untracked: u64,
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
    /// Files `p`. A sequence that is the same as one opened lately (same
    /// tree, step and key) only renews that one's window: a file written
    /// a thousand times is one open sequence, not a thousand. Only the
    /// last few of a slot are compared, so filing stays cheap; repeats
    /// come in runs, and one further back is filed again (bounded, as
    /// every sequence is, by the table's size).
    fn insert(&mut self, root: u32, next: usize, keyed: bool, p: Partial) {
        let key = if keyed { p.key.clone() } else { None };
        let list = self.by_slot.entry((root, next, key)).or_default();
        match list.iter_mut().rev().take(8).find(|q| q.key == p.key) {
            Some(q) => q.started_ns = q.started_ns.max(p.started_ns),
            None => {
                list.push(p);
                self.len += 1;
            }
        }
    }

    /// Drops expired sequences, then, if still more than three quarters
    /// full, whole slots until they are not: the scan is paid once per
    /// quarter of the table filled, not on every new sequence of a busy
    /// host. Returns how many live ones were dropped.
    fn make_room(&mut self, now: i64, window_ns: i64) -> u64 {
        self.by_slot.retain(|_, list| {
            list.retain(|p| now - p.started_ns <= window_ns);
            !list.is_empty()
        });
        self.len = self.by_slot.values().map(Vec::len).sum();
        // In one pass: taking keys one at a time from the front of a
        // hash table that is being emptied costs a scan each.
        let mut excess = self.len.saturating_sub(MAX_PARTIALS / 4 * 3);
        let mut dropped = 0;
        self.by_slot.retain(|_, list| {
            if excess == 0 {
                return true;
            }
            excess = excess.saturating_sub(list.len());
            dropped += list.len();
            false
        });
        self.len -= dropped;
        dropped as u64
    }
}

/// A threshold rule's recent matches for one key: (time, hash of the
/// `distinct` value, 0 without one), oldest first. With `distinct`, a
/// value seen again within the window is not added twice, so the list
/// never outgrows the rule's count.
struct Burst {
    window_ns: i64,
    events: VecDeque<(i64, u64)>,
    values: HashSet<u64>,
}

impl Burst {
    /// Forgets the matches older than the window; returns how many.
    fn expire(&mut self, now: i64) -> usize {
        let mut n = 0;
        while let Some(&(t, v)) = self.events.front() {
            if now - t <= self.window_ns {
                break;
            }
            self.events.pop_front();
            self.values.remove(&v);
            n += 1;
        }
        n
    }
}

struct DedupEntry {
    first_ns: i64,
    window_ns: i64,
    suppressed: u64,
    last: Option<Box<Event>>,
}

pub struct RuleSet {
    rules: Vec<CompiledRule<Op>>,
    /// Every rule's conditions.
    program: Program,
    /// The rules by event type.
    index: Index,
    /// Reused per event: the rules that matched.
    scratch: Vec<usize>,
    /// Reused per event: a bucket's entries that may match.
    candidates: Vec<u32>,
    slots: Slots,
    /// Per-event buffers, kept between events.
    buffers: CtxBuffers,
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
    bursts: HashMap<(usize, String), Burst>,
    /// Matches held in `bursts`, over all keys.
    burst_events: usize,
    /// When a full `bursts` was last swept of expired matches.
    burst_swept_ns: i64,
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
        let mut program = Program::default();
        let rules: Vec<CompiledRule<Op>> = (loaded.rules.into_iter())
            .map(|r| program.lower_rule(r))
            .collect();
        let index = Index::build(&rules, &mut program);
        program.finish();
        Ok(RuleSet {
            partials: rules.iter().map(|_| OpenSequences::default()).collect(),
            rules,
            program,
            index,
            scratch: Vec::new(),
            candidates: Vec::new(),
            slots: loaded.slots,
            buffers: CtxBuffers::default(),
            sources: sources.iter().map(|(o, _)| o.clone()).collect(),
            skipped: loaded.skipped,
            partial: loaded.partial,
            dedup: HashMap::default(),
            bursts: HashMap::default(),
            burst_events: 0,
            burst_swept_ns: 0,
            counters: EngineCounters::default(),
        })
    }

    /// The compiled rules, their program and field slots (for
    /// `interest.rs`).
    pub(super) fn compiled(&self) -> (&[CompiledRule<Op>], &Program, &Slots) {
        (&self.rules, &self.program, &self.slots)
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &*r.meta)
    }

    /// Rules that match every event type (no `evt.type` condition): each
    /// costs a test on every event.
    pub fn unindexed(&self) -> impl Iterator<Item = &str> {
        self.index
            .unindexed()
            .map(|i| self.rules[i].meta.name.as_str())
    }

    /// Advances rule `i`'s open sequences with this event, and opens one
    /// if it matches the first step. Open sequences are filed by the pid
    /// whose tree they watch, the step they wait for and the key value that
    /// step must show, so an event costs a few hash lookups per ancestor,
    /// however many sequences are open. `steps` are the step conditions
    /// for this event's type. True when a sequence completed.
    fn sequence_step(&mut self, i: usize, steps: &[Op], cx: &mut Ctx) -> bool {
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
            if open.len == 0 || !self.program.eval(steps[k], cx) {
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
        if self.program.eval(steps[0], cx) {
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

    /// The rules `event` fires (sequences advanced), in rule order,
    /// before dedup. The vector is `scratch`'s, to be given back.
    /// Whether any rule's condition holds for `event`, with no dedup and
    /// no sequence state (filters written as rule conditions, such as
    /// `--activity-exclude`).
    pub fn fires(&mut self, event: &Event) -> bool {
        let matched = self.firing(event);
        let any = !matched.is_empty();
        self.scratch = matched;
        any
    }

    fn firing(&mut self, event: &Event) -> Vec<usize> {
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        let index = std::mem::take(&mut self.index);
        let ty = evt_type(event);
        if index.buckets(ty).all(Bucket::is_empty) {
            self.index = index;
            return matched;
        }
        let slots = std::mem::take(&mut self.slots);
        let mut buffers = std::mem::take(&mut self.buffers);
        let mut candidates = std::mem::take(&mut self.candidates);
        let mut cx = Ctx::new(event, &slots, self.program.test_count(), &mut buffers);
        for bucket in index.buckets(ty) {
            candidates.clear();
            bucket.select(&self.program, &mut cx, &mut candidates);
            for &e in &candidates {
                let entry = &bucket.entries[e as usize];
                if self.entry_matches(entry, &mut cx) {
                    matched.push(entry.rule);
                }
            }
        }
        cx.finish();
        self.buffers = buffers;
        self.slots = slots;
        self.index = index;
        self.candidates = candidates;
        // In rule order, whatever the index.
        matched.sort_unstable();
        matched
    }

    /// The single-condition rules `event` fires, found by evaluating each
    /// rule's whole condition: what [`Self::firing`] must agree with.
    #[cfg(test)]
    pub(super) fn firing_naively(&mut self, event: &Event) -> (Vec<usize>, Vec<usize>) {
        let slots = std::mem::take(&mut self.slots);
        let mut buffers = std::mem::take(&mut self.buffers);
        let mut cx = Ctx::new(event, &slots, self.program.test_count(), &mut buffers);
        let naive = (self.rules.iter().enumerate())
            .filter(|(_, r)| match r.kind {
                RuleKind::Single(op) => self.program.eval(op, &mut cx),
                RuleKind::Sequence(_) => false,
            })
            .map(|(i, _)| i)
            .collect();
        cx.finish();
        self.buffers = buffers;
        self.slots = slots;
        let indexed = (self.firing(event).into_iter())
            .filter(|&i| matches!(self.rules[i].kind, RuleKind::Single(_)))
            .collect();
        (naive, indexed)
    }

    /// Whether `entry`'s rule fires on the event in `cx`.
    fn entry_matches(&mut self, entry: &Entry, cx: &mut Ctx) -> bool {
        match &self.rules[entry.rule].kind {
            RuleKind::Single(_) => self.program.eval(entry.conds[0], cx),
            RuleKind::Sequence(_) => self.sequence_step(entry.rule, &entry.conds, cx),
        }
    }

    /// Counts a match of rule `i` toward its threshold, if it has one.
    /// True when the rule should fire: no threshold, or this match
    /// reached it (the key's count then starts again from zero, so a
    /// burst that goes on fires again, and dedup folds the repeats).
    fn threshold_reached(&mut self, i: usize, ev: &Event) -> bool {
        let Some(t) = &self.rules[i].threshold else {
            return true;
        };
        let now = ev.time_unix_ns;
        let key: Vec<String> = (t.by.iter())
            .map(|f| render(extract::extract(ev, f).as_ref()).into_owned())
            .collect();
        let key = (i, key.join("\u{1f}"));
        let value = t.distinct.as_ref().map_or(0, |f| {
            let v = render(extract::extract(ev, f).as_ref()).into_owned();
            foldhash::fast::FixedState::default().hash_one(v)
        });
        if self.burst_events >= MAX_BURST_EVENTS {
            // Full: expired matches go, at most once a second (a sweep
            // visits every key).
            if now - self.burst_swept_ns >= 1_000_000_000 {
                self.burst_swept_ns = now;
                self.bursts.retain(|_, b| {
                    self.burst_events -= b.expire(now);
                    !b.events.is_empty()
                });
            }
            if self.burst_events >= MAX_BURST_EVENTS {
                self.counters.threshold_untracked += 1;
                return false;
            }
        }
        let b = self.bursts.entry(key).or_insert_with(|| Burst {
            window_ns: t.window_ns,
            events: VecDeque::new(),
            values: HashSet::default(),
        });
        self.burst_events -= b.expire(now);
        if t.distinct.is_some() && !b.values.insert(value) {
            return false;
        }
        b.events.push_back((now, value));
        self.burst_events += 1;
        if b.events.len() < t.count as usize {
            return false;
        }
        self.burst_events -= b.events.len();
        b.events.clear();
        b.values.clear();
        true
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
        let matched = self.firing(event);
        for &i in &matched {
            if self.threshold_reached(i, event) {
                self.deduplicate(i, event, out);
            }
        }
        self.scratch = matched;
    }

    fn tick(&mut self, now_unix_ns: i64, out: &mut Vec<Hit>) {
        let events = &mut self.burst_events;
        self.bursts.retain(|_, b| {
            *events -= b.expire(now_unix_ns);
            !b.events.is_empty()
        });
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
