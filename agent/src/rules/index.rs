//! Which rules an event may fire, found without visiting the others.
//!
//! Rules are filed under each `evt.type` they can match, with their
//! conditions specialized for that type (its `evt.type` tests settled).
//! Within a type:
//! - a rule that requires a naming field (`proc.name`, `fd.name`, …) to
//!   be one of a few texts is *keyed* on them: one hash lookup of the
//!   event's value finds the few keyed rules that can match;
//! - the other rules are grouped by their *gates*, tests they require that
//!   other rules require too: the gates are evaluated once for the group,
//!   and when one fails no rule of the group is visited.
//!
//! With a thousand rules this keeps an event's cost near that of the rules
//! it could fire, not of the whole set.
use foldhash::HashMap;

use super::{
    fields::{FieldId, Val},
    load::{CompiledRule, RuleKind},
    matcher::{Ctx, TestKind, TextMap},
    program::{Op, Program},
};

/// A rule as one event type sees it.
pub struct Entry {
    /// Its index in the rule set.
    pub rule: usize,
    /// Its condition, or a sequence's step conditions, specialized.
    pub conds: Box<[Op]>,
}

/// Rules keyed on one field's value.
struct Keyed {
    slot: usize,
    /// Each text, and the entries keyed on it.
    by_value: TextMap<Vec<u32>>,
}

/// Rules that share their gates.
struct Group {
    /// Tests every entry of the group requires; none for ungated rules.
    gates: Vec<Op>,
    entries: Vec<u32>,
}

/// The rules one event type (or every type) selects.
#[derive(Default)]
pub struct Bucket {
    pub entries: Vec<Entry>,
    keyed: Vec<Keyed>,
    groups: Vec<Group>,
}

/// Every rule, filed by event type.
#[derive(Default)]
pub struct Index {
    by_type: HashMap<String, Bucket>,
    /// Rules without an `evt.type` condition: visited for every event.
    any_type: Bucket,
}

impl Index {
    /// Files `rules` (lowered into `program`, which gains their
    /// specialized conditions).
    pub fn build(rules: &[CompiledRule<Op>], program: &mut Program) -> Index {
        let mut by_type: std::collections::BTreeMap<String, Vec<Entry>> = Default::default();
        let mut any_type = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let conds: Vec<Op> = match &r.kind {
                RuleKind::Single(op) => vec![*op],
                RuleKind::Sequence(s) => s.steps.iter().map(|(op, _)| *op).collect(),
            };
            let Some(types) = program.rule_evt_types(r) else {
                any_type.push(Entry {
                    rule: i,
                    conds: conds.into(),
                });
                continue;
            };
            let mut types: Vec<String> = types.into_iter().collect();
            types.sort();
            for ty in types {
                let specialized: Vec<Op> =
                    conds.iter().map(|&c| program.specialize(c, &ty)).collect();
                let never = match &r.kind {
                    RuleKind::Single(_) => specialized[0] == Op::Const(false),
                    RuleKind::Sequence(_) => specialized.iter().all(|c| *c == Op::Const(false)),
                };
                if !never {
                    by_type.entry(ty).or_default().push(Entry {
                        rule: i,
                        conds: specialized.into(),
                    });
                }
            }
        }
        Index {
            by_type: by_type
                .into_iter()
                .map(|(ty, entries)| (ty, Bucket::new(entries, rules, &mut *program)))
                .collect(),
            any_type: Bucket::new(any_type, rules, program),
        }
    }

    /// The buckets an event of type `ty` consults.
    pub fn buckets(&self, ty: &str) -> impl Iterator<Item = &Bucket> {
        self.by_type.get(ty).into_iter().chain([&self.any_type])
    }

    /// Rules visited for every event type.
    pub fn unindexed(&self) -> impl Iterator<Item = usize> + '_ {
        self.any_type.entries.iter().map(|e| e.rule)
    }
}

