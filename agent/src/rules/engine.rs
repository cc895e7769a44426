//! Matching events against a compiled rule set: the `evt.type` index,
//! per-event field slots, sequences across a process tree, and dedup.
use std::{collections::HashMap, path::PathBuf};

use super::{
    fields::{self, evt_type},
    load::{self, CompiledRule, LoadOptions, RuleKind, Skipped},
    matcher::{render, Ctx, Slots},
    Hit, Matcher, RuleError, RuleMeta,
};
use crate::event::Event;

/// The rules shipped in the binary, used when no `--rules` is given.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.yaml");
/// Name under which the embedded rules appear in errors and alerts.
pub const DEFAULT_RULES_ORIGIN: &str = "<embedded>/rules/default.yaml";

/// Most open sequences per rule, and most dedup windows in all; past
/// them the oldest sequence is dropped (counted), and a new alert is sent
/// without dedup rather than lost.
const MAX_PARTIALS: usize = 4096;
const MAX_DEDUP: usize = 16384;

/// What noise control and sequences did, reported with the loss counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    /// Alerts folded into a later summary by dedup.
    pub dedup_suppressed: u64,
    /// Alerts sent without dedup because its table was full.
    pub dedup_untracked: u64,
    /// Open sequences dropped because a rule had too many.
    pub sequence_evicted: u64,
}

struct Partial {
    started_ns: i64,
    /// The value of the last keyed step so far.
    key: Option<String>,
}

/// A rule's open sequences, by (the pid whose tree they watch, the step
/// they wait for, the key value that step must show).
#[derive(Default)]
struct OpenSequences {
    by_slot: HashMap<(u32, usize, Option<String>), Vec<Partial>>,
    len: usize,
}

impl OpenSequences {
    fn insert(&mut self, root: u32, next: usize, keyed: bool, p: Partial) {
        let key = if keyed { p.key.clone() } else { None };
        self.by_slot.entry((root, next, key)).or_default().push(p);
        self.len += 1;
    }

    /// Drops expired sequences, then, if still full, whole slots until
    /// there is room; returns how many live ones were dropped.
    fn make_room(&mut self, now: i64, window_ns: i64) -> u64 {
        self.by_slot.retain(|_, list| {
            list.retain(|p| now - p.started_ns <= window_ns);
            !list.is_empty()
        });
        self.len = self.by_slot.values().map(Vec::len).sum();
        let mut dropped = 0;
        while self.len >= MAX_PARTIALS {
            let Some(slot) = self.by_slot.keys().next().cloned() else {
                break;
            };
            let n = self.by_slot.remove(&slot).map_or(0, |l| l.len());
            self.len -= n;
            dropped += n as u64;
        }
        dropped
    }
}

struct DedupEntry {
    first_ns: i64,
    window_ns: i64,
    suppressed: u64,
    last: Option<Box<Event>>,
}

