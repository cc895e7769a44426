//! Matching, the per-event half of the rule engine: a compiled condition
//! is a tree of [`Node`]s whose leaves are typed [`Test`]s on field slots;
//! each field is read from the event at most once ([`Ctx`]), whichever
//! rules ask for it.
use std::{borrow::Cow, collections::HashMap, net::IpAddr};

use aho_corasick::{AhoCorasick, Anchored, Input};

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

#[derive(Debug)]
pub enum TestKind {
    Exists,
    StrEq(Box<str>),
    StrIn(HashSet<Box<str>>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    /// Lower-cased needle.
    IContains(Box<str>),
    /// Several prefixes (`startswith` alternatives), anchored; with the
    /// prefixes themselves, for the kernel filter (`interest.rs`).
    PrefixAny(Box<AhoCorasick>, Box<[Box<str>]>),
    /// Several substrings (`contains` alternatives).
    ContainsAny(Box<AhoCorasick>),
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

#[derive(Debug, Clone, PartialEq)]
pub enum GlobTok {
    Lit(char),
    Any,
    Star,
    Class(Vec<(char, char)>, bool),
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

pub fn parse_glob(p: &str) -> Box<[GlobTok]> {
    let mut out = Vec::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(GlobTok::Star),
            '?' => out.push(GlobTok::Any),
            '\\' => out.push(GlobTok::Lit(chars.next().unwrap_or('\\'))),
            '[' => {
                let mut ranges = Vec::new();
                let neg = chars.peek() == Some(&'!') || chars.peek() == Some(&'^');
                if neg {
                    chars.next();
                }
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == ']' && !ranges.is_empty() {
                        closed = true;
                        break;
                    }
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') | None => {
                                ranges.push((c, c));
                                ranges.push(('-', '-'));
                                closed = true;
                                break;
                            }
                            Some(e) => ranges.push((c, e)),
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                if closed {
                    out.push(GlobTok::Class(ranges, neg));
                } else {
                    out.push(GlobTok::Lit('['));
                }
            }
            c => out.push(GlobTok::Lit(c)),
        }
    }
    out.into_boxed_slice()
}

/// Shell-style match (`*` crosses `/`, as in Falco's glob).
pub fn glob_match(p: &[GlobTok], s: &str, fold: bool) -> bool {
    let s: Vec<char> = if fold {
        s.to_lowercase().chars().collect()
    } else {
        s.chars().collect()
    };
    let eq = |a: char, b: char| {
        if fold {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let ok = match p.get(pi) {
            Some(GlobTok::Lit(c)) => eq(*c, s[si]),
            Some(GlobTok::Any) => true,
            Some(GlobTok::Class(r, neg)) => {
                r.iter().any(|(a, b)| *a <= s[si] && s[si] <= *b) != *neg
            }
            Some(GlobTok::Star) => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            None => false,
        };
        if ok {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|t| *t == GlobTok::Star)
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

/// Per-event values of the slots, read on first use.
pub struct Ctx<'e, 's> {
    pub ev: &'e Event,
    slots: &'s Slots,
    vals: Vec<Option<Option<Val<'e>>>>,
}

impl<'e, 's> Ctx<'e, 's> {
    pub fn new(ev: &'e Event, slots: &'s Slots) -> Ctx<'e, 's> {
        Ctx {
            ev,
            slots,
            vals: (0..slots.len()).map(|_| None).collect(),
        }
    }

    pub fn value(&mut self, slot: usize) -> Option<&Val<'e>> {
        if self.vals[slot].is_none() {
            self.vals[slot] = Some(extract::extract(self.ev, self.slots.get(slot)));
        }
        self.vals[slot].as_ref().and_then(|v| v.as_ref())
    }
}

impl Node {
    pub fn eval(&self, cx: &mut Ctx) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::And(items) => items.iter().all(|n| n.eval(cx)),
            Node::Or(items) => items.iter().any(|n| n.eval(cx)),
            Node::Not(n) => !n.eval(cx),
            Node::Test(t) => match cx.value(t.slot) {
                None => false,
                Some(v) => t.test(v) != t.neg,
            },
        }
    }
}

impl Test {
    fn test(&self, v: &Val) -> bool {
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
            TestKind::ContainsAny(ac) => ac.is_match(s),
            TestKind::Pmatch(set, lens) => lens.iter().any(|&n| {
                if n == s.len() {
                    set.contains(s)
                } else if n == 1 && s.starts_with('/') {
                    set.contains("/")
                } else {
                    s.as_bytes().get(n) == Some(&b'/')
                        && s.is_char_boundary(n)
                        && set.contains(&s[..n])
                }
            }),
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