impl Bucket {
    fn new(mut entries: Vec<Entry>, rules: &[CompiledRule<Op>], program: &mut Program) -> Bucket {
        let single = |e: &Entry| matches!(rules[e.rule].kind, RuleKind::Single(_));
        let mut keyed: Vec<Keyed> = Vec::new();
        let mut unkeyed: Vec<u32> = Vec::new();
        for (n, e) in entries.iter().enumerate() {
            let key = if single(e) {
                key_of(e.conds[0], program)
            } else {
                None
            };
            let Some((slot, texts)) = key else {
                unkeyed.push(n as u32);
                continue;
            };
            let k = match keyed.iter().position(|k| k.slot == slot) {
                Some(k) => k,
                None => {
                    keyed.push(Keyed {
                        slot,
                        by_value: TextMap::default(),
                    });
                    keyed.len() - 1
                }
            };
            for t in texts {
                keyed[k].by_value.entry(t).push(n as u32);
            }
        }
        // Gates: conjunct tests of a rule that other unkeyed rules here
        // require too.
        // A sequence whose later steps cannot hold for this type acts only
        // through its first step: it can be gated by that step's tests.
        let first_step_only = |e: &Entry| e.conds[1..].iter().all(|c| *c == Op::Const(false));
        let conjunct_tests = |e: &Entry| -> Vec<u32> {
            if !single(e) && !first_step_only(e) {
                return Vec::new();
            }
            let mut tests: Vec<u32> = program
                .conjuncts(&e.conds[0])
                .iter()
                .filter_map(|c| match *c {
                    Op::Test(t) => Some(t),
                    _ => None,
                })
                .collect();
            tests.sort_unstable();
            tests.dedup();
            tests
        };
        let tests: Vec<Vec<u32>> = (unkeyed.iter())
            .map(|&n| conjunct_tests(&entries[n as usize]))
            .collect();
        let mut shared: HashMap<u32, usize> = HashMap::default();
        for &t in tests.iter().flatten() {
            *shared.entry(t).or_default() += 1;
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut by_gates: HashMap<Vec<Op>, usize> = HashMap::default();
        for (&n, tests) in unkeyed.iter().zip(tests) {
            let gates: Vec<Op> = tests
                .into_iter()
                .filter(|t| shared[t] > 1)
                .map(Op::Test)
                .collect();
            if !gates.is_empty() {
                // What is left to check once the gates held.
                let e = &mut entries[n as usize];
                e.conds[0] = program.without(e.conds[0], &gates);
            }
            if gates.is_empty() {
                match groups.last_mut() {
                    Some(g) if g.gates.is_empty() => g.entries.push(n),
                    _ => groups.push(Group {
                        gates,
                        entries: vec![n],
                    }),
                }
                continue;
            }
            match by_gates.get(&gates) {
                Some(&g) => groups[g].entries.push(n),
                None => {
                    by_gates.insert(gates.clone(), groups.len());
                    groups.push(Group {
                        gates,
                        entries: vec![n],
                    });
                }
            }
        }
        Bucket {
            entries,
            keyed,
            groups,
        }
    }

    /// Whether the bucket holds no rule.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends to `out` the entries that may match the event in `cx`,
    /// each once: those whose key the event has, and those of groups
    /// whose gates hold. In no particular order.
    pub fn select(&self, program: &Program, cx: &mut Ctx, out: &mut Vec<u32>) {
        let start = out.len();
        for k in &self.keyed {
            let mut pick = |v: &Val| {
                if let Val::Str(s) = v {
                    if let Some(entries) = k.by_value.get(s) {
                        out.extend_from_slice(entries);
                    }
                }
            };
            match cx.value(k.slot) {
                Some(Val::Many(items)) => items.iter().for_each(pick),
                Some(v) => pick(v),
                None => {}
            }
        }
        // An entry is keyed under one field only, but several items of a
        // multi-valued field may select it twice.
        if out.len() - start > 1 {
            out[start..].sort_unstable();
            let mut unique = start;
            for i in start..out.len() {
                if i == start || out[i] != out[unique - 1] {
                    out[unique] = out[i];
                    unique += 1;
                }
            }
            out.truncate(unique);
        }
        for g in &self.groups {
            if g.gates.iter().all(|&op| program.eval(op, cx)) {
                out.extend_from_slice(&g.entries);
            }
        }
    }
}

/// Fields that name things (programs, files, images): an event's value is
/// one of many, so requiring a few of them selects few events. A key on
/// `evt.res = SUCCESS` or `fd.type = ipv4` would select most events.
fn names_things(f: FieldId) -> bool {
    use FieldId::*;
    matches!(
        f,
        ProcName
            | ProcExe
            | ProcExepath
            | ProcPname
            | ProcPexe
            | ProcPexepath
            | ProcAname
            | ProcAexe
            | ProcAexepath
            | FdName
            | FdNameraw
            | FdDirectory
            | FdFilename
            | EvtArg
            | ContainerImage
            | ContainerImageRepository
            | ContainerName
    )
}

/// A condition's key, if it has one: among its top-level conjuncts that
/// require a naming field to equal one of some texts, the one with the
/// fewest texts, as (slot, texts).
fn key_of(cond: Op, program: &Program) -> Option<(usize, Vec<&str>)> {
    program
        .conjuncts(&cond)
        .iter()
        .filter_map(|c| match *c {
            Op::Test(t) => Some(program.test(t)),
            _ => None,
        })
        .filter(|t| !t.neg && names_things(t.field))
        .filter_map(|t| match &t.kind {
            TestKind::StrEq(v) => Some((t.slot, vec![&**v])),
            TestKind::StrIn(set) => Some((t.slot, set.iter().map(|v| &**v).collect())),
            _ => None,
        })
        .min_by_key(|(_, texts)| texts.len())
}
