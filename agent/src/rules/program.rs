//! The compiled rule set as the matcher runs it. Every condition is
//! lowered from its tree of [`Node`]s into one flat array of small
//! [`Op`]s (an `and`'s children side by side), and every distinct test is
//! stored once, its index being its place in the per-event memo: a test
//! that several rules share (a macro's) is evaluated once per event.
//! Walking a rule reads a few contiguous words; a test's values (sets,
//! automata) are read only when an event first needs that test. With a
//! thousand rules the walk, not the tests, was the cost: each tree node a
//! separate allocation, each visit a cache miss.
use std::collections::HashMap;

use super::{
    fields::{FieldId, Val},
    load::{CompiledRule, RuleKind, Sequence},
    matcher::{new_set, pmatch_candidates, Ctx, HashSet, Node, Test, TestKind, TextMap},
};

/// One node of a lowered condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Const(bool),
    /// All of the children at `ops[start..start + len]`.
    And(u32, u32),
    /// Any of the children at `ops[start..start + len]`.
    Or(u32, u32),
    /// Not the child at `ops[i]`.
    Not(u32),
    /// Test `tests[i]`.
    Test(u32),
}

/// No family.
const NO_FAMILY: u32 = u32::MAX;

/// The tests of one kind on one field: `=`/`in` texts, or `pmatch` path
/// prefixes. The first time an event needs one of them, one lookup of the
/// event's value settles them all: a thousand rules testing `proc.name`
/// against their own lists cost one hash of the name, not a thousand.
#[derive(Debug)]
struct Family {
    slot: usize,
    /// For `pmatch`: the prefixes' distinct lengths.
    prefix_lens: Option<Vec<usize>>,
    /// Each text, and the members (with their negation) that list it.
    by_text: TextMap<Vec<(u32, bool)>>,
    /// Every member, with its negation.
    members: Vec<(u32, bool)>,
}

impl Family {
    /// Records every member's result for the event in `cx`. An absent
    /// field fails every test, negated or not.
    fn resolve(&self, cx: &mut Ctx) {
        let mut holding: Vec<(u32, bool)> = Vec::new();
        let present = match cx.value(self.slot) {
            None => false,
            Some(v) => {
                self.holding(v, &mut holding);
                true
            }
        };
        for &(m, neg) in &self.members {
            cx.remember(m, present && neg);
        }
        for (m, neg) in holding {
            cx.remember(m, !neg);
        }
    }

    /// The members whose texts `v` matches, before negation (as
    /// `Test::test` reads a value: any item of a list).
    fn holding(&self, v: &Val, out: &mut Vec<(u32, bool)>) {
        match v {
            Val::Many(items) => items.iter().for_each(|i| self.holding(i, out)),
            Val::Str(s) => match &self.prefix_lens {
                None => out.extend(self.by_text.get(s).into_iter().flatten()),
                Some(lens) => {
                    for p in pmatch_candidates(s, lens) {
                        out.extend(self.by_text.get(p).into_iter().flatten());
                    }
                }
            },
            _ => {}
        }
    }
}

/// Every condition of a rule set, lowered.
#[derive(Debug, Default)]
pub struct Program {
    ops: Vec<Op>,
    tests: Vec<Test>,
    /// Each test's family, or [`NO_FAMILY`].
    family_of: Vec<u32>,
    families: Vec<Family>,
    /// Each test's canonical text, to store each test once (dropped when
    /// the set is complete).
    by_key: HashMap<String, u32>,
}

impl Program {
    /// Lowers a compiled rule's conditions into the program.
    pub fn lower_rule(&mut self, r: CompiledRule) -> CompiledRule<Op> {
        let kind = match r.kind {
            RuleKind::Single(n) => RuleKind::Single(self.lower(n)),
            RuleKind::Sequence(s) => RuleKind::Sequence(Sequence {
                window_ns: s.window_ns,
                same_process: s.same_process,
                steps: s
                    .steps
                    .into_iter()
                    .map(|(n, key)| (self.lower(n), key))
                    .collect(),
            }),
        };
        CompiledRule {
            meta: r.meta,
            kind,
            dedup: r.dedup,
            threshold: r.threshold,
        }
    }

    /// Lowers `n`; returns the op to evaluate it from.
    fn lower(&mut self, n: Node) -> Op {
        match n {
            Node::Const(b) => Op::Const(b),
            Node::Test(t) => Op::Test(self.test_index(t)),
            Node::Not(inner) => {
                let child = self.lower(*inner);
                self.ops.push(child);
                Op::Not(self.ops.len() as u32 - 1)
            }
            Node::And(items) => {
                let (start, len) = self.lower_children(items);
                Op::And(start, len)
            }
            Node::Or(items) => {
                let (start, len) = self.lower_children(items);
                Op::Or(start, len)
            }
        }
    }

