//! Matching, the per-event half of the rule engine: a compiled condition
//! is a tree of [`Node`]s whose leaves are typed [`Test`]s on field slots
//! (lowered for matching by `program.rs`); each field is read from the
//! event at most once ([`Ctx`]), whichever rules ask for it.
use std::{borrow::Cow, collections::HashMap, net::IpAddr};

use aho_corasick::{AhoCorasick, Anchored, Input};

pub use super::glob::{glob_match, parse_glob, GlobTok};
use super::{
    cond::Op,
    extract,
    fields::{FieldId, FieldRef, Val},
};
use crate::event::Event;

/// Value sets are built from rules and only looked up with event data, so
/// a fast hasher is safe here (foldhash, randomly seeded per process);
/// SipHash was a fifth of the matching time.
pub type HashSet<T> = foldhash::HashSet<T>;

pub fn new_set<T>() -> HashSet<T> {
    HashSet::default()
}

/// A compiled condition.
#[derive(Debug)]
pub enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Test(Test),
}

/// One field test. `neg` inverts the result when the field is present;
/// an absent field fails every test, negated or not, as in Falco.
#[derive(Debug)]
pub struct Test {
    pub slot: usize,
    pub field: FieldId,
    pub neg: bool,
    pub kind: TestKind,
}

/// A set of texts that knows the lengths of its members, so a value of
/// another length is refused without being hashed (paths are long, and
/// most are of no listed length).
#[derive(Debug, Default)]
pub struct StrSet {
    set: HashSet<Box<str>>,
    /// Bit n: a member is n bytes long (n < 63); bit 63: one is longer.
    lens: u64,
}

impl StrSet {
    fn len_bit(n: usize) -> u64 {
        1 << n.min(63)
    }

    pub fn insert(&mut self, v: Box<str>) {
        self.lens |= Self::len_bit(v.len());
        self.set.insert(v);
    }

    pub fn contains(&self, v: &str) -> bool {
        self.lens & Self::len_bit(v.len()) != 0 && self.set.contains(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Box<str>> {
        self.set.iter()
    }
}

/// Texts mapped to values, with the same length filter as [`StrSet`].
#[derive(Debug)]
pub struct TextMap<V> {
    map: foldhash::HashMap<Box<str>, V>,
    lens: u64,
}

impl<V> Default for TextMap<V> {
    fn default() -> Self {
        TextMap {
            map: Default::default(),
            lens: 0,
        }
    }
}

impl<V: Default> TextMap<V> {
    /// The value of `k`, inserted as the default if missing.
    pub fn entry(&mut self, k: &str) -> &mut V {
        self.lens |= StrSet::len_bit(k.len());
        self.map.entry(k.into()).or_default()
    }
}

impl<V> TextMap<V> {
    pub fn get(&self, k: &str) -> Option<&V> {
        if self.lens & StrSet::len_bit(k.len()) == 0 {
            return None;
        }
        self.map.get(k)
    }
}

impl FromIterator<Box<str>> for StrSet {
    fn from_iter<I: IntoIterator<Item = Box<str>>>(it: I) -> Self {
        let mut s = StrSet::default();
        it.into_iter().for_each(|v| s.insert(v));
        s
    }
}

impl Extend<Box<str>> for StrSet {
    fn extend<I: IntoIterator<Item = Box<str>>>(&mut self, it: I) {
        it.into_iter().for_each(|v| self.insert(v));
    }
}

impl IntoIterator for StrSet {
    type Item = Box<str>;
    type IntoIter = <HashSet<Box<str>> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.set.into_iter()
    }
}

impl Test {
    pub fn new(slot: usize, field: FieldId, neg: bool, kind: TestKind) -> Test {
        Test {
            slot,
            field,
            neg,
            kind,
        }
    }

