//! Reading a `- rule:` item: its description, condition or sequence,
//! output, priority, tags, exceptions and dedup, with `append` and
//! `override` applied to the rule of the same name read before.
use std::{sync::Arc, time::Duration};

use vigil_proto::v1::Severity;

use super::{
    cond::Op,
    items::{
        boolean, cond_text, mode, node_at, scalar, strings, Defs, Errors, ExceptionDef, RuleDef,
        SeqDef, SeqStepDef, ThresholdDef, Where,
    },
    yaml::Node as Y,
};

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
    "threshold",
];

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

/// Most events a threshold may count: the distinct values it keeps are
/// bounded by this.
pub const THRESHOLD_MAX_COUNT: u32 = 10_000;
/// Longest threshold window: what a burst is.
const THRESHOLD_MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

fn field_list(errs: &mut Errors, origin: &Arc<str>, n: &Y, key: &str) -> Vec<(String, Where)> {
    match n {
        Y::Seq(items, _) => items
            .iter()
            .filter_map(|i| match i.as_str() {
                Some(f) => Some((f.to_string(), node_at(origin, i))),
                None => {
                    errs.at(
                        &node_at(origin, i),
                        format!("`{key}` items must be field names"),
                    );
                    None
                }
            })
            .collect(),
        _ => match n.as_str() {
            Some(f) => vec![(f.to_string(), node_at(origin, n))],
            None => {
                errs.at(
                    &node_at(origin, n),
                    format!("`{key}` must be a list of field names"),
                );
                Vec::new()
            }
        },
    }
}

fn read_threshold(errs: &mut Errors, origin: &Arc<str>, n: &Y) -> Option<ThresholdDef> {
    let at = node_at(origin, n);
    if !matches!(n, Y::Map(..)) {
        errs.at(
            &at,
            "`threshold` must be a map with `count`, `window`, and optionally `by` and `distinct`",
        );
        return None;
    }
    if let Y::Map(entries, _) = n {
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            if !["count", "window", "by", "distinct"].contains(&key) {
                errs.at(
                    &node_at(origin, v),
                    format!(
                        "unknown threshold key `{key}`; expected count, window, by or distinct"
                    ),
                );
            }
        }
    }
    let count = match n.get("count") {
        Some(c) => {
            match c.as_str().and_then(|s| s.trim().parse::<u32>().ok()) {
                Some(c) if (2..=THRESHOLD_MAX_COUNT).contains(&c) => c,
                _ => {
                    errs.at(
                    &node_at(origin, c),
                    format!("`threshold.count` must be a whole number from 2 to {THRESHOLD_MAX_COUNT}"),
                );
                    return None;
                }
            }
        }
        None => {
            errs.at(&at, "`threshold` needs a `count`");
            return None;
        }
    };
    let window = match n.get("window") {
        Some(w) => duration(errs, origin, w, "threshold.window")?,
        None => {
            errs.at(&at, "`threshold` needs a `window`");
            return None;
        }
    };
    if window > THRESHOLD_MAX_WINDOW || window.is_zero() {
        errs.at(
            &node_at(origin, n.get("window")?),
            "`threshold.window` must be longer than 0 and at most 24h",
        );
        return None;
    }
    let by = match n.get("by") {
        Some(b) => field_list(errs, origin, b, "threshold.by"),
        None => Vec::new(),
    };
    let distinct = n.get("distinct").and_then(|d| match d.as_str() {
        Some(f) => Some((f.to_string(), node_at(origin, d))),
        None => {
            errs.at(
                &node_at(origin, d),
                "`threshold.distinct` must be one field name",
            );
            None
        }
    });
    Some(ThresholdDef {
        count,
        window,
        by,
        distinct,
    })
}

pub(super) fn read_rule(
    defs: &mut Defs,
    errs: &mut Errors,
    origin: &Arc<str>,
    src: &Arc<str>,
    item: &Y,
) {
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
    let threshold = item
        .get("threshold")
        .and_then(|t| read_threshold(errs, origin, t));

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
            if let Some(t) = threshold {
                r.threshold = Some(t);
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
    if sequence.is_some() && threshold.is_some() {
        errs.at(
            &at,
            format!("rule `{name}` has both `sequence` and `threshold`; a threshold counts one condition's matches"),
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
        threshold,
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