pub struct RuleSet {
    rules: Vec<CompiledRule>,
    by_type: foldhash::HashMap<String, Vec<usize>>,
    any_type: Vec<usize>,
    /// Reused per event: the rules to test.
    scratch: Vec<usize>,
    slots: Slots,
    /// The files the rules came from, in load order.
    pub sources: Vec<String>,
    /// Rules left out (unsupported source, or unsupported fields with
    /// `Unsupported::Skip`), with reasons.
    pub skipped: Vec<Skipped>,
    /// Rules loaded with unsupported fields taken as absent
    /// (`Unsupported::Absent`), with the fields.
    pub partial: Vec<Skipped>,
    partials: Vec<OpenSequences>,
    dedup: HashMap<(usize, String), DedupEntry>,
    pub counters: EngineCounters,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl RuleSet {
    /// The rules embedded in the agent binary (tests; the agent loads them
    /// through [`RuleSet::load`], which reports errors).
    #[cfg(test)]
    pub fn embedded_default() -> RuleSet {
        Self::from_sources(
            &[(DEFAULT_RULES_ORIGIN.to_string(), DEFAULT_RULES.to_string())],
            LoadOptions::default(),
        )
        .expect("embedded default rules are valid (checked by tests)")
    }

    /// Loads rule files and directories, in the order given; the embedded
    /// default set when `paths` is empty.
    pub fn load(paths: &[PathBuf], opts: LoadOptions) -> Result<RuleSet, Vec<RuleError>> {
        if paths.is_empty() {
            return Self::from_sources(
                &[(DEFAULT_RULES_ORIGIN.to_string(), DEFAULT_RULES.to_string())],
                opts,
            );
        }
        Self::from_sources(&load::read_sources(paths)?, opts)
    }

    /// Parses and compiles `(origin, text)` pairs; origins name the text in
    /// errors.
    pub fn from_sources(
        sources: &[(String, String)],
        opts: LoadOptions,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let loaded = load::load(sources, opts)?;
        let mut by_type: foldhash::HashMap<String, Vec<usize>> = Default::default();
        let mut any_type = Vec::new();
        for (i, r) in loaded.rules.iter().enumerate() {
            match load::rule_evt_types(r) {
                Some(types) => {
                    for t in types {
                        by_type.entry(t).or_default().push(i);
                    }
                }
                None => any_type.push(i),
            }
        }
        Ok(RuleSet {
            partials: loaded
                .rules
                .iter()
                .map(|_| OpenSequences::default())
                .collect(),
            rules: loaded.rules,
            by_type,
            any_type,
            scratch: Vec::new(),
            slots: loaded.slots,
            sources: sources.iter().map(|(o, _)| o.clone()).collect(),
            skipped: loaded.skipped,
            partial: loaded.partial,
            dedup: HashMap::new(),
            counters: EngineCounters::default(),
        })
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &*r.meta)
    }

    /// Rules that match every event type (no `evt.type` condition): each
    /// costs a test on every event.
    pub fn unindexed(&self) -> impl Iterator<Item = &str> {
        self.any_type
            .iter()
            .map(|&i| self.rules[i].meta.name.as_str())
    }

    /// Advances rule `i`'s open sequences with this event, and opens one
    /// if it matches the first step. Open sequences are filed by the pid
    /// whose tree they watch, the step they wait for and the key value that
    /// step must show, so an event costs a few hash lookups per ancestor,
    /// however many sequences are open. True when a sequence completed.
    fn sequence_step(&mut self, i: usize, cx: &mut Ctx) -> bool {
        let RuleKind::Sequence(seq) = &self.rules[i].kind else {
            return false;
        };
        let ev = cx.ev;
        let now = ev.time_unix_ns;
        let open = &mut self.partials[i];
        let key_of = |k: usize| {
            seq.steps[k]
                .1
                .as_ref()
                .map(|f| render(fields::extract(ev, f).as_ref()).into_owned())
        };
        let depth = if seq.same_process {
            0
        } else {
            ev.ancestry.len()
        };
        let roots =
            std::iter::once(ev.process.pid).chain(ev.ancestry[..depth].iter().map(|a| a.pid));
        let mut done = false;
        for k in (1..seq.steps.len()).rev() {
            if open.len == 0 || !seq.steps[k].0.eval(cx) {
                continue;
            }
            let value = key_of(k);
            for root in roots.clone() {
                // Sequences whose key matches, and those with no key yet.
                for slot in [value.clone(), None] {
                    let Some(list) = open.by_slot.remove(&(root, k, slot.clone())) else {
                        continue;
                    };
                    open.len -= list.len();
                    for mut p in list {
                        if now - p.started_ns > seq.window_ns {
                            continue;
                        }
                        if value.is_some() {
                            p.key = value.clone();
                        }
                        if k + 1 == seq.steps.len() {
                            done = true;
                        } else {
                            open.insert(root, k + 1, seq.steps[k + 1].1.is_some(), p);
                        }
                    }
                    if slot.is_none() {
                        break;
                    }
                }
            }
        }
        if seq.steps[0].0.eval(cx) {
            if open.len >= MAX_PARTIALS {
                self.counters.sequence_evicted += open.make_room(now, seq.window_ns);
            }
            // Tree scope covers the first process's siblings too: a file
            // fetched by one child of a shell and run by another.
            let root = match ev.process.ppid {
                0 | 1 => ev.process.pid,
                _ if seq.same_process => ev.process.pid,
                ppid => ppid,
            };
            let p = Partial {
                started_ns: now,
                key: key_of(0),
            };
            open.insert(root, 1, seq.steps[1].1.is_some(), p);
        }
        done
    }

