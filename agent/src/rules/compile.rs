//! Compiling, the load-time half of the rule engine: parsed conditions
//! become match trees with macros and lists expanded, fields resolved and
//! type-checked, and values parsed into the types they are compared as;
//! [`optimize`](super::optimize) then merges what can be merged. Nothing
//! is interpreted from strings per event.
use std::{collections::HashMap, sync::Arc};

use super::{
    cond::{Check, Expr, Op, Rhs},
    fields::{self, FieldId, FieldProblem, Ty},
    matcher::{parse_glob, HashSet, Net, Node, Slots, Test, TestKind},
    optimize::optimize,
    yaml::{self, Pos},
};

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
    /// Expression nodes produced for the condition being compiled.
    produced: usize,
}

/// Most expression nodes one condition may expand to once its macros are
/// substituted: a chain of macros each using the previous one twice
/// doubles at every step, and a small file could otherwise hang a reload.
pub const MAX_EXPANDED: usize = 200_000;

impl<'a, 's> Compiler<'a, 's> {
    pub fn new(scope: Scope<'a>, slots: &'s mut Slots) -> Compiler<'a, 's> {
        Compiler {
            scope,
            slots,
            unsupported_absent: false,
            absent_uses: Vec::new(),
            stack: Vec::new(),
            parsed: HashMap::new(),
            produced: 0,
        }
    }

    /// Parses and compiles one condition.
    pub fn compile(&mut self, cond: &CondText) -> Result<Node, CompileError> {
        self.produced = 0;
        let expr = parse_located(cond)?;
        let n = self.expr(&expr, cond)?;
        Ok(optimize(n))
    }

    /// Compiles an expression built by the loader (exceptions).
    pub fn compile_expr(&mut self, e: &Expr, cond: &CondText) -> Result<Node, CompileError> {
        self.produced = 0;
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
        self.produced += 1;
        if self.produced > MAX_EXPANDED {
            return Err(self.err(
                cond,
                0,
                format!("the condition expands to more than {MAX_EXPANDED} tests once its macros are substituted (a macro used many times over?); refused"),
                false,
            ));
        }
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
        let test = |neg: bool, kind: TestKind| Node::Test(Test::new(slot, id, neg, kind));
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
