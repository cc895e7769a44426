//! Reading rule files: Falco's `- rule:`, `- macro:`, `- list:` items with
//! `append`/`override` across files, exceptions, and Vigil's `sequence:`
//! and `dedup:`; then compiling every enabled rule.
//!
//! All problems are collected, each at `file:line:col`, so `rules check`
//! shows them together.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use vigil_proto::v1::Severity;

use super::{
    compile::{evt_types, CompileError, Compiler, CondText, Node, Scope, Slots},
    cond::{Check, Expr, Item, Op, Rhs},
    fields::{self, FieldRef},
    yaml::{self, Node as Y, Pos},
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

#[derive(Debug, Clone)]
struct Where {
    origin: Arc<str>,
    pos: Pos,
}

#[derive(Debug, Clone)]
struct ExceptionDef {
    fields: Vec<String>,
    comps: Vec<Op>,
    values: Vec<Vec<Vec<String>>>,
    at: Where,
}

#[derive(Debug, Clone)]
pub struct SeqStepDef {
    cond: CondText,
    key: Option<(String, Where)>,
}

#[derive(Debug, Clone)]
struct SeqDef {
    window: Duration,
    same_process: bool,
    steps: Vec<SeqStepDef>,
}

#[derive(Debug, Clone)]
struct RuleDef {
    name: String,
    desc: String,
    cond: Option<CondText>,
    output: Option<(String, Where, Arc<str>)>,
    priority: Option<Severity>,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<ExceptionDef>,
    source: String,
    at: Where,
    dedup: Option<(Duration, Vec<(String, Where)>)>,
    sequence: Option<SeqDef>,
}

/// A compiled rule, ready for the engine.
pub struct CompiledRule {
    pub meta: Arc<RuleMeta>,
    pub kind: RuleKind,
    pub dedup: Option<Dedup>,
}

pub enum RuleKind {
    Single(Node),
    Sequence(Sequence),
}

pub struct Sequence {
    pub window_ns: i64,
    pub same_process: bool,
    pub steps: Vec<(Node, Option<FieldRef>)>,
}

pub struct Dedup {
    pub window_ns: i64,
    pub by: Vec<FieldRef>,
}

/// Everything read from the files, before compiling.
#[derive(Default)]
struct Defs {
    lists: HashMap<String, Vec<String>>,
    macros: HashMap<String, CondText>,
    rules: Vec<RuleDef>,
    rule_index: HashMap<String, usize>,
}

pub struct Loaded {
    pub rules: Vec<CompiledRule>,
    pub slots: Slots,
    pub skipped: Vec<Skipped>,
    /// Rules loaded with unsupported fields taken as absent, and which.
    pub partial: Vec<Skipped>,
}

const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "tags",
    "enabled",
    "exceptions",
    "source",
    "append",
    "override",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
    "dedup",
    "sequence",
];

/// Collected errors.
#[derive(Default)]
struct Errors(Vec<RuleError>);

impl Errors {
    fn at(&mut self, w: &Where, message: impl Into<String>) {
        self.0.push(RuleError {
            path: w.origin.to_string(),
            line: w.pos.line,
            column: w.pos.col,
            message: message.into(),
        });
    }
}