    /// Passes a hit through the rule's dedup window.
    fn deduplicate(&mut self, i: usize, ev: &Event, out: &mut Vec<Hit>) {
        let rule = &self.rules[i];
        let Some(d) = &rule.dedup else {
            out.push(Hit {
                rule: rule.meta.clone(),
                count: 1,
                event: None,
            });
            return;
        };
        let key: Vec<String> =
            d.by.iter()
                .map(|f| render(fields::extract(ev, f).as_ref()).into_owned())
                .collect();
        let key = (i, key.join("\u{1f}"));
        let now = ev.time_unix_ns;
        if let Some(e) = self.dedup.get_mut(&key) {
            if now - e.first_ns < d.window_ns {
                e.suppressed += 1;
                e.last = Some(Box::new(ev.clone()));
                self.counters.dedup_suppressed += 1;
                return;
            }
            if e.suppressed > 0 {
                out.push(Hit {
                    rule: rule.meta.clone(),
                    count: e.suppressed,
                    event: e.last.take(),
                });
            }
            self.dedup.remove(&key);
        }
        if self.dedup.len() < MAX_DEDUP {
            self.dedup.insert(
                key,
                DedupEntry {
                    first_ns: now,
                    window_ns: d.window_ns,
                    suppressed: 0,
                    last: None,
                },
            );
        } else {
            self.counters.dedup_untracked += 1;
        }
        out.push(Hit {
            rule: rule.meta.clone(),
            count: 1,
            event: None,
        });
    }
}

impl Matcher for RuleSet {
    fn matches(&mut self, event: &Event, out: &mut Vec<Hit>) {
        let ty = evt_type(event);
        let typed = self.by_type.get(ty).map(Vec::as_slice).unwrap_or_default();
        if typed.is_empty() && self.any_type.is_empty() {
            return;
        }
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        candidates.extend(typed.iter().chain(&self.any_type));
        let slots = std::mem::take(&mut self.slots);
        let mut cx = Ctx::new(event, &slots);
        let mut matched = Vec::new();
        for &i in &candidates {
            match &self.rules[i].kind {
                RuleKind::Single(n) => {
                    if n.eval(&mut cx) {
                        matched.push(i);
                    }
                }
                RuleKind::Sequence(_) => {
                    if self.sequence_step(i, &mut cx) {
                        matched.push(i);
                    }
                }
            }
        }
        drop(cx);
        self.slots = slots;
        self.scratch = candidates;
        for i in matched {
            self.deduplicate(i, event, out);
        }
    }

    fn tick(&mut self, now_unix_ns: i64, out: &mut Vec<Hit>) {
        let rules = &self.rules;
        self.dedup.retain(|(i, _), e| {
            if now_unix_ns - e.first_ns < e.window_ns {
                return true;
            }
            if e.suppressed > 0 {
                out.push(Hit {
                    rule: rules[*i].meta.clone(),
                    count: e.suppressed,
                    event: e.last.take(),
                });
            }
            false
        });
    }