    /// What makes two tests the same: field slot, negation, operator and
    /// values (sets in sorted order).
    pub fn canonical(&self) -> String {
        let sorted = |it: &mut dyn Iterator<Item = String>| {
            let mut v: Vec<String> = it.collect();
            v.sort();
            v.join("\u{1}")
        };
        let kind = match &self.kind {
            TestKind::StrIn(set) => {
                format!("in:{}", sorted(&mut set.iter().map(|s| s.to_string())))
            }
            TestKind::Pmatch(set, _) => {
                format!("pmatch:{}", sorted(&mut set.iter().map(|s| s.to_string())))
            }
            TestKind::IntIn(set) => {
                format!("intin:{}", sorted(&mut set.iter().map(|n| n.to_string())))
            }
            TestKind::PrefixAny(_, pats) => {
                format!(
                    "prefixes:{}",
                    sorted(&mut pats.iter().map(|s| s.to_string()))
                )
            }
            TestKind::ContainsAny(_, pats) => {
                format!(
                    "substrings:{}",
                    sorted(&mut pats.iter().map(|s| s.to_string()))
                )
            }
            TestKind::Regex(r) => format!("regex:{}", r.as_str()),
            other => format!("{other:?}"),
        };
        format!("{}:{}:{kind}", self.slot, self.neg)
    }
}

#[derive(Debug)]
pub enum TestKind {
    Exists,
    StrEq(Box<str>),
    StrIn(StrSet),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    /// Lower-cased needle.
    IContains(Box<str>),
    /// Several prefixes (`startswith` alternatives), anchored; with the
    /// prefixes themselves, for the kernel filter (`interest.rs`).
    PrefixAny(Box<AhoCorasick>, Box<[Box<str>]>),
    /// Several substrings (`contains` alternatives), with the substrings.
    ContainsAny(Box<AhoCorasick>, Box<[Box<str>]>),
    /// Path prefixes: the value is one of them or below one. With the
    /// prefixes' distinct lengths, so only prefixes of those lengths are
    /// looked up.
    Pmatch(HashSet<Box<str>>, Vec<usize>),
    Glob(Box<[GlobTok]>, bool),
    Regex(Box<regex::Regex>),
    IntCmp(Op, i64),
    IntIn(HashSet<i64>),
    Bool(bool),
    Net(Vec<Net>),
}

/// An address or CIDR network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    pub(super) fn parse(s: &str) -> Option<Net> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Net { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            (IpAddr::V4(a), IpAddr::V6(b)) => match b.to_ipv4_mapped() {
                Some(b) => (u32::from(a) as u128, u32::from(b) as u128, 32),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - self.bits as u32;
        (a >> shift) == (b >> shift)
    }
}

/// Field slots shared by every rule of a set: each field is read at most
/// once per event, whichever rules ask for it.
#[derive(Debug, Default)]
pub struct Slots {
    refs: Vec<FieldRef>,
    by_ref: HashMap<FieldRef, usize>,
}

impl Slots {
    pub fn slot(&mut self, f: FieldRef) -> usize {
        if let Some(&i) = self.by_ref.get(&f) {
            return i;
        }
        self.refs.push(f.clone());
        self.by_ref.insert(f, self.refs.len() - 1);
        self.refs.len() - 1
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    pub fn get(&self, i: usize) -> &FieldRef {
        &self.refs[i]
    }
}

/// Per-event values of the slots and results of the tests, each worked
/// out on first use.
pub struct Ctx<'e, 's, 'b> {
    pub ev: &'e Event,
    slots: &'s Slots,
    buffers: &'b mut CtxBuffers,
}

/// The buffers a [`Ctx`] uses, kept between events so nothing is
/// allocated or cleared wholesale per event.
#[derive(Default)]
pub struct CtxBuffers {
    /// Slot values of the current event. Stored as `'static`, but a value
    /// lives only while its event does: every slot set is recorded in
    /// `touched` and emptied before the event's context ends (and, should
    /// that be skipped by a panic, before the next context starts), so no
    /// value outlives what it borrows.
    vals: Vec<Option<Option<Val<'static>>>>,
    touched: Vec<u32>,
    /// Per memo place: 0 not evaluated, 1 false, 2 true.
    memo: Vec<u8>,
}

impl CtxBuffers {
    fn reset(&mut self) {
        for i in self.touched.drain(..) {
            self.vals[i as usize] = None;
        }
    }
}

impl<'e, 's, 'b> Ctx<'e, 's, 'b> {
    /// A context for `ev`, in `buffers` sized for `slots` and `memos`.
    pub fn new(
        ev: &'e Event,
        slots: &'s Slots,
        memos: usize,
        buffers: &'b mut CtxBuffers,
    ) -> Ctx<'e, 's, 'b> {
        buffers.reset();
        if buffers.vals.len() != slots.len() {
            buffers.vals.clear();
            buffers.vals.resize_with(slots.len(), || None);
        }
        buffers.memo.clear();
        buffers.memo.resize(memos, 0);
        Ctx { ev, slots, buffers }
    }

    /// Empties the slots this event set.
    pub fn finish(self) {
        self.buffers.reset();
    }

    /// The result of test `t` if this event already had it.
    pub fn memo(&self, t: u32) -> Option<bool> {
        match self.buffers.memo[t as usize] {
            0 => None,
            r => Some(r == 2),
        }
    }

    /// Records the result of test `t` for this event.
    pub fn remember(&mut self, t: u32, r: bool) {
        self.buffers.memo[t as usize] = 1 + r as u8;
    }

    pub fn value(&mut self, slot: usize) -> Option<&Val<'e>> {
        if self.buffers.vals[slot].is_none() {
            let v = extract::extract(self.ev, self.slots.get(slot));
            // SAFETY: see `CtxBuffers::vals`: the value is emptied before
            // `'e` ends, and only read as `Val<'e>` until then.
            let v: Option<Val<'static>> = unsafe { std::mem::transmute(v) };
            self.buffers.vals[slot] = Some(v);
            self.buffers.touched.push(slot as u32);
        }
        self.buffers.vals[slot].as_ref().and_then(|v| v.as_ref())
    }
}

