//! Events per second through the full default rule set, on one core.
//!
//! The events are the benign recording shipped in rules/baseline (builds,
//! compilers, package queries, shells: mostly file opens, as on a real
//! host) with a few attacks from the default rules' tests mixed in, so the
//! matches, output rendering of hits and dedup all take part. Decoding and
//! enrichment are measured separately (`--bench enrich`).
//!
//! A third set has 1 000 rules generated from the default rules' shapes:
//! copies of every list, macro and rule, the lists' items changed per copy
//! (names suffixed, numbers shifted), so the copies test different values
//! through the same structure, as a large real set does.
use std::{
    hint::black_box,
    io::{BufRead, BufReader},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_yaml_ng::{Mapping, Value};
use vigil_agent::{
    event::Event,
    rules::{Hit, LoadOptions, Matcher, RuleSet, Unsupported, DEFAULT_RULES},
};

/// `count` rules in copies of the default set's lists, macros and rules.
fn generated_rules(count: usize) -> String {
    let items: Vec<Value> = serde_yaml_ng::from_str(DEFAULT_RULES).expect("default rules");
    let key = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let names: std::collections::HashSet<String> = items
        .iter()
        .filter_map(|i| key(i, "list").or_else(|| key(i, "macro")))
        .collect();
    // Identifiers that name a list or macro get the copy's suffix.
    let rewrite = |cond: &str, k: usize| {
        let mut out = String::new();
        let mut word = String::new();
        for c in cond.chars().chain(std::iter::once(' ')) {
            // Dots belong to the word: `container.id` is a field, not
            // the macro `container` followed by `.id`.
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                word.push(c);
                continue;
            }
            if names.contains(&word) {
                word.push_str(&format!("_{k}"));
            }
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
        out.pop();
        out
    };
    let mut out: Vec<Value> = Vec::new();
    let mut rules = 0;
    for k in 1.. {
        for item in &items {
            let mut m: Mapping = item.as_mapping().expect("an item is a mapping").clone();
            if let Some(name) = key(item, "list") {
                m.insert("list".into(), format!("{name}_{k}").into());
                let vals: Vec<Value> = item["items"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|v| match v {
                        Value::Number(n) => (n.as_i64().unwrap_or(0) + 100_000 * k as i64).into(),
                        // Networks stay: the copies differ in their names.
                        Value::String(s)
                            if s.split('/')
                                .next()
                                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()) =>
                        {
                            v.clone()
                        }
                        Value::String(s) if s.starts_with('/') => format!("{s}{k}").into(),
                        Value::String(s) => format!("{s}-{k}").into(),
                        other => other.clone(),
                    })
                    .collect();
                m.insert("items".into(), Value::Sequence(vals));
            } else if let Some(name) = key(item, "macro") {
                m.insert("macro".into(), format!("{name}_{k}").into());
                let cond = key(item, "condition").unwrap_or_default();
                m.insert("condition".into(), rewrite(&cond, k).into());
            } else if let Some(name) = key(item, "rule") {
                if rules >= count {
                    continue;
                }
                rules += 1;
                m.insert("rule".into(), format!("{name} #{k}").into());
                if let Some(cond) = key(item, "condition") {
                    m.insert("condition".into(), rewrite(&cond, k).into());
                }
                if let Some(seq) = m.get_mut("sequence").and_then(|s| s.get_mut("steps")) {
                    for step in seq.as_sequence_mut().into_iter().flatten() {
                        let cond = key(step, "condition").unwrap_or_default();
                        step["condition"] = rewrite(&cond, k).into();
                    }
                }
            }
            out.push(Value::Mapping(m));
        }
        if rules >= count {
            break;
        }
    }
    serde_yaml_ng::to_string(&out).expect("rules as YAML")
}

fn recorded() -> Vec<Event> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/baseline/benign.jsonl.gz"
    );
    let f = std::fs::File::open(path).expect("baseline recording");
    BufReader::new(flate2::read::GzDecoder::new(f))
        .lines()
        .filter_map(|l| Event::from_recorded_line(&l.ok()?).ok().flatten())
        .collect()
}

fn bench(c: &mut Criterion) {
    let events = recorded();
    let mut set = RuleSet::load(&[], LoadOptions::default()).expect("default rules");
    let mut hits: Vec<Hit> = Vec::new();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("default_set_recorded_mix", |b| {
        b.iter(|| {
            for ev in &events {
                set.matches(black_box(ev), &mut hits);
                for h in hits.drain(..) {
                    black_box(h.rule.output.render(ev));
                }
            }
        })
    });
    // The same mix through Falco's upstream rules, compiled where
    // supported: a larger, older set.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/falco/falco_rules.yaml"
    ))
    .expect("falco rules");
    let mut falco = RuleSet::from_sources(
        &[("falco_rules.yaml".into(), text)],
        LoadOptions {
            unsupported: Unsupported::Skip,
        },
    )
    .expect("falco rules compile where supported");
    group.bench_function("falco_upstream_recorded_mix", |b| {
        b.iter(|| {
            for ev in &events {
                falco.matches(black_box(ev), &mut hits);
                hits.clear();
            }
        })
    });
    let mut large = RuleSet::from_sources(
        &[("generated.yaml".into(), generated_rules(1000))],
        LoadOptions::default(),
    )
    .expect("the generated rules compile");
    assert_eq!(large.len(), 1000);
    group.bench_function("generated_1000_rules_recorded_mix", |b| {
        b.iter(|| {
            for ev in &events {
                large.matches(black_box(ev), &mut hits);
                hits.clear();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