    /// Lowers `items` (their own children first), then stores them side by
    /// side.
    fn lower_children(&mut self, items: Vec<Node>) -> (u32, u32) {
        let children: Vec<Op> = items.into_iter().map(|n| self.lower(n)).collect();
        let start = self.ops.len() as u32;
        self.ops.extend_from_slice(&children);
        (start, children.len() as u32)
    }

    fn test_index(&mut self, t: Test) -> u32 {
        let key = t.canonical();
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        self.tests.push(t);
        let i = self.tests.len() as u32 - 1;
        self.by_key.insert(key, i);
        i
    }

    /// Ends lowering: groups tests into families and frees what only
    /// lowering needed.
    pub fn finish(&mut self) {
        self.by_key = HashMap::new();
        self.ops.shrink_to_fit();
        self.tests.shrink_to_fit();
        let mut by_field: HashMap<(usize, bool), Vec<u32>> = HashMap::new();
        for (i, t) in self.tests.iter().enumerate() {
            let prefixes = match t.kind {
                TestKind::StrEq(_) | TestKind::StrIn(_) => false,
                TestKind::Pmatch(..) => true,
                _ => continue,
            };
            by_field
                .entry((t.slot, prefixes))
                .or_default()
                .push(i as u32);
        }
        self.family_of = vec![NO_FAMILY; self.tests.len()];
        let mut groups: Vec<_> = by_field.into_iter().filter(|(_, m)| m.len() > 1).collect();
        groups.sort();
        for ((slot, prefixes), members) in groups {
            let mut fam = Family {
                slot,
                prefix_lens: prefixes.then(Vec::new),
                by_text: Default::default(),
                members: Vec::with_capacity(members.len()),
            };
            for m in members {
                let t = &self.tests[m as usize];
                let texts: Vec<&str> = match &t.kind {
                    TestKind::StrEq(v) => vec![&**v],
                    TestKind::StrIn(set) => set.iter().map(|v| &**v).collect(),
                    TestKind::Pmatch(set, lens) => {
                        let all = fam.prefix_lens.get_or_insert_with(Vec::new);
                        all.extend(lens);
                        set.iter().map(|v| &**v).collect()
                    }
                    _ => unreachable!("only texts and prefixes are grouped"),
                };
                for text in texts {
                    fam.by_text.entry(text).push((m, t.neg));
                }
                fam.members.push((m, t.neg));
                self.family_of[m as usize] = self.families.len() as u32;
            }
            if let Some(lens) = &mut fam.prefix_lens {
                lens.sort_unstable();
                lens.dedup();
            }
            self.families.push(fam);
        }
    }

    /// How many distinct tests there are: the per-event memo's size.
    pub fn test_count(&self) -> usize {
        self.tests.len()
    }

    pub fn test(&self, i: u32) -> &Test {
        &self.tests[i as usize]
    }

    /// The children of an `And` or `Or`; none for other ops.
    pub fn children(&self, op: Op) -> &[Op] {
        match op {
            Op::And(start, len) | Op::Or(start, len) => {
                &self.ops[start as usize..(start + len) as usize]
            }
            _ => &[],
        }
    }

    /// The op a `Not` negates.
    pub fn negated(&self, i: u32) -> Op {
        self.ops[i as usize]
    }

    /// Whether the condition at `op` holds for the event in `cx`.
    pub fn eval(&self, op: Op, cx: &mut Ctx) -> bool {
        match op {
            Op::Const(b) => b,
            // Tests, the most common children, without a call.
            Op::And(..) => self.children(op).iter().all(|&c| match c {
                Op::Test(t) => self.test_result(t, cx),
                c => self.eval(c, cx),
            }),
            Op::Or(..) => self.children(op).iter().any(|&c| match c {
                Op::Test(t) => self.test_result(t, cx),
                c => self.eval(c, cx),
            }),
            Op::Not(i) => !self.eval(self.negated(i), cx),
            Op::Test(t) => self.test_result(t, cx),
        }
    }

    #[inline(always)]
    fn test_result(&self, t: u32, cx: &mut Ctx) -> bool {
        match cx.memo(t) {
            Some(known) => known,
            None => self.run_test(t, cx),
        }
    }

    /// Runs test `t` (or resolves its whole family) for this event.
    #[inline(never)]
    fn run_test(&self, t: u32, cx: &mut Ctx) -> bool {
        let f = self.family_of[t as usize];
        if f != NO_FAMILY {
            self.families[f as usize].resolve(cx);
            return cx.memo(t) == Some(true);
        }
        let test = &self.tests[t as usize];
        let r = match cx.value(test.slot) {
            None => false,
            Some(v) => test.test(v) != test.neg,
        };
        cx.remember(t, r);
        r
    }

