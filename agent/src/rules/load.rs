//! Loading a rule set: the files read into definitions (`items.rs`), then
//! every enabled rule compiled with its macros, lists and exceptions, and
//! what Vigil cannot observe handled as `--unsupported` says.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use vigil_proto::v1::Severity;

use super::{
    compile::{CompileError, Compiler, CondText, Scope},
    cond::{Check, Expr, Item, Rhs},
    fields::{self, FieldRef},
    items::{node_at, read_list, read_macro, Defs, Errors, ExceptionDef, RuleDef, Where},
    matcher::{Node, Slots},
    optimize::optimize,
    rule_item::read_rule,
    yaml::{self, Node as Y},
    RuleError, RuleMeta, Template,
};

/// What to do with valid Falco that uses a field or event type Vigil has
/// no data for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Unsupported {
    /// The load fails, naming each use.
    #[default]
    Error,
    /// The rules using them are left out and reported with the reason.
    Skip,
    /// They load; the field is absent on every event, so every test of it
    /// fails (as in Falco when a field cannot be extracted) and outputs
    /// print `<NA>`. Each rule affected is reported.
    Absent,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub unsupported: Unsupported,
}

/// A rule that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub rule: String,
    pub reason: String,
}

/// A compiled rule, its conditions as trees (`C = Node`, from here) or
/// lowered into the engine's program (`C = Op`).
pub struct CompiledRule<C = Node> {
    pub meta: Arc<RuleMeta>,
    pub kind: RuleKind<C>,
    pub dedup: Option<Dedup>,
    pub threshold: Option<Threshold>,
}

pub enum RuleKind<C = Node> {
    Single(C),
    Sequence(Sequence<C>),
}

pub struct Sequence<C = Node> {
    pub window_ns: i64,
    pub same_process: bool,
    pub steps: Vec<(C, Option<FieldRef>)>,
}

/// A rule that fires only when `count` of its matches (with distinct
/// values of `distinct`, when given) share the `by` fields' values within
/// a window.
pub struct Threshold {
    pub count: u32,
    pub window_ns: i64,
    pub by: Vec<FieldRef>,
    pub distinct: Option<FieldRef>,
}

pub struct Dedup {
    pub window_ns: i64,
    pub by: Vec<FieldRef>,
}

pub struct Loaded {
    pub rules: Vec<CompiledRule>,
    pub slots: Slots,
    pub skipped: Vec<Skipped>,
    /// Rules loaded with unsupported fields taken as absent, and which.
    pub partial: Vec<Skipped>,
}

/// Reads `paths` (files, or directories of `*.yaml`/`*.yml` in name order).
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Vec<RuleError>> {
    let mut sources = Vec::new();
    for p in paths {
        for file in rule_files(p).map_err(|e| vec![e])? {
            let text = fs::read_to_string(&file).map_err(|e| {
                vec![RuleError::whole_file(
                    &file,
                    format!("cannot read rule file: {e}"),
                )]
            })?;
            sources.push((file.display().to_string(), text));
        }
    }
    Ok(sources)
}

