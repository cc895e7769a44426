//! The agent's modules import downward only, and none imports another that
//! imports it back. The data path reads as one chain:
//!
//! util → kernel → event → proctree → enrich → rules → alert → run
//!
//! with the probe loader beside `event`, delivery beside `alert` (over the
//! disk spool, which uses nothing of the agent's own), and
//! replay above the rules, and doctor (host checks) beside run. A new top-level module fails this test until it
//! is given its place in [`LAYERS`].
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each top-level module and its layer: a module may use modules of
/// lower layers only.
const LAYERS: &[(&str, u32)] = &[
    ("util", 0),
    ("host", 0),
    ("spool", 0),
    ("kernel", 1),
    ("event", 2),
    ("probe", 2),
    ("proctree", 3),
    ("enrich", 4),
    ("rules", 5),
    ("alert", 6),
    ("forward", 6),
    ("activity", 7),
    ("replay", 7),
    ("heartbeat", 7),
    ("metrics", 7),
    ("run", 8),
    ("doctor", 8),
];

/// Every module file under `src/` (crate root and binary excluded), by
/// module path: `rules/items.rs` is `rules::items`, `rules/mod.rs` is
/// `rules`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let join = |n: &str| {
                if prefix.is_empty() {
                    n.to_string()
                } else {
                    format!("{prefix}::{n}")
                }
            };
            if p.is_dir() {
                walk(&p, &join(&name), out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let path = match stem {
                    "lib" | "main" if prefix.is_empty() => continue,
                    "mod" => prefix.to_string(),
                    s => join(s),
                };
                out.insert(path, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, "", &mut out);
    out
}

/// Every path the source names from `crate::`, `super::` or `self::`,
/// expanded through `use` groups (`use super::{a, b::{c, d}}`).
fn paths_named(text: &str) -> Vec<String> {
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let starts_path = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| rest.starts_with(p));
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_path && word_start && !(i >= 2 && &text[i - 2..i] == "::") {
            let (paths, used) = parse_tree(rest);
            out.extend(paths);
            i += used.max(1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses one path or `use` tree at the start of `s`; returns the full
/// paths and the bytes consumed.
fn parse_tree(s: &str) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prefix = String::new();
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        prefix.push_str(&s[start..i]);
        if s[i..].starts_with("::{") {
            i += 3;
            let mut out = Vec::new();
            loop {
                while i < b.len() && (b[i] as char).is_whitespace() {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = parse_tree(&s[i..]);
                out.extend(inner.into_iter().map(|p| format!("{prefix}::{p}")));
                // A glob (`*`) names no further module.
                i += used.max(1);
                while i < b.len() && (b[i] == b',' || (b[i] as char).is_whitespace()) {
                    i += 1;
                }
                // `x as y` inside a group.
                if s[i..].starts_with("as ") {
                    i += 3;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            return (out, i);
        }
        if s[i..].starts_with("::")
            && s[i + 2..].starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            prefix.push_str("::");
            i += 2;
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module a named path refers to: the longest known module it starts
/// with, resolved from the module `from` that names it.
fn target(from: &str, named: &str, known: &BTreeMap<String, PathBuf>) -> String {
    let mut segs: Vec<&str> = named.split("::").collect();
    // `super` of module `a::b` is `a`, whether it lives in `a/b.rs` or
    // `a/b/mod.rs`.
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match segs[0] {
        "crate" => {
            base.clear();
            segs.remove(0);
        }
        "self" => {
            segs.remove(0);
        }
        _ => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
        }
    }
    let mut full: Vec<&str> = base;
    full.extend(segs);
    for n in (0..=full.len()).rev() {
        let candidate = full[..n].join("::");
        if known.contains_key(&candidate) {
            return candidate;
        }
    }
    String::new()
}

fn related(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::"))
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &known {
        let text = fs::read_to_string(file).unwrap();
        let edges = g.entry(m.clone()).or_default();
        for named in paths_named(&text) {
            let t = target(m, &named, &known);
            if !t.is_empty() && !related(m, &t) {
                edges.insert(t);
            }
        }
    }
    g
}

#[test]
fn modules_import_lower_layers_only() {
    let layer = |m: &str| LAYERS.iter().find(|(n, _)| *n == top(m)).map(|(_, l)| *l);
    let mut wrong = Vec::new();
    for (m, edges) in graph() {
        let Some(mine) = layer(&m) else {
            wrong.push(format!("`{}` has no layer in tests/layers.rs", top(&m)));
            continue;
        };
        for t in edges {
            if top(&t) == top(&m) {
                continue;
            }
            match layer(&t) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!("{m} uses {t}, which is not below it")),
            }
        }
    }
    wrong.dedup();
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    // Depth-first search for a back edge, reporting the cycle found.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for t in g.get(m).into_iter().flatten() {
            match state.get(t.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == t).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(t.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(t, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(m, &g, &mut state, &mut Vec::new()) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }
}

/// The checker itself reads `use` groups and paths inside code.
#[test]
fn the_checker_sees_use_groups_and_nested_paths() {
    let text = "use super::{compile::CondText, items::{a, b as c}};\nfn f() { crate::util::clock::tick_ns(); }";
    let named = paths_named(text);
    assert!(
        named.contains(&"super::compile::CondText".to_string()),
        "{named:?}"
    );
    assert!(named.contains(&"super::items::b".to_string()), "{named:?}");
    assert!(
        named.contains(&"crate::util::clock::tick_ns".to_string()),
        "{named:?}"
    );
    let known: BTreeMap<String, PathBuf> = [
        "rules",
        "rules::compile",
        "rules::items",
        "util",
        "util::clock",
    ]
    .iter()
    .map(|m| (m.to_string(), PathBuf::new()))
    .collect();
    assert_eq!(
        target("rules::items", "super::compile::CondText", &known),
        "rules::compile"
    );
    assert_eq!(
        target("rules::items", "crate::util::clock::tick_ns", &known),
        "util::clock"
    );
    assert_eq!(target("rules", "super::util", &known), "util");
}