fn node_at(origin: &Arc<str>, n: &Y) -> Where {
    Where {
        origin: origin.clone(),
        pos: n.pos(),
    }
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

fn scalar(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Option<String> {
    match n {
        Y::Scalar { value, .. } => Some(value.clone()),
        _ => {
            errs.at(
                &node_at(origin, n),
                format!("`{key}` must be a string, found {}", n.kind_name()),
            );
            None
        }
    }
}

fn boolean(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Option<bool> {
    match n.as_str() {
        Some("true" | "True" | "yes") => Some(true),
        Some("false" | "False" | "no") => Some(false),
        _ => {
            errs.at(
                &node_at(origin, n),
                format!("`{key}` must be true or false"),
            );
            None
        }
    }
}

fn strings(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Vec<String> {
    match n {
        Y::Seq(items, _) => items
            .iter()
            .filter_map(|i| scalar(errs, origin, i, key))
            .collect(),
        n if n.is_null() => Vec::new(),
        _ => {
            errs.at(&node_at(origin, n), format!("`{key}` must be a list"));
            Vec::new()
        }
    }
}

/// `append: true`, or `override: {KEY: append|replace}` for `key`.
fn mode(errs: &mut Errors, origin: &Arc<str>, item: &Y, key: &str) -> Option<&'static str> {
    if let Some(a) = item.get("append") {
        if boolean(errs, origin, a, "append") == Some(true) {
            return Some("append");
        }
    }
    let o = item.get("override")?;
    let Y::Map(entries, _) = o else {
        errs.at(
            &node_at(origin, o),
            "`override` must map keys to `append` or `replace`",
        );
        return None;
    };
    for (k, v) in entries {
        if k.as_str() == Some(key) {
            return match v.as_str() {
                Some("append") => Some("append"),
                Some("replace") => Some("replace"),
                _ => {
                    errs.at(
                        &node_at(origin, v),
                        "override mode must be `append` or `replace`",
                    );
                    None
                }
            };
        }
    }
    None
}

fn cond_text(errs: &mut Errors, origin: &Arc<str>, src: &Arc<str>, n: &Y) -> Option<CondText> {
    match n {
        Y::Scalar { value, pos, .. } => Some(CondText::new(
            origin.clone(),
            src.clone(),
            *pos,
            value.clone(),
        )),
        _ => {
            errs.at(&node_at(origin, n), "`condition` must be a string");
            None
        }
    }
}

fn read_list(defs: &mut Defs, errs: &mut Errors, origin: &Arc<str>, item: &Y) {
    let Some(name) = item
        .get("list")
        .and_then(|n| scalar(errs, origin, n, "list"))
    else {
        return;
    };
    let at = node_at(origin, item);
    let raw = match item.get("items") {
        Some(n) => strings(errs, origin, n, "items"),
        None => {
            errs.at(&at, format!("list `{name}` has no `items`"));
            return;
        }
    };
    // A list may name other lists; they are expanded here, once.
    let mut items = Vec::new();
    for i in raw {
        match defs.lists.get(&i) {
            Some(inner) => items.extend(inner.iter().cloned()),
            None => items.push(i),
        }
    }
    match mode(errs, origin, item, "items") {
        Some("append") => match defs.lists.get_mut(&name) {
            Some(l) => l.extend(items),
            None => errs.at(
                &at,
                format!("`append` to list `{name}`, which is not defined before"),
            ),
        },
        _ => {
            defs.lists.insert(name, items);
        }
    }
}

fn read_macro(defs: &mut Defs, errs: &mut Errors, origin: &Arc<str>, src: &Arc<str>, item: &Y) {
    let Some(name) = item
        .get("macro")
        .and_then(|n| scalar(errs, origin, n, "macro"))
    else {
        return;
    };
    let at = node_at(origin, item);
    let Some(cond) = item
        .get("condition")
        .and_then(|c| cond_text(errs, origin, src, c))
    else {
        errs.at(&at, format!("macro `{name}` has no `condition`"));
        return;
    };
    // Syntax is checked now, even for macros no rule uses.
    if let Err(e) = super::cond::parse(&cond.text) {
        let (o, pos) = cond.locate(e.at);
        errs.at(&Where { origin: o, pos }, e.message);
        return;
    }
    match mode(errs, origin, item, "condition") {
        Some("append") => match defs.macros.get_mut(&name) {
            Some(m) => m.append(cond),
            None => errs.at(
                &at,
                format!("`append` to macro `{name}`, which is not defined before"),
            ),
        },
        _ => {
            defs.macros.insert(name, cond);
        }
    }
}

fn parse_priority(errs: &mut Errors, origin: &Arc<str>, n: &Y) -> Option<Severity> {
    let s = scalar(errs, origin, n, "priority")?;
    let p = Severity::parse_name(&s);
    if p.is_none() {
        errs.at(
            &node_at(origin, n),
            format!("unknown priority `{s}`; expected one of emergency, alert, critical, error, warning, notice, informational, debug"),
        );
    }
    p
}

/// `60s`, `5m`, `1h`, `250ms`, or bare seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

fn duration(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Option<Duration> {
    let d = n.as_str().and_then(parse_duration);
    if d.is_none() {
        errs.at(
            &node_at(origin, n),
            format!("`{key}` must be a duration like 30s, 5m or 1h"),
        );
    }
    d
}

fn read_exceptions(errs: &mut Errors, origin: &Arc<str>, n: &Y) -> Vec<ExceptionDef> {
    let Y::Seq(items, _) = n else {
        errs.at(&node_at(origin, n), "`exceptions` must be a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in items {
        let at = node_at(origin, e);
        let Some(name) = e.get("name").and_then(|n| scalar(errs, origin, n, "name")) else {
            errs.at(&at, "an exception needs a `name`");
            continue;
        };
        let (fields, single) = match e.get("fields") {
            Some(Y::Scalar { value, .. }) => (vec![value.clone()], true),
            Some(f) => (strings(errs, origin, f, "fields"), false),
            None => {
                errs.at(&at, format!("exception `{name}` needs `fields`"));
                continue;
            }
        };
        let comps_raw: Vec<String> = match e.get("comps") {
            Some(Y::Scalar { value, .. }) => vec![value.clone()],
            Some(c) => strings(errs, origin, c, "comps"),
            None => vec![(if single { "in" } else { "=" }).to_string(); fields.len()],
        };
        let mut comps = Vec::new();
        for c in &comps_raw {
            match parse_op(c) {
                Some(op) => comps.push(op),
                None => errs.at(&at, format!("exception `{name}`: unknown comparison `{c}`")),
            }
        }
        if comps.len() != fields.len() {
            errs.at(
                &at,
                format!(
                    "exception `{name}`: {} fields but {} comps",
                    fields.len(),
                    comps.len()
                ),
            );
            continue;
        }
        let mut values = Vec::new();
        if let Some(Y::Seq(rows, _)) = e.get("values") {
            for row in rows {
                let cells: Vec<&Y> = match (single, row) {
                    (true, r) => vec![r],
                    (false, Y::Seq(cells, _)) => cells.iter().collect(),
                    (false, r) => {
                        errs.at(
                            &node_at(origin, r),
                            format!(
                                "exception `{name}`: each value is a list of {} items",
                                fields.len()
                            ),
                        );
                        continue;
                    }
                };
                if cells.len() != fields.len() {
                    errs.at(
                        &node_at(origin, row),
                        format!(
                            "exception `{name}`: {} values for {} fields",
                            cells.len(),
                            fields.len()
                        ),
                    );
                    continue;
                }
                values.push(
                    cells
                        .into_iter()
                        .map(|c| match c {
                            Y::Seq(..) => strings(errs, origin, c, "values"),
                            c => c.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
                        })
                        .collect(),
                );
            }
        }
        out.push(ExceptionDef {
            fields,
            comps,
            values,
            at,
        });
    }
    out
}

fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "=" | "==" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "in" => Op::In,
        "intersects" => Op::Intersects,
        "pmatch" => Op::Pmatch,
        "contains" => Op::Contains,
        "icontains" => Op::IContains,
        "startswith" => Op::StartsWith,
        "endswith" => Op::EndsWith,
        "glob" => Op::Glob,
        "regex" => Op::Regex,
        _ => return None,
    })
}

fn read_sequence(errs: &mut Errors, origin: &Arc<str>, src: &Arc<str>, n: &Y) -> Option<SeqDef> {
    let at = node_at(origin, n);
    let window = match n.get("window") {
        Some(w) => duration(errs, origin, w, "window")?,
        None => {
            errs.at(&at, "`sequence` needs a `window`");
            return None;
        }
    };
    let same_process = match n.get("scope").and_then(|s| s.as_str()) {
        None | Some("tree") => false,
        Some("process") => true,
        Some(o) => {
            errs.at(
                &at,
                format!("sequence `scope` must be `tree` or `process`, not `{o}`"),
            );
            return None;
        }
    };
    let Some(Y::Seq(items, _)) = n.get("steps") else {
        errs.at(&at, "`sequence` needs `steps`: a list of {condition, key}");
        return None;
    };
    if items.len() < 2 {
        errs.at(&at, "a sequence needs at least two steps");
        return None;
    }
    let mut steps = Vec::new();
    for s in items {
        let cond = cond_text(errs, origin, src, s.get("condition")?)?;
        let key = s
            .get("key")
            .and_then(|k| Some((k.as_str()?.to_string(), node_at(origin, k))));
        steps.push(SeqStepDef { cond, key });
    }
    Some(SeqDef {
        window,
        same_process,
        steps,
    })
}

fn read_rule(defs: &mut Defs, errs: &mut Errors, origin: &Arc<str>, src: &Arc<str>, item: &Y) {
    let Some(name) = item
        .get("rule")
        .and_then(|n| scalar(errs, origin, n, "rule"))
    else {
        return;
    };
    let at = node_at(origin, item);
    if let Y::Map(entries, _) = item {
        for (k, _) in entries {
            let key = k.as_str().unwrap_or_default();
            if !RULE_KEYS.contains(&key) {
                errs.at(
                    &node_at(origin, k),
                    format!(
                        "rule `{name}`: unknown key `{key}`; known keys: {}",
                        RULE_KEYS.join(", ")
                    ),
                );
            }
        }
    }
    let cond = item
        .get("condition")
        .and_then(|c| cond_text(errs, origin, src, c));
    let output = item.get("output").and_then(|o| {
        Some((
            scalar(errs, origin, o, "output")?,
            node_at(origin, o),
            src.clone(),
        ))
    });
    let priority = item
        .get("priority")
        .and_then(|p| parse_priority(errs, origin, p));
    let desc = item
        .get("desc")
        .and_then(|d| scalar(errs, origin, d, "desc"));
    let tags = item.get("tags").map(|t| strings(errs, origin, t, "tags"));
    let enabled = item
        .get("enabled")
        .and_then(|e| boolean(errs, origin, e, "enabled"));
    let exceptions = item
        .get("exceptions")
        .map(|e| read_exceptions(errs, origin, e));
    let source = item
        .get("source")
        .and_then(|s| s.as_str())
        .map(str::to_string);
    let dedup = item.get("dedup").and_then(|d| match d {
        Y::Map(..) => {
            let window = duration(errs, origin, d.get("window")?, "dedup.window")?;
            let by = d
                .get("by")
                .map(|b| match b {
                    Y::Seq(items, _) => items
                        .iter()
                        .filter_map(|i| Some((i.as_str()?.to_string(), node_at(origin, i))))
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default();
            Some((window, by))
        }
        d => Some((duration(errs, origin, d, "dedup")?, Vec::new())),
    });
    let sequence = item
        .get("sequence")
        .and_then(|s| read_sequence(errs, origin, src, s));

    if let Some(&i) = defs.rule_index.get(&name) {
        let is_change = item
            .get("append")
            .is_some_and(|a| a.as_str() == Some("true"))
            || item.get("override").is_some();
        let only_enabled = enabled.is_some() && cond.is_none() && sequence.is_none() && !is_change;
        if is_change || only_enabled {
            let r = &mut defs.rules[i];
            if let Some(c) = cond {
                match mode(errs, origin, item, "condition") {
                    Some("replace") => r.cond = Some(c),
                    _ => match &mut r.cond {
                        Some(old) => old.append(c),
                        None => r.cond = Some(c),
                    },
                }
            }
            if let Some(o) = output {
                match mode(errs, origin, item, "output") {
                    Some("append") => {
                        if let Some((old, ..)) = &mut r.output {
                            old.push(' ');
                            old.push_str(&o.0);
                        }
                    }
                    _ => r.output = Some(o),
                }
            }
            if let Some(e) = exceptions {
                match mode(errs, origin, item, "exceptions") {
                    Some("replace") => r.exceptions = e,
                    _ => r.exceptions.extend(e),
                }
            }
            if let Some(t) = tags {
                match mode(errs, origin, item, "tags") {
                    Some("append") => r.tags.extend(t),
                    _ => r.tags = t,
                }
            }
            if let Some(p) = priority {
                r.priority = Some(p);
            }
            if let Some(d) = desc {
                r.desc = d;
            }
            if let Some(e) = enabled {
                r.enabled = e;
            }
            if let Some(d) = dedup {
                r.dedup = Some(d);
            }
            return;
        }
    } else if item
        .get("append")
        .is_some_and(|a| a.as_str() == Some("true"))
        || item.get("override").is_some()
    {
        errs.at(
            &at,
            format!("rule `{name}`: `append`/`override` of a rule that is not defined before"),
        );
        return;
    }
    if cond.is_none() && sequence.is_none() {
        errs.at(
            &at,
            format!("rule `{name}` needs a `condition` (or a `sequence`)"),
        );
        return;
    }
    if cond.is_some() && sequence.is_some() {
        errs.at(
            &at,
            format!("rule `{name}` has both `condition` and `sequence`; use one"),
        );
        return;
    }
    let Some(priority) = priority else {
        if item.get("priority").is_none() {
            errs.at(&at, format!("rule `{name}` needs a `priority`"));
        }
        return;
    };
    let def = RuleDef {
        name: name.clone(),
        desc: desc.unwrap_or_default(),
        cond,
        output,
        priority: Some(priority),
        tags: tags.unwrap_or_default(),
        enabled: enabled.unwrap_or(true),
        exceptions: exceptions.unwrap_or_default(),
        source: source.unwrap_or_else(|| "syscall".into()),
        at,
        dedup,
        sequence,
    };
    // A later definition of a rule replaces the earlier one, as in Falco.
    match defs.rule_index.get(&name) {
        Some(&i) => defs.rules[i] = def,
        None => {
            defs.rule_index.insert(name, defs.rules.len());
            defs.rules.push(def);
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
            Some(e) => super::compile::optimize(Node::And(vec![n, c.compile_expr(e, &exc_text)?])),
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
    let dedup = match &r.dedup {
        None => None,
        Some((window, by)) => {
            let by = if by.is_empty() {
                DEDUP_BY
                    .iter()
                    .filter_map(|f| fields::resolve(f).ok())
                    .collect()
            } else {
                by.iter()
                    .map(|(f, w)| field_ref(f, w, &r.name))
                    .collect::<Result<_, _>>()?
            };
            Some(Dedup {
                window_ns: window.as_nanos() as i64,
                by,
            })
        }
    };
    Ok(CompiledRule {
        meta: Arc::new(RuleMeta {
            name: r.name.clone(),
            desc: r.desc.clone(),
            severity: r.priority.unwrap_or(Severity::Warning),
            tags: r.tags.clone(),
            output,
            origin: format!("{}:{}", r.at.origin, r.at.pos.line),
        }),
        kind,
        dedup,
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

/// The `evt.type` index key set of a compiled rule; None: any type.
pub fn rule_evt_types(r: &CompiledRule) -> Option<super::compile::HashSet<String>> {
    match &r.kind {
        RuleKind::Single(n) => evt_types(n),
        RuleKind::Sequence(s) => {
            let mut all = super::compile::HashSet::default();
            for (n, _) in &s.steps {
                all.extend(evt_types(n)?);
            }
            Some(all)
        }
    }
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
