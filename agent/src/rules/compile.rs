//! Turns parsed conditions into match trees: macros and lists expanded,
//! fields resolved and type-checked, value sets hashed, prefix and
//! substring alternatives merged into Aho-Corasick automata. Nothing is
//! interpreted from strings per event.
use std::{borrow::Cow, collections::HashMap, net::IpAddr, sync::Arc};

/// Value sets are built from rules and only looked up with event data, so
/// a fast hasher is safe here (foldhash, randomly seeded per process);
/// SipHash was a fifth of the matching time.
pub type HashSet<T> = foldhash::HashSet<T>;

fn new_set<T>() -> HashSet<T> {
    HashSet::default()
}

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};

use super::{
    cond::{Check, Expr, Op, Rhs},
    fields::{self, FieldId, FieldProblem, FieldRef, Ty, Val},
    yaml::{self, Pos},
};
use crate::event::Event;

/// Condition text and where its pieces came from: a macro or rule may be
/// assembled from several files by `append`.
#[derive(Debug, Clone)]
pub struct CondText {
    pub text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
struct Segment {
    /// Offset of this piece in `text`.
    start: usize,
    origin: Arc<str>,
    src: Arc<str>,
    pos: Pos,
    value: String,
}

impl CondText {
    pub fn new(origin: Arc<str>, src: Arc<str>, pos: Pos, value: String) -> CondText {
        CondText {
            text: value.clone(),
            segments: vec![Segment {
                start: 0,
                origin,
                src,
                pos,
                value,
            }],
        }
    }

    /// Falco's `append`: the texts joined by a space.
    pub fn append(&mut self, other: CondText) {
        self.text.push(' ');
        let base = self.text.len();
        self.text.push_str(&other.text);
        for mut s in other.segments {
            s.start += base;
            self.segments.push(s);
        }
    }

    /// `file:line:col` of byte `at` of the text.
    pub fn locate(&self, at: usize) -> (Arc<str>, Pos) {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= at)
            .unwrap_or(&self.segments[0]);
        let off = at.saturating_sub(seg.start).min(seg.value.len());
        if seg.value.is_empty() {
            return (seg.origin.clone(), seg.pos);
        }
        (
            seg.origin.clone(),
            yaml::locate(&seg.src, seg.pos, &seg.value, off),
        )
    }
}

