//! Optimising compiled conditions: nested `and`/`or` flattened, constants
//! folded, and alternatives on one field merged (`=` into one hash set,
//! `startswith`/`contains` into one Aho-Corasick automaton), so a rule set
//! costs a few lookups per event rather than a test per alternative.
use std::collections::HashMap;

use aho_corasick::{AhoCorasickBuilder, MatchKind, StartKind};

use super::{
    fields::FieldId,
    matcher::{Node, StrSet, Test, TestKind},
};

/// Flattens nested and/or, folds constants, and merges alternatives on one
/// field: `=` into one hash set, `startswith`/`contains` into one automaton.
pub fn optimize(n: Node) -> Node {
    match n {
        Node::And(items) => match flatten(items, true) {
            Ok(out) => join(merge_negated_eq(out), true),
            Err(absorbed) => absorbed,
        },
        Node::Or(items) => match flatten(items, false) {
            Ok(out) => join(merge_alternatives(out), false),
            Err(absorbed) => absorbed,
        },
        Node::Not(i) => match optimize(*i) {
            Node::Const(b) => Node::Const(!b),
            Node::Not(inner) => *inner,
            other => Node::Not(Box::new(other)),
        },
        other => other,
    }
}

/// The optimized children of an `and` (`all`) or an `or`: nested nodes of
/// the same kind inlined, neutral constants dropped; `Err` with the
/// constant that decides the whole node.
fn flatten(items: Vec<Node>, all: bool) -> Result<Vec<Node>, Node> {
    let mut out = Vec::new();
    for i in items.into_iter().map(optimize) {
        match i {
            Node::Const(b) if b == all => {}
            Node::Const(b) => return Err(Node::Const(b)),
            Node::And(inner) if all => out.extend(inner),
            Node::Or(inner) if !all => out.extend(inner),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn join(mut items: Vec<Node>, all: bool) -> Node {
    match items.len() {
        0 => Node::Const(all),
        1 => items.pop().unwrap_or(Node::Const(all)),
        _ if all => Node::And(items),
        _ => Node::Or(items),
    }
}

/// `a = x or a = y or a in (z)` → `a in (x, y, z)`; `startswith` and
/// `contains` alternatives → one automaton each.
fn merge_alternatives(items: Vec<Node>) -> Vec<Node> {
    let mut eq: HashMap<usize, (FieldId, StrSet)> = HashMap::new();
    let mut pre: HashMap<usize, (FieldId, Vec<Box<str>>)> = HashMap::new();
    let mut sub: HashMap<usize, (FieldId, Vec<Box<str>>)> = HashMap::new();
    let mut out = Vec::new();
    for n in items {
        match n {
            Node::Test(Test {
                slot,
                field,
                neg: false,
                kind,
                ..
            }) => match kind {
                TestKind::StrEq(v) => {
                    eq.entry(slot)
                        .or_insert_with(|| (field, StrSet::default()))
                        .1
                        .insert(v);
                }
                TestKind::StrIn(vs) => eq
                    .entry(slot)
                    .or_insert_with(|| (field, StrSet::default()))
                    .1
                    .extend(vs),
                TestKind::StartsWith(v) => pre
                    .entry(slot)
                    .or_insert_with(|| (field, Vec::new()))
                    .1
                    .push(v),
                TestKind::Contains(v) => sub
                    .entry(slot)
                    .or_insert_with(|| (field, Vec::new()))
                    .1
                    .push(v),
                kind => out.push(Node::Test(Test::new(slot, field, false, kind))),
            },
            other => out.push(other),
        }
    }
    let mut merged: Vec<(usize, Node)> = Vec::new();
    for (slot, (field, set)) in eq {
        merged.push((
            slot,
            Node::Test(Test::new(slot, field, false, TestKind::StrIn(set))),
        ));
    }
    for (anchored, groups) in [(true, pre), (false, sub)] {
        for (slot, (field, pats)) in groups {
            for kind in any_of(pats, anchored) {
                merged.push((slot, Node::Test(Test::new(slot, field, false, kind))));
            }
        }
    }
    // Deterministic order: cheap hash-set tests first, then by slot.
    merged.sort_by_key(|(slot, n)| {
        (
            !matches!(
                n,
                Node::Test(Test {
                    kind: TestKind::StrIn(_),
                    ..
                })
            ),
            *slot,
        )
    });
    let mut all: Vec<Node> = merged.into_iter().map(|(_, n)| n).collect();
    all.extend(out);
    all
}

/// `a != x and a != y` → `not a in (x, y)` (absent `a` still fails).
fn merge_negated_eq(items: Vec<Node>) -> Vec<Node> {
    let mut ne: HashMap<usize, (FieldId, StrSet)> = HashMap::new();
    let mut out = Vec::new();
    let mut order = Vec::new();
    for n in items {
        match n {
            Node::Test(Test {
                slot,
                field,
                neg: true,
                kind: TestKind::StrEq(v),
                ..
            }) => {
                if !ne.contains_key(&slot) {
                    order.push(slot);
                }
                ne.entry(slot)
                    .or_insert_with(|| (field, StrSet::default()))
                    .1
                    .insert(v);
            }
            other => out.push(other),
        }
    }
    let mut front: Vec<Node> = order
        .into_iter()
        .filter_map(|slot| ne.remove(&slot).map(|(field, set)| (slot, field, set)))
        .map(|(slot, field, set)| Node::Test(Test::new(slot, field, true, TestKind::StrIn(set))))
        .collect();
    front.extend(out);
    front
}

/// Tests for "starts with (`anchored`) or contains any of `pats`": one
/// automaton for several, or one plain test per pattern if the automaton
/// cannot be built (its size limits), so a condition never loses a case.
fn any_of(pats: Vec<Box<str>>, anchored: bool) -> Vec<TestKind> {
    let single = |p: Box<str>| {
        if anchored {
            TestKind::StartsWith(p)
        } else {
            TestKind::Contains(p)
        }
    };
    if pats.len() == 1 {
        return pats.into_iter().map(single).collect();
    }
    let mut b = AhoCorasickBuilder::new();
    b.match_kind(MatchKind::LeftmostFirst);
    if anchored {
        b.start_kind(StartKind::Anchored);
    }
    match b.build(pats.iter().map(|p| p.as_bytes())) {
        Ok(ac) if anchored => vec![TestKind::PrefixAny(Box::new(ac), pats.into())],
        Ok(ac) => vec![TestKind::ContainsAny(Box::new(ac), pats.into())],
        Err(_) => pats.into_iter().map(single).collect(),
    }
}