    /// The `evt.type` values under which `op` can hold; None: any.
    pub fn evt_types(&self, op: Op) -> Option<HashSet<String>> {
        match op {
            Op::Const(true) => None,
            Op::Const(false) => Some(new_set()),
            Op::Test(t) => {
                let test = self.test(t);
                match (test.field, test.neg, &test.kind) {
                    (FieldId::EvtType, false, TestKind::StrEq(v)) => {
                        Some(std::iter::once(v.to_string()).collect())
                    }
                    (FieldId::EvtType, false, TestKind::StrIn(set)) => {
                        Some(set.iter().map(|v| v.to_string()).collect())
                    }
                    _ => None,
                }
            }
            Op::Not(_) => None,
            Op::And(..) => {
                let mut acc: Option<HashSet<String>> = None;
                for &c in self.children(op) {
                    if let Some(s) = self.evt_types(c) {
                        acc = Some(match acc {
                            None => s,
                            Some(a) => a.intersection(&s).cloned().collect(),
                        });
                    }
                }
                acc
            }
            Op::Or(..) => {
                let mut acc = new_set();
                for &c in self.children(op) {
                    acc.extend(self.evt_types(c)?);
                }
                Some(acc)
            }
        }
    }

    /// The `evt.type` values under which rule `r` can match (a sequence:
    /// any of its steps'); None: any.
    pub fn rule_evt_types(&self, r: &CompiledRule<Op>) -> Option<HashSet<String>> {
        match &r.kind {
            RuleKind::Single(op) => self.evt_types(*op),
            RuleKind::Sequence(s) => {
                let mut all = new_set();
                for (op, _) in &s.steps {
                    all.extend(self.evt_types(*op)?);
                }
                Some(all)
            }
        }
    }

    /// `op` as events of type `ty` see it: its `evt.type` tests settled
    /// and the constants they leave folded away (an `or` over several
    /// syscalls keeps only the branch for `ty`). Unchanged parts are
    /// shared with `op`.
    pub fn specialize(&mut self, op: Op, ty: &str) -> Op {
        match op {
            Op::Const(_) => op,
            Op::Test(t) => {
                let test = &self.tests[t as usize];
                let listed = match (&test.field, &test.kind) {
                    (FieldId::EvtType, TestKind::StrEq(v)) => **v == *ty,
                    (FieldId::EvtType, TestKind::StrIn(set)) => set.contains(ty),
                    _ => return op,
                };
                Op::Const(listed != test.neg)
            }
            Op::Not(i) => match self.specialize(self.negated(i), ty) {
                Op::Const(b) => Op::Const(!b),
                same if same == self.negated(i) => op,
                other => {
                    self.ops.push(other);
                    Op::Not(self.ops.len() as u32 - 1)
                }
            },
            Op::And(..) | Op::Or(..) => {
                let all = matches!(op, Op::And(..));
                let children = self.children(op).to_vec();
                let mut kept = Vec::with_capacity(children.len());
                for &c in &children {
                    match self.specialize(c, ty) {
                        Op::Const(b) if b == all => {}
                        Op::Const(b) => return Op::Const(b),
                        other => kept.push(other),
                    }
                }
                match kept.len() {
                    0 => Op::Const(all),
                    1 => kept[0],
                    _ if kept == children => op,
                    n => {
                        let start = self.ops.len() as u32;
                        self.ops.extend_from_slice(&kept);
                        if all {
                            Op::And(start, n as u32)
                        } else {
                            Op::Or(start, n as u32)
                        }
                    }
                }
            }
        }
    }

    /// `op` without the conjuncts in `known` (checked already, as a
    /// group's gates are).
    pub fn without(&mut self, op: Op, known: &[Op]) -> Op {
        let Op::And(..) = op else {
            return if known.contains(&op) {
                Op::Const(true)
            } else {
                op
            };
        };
        let kept: Vec<Op> = (self.children(op).iter())
            .filter(|c| !known.contains(c))
            .copied()
            .collect();
        match kept.len() {
            0 => Op::Const(true),
            1 => kept[0],
            n => {
                let start = self.ops.len() as u32;
                self.ops.extend_from_slice(&kept);
                Op::And(start, n as u32)
            }
        }
    }

    /// The top-level conjuncts of `op`: its children if it is an `and`,
    /// else itself.
    pub fn conjuncts<'a>(&'a self, op: &'a Op) -> &'a [Op] {
        match op {
            Op::And(..) => self.children(*op),
            other => std::slice::from_ref(other),
        }
    }
}
