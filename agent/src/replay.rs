//! `vigil-agent rules test`: recorded events (the JSON lines of `run
//! --events`) replayed through a rule set, so rules can be tested in CI
//! like any code.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use anyhow::Context as _;
use vigil_proto::v1::Alert;

use crate::{
    alert,
    event::Event,
    rules::{Hit, Matcher, RuleSet},
};

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events read (alert and loss lines are skipped).
    pub events: usize,
    /// Each alert with the 1-based line of the event that raised it.
    pub alerts: Vec<(usize, Alert)>,
}

/// Replays `path` through `rules`.
pub fn replay_file(rules: &mut RuleSet, path: &Path) -> anyhow::Result<Replay> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // Recordings compress about 30 times; `.gz` ones are read as they are.
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut out = Replay::default();
    let mut hits: Vec<Hit> = Vec::new();
    let mut last_line = 0;
    // A recording's processes get ids of a host of their own.
    let ids = crate::util::procid::ProcIds::new("", "replay", &path.display().to_string());
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let Some(mut ev) = Event::from_recorded_line(&line)
            .with_context(|| format!("{}:{n}: not a Vigil event", path.display()))?
        else {
            continue;
        };
        out.events += 1;
        // Numbered from 1 as the agent numbers them: Falco's `never_true`
        // macro is `evt.num = 0`, and would hold for every replayed event.
        if ev.num == 0 {
            ev.num = out.events as u64;
        }
        last_line = n;
        rules.tick(ev.time_unix_ns, &mut hits);
        rules.matches(&ev, &mut hits);
        for h in hits.drain(..) {
            let e = h.event.as_deref().unwrap_or(&ev);
            out.alerts
                .push((n, alert::build(&h.rule, e, h.count, &ids)));
        }
    }
    rules.tick(i64::MAX, &mut hits);
    for h in hits.drain(..) {
        if let Some(e) = h.event.as_deref() {
            out.alerts
                .push((last_line, alert::build(&h.rule, e, h.count, &ids)));
        }
    }
    Ok(out)
}