pub fn rule_files(p: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let meta =
        fs::metadata(p).map_err(|e| RuleError::whole_file(p, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(p)
        .map_err(|e| RuleError::whole_file(p, format!("cannot list directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// Parses and compiles `(origin, text)` pairs in order.
pub fn load(sources: &[(String, String)], opts: LoadOptions) -> Result<Loaded, Vec<RuleError>> {
    let mut defs = Defs::default();
    let mut errs = Errors::default();
    for (origin, text) in sources {
        read_file(
            &mut defs,
            &mut errs,
            Arc::from(origin.as_str()),
            Arc::from(text.as_str()),
        );
    }
    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    compile_all(defs, opts)
}

fn read_file(defs: &mut Defs, errs: &mut Errors, origin: Arc<str>, src: Arc<str>) {
    let root = match yaml::parse(&src) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err((pos, msg)) => {
            errs.at(&Where { origin, pos }, format!("YAML syntax: {msg}"));
            return;
        }
    };
    let Y::Seq(items, _) = &root else {
        errs.at(
            &node_at(&origin, &root),
            "a rule file is a list of `- rule:`, `- macro:` and `- list:` items",
        );
        return;
    };
    for item in items {
        let at = node_at(&origin, item);
        if !matches!(item, Y::Map(..)) {
            errs.at(
                &at,
                format!(
                    "expected a `- rule:`, `- macro:` or `- list:` item, found {}",
                    item.kind_name()
                ),
            );
            continue;
        }
        if item.get("rule").is_some() {
            read_rule(defs, errs, &origin, &src, item);
        } else if item.get("macro").is_some() {
            read_macro(defs, errs, &origin, &src, item);
        } else if item.get("list").is_some() {
            read_list(defs, errs, &origin, item);
        } else if item.get("required_engine_version").is_some()
            || item.get("required_plugin_versions").is_some()
        {
            // Falco's version gates: Vigil implements the language as a whole.
        } else {
            errs.at(
                &at,
                "unknown item: expected `rule`, `macro`, `list` or `required_engine_version`",
            );
        }
    }
}

/// `and not (exception or …)` for every exception value.
fn exceptions_expr(ex: &[ExceptionDef], lists: &HashMap<String, Vec<String>>) -> Option<Expr> {
    let mut alts = Vec::new();
    for e in ex {
        for row in &e.values {
            let mut ands = Vec::new();
            for ((field, op), cell) in e.fields.iter().zip(&e.comps).zip(row) {
                let items: Vec<Item> = cell
                    .iter()
                    .flat_map(|v| match lists.get(v) {
                        Some(l) if op.takes_list() => l.clone(),
                        _ => vec![v.clone()],
                    })
                    .map(|text| Item {
                        text,
                        quoted: true,
                        at: 0,
                    })
                    .collect();
                let rhs = if op.takes_list() {
                    Rhs::List(items)
                } else {
                    match items.into_iter().next() {
                        Some(i) => Rhs::One(i),
                        None => continue,
                    }
                };
                ands.push(Expr::Check(Check {
                    field: field.clone(),
                    field_at: 0,
                    op: *op,
                    op_at: 0,
                    rhs,
                }));
            }
            if !ands.is_empty() {
                alts.push(Expr::And(ands));
            }
        }
    }
    (!alts.is_empty()).then(|| Expr::Not(Box::new(Expr::Or(alts))))
}

fn to_rule_error(e: CompileError, rule: &str) -> RuleError {
    RuleError {
        path: e.origin.to_string(),
        line: e.pos.line,
        column: e.pos.col,
        message: format!("rule `{rule}`: {}", e.message),
    }
}

fn field_ref(name: &str, w: &Where, rule: &str) -> Result<FieldRef, CompileError> {
    fields::resolve(name).map_err(|p| CompileError {
        origin: w.origin.clone(),
        pos: w.pos,
        unsupported: matches!(p, fields::FieldProblem::Unsupported(_)),
        message: format!("{p} (rule `{rule}`)"),
    })
}

/// Default dedup key: same program, same lineage, same target (all known
/// fields: `default_dedup_fields_resolve` checks).
const DEDUP_BY: &[&str] = &[
    "proc.exepath",
    "proc.aexepath",
    "fd.name",
    "container.id",
    "user.uid",
];

fn compile_rule(r: &RuleDef, c: &mut Compiler) -> Result<CompiledRule, CompileError> {
    let output_text = r.output.as_ref().map(|(o, ..)| o.clone()).unwrap_or_else(|| {
        format!("{} (evt.type=%evt.type proc.exepath=%proc.exepath proc.cmdline=%proc.cmdline proc.pid=%proc.pid user.name=%user.name container.id=%container.id)", r.name)
    });
    let output = Template::parse(&output_text).map_err(|e| {
        let (origin, pos) = match &r.output {
            Some((text, w, src)) => (w.origin.clone(), yaml::locate(src, w.pos, text, e.at)),
            None => (r.at.origin.clone(), r.at.pos),
        };
        CompileError {
            origin,
            pos,
            unsupported: matches!(e.problem, fields::FieldProblem::Unsupported(_)),
            message: e.to_string(),
        }
    })?;
    let exc = exceptions_expr(&r.exceptions, c.scope.lists);
    let exc_text = CondText::new(
        r.at.origin.clone(),
        Arc::from(""),
        r.exceptions.first().map_or(r.at.pos, |e| e.at.pos),
        String::new(),
    );
    let with_exceptions = |c: &mut Compiler, n: Node| -> Result<Node, CompileError> {
        Ok(match &exc {
            Some(e) => optimize(Node::And(vec![n, c.compile_expr(e, &exc_text)?])),
            None => n,
        })
    };
    let kind = match (&r.cond, &r.sequence) {
        (Some(cond), _) => {
            let n = c.compile(cond)?;
            RuleKind::Single(with_exceptions(c, n)?)
        }
        (None, Some(seq)) => {
            let mut steps = Vec::new();
            for (i, s) in seq.steps.iter().enumerate() {
                let mut n = c.compile(&s.cond)?;
                if i + 1 == seq.steps.len() {
                    n = with_exceptions(c, n)?;
                }
                let key = match &s.key {
                    Some((k, w)) => Some(field_ref(k, w, &r.name)?),
                    None => None,
                };
                steps.push((n, key));
            }
            RuleKind::Sequence(Sequence {
                window_ns: seq.window.as_nanos() as i64,
                same_process: seq.same_process,
                steps,
            })
        }
        (None, None) => unreachable!("checked when read"),
    };
    let default_key = || -> Vec<(String, FieldRef)> {
        DEDUP_BY
            .iter()
            .filter_map(|f| Some((f.to_string(), fields::resolve(f).ok()?)))
            .collect()
    };
    let key = match &r.dedup {
        Some((_, by)) if !by.is_empty() => by
            .iter()
            .map(|(f, w)| Ok((f.clone(), field_ref(f, w, &r.name)?)))
            .collect::<Result<Vec<_>, CompileError>>()?,
        _ => default_key(),
    };
    let dedup = r.dedup.as_ref().map(|(window, _)| Dedup {
        window_ns: window.as_nanos() as i64,
        by: key.iter().map(|(_, f)| f.clone()).collect(),
    });
    let threshold = match &r.threshold {
        Some(t) => Some(Threshold {
            count: t.count,
            window_ns: t.window.as_nanos() as i64,
            by: (t.by.iter())
                .map(|(f, w)| field_ref(f, w, &r.name))
                .collect::<Result<_, _>>()?,
            distinct: match &t.distinct {
                Some((f, w)) => Some(field_ref(f, w, &r.name)?),
                None => None,
            },
        }),
        None => None,
    };
    Ok(CompiledRule {
        meta: Arc::new(RuleMeta {
            name: r.name.clone(),
            desc: r.desc.clone(),
            severity: r.priority.unwrap_or(Severity::Warning),
            tags: r.tags.clone(),
            output,
            origin: format!("{}:{}", r.at.origin, r.at.pos.line),
            key,
        }),
        kind,
        dedup,
        threshold,
    })
}

fn compile_all(defs: Defs, opts: LoadOptions) -> Result<Loaded, Vec<RuleError>> {
    let mut slots = Slots::default();
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    let mut partial = Vec::new();
    let mut errors = Vec::new();
    {
        let mut c = Compiler::new(
            Scope {
                macros: &defs.macros,
                lists: &defs.lists,
            },
            &mut slots,
        );
        c.unsupported_absent = opts.unsupported == Unsupported::Absent;
        for r in &defs.rules {
            if r.source != "syscall" {
                skipped.push(Skipped {
                    rule: r.name.clone(),
                    reason: format!("source `{}` is not supported (only syscall)", r.source),
                });
                continue;
            }
            if !r.enabled {
                continue;
            }
            c.absent_uses.clear();
            match compile_rule(r, &mut c) {
                Ok(cr) => {
                    if !c.absent_uses.is_empty() {
                        partial.push(Skipped {
                            rule: r.name.clone(),
                            reason: format!("loaded with absent: {}", c.absent_uses.join("; ")),
                        });
                    }
                    rules.push(cr)
                }
                Err(e) if e.unsupported && opts.unsupported == Unsupported::Skip => {
                    skipped.push(Skipped {
                        rule: r.name.clone(),
                        reason: format!("{}:{}:{}: {}", e.origin, e.pos.line, e.pos.col, e.message),
                    })
                }
                Err(e) => errors.push(to_rule_error(e, &r.name)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Loaded {
        rules,
        slots,
        skipped,
        partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dedup_fields_resolve() {
        for f in DEDUP_BY {
            assert!(fields::resolve(f).is_ok(), "{f}");
        }
    }
}
