//! Activity: what processes do, streamed to the collector beside the
//! alerts, so a responder can still ask what a process and its family did
//! after they are gone, and where else in the fleet a binary, an address
//! or a user shows up.
//!
//! Every enriched event passes through [`Activity::observe`] once:
//! - it is kept, briefly, as **context**: the last few events of each
//!   process (`context.rs`), so an alert carries the recent events of its
//!   process and of that process's ancestors ([`Activity::context_for`]);
//! - if its kind is shipped (`--activity`), no `--activity-exclude`
//!   condition holds for it, and the per-host rate cap (`--activity-rate`)
//!   has room, it goes to the collector on the alerts' spooled path.
//!
//! What the cap and the filters leave out is counted, and reaches the
//! operator in heartbeats and `/metrics`.
use std::{str::FromStr, time::Instant};

use vigil_proto::v1 as pb;

use crate::{
    event::{Event, EventBody},
    rules::{LoadOptions, RuleSet},
    util::procid::ProcIds,
};

pub mod context;
pub mod convert;

use context::ContextBuffer;
use convert::Sockets;

/// The kinds of activity that can be shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Connect,
    Accept,
    Listen,
    Dns,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Exec,
        Kind::Fork,
        Kind::Exit,
        Kind::Connect,
        Kind::Accept,
        Kind::Listen,
        Kind::Dns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Connect => "connect",
            Kind::Accept => "accept",
            Kind::Listen => "listen",
            Kind::Dns => "dns",
        }
    }

    /// The syscalls the probe must follow for this kind (process kinds come
    /// from the process ring, which is always on).
    pub fn syscalls(self) -> &'static [&'static str] {
        match self {
            Kind::Exec | Kind::Fork | Kind::Exit => &[],
            // socket() gives the protocol, bind() a listener's address.
            Kind::Connect => &["socket", "connect"],
            Kind::Accept => &["socket", "accept", "accept4"],
            Kind::Listen => &["socket", "bind", "listen"],
            Kind::Dns => &["sendto", "sendmsg", "sendmmsg"],
        }
    }

    fn of(a: &pb::Activity) -> Option<Kind> {
        use pb::ActivityKind as K;
        Some(match a.kind() {
            K::Exec => Kind::Exec,
            K::Fork => Kind::Fork,
            K::Exit => Kind::Exit,
            K::Connect => Kind::Connect,
            K::Accept => Kind::Accept,
            K::Listen => Kind::Listen,
            K::Dns => Kind::Dns,
            _ => return None,
        })
    }
}

/// A set of kinds: `--activity exec,exit,connect`, `all` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);

    pub fn contains(self, k: Kind) -> bool {
        self.0 & (1 << k as u16) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What is shipped by default: everything but forks (a fork is nearly
/// always followed by an exec, which carries the same process).
pub const DEFAULT_KINDS: &str = "exec,exit,connect,accept,listen,dns";

impl FromStr for Kinds {
    type Err = String;

    fn from_str(s: &str) -> Result<Kinds, String> {
        let mut set = 0u16;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "all" => set |= Kind::ALL.iter().map(|k| 1 << *k as u16).sum::<u16>(),
                name => match Kind::ALL.iter().find(|k| k.name() == name) {
                    Some(k) => set |= 1 << *k as u16,
                    None => {
                        return Err(format!(
                            "unknown activity kind `{name}`: use {}, all or none",
                            Kind::ALL.map(Kind::name).join(", ")
                        ))
                    }
                },
            }
        }
        Ok(Kinds(set))
    }
}

impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Kind::name).collect();
        f.write_str(&names.join(","))
    }
}

/// `--activity*` settings.
#[derive(Debug, Clone)]
pub struct ActivityConfig {
    /// What is shipped.
    pub kinds: Kinds,
    /// Falco conditions; an event for which one holds is not shipped.
    pub exclude: Vec<String>,
    /// Most events shipped per second from this host (bursts up to one
    /// second's worth); 0: no cap.
    pub rate: u32,
    /// Events kept per process for alert context, and most processes
    /// kept; 0 events: alerts carry no context.
    pub context_events: usize,
    pub context_processes: usize,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            kinds: DEFAULT_KINDS.parse().expect("valid default"),
            exclude: Vec::new(),
            rate: 1000,
            context_events: 16,
            context_processes: 4096,
        }
    }
}

