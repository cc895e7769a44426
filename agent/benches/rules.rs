//! Events per second through the full default rule set, on one core.
//!
//! The events are the benign recording shipped in rules/baseline (builds,
//! compilers, package queries, shells: mostly file opens, as on a real
//! host) with a few attacks from the default rules' tests mixed in, so the
//! matches, output rendering of hits and dedup all take part. Decoding and
//! enrichment are measured separately (`--bench enrich`).
use std::{
    hint::black_box,
    io::{BufRead, BufReader},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_agent::{
    event::Event,
    rules::{Hit, LoadOptions, Matcher, RuleSet, Unsupported},
};

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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
