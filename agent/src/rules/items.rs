//! Reading rule files into definitions: Falco's `- rule:`, `- macro:` and
//! `- list:` items with `append`/`override` across files, exceptions, and
//! Vigil's `sequence:` and `dedup:`. Nothing is compiled here; every
//! problem is collected at its `file:line:col`, so `rules check` shows
//! them together.
use std::{collections::HashMap, sync::Arc, time::Duration};

use vigil_proto::v1::Severity;

use super::{
    compile::CondText,
    cond::Op,
    yaml::{self, Node as Y, Pos},
    RuleError,
};

#[derive(Debug, Clone)]
pub(super) struct Where {
    pub(super) origin: Arc<str>,
    pub(super) pos: Pos,
}

#[derive(Debug, Clone)]
pub(super) struct ExceptionDef {
    pub(super) fields: Vec<String>,
    pub(super) comps: Vec<Op>,
    pub(super) values: Vec<Vec<Vec<String>>>,
    pub(super) at: Where,
}

#[derive(Debug, Clone)]
pub(super) struct SeqStepDef {
    pub(super) cond: CondText,
    pub(super) key: Option<(String, Where)>,
}

#[derive(Debug, Clone)]
pub(super) struct SeqDef {
    pub(super) window: Duration,
    pub(super) same_process: bool,
    pub(super) steps: Vec<SeqStepDef>,
}

#[derive(Debug, Clone)]
pub(super) struct RuleDef {
    pub(super) name: String,
    pub(super) desc: String,
    pub(super) cond: Option<CondText>,
    pub(super) output: Option<(String, Where, Arc<str>)>,
    pub(super) priority: Option<Severity>,
    pub(super) tags: Vec<String>,
    pub(super) enabled: bool,
    pub(super) exceptions: Vec<ExceptionDef>,
    pub(super) source: String,
    pub(super) at: Where,
    pub(super) dedup: Option<(Duration, Vec<(String, Where)>)>,
    pub(super) sequence: Option<SeqDef>,
}

/// Everything read from the files, before compiling.
#[derive(Default)]
pub(super) struct Defs {
    pub(super) lists: HashMap<String, Vec<String>>,
    pub(super) macros: HashMap<String, CondText>,
    pub(super) rules: Vec<RuleDef>,
    pub(super) rule_index: HashMap<String, usize>,
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
pub(super) struct Errors(pub(super) Vec<RuleError>);

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

pub(super) fn node_at(origin: &Arc<str>, n: &Y) -> Where {
    Where {
        origin: origin.clone(),
        pos: n.pos(),
    }
}

pub(super) fn read_file(defs: &mut Defs, errs: &mut Errors, origin: Arc<str>, src: Arc<str>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