impl ActivityConfig {
    /// The syscalls the shipped kinds need followed, whatever the rules.
    pub fn syscalls(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .kinds
            .iter()
            .flat_map(|k| k.syscalls())
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Compiles `--activity-exclude` conditions into a rule set (each its own
/// rule, named by its position), with errors that name the option.
pub fn compile_exclusions(conds: &[String]) -> Result<Option<RuleSet>, String> {
    if conds.is_empty() {
        return Ok(None);
    }
    let mut yaml = String::new();
    for (i, c) in conds.iter().enumerate() {
        // JSON strings are YAML strings: the condition is taken verbatim.
        let cond = serde_json::to_string(c).map_err(|e| e.to_string())?;
        yaml.push_str(&format!(
            "- rule: activity exclusion {}\n  desc: --activity-exclude\n  condition: {cond}\n  output: excluded\n  priority: DEBUG\n",
            i + 1
        ));
    }
    RuleSet::from_sources(
        &[("--activity-exclude".to_string(), yaml)],
        LoadOptions::default(),
    )
    .map(Some)
    .map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// What activity did, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityCounters {
    /// Handed to the forwarder.
    pub shipped: u64,
    /// Left out by the rate cap.
    pub rate_dropped: u64,
    /// Left out by `--activity-exclude`.
    pub excluded: u64,
}

/// A token bucket: `rate` per second, up to one second's worth at once.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Activity {
    kinds: Kinds,
    exclude: Option<RuleSet>,
    ids: ProcIds,
    /// Prefix of this run's event ids, so ids never repeat across restarts.
    run_id: String,
    next: u64,
    bucket: Bucket,
    context: ContextBuffer,
    sockets: Sockets,
    pub counters: ActivityCounters,
}

impl Activity {
    /// Fails on an `--activity-exclude` condition that does not compile.
    pub fn new(cfg: &ActivityConfig, ids: ProcIds) -> Result<Activity, String> {
        Ok(Activity {
            kinds: cfg.kinds,
            exclude: compile_exclusions(&cfg.exclude)?,
            ids,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            next: 0,
            bucket: Bucket::new(cfg.rate),
            context: ContextBuffer::new(cfg.context_events, cfg.context_processes),
            sockets: Sockets::default(),
            counters: ActivityCounters::default(),
        })
    }

    pub fn ids(&self) -> &ProcIds {
        &self.ids
    }

    /// Keeps `ev` as context and returns it as activity to ship, when it
    /// is of a shipped kind, not excluded and within the rate cap.
    pub fn observe(&mut self, ev: &Event, now: Instant) -> Option<pb::Activity> {
        let mut a = convert::activity(ev, &mut self.sockets)?;
        self.next += 1;
        // Increasing within a run: the collector's id index grows at its end.
        a.id = format!("{}-{:012x}", self.run_id, self.next);
        let key = context::key(ev.process.pid, ev.process.start_boottime_ns);
        let exec = matches!(ev.body, EventBody::Exec(_));
        if exec {
            // An exec is the process's record: full wherever it goes, so
            // the copy in an alert's context is the same as the one shipped.
            a.process = Some(convert::process(ev, &self.ids, true));
            a.container = ev.container.as_deref().map(crate::alert::container_info);
        }
        let ship = Kind::of(&a).is_some_and(|k| self.kinds.contains(k));
        if !ship {
            self.context.push(key, a);
            return None;
        }
        if self.exclude.as_mut().is_some_and(|x| x.fires(ev)) {
            self.counters.excluded += 1;
            self.context.push(key, a);
            return None;
        }
        if !self.bucket.take(now) {
            self.counters.rate_dropped += 1;
            self.context.push(key, a);
            return None;
        }
        self.context.push(key, a.clone());
        if !exec {
            a.process = Some(convert::process(ev, &self.ids, false));
        }
        convert::fork_child(ev, &self.ids, &mut a);
        self.counters.shipped += 1;
        Some(a)
    }

    /// The recent activity of `ev`'s process and its ancestors, oldest
    /// first, each naming its process.
    pub fn context_for(&self, ev: &Event) -> Vec<pb::Activity> {
        let mut who = vec![(
            context::key(ev.process.pid, ev.process.start_boottime_ns),
            pb::ProcessInfo {
                pid: ev.process.pid,
                ppid: ev.process.ppid,
                comm: ev.process.comm.clone(),
                exe: ev.exe().unwrap_or_default().to_string(),
                uid: ev.process.uid,
                proc_id: self.ids.of(ev.process.pid, ev.process.start_boottime_ns),
                parent_proc_id: crate::alert::parent_proc_id(ev, &self.ids),
                ..Default::default()
            },
        )];
        for (i, a) in ev.ancestry.iter().enumerate() {
            who.push((
                context::key(a.pid, Some(a.start_ns)),
                pb::ProcessInfo {
                    pid: a.pid,
                    exe: a.exe.as_deref().unwrap_or_default().to_string(),
                    proc_id: self.ids.of(a.pid, Some(a.start_ns)),
                    parent_proc_id: ev
                        .ancestry
                        .get(i + 1)
                        .map(|p| self.ids.of(p.pid, Some(p.start_ns)))
                        .unwrap_or_default(),
                    ..Default::default()
                },
            ));
        }
        self.context.collect(&who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        let k: Kinds = "exec, dns".parse().unwrap();
        assert!(k.contains(Kind::Exec) && k.contains(Kind::Dns) && !k.contains(Kind::Exit));
        assert_eq!(k.to_string(), "exec,dns");
        assert!("none".parse::<Kinds>().unwrap().is_empty());
        assert_eq!("all".parse::<Kinds>().unwrap().iter().count(), 7);
        let e = "exec,files".parse::<Kinds>().unwrap_err();
        assert!(e.contains("`files`") && e.contains("connect"), "{e}");
        assert_eq!(
            DEFAULT_KINDS.parse::<Kinds>().unwrap().to_string(),
            DEFAULT_KINDS
        );
    }

    #[test]
    fn exclusions_compile_or_name_the_option() {
        assert!(compile_exclusions(&[]).unwrap().is_none());
        assert!(compile_exclusions(&["proc.name in (make".into()]).is_err());
        assert!(compile_exclusions(&["proc.name in (make, \"cc1\")".into()])
            .unwrap()
            .is_some());
        let e = compile_exclusions(&["proc.nme = x".into()]).unwrap_err();
        assert!(e.contains("--activity-exclude"), "{e}");
    }

    #[test]
    fn the_bucket_caps_the_rate_and_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10);
        b.last = t0;
        let passed = (0..50).filter(|_| b.take(t0)).count();
        assert_eq!(passed, 10);
        assert!(b.take(t0 + std::time::Duration::from_millis(150)));
        let mut unlimited = Bucket::new(0);
        assert!((0..10_000).all(|_| unlimited.take(t0)));
    }
}