/// A compile problem at a place in a condition.
#[derive(Debug, Clone)]
pub struct CompileError {
    pub origin: Arc<str>,
    pub pos: Pos,
    pub message: String,
    /// The condition is valid Falco, but uses something Vigil lacks.
    pub unsupported: bool,
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
    /// Several prefixes (`startswith` alternatives), anchored.
    PrefixAny(Box<AhoCorasick>),
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
    fn parse(s: &str) -> Option<Net> {
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
            self.vals[slot] = Some(fields::extract(self.ev, self.slots.get(slot)));
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

    fn test_str(&self, s: &str) -> bool {
        match &self.kind {
            TestKind::Exists => true,
            TestKind::StrEq(k) => s == &**k,
            TestKind::StrIn(set) => set.contains(s),
            TestKind::StartsWith(k) => s.starts_with(&**k),
            TestKind::EndsWith(k) => s.ends_with(&**k),
            TestKind::Contains(k) => s.contains(&**k),
            TestKind::IContains(k) => s.to_lowercase().contains(&**k),
            TestKind::PrefixAny(ac) => ac.find(Input::new(s).anchored(Anchored::Yes)).is_some(),
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

/// What a condition may refer to.
pub struct Scope<'a> {
    pub macros: &'a HashMap<String, CondText>,
    pub lists: &'a HashMap<String, Vec<String>>,
}

pub struct Compiler<'a, 's> {
    pub scope: Scope<'a>,
    pub slots: &'s mut Slots,
    /// Compile uses of unsupported fields and event types as "absent"
    /// (never true) instead of failing; each is noted in `absent_uses`.
    pub unsupported_absent: bool,
    pub absent_uses: Vec<String>,
    /// Macros being expanded, to catch cycles.
    stack: Vec<String>,
    parsed: HashMap<String, Expr>,
}

impl<'a, 's> Compiler<'a, 's> {
    pub fn new(scope: Scope<'a>, slots: &'s mut Slots) -> Compiler<'a, 's> {
        Compiler {
            scope,
            slots,
            unsupported_absent: false,
            absent_uses: Vec::new(),
            stack: Vec::new(),
            parsed: HashMap::new(),
        }
    }

    /// Parses and compiles one condition.
    pub fn compile(&mut self, cond: &CondText) -> Result<Node, CompileError> {
        let expr = parse_located(cond)?;
        let n = self.expr(&expr, cond)?;
        Ok(optimize(n))
    }

    /// Compiles an expression built by the loader (exceptions).
    pub fn compile_expr(&mut self, e: &Expr, cond: &CondText) -> Result<Node, CompileError> {
        Ok(optimize(self.expr(e, cond)?))
    }

    fn err(&self, cond: &CondText, at: usize, message: String, unsupported: bool) -> CompileError {
        let (origin, pos) = cond.locate(at);
        CompileError {
            origin,
            pos,
            message,
            unsupported,
        }
    }

    fn expr(&mut self, e: &Expr, cond: &CondText) -> Result<Node, CompileError> {
        Ok(match e {
            Expr::And(items) => Node::And(
                items
                    .iter()
                    .map(|i| self.expr(i, cond))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(items) => Node::Or(
                items
                    .iter()
                    .map(|i| self.expr(i, cond))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(i) => Node::Not(Box::new(self.expr(i, cond)?)),
            Expr::Macro { name, at } => self.macro_ref(name, *at, cond)?,
            Expr::Check(c) => self.check(c, cond)?,
        })
    }

    fn macro_ref(&mut self, name: &str, at: usize, cond: &CondText) -> Result<Node, CompileError> {
        let Some(body) = self.scope.macros.get(name) else {
            let message = if fields::resolve(name).is_ok() || name.contains('.') {
                format!("`{name}` needs an operator (`=`, `in`, `exists`, …)")
            } else {
                format!("undefined macro `{name}`")
            };
            return Err(self.err(cond, at, message, false));
        };
        if self.stack.len() >= 64 {
            return Err(self.err(
                cond,
                at,
                format!("macros nested more than 64 deep at `{name}`"),
                false,
            ));
        }
        if self.stack.iter().any(|m| m == name) {
            return Err(self.err(
                cond,
                at,
                format!(
                    "macro `{name}` refers to itself (through {})",
                    self.stack.join(" → ")
                ),
                false,
            ));
        }
        let expr = match self.parsed.get(name) {
            Some(e) => e.clone(),
            None => {
                let e = parse_located(body)?;
                self.parsed.insert(name.to_string(), e.clone());
                e
            }
        };
        self.stack.push(name.to_string());
        let r = self.expr(&expr, body).map_err(|mut e| {
            let (origin, pos) = cond.locate(at);
            e.message = format!(
                "{} (in macro `{name}` used at {origin}:{}:{})",
                e.message, pos.line, pos.col
            );
            e
        });
        self.stack.pop();
        r
    }

    /// The values of a right side, with bare list names expanded.
    fn values(&self, c: &Check) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let items: Vec<&super::cond::Item> = match &c.rhs {
            Rhs::None => vec![],
            Rhs::One(i) => vec![i],
            Rhs::List(items) => items.iter().collect(),
        };
        for i in items {
            match (i.quoted, self.scope.lists.get(&i.text)) {
                (false, Some(list)) if c.op.takes_list() || matches!(c.rhs, Rhs::List(_)) => {
                    out.extend(list.iter().map(|v| (unquote(v).to_string(), i.at)))
                }
                _ => out.push((i.text.clone(), i.at)),
            }
        }
        out
    }

    fn check(&mut self, c: &Check, cond: &CondText) -> Result<Node, CompileError> {
        let f = match fields::resolve(&c.field) {
            Ok(f) => f,
            Err(p @ FieldProblem::Unsupported(_)) if self.unsupported_absent => {
                let use_ = p.to_string();
                if !self.absent_uses.contains(&use_) {
                    self.absent_uses.push(use_);
                }
                return Ok(Node::Const(false));
            }
            Err(p) => {
                let unsupported = matches!(p, FieldProblem::Unsupported(_));
                return Err(self.err(cond, c.field_at, p.to_string(), unsupported));
            }
        };
        let ty = fields::ty_of(&f);
        let id = f.id;
        let slot = self.slots.slot(f);
        let vals = self.values(c);
        let op = c.op;
        let list_ok = op.takes_list();
        if !list_ok && matches!(c.rhs, Rhs::List(_)) {
            return Err(self.err(
                cond,
                c.op_at,
                format!("`{op}` takes one value, not a list"),
                false,
            ));
        }
        let bad_op = |me: &Self| {
            me.err(
                cond,
                c.op_at,
                format!(
                    "operator `{op}` does not apply to `{}`, which is a {}",
                    c.field,
                    ty.name()
                ),
                false,
            )
        };
        let test = |neg: bool, kind: TestKind| {
            Node::Test(Test {
                slot,
                field: id,
                neg,
                kind,
            })
        };
        if op == Op::Exists {
            return Ok(test(false, TestKind::Exists));
        }
        if id == FieldId::EvtType && matches!(op, Op::Eq | Op::Ne | Op::In) {
            match self.check_evt_types(&vals, cond) {
                Err(e) if e.unsupported && self.unsupported_absent => {
                    self.absent_uses.push(e.message);
                    // No event of those types ever comes.
                    return Ok(Node::Const(op == Op::Ne));
                }
                other => other?,
            }
        }
        match ty {
            Ty::Str => {
                let one = || vals.first().map(|(v, _)| v.clone()).unwrap_or_default();
                Ok(match op {
                    Op::Eq => test(false, TestKind::StrEq(one().into())),
                    Op::Ne => test(false, TestKind::StrEq(one().into())).negate(),
                    Op::In | Op::Intersects => test(
                        false,
                        TestKind::StrIn(vals.iter().map(|(v, _)| v.as_str().into()).collect()),
                    ),
                    Op::Pmatch => {
                        let set: HashSet<Box<str>> = vals
                            .iter()
                            .map(|(v, _)| match v.trim_end_matches('/') {
                                "" => "/".into(),
                                t => t.into(),
                            })
                            .collect();
                        let mut lens: Vec<usize> = set.iter().map(|p| p.len()).collect();
                        lens.sort_unstable();
                        lens.dedup();
                        test(false, TestKind::Pmatch(set, lens))
                    }
                    Op::StartsWith | Op::BStartsWith => {
                        test(false, TestKind::StartsWith(one().into()))
                    }
                    Op::EndsWith => test(false, TestKind::EndsWith(one().into())),
                    Op::Contains | Op::BContains => test(false, TestKind::Contains(one().into())),
                    Op::IContains => test(false, TestKind::IContains(one().to_lowercase().into())),
                    Op::Glob => test(false, TestKind::Glob(parse_glob(&one()), false)),
                    Op::IGlob => test(false, TestKind::Glob(parse_glob(&one()), true)),
                    Op::Regex => {
                        let r = regex::Regex::new(&one()).map_err(|e| {
                            self.err(
                                cond,
                                vals.first().map_or(c.op_at, |v| v.1),
                                format!("bad regex: {e}"),
                                false,
                            )
                        })?;
                        test(false, TestKind::Regex(Box::new(r)))
                    }
                    Op::Lt | Op::Le | Op::Gt | Op::Ge => return Err(bad_op(self)),
                    Op::Exists => unreachable!("handled above"),
                })
            }
            Ty::Int => {
                if !matches!(
                    op,
                    Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::In | Op::Intersects
                ) {
                    return Err(bad_op(self));
                }
                let mut nums = Vec::new();
                for (v, at) in &vals {
                    nums.push(parse_int(v).ok_or_else(|| {
                        self.err(
                            cond,
                            *at,
                            format!("`{v}` is not a number, and `{}` is a number field", c.field),
                            false,
                        )
                    })?);
                }
                let one = nums.first().copied().unwrap_or_default();
                Ok(match op {
                    Op::Eq | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                        test(false, TestKind::IntCmp(op, one))
                    }
                    Op::Ne => test(true, TestKind::IntCmp(Op::Eq, one)),
                    Op::In | Op::Intersects => {
                        test(false, TestKind::IntIn(nums.into_iter().collect()))
                    }
                    _ => return Err(bad_op(self)),
                })
            }
            Ty::Bool => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(bad_op(self));
                }
                let b = match vals.first().map(|(v, _)| v.as_str()) {
                    Some("true") => true,
                    Some("false") => false,
                    other => {
                        return Err(self.err(
                            cond,
                            vals.first().map_or(c.op_at, |v| v.1),
                            format!(
                                "`{}` is a bool: compare it with true or false, not `{}`",
                                c.field,
                                other.unwrap_or("")
                            ),
                            false,
                        ))
                    }
                };
                Ok(match op {
                    Op::Eq => test(false, TestKind::Bool(b)),
                    Op::Ne => test(true, TestKind::Bool(b)),
                    _ => return Err(bad_op(self)),
                })
            }
            Ty::Ip => {
                if !matches!(op, Op::Eq | Op::Ne | Op::In | Op::Intersects) {
                    return Err(bad_op(self));
                }
                let mut nets = Vec::new();
                for (v, at) in &vals {
                    nets.push(Net::parse(v).ok_or_else(|| {
                        self.err(
                            cond,
                            *at,
                            format!("`{v}` is not an IP address or CIDR network"),
                            false,
                        )
                    })?);
                }
                Ok(match op {
                    Op::Eq | Op::In | Op::Intersects => test(false, TestKind::Net(nets)),
                    Op::Ne => test(true, TestKind::Net(nets)),
                    _ => return Err(bad_op(self)),
                })
            }
        }
    }

    /// `evt.type` values must be events Vigil reports.
    fn check_evt_types(
        &self,
        vals: &[(String, usize)],
        cond: &CondText,
    ) -> Result<(), CompileError> {
        let unknown: Vec<&(String, usize)> = vals
            .iter()
            .filter(|(v, _)| !fields::known_evt_type(v))
            .collect();
        if !vals.is_empty() && unknown.len() == vals.len() {
            let names: Vec<&str> = unknown.iter().map(|(v, _)| v.as_str()).collect();
            return Err(self.err(
                cond,
                unknown[0].1,
                format!(
                    "unsupported event type: Vigil does not follow {}",
                    names.join(", ")
                ),
                true,
            ));
        }
        Ok(())
    }
}

impl Node {
    fn negate(self) -> Node {
        match self {
            Node::Test(mut t) => {
                t.neg = !t.neg;
                Node::Test(t)
            }
            other => Node::Not(Box::new(other)),
        }
    }
}

/// Falco expands lists as text, so an item written `'"10.0.0.0/8"'` is a
/// quoted value: the quotes are not part of it.
fn unquote(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

fn parse_int(v: &str) -> Option<i64> {
    if let Some(h) = v.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok();
    }
    v.parse().ok()
}

fn parse_located(cond: &CondText) -> Result<Expr, CompileError> {
    super::cond::parse(&cond.text).map_err(|e| {
        let (origin, pos) = cond.locate(e.at);
        CompileError {
            origin,
            pos,
            message: e.message,
            unsupported: false,
        }
    })
}

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
    let mut eq: HashMap<usize, (FieldId, HashSet<Box<str>>)> = HashMap::new();
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
            }) => match kind {
                TestKind::StrEq(v) => {
                    eq.entry(slot)
                        .or_insert_with(|| (field, new_set()))
                        .1
                        .insert(v);
                }
                TestKind::StrIn(vs) => eq
                    .entry(slot)
                    .or_insert_with(|| (field, new_set()))
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
                kind => out.push(Node::Test(Test {
                    slot,
                    field,
                    neg: false,
                    kind,
                })),
            },
            other => out.push(other),
        }
    }
    let mut merged: Vec<(usize, Node)> = Vec::new();
    for (slot, (field, set)) in eq {
        merged.push((
            slot,
            Node::Test(Test {
                slot,
                field,
                neg: false,
                kind: TestKind::StrIn(set),
            }),
        ));
    }
    for (anchored, groups) in [(true, pre), (false, sub)] {
        for (slot, (field, pats)) in groups {
            for kind in any_of(pats, anchored) {
                merged.push((
                    slot,
                    Node::Test(Test {
                        slot,
                        field,
                        neg: false,
                        kind,
                    }),
                ));
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
    let mut ne: HashMap<usize, (FieldId, HashSet<Box<str>>)> = HashMap::new();
    let mut out = Vec::new();
    let mut order = Vec::new();
    for n in items {
        match n {
            Node::Test(Test {
                slot,
                field,
                neg: true,
                kind: TestKind::StrEq(v),
            }) => {
                if !ne.contains_key(&slot) {
                    order.push(slot);
                }
                ne.entry(slot)
                    .or_insert_with(|| (field, new_set()))
                    .1
                    .insert(v);
            }
            other => out.push(other),
        }
    }
    let mut front: Vec<Node> = order
        .into_iter()
        .filter_map(|slot| ne.remove(&slot).map(|(field, set)| (slot, field, set)))
        .map(|(slot, field, set)| {
            Node::Test(Test {
                slot,
                field,
                neg: true,
                kind: TestKind::StrIn(set),
            })
        })
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
        Ok(ac) if anchored => vec![TestKind::PrefixAny(Box::new(ac))],
        Ok(ac) => vec![TestKind::ContainsAny(Box::new(ac))],
        Err(_) => pats.into_iter().map(single).collect(),
    }
}

/// The `evt.type` values under which `n` can match; None: any.
pub fn evt_types(n: &Node) -> Option<HashSet<String>> {
    match n {
        Node::Const(true) => None,
        Node::Const(false) => Some(new_set()),
        Node::Test(Test {
            field: FieldId::EvtType,
            neg: false,
            kind,
            ..
        }) => match kind {
            TestKind::StrEq(v) => Some(std::iter::once(v.to_string()).collect()),
            TestKind::StrIn(set) => Some(set.iter().map(|v| v.to_string()).collect()),
            _ => None,
        },
        Node::Test(_) | Node::Not(_) => None,
        Node::And(items) => {
            let mut acc: Option<HashSet<String>> = None;
            for i in items {
                if let Some(s) = evt_types(i) {
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a.intersection(&s).cloned().collect(),
                    });
                }
            }
            acc
        }
        Node::Or(items) => {
            let mut acc = new_set();
            for i in items {
                acc.extend(evt_types(i)?);
            }
            Some(acc)
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