impl Test {
    pub(super) fn test(&self, v: &Val) -> bool {
        match v {
            Val::Many(items) => match self.kind {
                TestKind::Exists => !items.is_empty(),
                _ => items.iter().any(|i| self.test(i)),
            },
            Val::Str(s) => self.test_str(s),
            Val::Int(n) => match &self.kind {
                TestKind::IntCmp(op, k) => match op {
                    Op::Eq => n == k,
                    Op::Lt => n < k,
                    Op::Le => n <= k,
                    Op::Gt => n > k,
                    Op::Ge => n >= k,
                    _ => false,
                },
                TestKind::IntIn(set) => set.contains(n),
                TestKind::Exists => true,
                _ => false,
            },
            Val::Bool(b) => match self.kind {
                TestKind::Bool(k) => *b == k,
                TestKind::Exists => true,
                _ => false,
            },
            Val::Ip(ip) => match &self.kind {
                TestKind::Net(nets) => nets.iter().any(|n| n.contains(*ip)),
                TestKind::Exists => true,
                _ => false,
            },
        }
    }

    /// This test on a text value (the field is present).
    pub(super) fn test_str(&self, s: &str) -> bool {
        match &self.kind {
            TestKind::Exists => true,
            TestKind::StrEq(k) => s == &**k,
            TestKind::StrIn(set) => set.contains(s),
            TestKind::StartsWith(k) => s.starts_with(&**k),
            TestKind::EndsWith(k) => s.ends_with(&**k),
            TestKind::Contains(k) => s.contains(&**k),
            TestKind::IContains(k) => s.to_lowercase().contains(&**k),
            TestKind::PrefixAny(ac, _) => ac.find(Input::new(s).anchored(Anchored::Yes)).is_some(),
            TestKind::ContainsAny(ac, _) => ac.is_match(s),
            TestKind::Pmatch(set, lens) => pmatch_candidates(s, lens).any(|p| set.contains(p)),
            TestKind::Glob(p, fold) => glob_match(p, s, *fold),
            TestKind::Regex(r) => r.is_match(s),
            TestKind::IntCmp(..) | TestKind::IntIn(_) | TestKind::Bool(_) | TestKind::Net(_) => {
                false
            }
        }
    }
}

impl Node {
    pub(super) fn negate(self) -> Node {
        match self {
            Node::Test(mut t) => {
                t.neg = !t.neg;
                Node::Test(t)
            }
            other => Node::Not(Box::new(other)),
        }
    }
}

/// The prefixes of path `s`, of the given lengths, that `pmatch` looks
/// up: `s` itself, `/` for an absolute path, and every prefix that ends
/// where a component does.
pub fn pmatch_candidates<'a>(s: &'a str, lens: &'a [usize]) -> impl Iterator<Item = &'a str> {
    lens.iter().filter_map(move |&n| {
        if n == s.len() {
            Some(s)
        } else if n == 1 && s.starts_with('/') {
            Some("/")
        } else if s.as_bytes().get(n) == Some(&b'/') && s.is_char_boundary(n) {
            Some(&s[..n])
        } else {
            None
        }
    })
}

/// A value rendered as text, for templates and dedup keys.
pub fn render(v: Option<&Val>) -> Cow<'static, str> {
    match v {
        None => Cow::Borrowed("<NA>"),
        Some(v) => {
            let mut s = String::new();
            v.render(&mut s);
            Cow::Owned(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_addresses() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.2.3.4".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let n6 = Net::parse("fd00::/8").unwrap();
        assert!(n6.contains("fd12::1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("1.2.3.4/33").is_none());
        assert!(Net::parse("nope").is_none());
    }

    #[test]
    fn globs() {
        let g = parse_glob("/etc/*.conf");
        assert!(glob_match(&g, "/etc/a.conf", false));
        assert!(glob_match(&g, "/etc/x/y.conf", false));
        assert!(!glob_match(&g, "/etc/a.confx", false));
        let g = parse_glob("/dev/tty[0-9]?");
        assert!(glob_match(&g, "/dev/tty1a", false));
        assert!(!glob_match(&g, "/dev/ttyxa", false));
        assert!(glob_match(&parse_glob("*SHADOW"), "/etc/shadow", true));
    }
}
