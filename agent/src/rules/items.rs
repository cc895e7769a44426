//! Rule files read into definitions, before anything is compiled: the
//! definitions themselves, what every item reader shares (positions,
//! collected errors, typed scalars, `append`/`override` modes, condition
//! text), and the readers of `- list:` and `- macro:` items (`- rule:` is
//! in `rule_item.rs`).
use std::{collections::HashMap, sync::Arc, time::Duration};

use vigil_proto::v1::Severity;

use super::{
    compile::CondText,
    cond::Op,
    yaml::{Node as Y, Pos},
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

/// `threshold:`: the rule fires when `count` matching events (with
/// distinct values of `distinct`, when given) share the `by` fields'
/// values within `window`.
#[derive(Debug, Clone)]
pub(super) struct ThresholdDef {
    pub(super) count: u32,
    pub(super) window: Duration,
    pub(super) by: Vec<(String, Where)>,
    pub(super) distinct: Option<(String, Where)>,
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
    pub(super) threshold: Option<ThresholdDef>,
}

/// Everything read from the files, before compiling.
#[derive(Default)]
pub(super) struct Defs {
    pub(super) lists: HashMap<String, Vec<String>>,
    pub(super) macros: HashMap<String, CondText>,
    pub(super) rules: Vec<RuleDef>,
    pub(super) rule_index: HashMap<String, usize>,
}

/// Collected errors.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<RuleError>);

impl Errors {
    pub(super) fn at(&mut self, w: &Where, message: impl Into<String>) {
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

pub(super) fn scalar(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Option<String> {
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

pub(super) fn boolean(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Option<bool> {
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

pub(super) fn strings(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Vec<String> {
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
pub(super) fn mode(
    errs: &mut Errors,
    origin: &Arc<str>,
    item: &Y,
    key: &str,
) -> Option<&'static str> {
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

pub(super) fn cond_text(
    errs: &mut Errors,
    origin: &Arc<str>,
    src: &Arc<str>,
    n: &Y,
) -> Option<CondText> {
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

pub(super) fn read_list(defs: &mut Defs, errs: &mut Errors, origin: &Arc<str>, item: &Y) {
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
    // A list may name other lists; they are expanded here, once, within
    // a budget (lists of lists double at each step).
    let mut items = Vec::new();
    for i in raw {
        match defs.lists.get(&i) {
            Some(inner) => items.extend(inner.iter().cloned()),
            None => items.push(i),
        }
        if items.len() > MAX_LIST_ITEMS {
            errs.at(
                &at,
                format!("list `{name}` expands to more than {MAX_LIST_ITEMS} items; refused"),
            );
            return;
        }
    }
    if defs.lists.get(&name).map_or(0, Vec::len) + items.len() > MAX_LIST_ITEMS {
        errs.at(
            &at,
            format!("list `{name}` grows past {MAX_LIST_ITEMS} items; refused"),
        );
        return;
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

/// Most items one list may hold once the lists it names are expanded.
pub const MAX_LIST_ITEMS: usize = 100_000;

pub(super) fn read_macro(
    defs: &mut Defs,
    errs: &mut Errors,
    origin: &Arc<str>,
    src: &Arc<str>,
    item: &Y,
) {
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
