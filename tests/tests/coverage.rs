//! docs/coverage.md stays true: every Falco upstream rule has one row;
//! every Vigil rule it names exists with the priority it shows and has
//! the end-to-end test it names (a case for that rule in that test); every
//! default rule has a row in the ATT&CK matrix with the techniques its
//! tags name.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The rows of the Markdown table that follows `heading`, as cells.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in docs/coverage.md"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

struct VigilRule {
    priority: String,
    techniques: BTreeSet<String>,
}

/// The default rules: name, priority and the ATT&CK techniques of their tags.
fn default_rules() -> BTreeMap<String, VigilRule> {
    let text = read("rules/default.yaml");
    let mut out = BTreeMap::new();
    for block in text.split("\n- ") {
        let Some(name) = block
            .strip_prefix("rule: ")
            .or_else(|| block.strip_prefix("- rule: "))
        else {
            continue;
        };
        let name = name.lines().next().unwrap().trim().to_string();
        let field = |key: &str| {
            let at = block
                .find(&format!("\n  {key}: "))
                .unwrap_or_else(|| panic!("{name}: no {key}"));
            block[at + key.len() + 5..].to_string()
        };
        let priority = field("priority")
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_lowercase();
        let tags = field("tags");
        let tags = &tags[1..tags.find(']').unwrap()];
        let techniques = tags
            .split(',')
            .map(str::trim)
            .filter(|t| t.starts_with('T') && t[1..].starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_string)
            .collect();
        out.insert(
            name,
            VigilRule {
                priority,
                techniques,
            },
        );
    }
    assert!(out.len() >= 30, "{} default rules read", out.len());
    out
}

/// Checks that `test` (`FILE::FUNCTION`) exists and performs `rule`'s
/// behaviour: the function is in tests/tests/FILE and names the rule.
fn check_test(test: &str, rule: &str, failures: &mut Vec<String>) {
    let Some((file, func)) = test.split_once("::") else {
        failures.push(format!("`{rule}`: test `{test}` is not FILE::FUNCTION"));
        return;
    };
    let src = read(&format!("tests/tests/{file}"));
    if !src.contains(&format!("fn {func}(")) {
        failures.push(format!("`{rule}`: no fn {func} in tests/tests/{file}"));
    }
    if !src.contains(&format!("\"{rule}\"")) {
        failures.push(format!(
            "`{rule}`: tests/tests/{file} has no case naming it"
        ));
    }
}

#[test]
fn every_falco_upstream_rule_has_one_true_row() {
    let doc = read("docs/coverage.md");
    let rules = default_rules();
    let mut upstream = BTreeSet::new();
    for (file, label) in [
        ("falco_rules.yaml", "stable"),
        ("falco-incubating_rules.yaml", "incubating"),
        ("falco-sandbox_rules.yaml", "sandbox"),
    ] {
        for line in read(&format!("tests/data/falco/{file}")).lines() {
            if let Some(name) = line.strip_prefix("- rule: ") {
                upstream.insert((name.trim().to_string(), label.to_string()));
            }
        }
    }
    assert_eq!(
        upstream.len(),
        93,
        "Falco's three files changed: update docs/coverage.md"
    );
    let rows = table(&doc, "## Against Falco's upstream rules");
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let [falco, file, _prio, vigil, vprio, test, status, _note] = &r[..] else {
            failures.push(format!("a row without 8 cells: {r:?}"));
            continue;
        };
        let key = (falco.replace("\\|", "|"), file.clone());
        if !upstream.contains(&key) {
            failures.push(format!("`{falco}` ({file}) is not a Falco upstream rule"));
        }
        if !seen.insert(key) {
            failures.push(format!("`{falco}` ({file}) has two rows"));
        }
        match status.as_str() {
            "covered" => match rules.get(vigil) {
                None => failures.push(format!(
                    "`{falco}`: Vigil rule `{vigil}` is not a default rule"
                )),
                Some(v) => {
                    if &v.priority != vprio {
                        failures.push(format!(
                            "`{vigil}`: priority {} shown as {vprio}",
                            v.priority
                        ));
                    }
                    check_test(test, vigil, &mut failures);
                }
            },
            "missing-rule" | "missing-field" | "not-applicable" | "declined" => {
                if vigil != "-" || test != "-" {
                    failures.push(format!(
                        "`{falco}` is {status} but names `{vigil}` / `{test}`"
                    ));
                }
            }
            other => failures.push(format!("`{falco}`: unknown status `{other}`")),
        }
    }
    for missing in upstream.difference(&seen) {
        failures.push(format!(
            "Falco rule `{}` ({}) has no row",
            missing.0, missing.1
        ));
    }
    assert!(
        failures.is_empty(),
        "docs/coverage.md:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_default_rule_has_its_techniques_and_a_test() {
    let doc = read("docs/coverage.md");
    let rules = default_rules();
    let rows = table(&doc, "## By ATT&CK technique");
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let [name, prio, techniques, _tactics, test] = &r[..] else {
            failures.push(format!("a row without 5 cells: {r:?}"));
            continue;
        };
        let Some(v) = rules.get(name) else {
            failures.push(format!("`{name}` is not a default rule"));
            continue;
        };
        seen.insert(name.clone());
        if &v.priority != prio {
            failures.push(format!("`{name}`: priority {} shown as {prio}", v.priority));
        }
        let shown: BTreeSet<String> = techniques.split(", ").map(str::to_string).collect();
        if shown != v.techniques {
            failures.push(format!(
                "`{name}`: techniques {:?} shown as {shown:?}",
                v.techniques
            ));
        }
        check_test(test, name, &mut failures);
    }
    for name in rules.keys().filter(|n| !seen.contains(*n)) {
        failures.push(format!("default rule `{name}` has no row"));
    }
    assert!(
        failures.is_empty(),
        "docs/coverage.md:\n{}",
        failures.join("\n")
    );
}