    fn len(&self) -> usize {
        self.rules.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::rules::{Matcher, Unsupported};

    fn process(pid: u32, comm: &str, exe: &str, argv: &[&str]) -> Value {
        json!({"pid": pid, "tid": pid, "ppid": 1, "uid": 0, "gid": 0, "euid": 0, "egid": 0,
               "loginuid": -1, "comm": comm, "cgroup_id": 1, "mnt_ns": 1, "pid_ns": 1,
               "start_boottime_ns": 1, "exe": exe, "argv": argv, "user": "root"})
    }

    fn event(mut body: Value, proc: Value, t: i64, ancestry: Value) -> Event {
        body["time_unix_ns"] = t.into();
        body["process"] = proc;
        body["ancestry"] = ancestry;
        Event::from_recorded_line(&body.to_string())
            .unwrap()
            .unwrap()
    }

    fn exec(pid: u32, exe: &str, argv: &[&str], t: i64, ancestry: Value) -> Event {
        let comm = exe.rsplit('/').next().unwrap();
        let body = json!({"type": "exec", "exe": exe, "exe_unreachable": false, "exe_memfd": false,
            "exe_truncated": false, "filename": exe, "filename_truncated": false, "argv": argv,
            "argv_truncated": false, "argv_unreadable": false, "argv_bytes": 10});
        event(body, process(pid, comm, exe, argv), t, ancestry)
    }

    fn open(pid: u32, comm: &str, path: &str, write: bool, t: i64) -> Event {
        let body = json!({"type": "file", "op": "open", "syscall": "openat", "path": path,
            "open": {"read": !write, "write": write, "create": write, "truncate": false,
                     "append": false, "names": if write { vec!["O_WRONLY", "O_CREAT"] } else { vec!["O_RDONLY"] }},
            "flags": 0, "result": 3, "path_truncated": false, "path_unresolved": false});
        event(
            body,
            process(pid, comm, &format!("/usr/bin/{comm}"), &[comm]),
            t,
            json!([]),
        )
    }

    fn connect(pid: u32, ip: &str, port: u16, t: i64) -> Event {
        let body = json!({"type": "network", "op": "connect", "syscall": "connect", "fd": 3,
            "result": 0, "in_progress": false, "address": {"family": "inet", "ip": ip, "port": port}});
        event(
            body,
            process(pid, "curl", "/usr/bin/curl", &["curl"]),
            t,
            json!([]),
        )
    }

    fn set(yaml: &str) -> RuleSet {
        RuleSet::from_sources(&[("t.yaml".into(), yaml.into())], LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}", crate::rules::format_errors(&e)))
    }

    fn fired(s: &mut RuleSet, ev: &Event) -> Vec<String> {
        let mut hits = Vec::new();
        s.matches(ev, &mut hits);
        hits.iter().map(|h| h.rule.name.clone()).collect()
    }

    fn errors(yaml: &str) -> String {
        crate::rules::format_errors(
            &RuleSet::from_sources(&[("t.yaml".into(), yaml.into())], LoadOptions::default())
                .unwrap_err(),
        )
    }

    fn rule(name: &str, cond: &str) -> String {
        format!("- rule: {name}\n  desc: d\n  priority: warning\n  condition: {cond}\n")
    }

    #[test]
    fn operators() {
        let e = exec(
            10,
            "/usr/bin/curl",
            &["curl", "-s", "http://x/Payload.SH"],
            1,
            json!([
            {"pid": 9, "exe": "/usr/bin/bash", "argv": ["bash"]},
            {"pid": 8, "exe": "/usr/sbin/sshd", "argv": ["sshd"]}]),
        );
        let cases = [
            ("proc.name = curl", true),
            ("proc.name != curl", false),
            ("proc.pid > 9 and proc.pid <= 10", true),
            ("proc.pid in (1, 2, 10)", true),
            (
                "proc.args contains http and proc.args icontains payload.sh",
                true,
            ),
            (
                "proc.exepath startswith /usr/ and proc.exepath endswith /curl",
                true,
            ),
            ("proc.exepath glob '/usr/*/cu?l'", true),
            ("proc.exepath pmatch (/usr/bin, /opt)", true),
            ("proc.exepath pmatch (/usr/bi)", false),
            ("proc.cmdline regex 'curl -s http://[a-z]+/'", true),
            ("proc.aname[2] = sshd and proc.pname = bash", true),
            ("proc.aname in (sshd)", true),
            ("proc.aname intersects (nginx, sshd)", true),
            ("proc.apid[1] = 9", true),
            ("fd.name exists", false),
            ("not fd.name exists", true),
            ("fd.name != /etc/x", false),
            ("evt.type = execve and evt.dir = <", true),
            ("proc.is_memfd = false", true),
            (
                "(proc.name = a or proc.name = b or proc.name = curl) and not proc.name in (x, y)",
                true,
            ),
            (
                "proc.exepath startswith /opt/ or proc.exepath startswith /usr/bin/",
                true,
            ),
            (
                "proc.args contains nope or proc.args contains Payload",
                true,
            ),
        ];
        for (cond, want) in cases {
            let mut s = set(&rule("r", &format!("\"{}\"", cond.replace('"', "\\\""))));
            assert_eq!(fired(&mut s, &e) == ["r"], want, "{cond}");
        }
        let c = connect(11, "10.1.2.3", 4444, 1);
        for (cond, want) in [
            ("fd.sip in (10.0.0.0/8) and fd.rport = 4444", true),
            (
                "fd.rip = 10.1.2.3 and fd.typechar = 4 and fd.connected = true",
                true,
            ),
            ("fd.net != 10.0.0.0/8", false),
            ("fd.name = 10.1.2.3:4444", true),
        ] {
            let mut s = set(&rule("r", cond));
            assert_eq!(fired(&mut s, &c) == ["r"], want, "{cond}");
        }
    }

    #[test]
    fn load_errors_name_the_place() {
        let e = errors(&rule("r", "proc.pid contains \"x\""));
        assert!(
            e.starts_with("t.yaml:4:23: rule `r`: operator `contains`"),
            "{e}"
        );
        let e = errors(&rule("r", "proc.name = x and is_shell"));
        assert!(
            e.contains("t.yaml:4:32: rule `r`: undefined macro `is_shell`"),
            "{e}"
        );
        let e = errors(&rule("r", "proc.nam = x"));
        assert!(
            e.contains("t.yaml:4:14:") && e.contains("did you mean `proc.name`"),
            "{e}"
        );
        let e = errors(&rule("r", "proc.pid = abc"));
        assert!(e.contains("`abc` is not a number"), "{e}");
        let e = errors(&rule("r", "fd.sip = 300.1.1.1"));
        assert!(e.contains("not an IP address"), "{e}");
        let e = errors(&rule("r", "proc.name in (a, b"));
        assert!(e.contains("t.yaml:4:"), "{e}");
        let e = errors("- macro: a\n  condition: b\n- macro: b\n  condition: a\n- rule: r\n  desc: d\n  priority: info\n  condition: a\n");
        assert!(e.contains("refers to itself"), "{e}");
        let e = errors("- rule: r\n  priority: loud\n  condition: proc.name = x\n");
        assert!(e.contains("t.yaml:2:13: unknown priority `loud`"), "{e}");
        let e = errors("- rule: r\n  priority: info\n  condition: proc.name = x\n  outptu: x\n");
        assert!(
            e.contains("t.yaml:4:3:") && e.contains("unknown key `outptu`"),
            "{e}"
        );
        let e = errors(
            "- rule: r\n  priority: info\n  condition: proc.name = x\n  output: \"%proc.nmae\"\n",
        );
        assert!(
            e.contains("t.yaml:4:12:") && e.contains("`proc.nmae`"),
            "{e}"
        );
        // Several problems are all reported.
        let e = errors(&(rule("a", "proc.nme = x") + &rule("b", "proc.pid contains y")));
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn lists_macros_append_override_and_exceptions() {
        let base = "- list: shells\n  items: [bash, sh]\n- macro: spawned\n  condition: evt.type = execve\n\
            - rule: Shell\n  desc: d\n  priority: warning\n  condition: spawned and proc.name in (shells)\n";
        let local = "- list: shells\n  items: [zsh]\n  append: true\n\
            - rule: Shell\n  exceptions:\n    - name: ops\n      fields: [proc.name, proc.pname]\n      values: [[bash, cron]]\n  override:\n    exceptions: append\n\
            - rule: Gone\n  desc: d\n  priority: info\n  condition: spawned\n\
            - rule: Gone\n  enabled: false\n";
        let mut s = RuleSet::from_sources(
            &[
                ("base.yaml".into(), base.into()),
                ("local.yaml".into(), local.into()),
            ],
            LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}", crate::rules::format_errors(&e)));
        let parent = |exe: &str| json!([{"pid": 1, "exe": exe, "argv": [exe]}]);
        assert_eq!(
            fired(
                &mut s,
                &exec(2, "/bin/zsh", &["zsh"], 1, parent("/usr/sbin/sshd"))
            ),
            ["Shell"]
        );
        assert_eq!(
            fired(
                &mut s,
                &exec(2, "/bin/bash", &["bash"], 1, parent("/usr/sbin/sshd"))
            ),
            ["Shell"]
        );
        assert!(fired(
            &mut s,
            &exec(2, "/bin/bash", &["bash"], 1, parent("/usr/sbin/cron"))
        )
        .is_empty());
        assert!(fired(
            &mut s,
            &exec(2, "/bin/ls", &["ls"], 1, parent("/usr/sbin/cron"))
        )
        .is_empty());
        assert_eq!(s.len(), 1, "Gone is disabled");
    }

    #[test]
    fn sequences_follow_the_tree_key_and_window() {
        let yaml = "- rule: Dropped\n  desc: d\n  priority: error\n  sequence:\n    window: 60s\n    steps:\n\
            \x20     - condition: evt.type = openat and evt.is_open_write = true\n        key: fd.name\n\
            \x20     - condition: evt.type = execve\n        key: proc.exepath\n";
        let sec = 1_000_000_000i64;
        let child_of = |pid: u32| json!([{"pid": pid, "exe": "/bin/sh", "argv": ["sh"]}]);
        let mut s = set(yaml);
        assert!(fired(&mut s, &open(100, "sh", "/tmp/x", true, sec)).is_empty());
        assert!(
            fired(&mut s, &exec(101, "/tmp/y", &["y"], 2 * sec, child_of(100))).is_empty(),
            "other file"
        );
        assert!(
            fired(&mut s, &exec(201, "/tmp/x", &["x"], 2 * sec, child_of(200))).is_empty(),
            "other tree"
        );
        assert_eq!(
            fired(&mut s, &exec(101, "/tmp/x", &["x"], 3 * sec, child_of(100))),
            ["Dropped"]
        );
        let mut s = set(yaml);
        fired(&mut s, &open(100, "sh", "/tmp/x", true, sec));
        assert!(
            fired(
                &mut s,
                &exec(101, "/tmp/x", &["x"], 62 * sec, child_of(100))
            )
            .is_empty(),
            "window"
        );
        // Fetched by one child of a shell, run by another.
        let mut s = set(yaml);
        let mut write = open(301, "curl", "/tmp/z", true, sec);
        write.process.ppid = 300;
        assert!(fired(&mut s, &write).is_empty());
        assert_eq!(
            fired(&mut s, &exec(302, "/tmp/z", &["z"], 2 * sec, child_of(300))),
            ["Dropped"]
        );
        assert!(
            fired(&mut s, &exec(303, "/tmp/z", &["z"], 3 * sec, child_of(300))).is_empty(),
            "closed"
        );
    }

    #[test]
    fn dedup_folds_repeats_into_a_counted_summary() {
        let mut s = set(&(rule("r", "fd.name = /etc/shadow") + "  dedup: 10s\n"));
        let sec = 1_000_000_000i64;
        let mut hits = Vec::new();
        for t in 0..4 {
            s.matches(&open(5, "cat", "/etc/shadow", false, t * sec), &mut hits);
        }
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].count, 1);
        s.tick(5 * sec, &mut hits);
        assert_eq!(hits.len(), 1, "window still open");
        s.tick(11 * sec, &mut hits);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[1].count, 3);
        assert!(hits[1].event.is_some());
        assert_eq!(s.counters.dedup_suppressed, 3);
    }

    fn dup_onto(pid: u32, newfd: i64, t: i64) -> Event {
        let body = json!({"type": "network", "op": "dup", "syscall": "dup2", "fd": newfd,
            "result": newfd, "in_progress": false,
            "dup": {"oldfd": 3, "newfd": newfd, "flags": 0, "family": "inet"}});
        event(
            body,
            process(pid, "curl", "/usr/bin/curl", &["curl"]),
            t,
            json!([]),
        )
    }

    #[test]
    fn default_reverse_shell_sequence_is_connect_dup_then_shell() {
        let sec = 1_000_000_000i64;
        let rule = "Reverse shell sequence".to_string();
        let shell = |pid, t| {
            exec(
                pid,
                "/usr/bin/bash",
                &["bash", "-i"],
                t,
                json!([{"pid": 1, "exe": "/sbin/init", "argv": ["init"]}]),
            )
        };
        let run = |steps: Vec<Event>| {
            let mut s = RuleSet::embedded_default();
            steps
                .iter()
                .map(|e| fired(&mut s, e).contains(&rule))
                .collect::<Vec<bool>>()
        };
        // (connect to, dup onto fd, shell's pid, shell's second) → fires?
        // Only a public address with its socket on stdin, then a shell in
        // the same process within 30 s; each other row is a near miss.
        let cases = [
            ("203.0.113.5", Some(0), 600, 3, true),
            ("10.0.0.5", Some(0), 600, 3, false),
            ("203.0.113.5", None, 600, 3, false),
            ("203.0.113.5", Some(1), 600, 3, false),
            ("203.0.113.5", Some(0), 601, 3, false),
            ("203.0.113.5", Some(0), 600, 40, false),
        ];
        for (addr, fd, shell_pid, at, want) in cases {
            let mut steps = vec![connect(600, addr, 443, sec)];
            steps.extend(fd.map(|fd| dup_onto(600, fd, 2 * sec)));
            steps.push(shell(shell_pid, at * sec));
            let got = run(steps);
            assert_eq!(got.last(), Some(&want), "{addr} {fd:?} {shell_pid} {at}");
            assert!(
                got[..got.len() - 1].iter().all(|f| !f),
                "only the shell fires"
            );
        }
    }

    #[test]
    fn default_rules_are_all_indexed_by_event_type() {
        let s = RuleSet::embedded_default();
        assert!(s.len() >= 25);
        assert_eq!(s.unindexed().collect::<Vec<_>>(), Vec::<&str>::new());
        for r in s.rules() {
            assert!(
                r.tags.iter().any(|t| t.starts_with('T')),
                "{} has a MITRE id",
                r.name
            );
        }
    }

    #[test]
    fn falco_upstream_rules_load_or_are_skipped_with_reasons() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/falco/");
        let text = std::fs::read_to_string(format!("{dir}falco_rules.yaml")).unwrap();
        let src = [("falco_rules.yaml".to_string(), text)];
        let strict = RuleSet::from_sources(&src, LoadOptions::default()).unwrap_err();
        assert!(
            strict.iter().all(|e| e.message.contains("unsupported")),
            "{strict:#?}"
        );
        let s = RuleSet::from_sources(
            &src,
            LoadOptions {
                unsupported: Unsupported::Skip,
            },
        )
        .unwrap();
        assert!(s.len() >= 20, "{} compiled", s.len());
        assert_eq!(s.len() + s.skipped.len(), 25);
        assert!(s
            .skipped
            .iter()
            .all(|k| k.reason.starts_with("falco_rules.yaml:")));
        // `absent` loads every rule and says which lean on missing fields.
        let s = RuleSet::from_sources(
            &src,
            LoadOptions {
                unsupported: Unsupported::Absent,
            },
        )
        .unwrap();
        assert_eq!(s.len(), 25);
        assert_eq!(s.partial.len(), strict.len());
    }

    #[test]
    fn absent_fields_fail_every_test() {
        let yaml = rule("Tested", "proc.name = curl and container.privileged = true")
            + &rule("Negated", "proc.name = curl and not proc.env contains x")
            + &rule("Unfollowed", "evt.type = mkdir or proc.name = curl");
        let src = [("t.yaml".to_string(), yaml)];
        assert!(RuleSet::from_sources(&src, LoadOptions::default()).is_err());
        let mut s = RuleSet::from_sources(
            &src,
            LoadOptions {
                unsupported: Unsupported::Absent,
            },
        )
        .unwrap();
        assert_eq!(s.partial.len(), 3);
        let e = exec(5, "/usr/bin/curl", &["curl"], 1, json!([]));
        assert_eq!(fired(&mut s, &e), ["Negated", "Unfollowed"]);
    }
}
