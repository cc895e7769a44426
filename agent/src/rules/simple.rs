//! The minimal rule language: YAML `- rule:` entries with a structured
//! `match:` on event type, executable path and argument substrings.
//!
//! ```yaml
//! - rule: Execution from a temporary directory
//!   desc: A binary under /tmp, /var/tmp or /dev/shm was executed.
//!   priority: WARNING
//!   match:
//!     event: exec
//!     exe_startswith: [/tmp/, /var/tmp/, /dev/shm/]
//!   output: "Executed from temp dir (exe=%proc.exe cmdline=%proc.cmdline)"
//!   tags: [execution]
//! ```
//!
//! Every check happens while deserializing, so serde_yaml_ng reports the
//! line and column of the offending node.
use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use agent_ebpf::EventKind;
use serde::{de, Deserialize, Deserializer};
use vigil_proto::v1::Severity;

use super::{Matcher, RuleError, RuleMeta, Template};
use crate::event::{Event, EventBody};

/// The rules shipped in the binary, used when no `--rules` is given.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.yaml");
/// Name under which the embedded rules appear in errors and alerts.
pub const DEFAULT_RULES_ORIGIN: &str = "<embedded>/rules/default.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    rule: String,
    #[serde(default)]
    desc: String,
    #[serde(deserialize_with = "severity")]
    priority: Severity,
    #[serde(rename = "match")]
    spec: MatchSpec,
    #[serde(default)]
    output: Option<Template>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    let s = String::deserialize(d)?;
    Severity::parse_name(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "`priority`: unknown priority `{s}`; expected one of emergency, alert, critical, error, warning, notice, informational, debug"
        ))
    })
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        Template::parse(&String::deserialize(d)?)
            .map_err(|e| de::Error::custom(format!("`output`: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EventType {
    Exec,
    Fork,
    Exit,
    File,
    Control,
    Network,
}

impl EventType {
    fn kind(self) -> EventKind {
        match self {
            EventType::Exec => EventKind::Exec,
            EventType::Fork => EventKind::Fork,
            EventType::Exit => EventKind::Exit,
            EventType::File => EventKind::File,
            EventType::Control => EventKind::Control,
            EventType::Network => EventKind::Network,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(deserialize_with = "one_or_many")]
    event: Vec<EventType>,
    #[serde(default)]
    exe: Vec<String>,
    #[serde(default)]
    exe_startswith: Vec<String>,
    #[serde(default)]
    args_contain: Vec<String>,
    #[serde(default)]
    path_startswith: Vec<String>,
    #[serde(default)]
    op: Vec<FileOpName>,
    #[serde(default)]
    control_op: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileOpName {
    Open,
    Unlink,
    Rmdir,
    Rename,
    Chmod,
    Chown,
    Link,
    Symlink,
    Mknod,
    Chdir,
}

impl FileOpName {
    fn name(self) -> &'static str {
        match self {
            FileOpName::Open => "open",
            FileOpName::Unlink => "unlink",
            FileOpName::Rmdir => "rmdir",
            FileOpName::Rename => "rename",
            FileOpName::Chmod => "chmod",
            FileOpName::Chown => "chown",
            FileOpName::Link => "link",
            FileOpName::Symlink => "symlink",
            FileOpName::Mknod => "mknod",
            FileOpName::Chdir => "chdir",
        }
    }
}

/// What a rule requires of an event. Empty lists do not constrain.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawMatch")]
struct MatchSpec {
    events: Vec<EventKind>,
    /// The executed path equals one of these.
    exe: Vec<String>,
    /// The executed path starts with one of these.
    exe_startswith: Vec<String>,
    /// Every one of these occurs in the arguments (argv[1..]).
    args_contain: Vec<String>,
    /// The file path (or a rename/link's new path) starts with one of these.
    path_startswith: Vec<String>,
    /// The file operation is one of these.
    ops: Vec<&'static str>,
    /// The control operation is one of these.
    control_ops: Vec<String>,
}

impl TryFrom<RawMatch> for MatchSpec {
    type Error = String;

    fn try_from(r: RawMatch) -> Result<MatchSpec, String> {
        Self::validate(r).map_err(|e| format!("`match`: {e}"))
    }
}

impl MatchSpec {
    fn validate(r: RawMatch) -> Result<MatchSpec, String> {
        if r.event.is_empty() {
            return Err(
                "`event` needs at least one of exec, fork, exit, file, control, network".into(),
            );
        }
        let exec_only =
            !(r.exe.is_empty() && r.exe_startswith.is_empty() && r.args_contain.is_empty());
        if exec_only && r.event.iter().any(|e| *e != EventType::Exec) {
            return Err("`exe`, `exe_startswith` and `args_contain` apply to exec events only; use `event: exec`".into());
        }
        let file_only = !(r.path_startswith.is_empty() && r.op.is_empty());
        if file_only && r.event.iter().any(|e| *e != EventType::File) {
            return Err(
                "`path_startswith` and `op` apply to file events only; use `event: file`".into(),
            );
        }
        const CONTROL_OPS: [&str; 14] = [
            "capset",
            "setuid",
            "setgid",
            "ptrace",
            "memfd_create",
            "module_load",
            "module_unload",
            "bpf",
            "mount",
            "umount",
            "unshare",
            "setns",
            "chroot",
            "prctl",
        ];
        if !r.control_op.is_empty() && r.event.iter().any(|e| *e != EventType::Control) {
            return Err("`control_op` applies to control events only; use `event: control`".into());
        }
        if let Some(bad) = r
            .control_op
            .iter()
            .find(|o| !CONTROL_OPS.contains(&o.as_str()))
        {
            return Err(format!(
                "unknown control_op `{bad}`; expected one of {}",
                CONTROL_OPS.join(", ")
            ));
        }
        let paths = r
            .exe
            .iter()
            .chain(&r.exe_startswith)
            .chain(&r.path_startswith);
        if let Some(bad) = paths.clone().find(|p| !p.starts_with('/')) {
            return Err(format!("path `{bad}` must be absolute"));
        }
        if r.args_contain.iter().any(String::is_empty) {
            return Err("`args_contain` has an empty string, which would match everything".into());
        }
        Ok(MatchSpec {
            events: r.event.into_iter().map(EventType::kind).collect(),
            exe: r.exe,
            exe_startswith: r.exe_startswith,
            args_contain: r.args_contain,
            path_startswith: r.path_startswith,
            ops: r.op.into_iter().map(FileOpName::name).collect(),
            control_ops: r.control_op,
        })
    }
}

impl MatchSpec {
    fn matches(&self, ev: &Event) -> bool {
        match &ev.body {
            EventBody::Exec(x) => {
                (self.exe.is_empty() || self.exe.iter().any(|e| e == x.exe_path()))
                    && (self.exe_startswith.is_empty()
                        || self
                            .exe_startswith
                            .iter()
                            .any(|p| x.exe_path().starts_with(p.as_str())))
                    && self
                        .args_contain
                        .iter()
                        .all(|s| x.argv.iter().skip(1).any(|a| a.contains(s.as_str())))
            }
            EventBody::File(f) => {
                (self.ops.is_empty() || self.ops.contains(&f.op))
                    && (self.path_startswith.is_empty()
                        || self.path_startswith.iter().any(|p| {
                            f.path.starts_with(p.as_str())
                                || f.new_path
                                    .as_ref()
                                    .is_some_and(|n| n.starts_with(p.as_str()))
                        }))
            }
            EventBody::Control(c) => {
                self.control_ops.is_empty() || self.control_ops.iter().any(|o| o == c.op)
            }
            EventBody::Fork(_) | EventBody::Exit(_) | EventBody::Network(_) => true,
        }
    }
}

/// Accepts `event: exec` as well as `event: [exec, fork]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EventType>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<EventType>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(
                "an event type (exec, fork, exit, file, control, network) or a list of them",
            )
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            EventType::deserialize(de::value::StrDeserializer::<E>::new(s)).map(|e| vec![e])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut v = Vec::new();
            while let Some(e) = seq.next_element()? {
                v.push(e);
            }
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

struct CompiledRule {
    meta: RuleMeta,
    spec: MatchSpec,
}

/// A loaded, validated set of rules, indexed by event kind.
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    by_kind: HashMap<u32, Vec<usize>>,
    /// Files the set was loaded from, for logs.
    pub sources: Vec<String>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl RuleSet {
    /// The rules embedded in the agent binary.
    pub fn embedded_default() -> RuleSet {
        Self::from_sources(&[(DEFAULT_RULES_ORIGIN.to_string(), DEFAULT_RULES.to_string())])
            .expect("embedded default rules are valid (checked by tests)")
    }

    /// Loads rule files and directories (their `*.yaml`/`*.yml` files, in
    /// name order), in the order given.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RuleError> {
        let mut sources = Vec::new();
        for p in paths {
            for file in rule_files(p)? {
                let text = fs::read_to_string(&file).map_err(|e| {
                    RuleError::whole_file(&file, format!("cannot read rule file: {e}"))
                })?;
                sources.push((file.display().to_string(), text));
            }
        }
        Self::from_sources(&sources)
    }

    /// Parses `(origin, text)` pairs; origins name the text in errors.
    pub fn from_sources(sources: &[(String, String)]) -> Result<RuleSet, RuleError> {
        let mut rules: Vec<CompiledRule> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (origin, text) in sources {
            let mut in_file: HashMap<String, usize> = HashMap::new();
            for doc in parse_file(origin, text)? {
                let nth = in_file.entry(doc.rule.clone()).or_default();
                let line = rule_line(text, &doc.rule, *nth);
                *nth += 1;
                let here = format!("{origin}:{line}");
                if let Some(first) = seen.insert(doc.rule.clone(), here.clone()) {
                    return Err(RuleError {
                        path: origin.clone(),
                        line,
                        column: 0,
                        message: format!("rule `{}` is already defined at {first}", doc.rule),
                    });
                }
                if !doc.enabled {
                    continue;
                }
                let output = doc.output.unwrap_or_else(|| default_output(&doc.rule));
                rules.push(CompiledRule {
                    meta: RuleMeta {
                        name: doc.rule,
                        desc: doc.desc,
                        severity: doc.priority,
                        tags: doc.tags,
                        output,
                        origin: here,
                    },
                    spec: doc.spec,
                });
            }
        }
        let mut by_kind: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.spec.events {
                by_kind.entry(*k as u32).or_default().push(i);
            }
        }
        Ok(RuleSet {
            rules,
            by_kind,
            sources: sources.iter().map(|(o, _)| o.clone()).collect(),
        })
    }

    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.rules.iter().map(|r| &r.meta)
    }
}

impl Matcher for RuleSet {
    fn matches<'a>(&'a self, event: &Event, out: &mut Vec<&'a RuleMeta>) {
        let Some(idx) = self.by_kind.get(&(event.body.kind() as u32)) else {
            return;
        };
        for &i in idx {
            let r = &self.rules[i];
            if r.spec.matches(event) {
                out.push(&r.meta);
            }
        }
    }

    fn len(&self) -> usize {
        self.rules.len()
    }
}

fn default_output(rule: &str) -> Template {
    let text = format!(
        "{} (evt.type=%evt.type proc.exe=%proc.exe proc.cmdline=%proc.cmdline proc.pid=%proc.pid proc.ppid=%proc.ppid user.uid=%user.uid)",
        rule.replace('%', "%%")
    );
    Template::parse(&text).expect("fields are known")
}

fn rule_files(path: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let meta = fs::metadata(path)
        .map_err(|e| RuleError::whole_file(path, format!("cannot read rules path: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = fs::read_dir(path)
        .map_err(|e| RuleError::whole_file(path, format!("cannot list rules directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RuleError::whole_file(
            path,
            "no rule files (*.yaml, *.yml) in directory",
        ));
    }
    Ok(files)
}

fn parse_file(origin: &str, text: &str) -> Result<Vec<RuleDoc>, RuleError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_yaml_ng::from_str::<Option<Vec<RuleDoc>>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| yaml_error(origin, text, &e))
}

fn yaml_error(origin: &str, text: &str, e: &serde_yaml_ng::Error) -> RuleError {
    let (mut line, mut column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    // The parser appends its own position; ours leads the line instead.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let message = message.trim_start_matches('.').to_string();
    // serde_yaml_ng places errors raised by our validators at the enclosing
    // rule; they name their key as "`key`: ...", which we locate exactly.
    if let Some(key) = validator_key(&message) {
        if let Some((l, c)) = key_position(text, line, key) {
            (line, column) = (l, c);
        }
    }
    RuleError {
        path: origin.to_string(),
        line,
        column,
        message,
    }
}

/// The key a validator message starts with (after serde's path prefix).
fn validator_key(message: &str) -> Option<&str> {
    let m = message.split_once(": `").map_or(message, |(_, m)| m);
    let m = m.strip_prefix('`').unwrap_or(m);
    let (key, rest) = m.split_once('`')?;
    rest.starts_with(':').then_some(key)
}

/// 1-based (line, column) of the value of `key:` within the YAML list item
/// that starts at or before `from_line`.
fn key_position(text: &str, from_line: usize, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let start = from_line.checked_sub(1)?;
    for (i, l) in lines.iter().enumerate().skip(start) {
        if i > start && l.starts_with('-') {
            break;
        }
        let body = l.trim_start().trim_start_matches("- ");
        if let Some(rest) = body.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let key_col = l.len() - body.len();
            let value_col = key_col + key.len() + 1 + (rest.len() - rest.trim_start().len());
            return Some((i + 1, value_col + 1));
        }
    }
    None
}

/// Line of the `nth` (0-based) `rule:` key naming `name` (1-based; 0 if
/// not found).
fn rule_line(text: &str, name: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            l.strip_prefix("rule:")
                .is_some_and(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == name)
        })
        .nth(nth)
        .map_or(0, |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExecInfo, ProcessContext};

    fn exec(filename: &str, argv: &[&str]) -> Event {
        Event {
            time_unix_ns: 0,
            process: ProcessContext {
                pid: 10,
                tid: 10,
                ppid: 1,
                uid: 0,
                gid: 0,
                euid: Some(0),
                egid: Some(0),
                loginuid: Some(-1),
                comm: "x".into(),
                cgroup_id: 1,
                mnt_ns: None,
                pid_ns: None,
                start_boottime_ns: None,
                exe_deleted: false,
                detail: None,
            },
            ancestry: Vec::new(),
            container: None,
            body: EventBody::Exec(ExecInfo {
                exe: None,
                exe_unreachable: false,
                exe_memfd: false,
                exe_truncated: false,
                filename: filename.into(),
                filename_truncated: false,
                argv: argv.iter().map(|s| s.to_string()).collect(),
                argv_truncated: false,
                argv_unreadable: false,
                argv_bytes: 0,
                exe_file: None,
            }),
        }
    }

    fn load(text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::from_sources(&[("r.yaml".into(), text.into())])
    }

    fn names(rs: &RuleSet, ev: &Event) -> Vec<String> {
        let mut out = Vec::new();
        rs.matches(ev, &mut out);
        out.into_iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn default_rules_load_and_catch_tmp_exec() {
        let rs = RuleSet::embedded_default();
        assert!(rs.len() >= 1);
        let hits = names(&rs, &exec("/tmp/x/payload", &["/tmp/x/payload"]));
        assert!(
            hits.contains(&"Execution from a temporary directory".to_string()),
            "{hits:?}"
        );
        for dir in ["/var/tmp/a", "/dev/shm/b"] {
            assert!(!names(&rs, &exec(dir, &[dir])).is_empty(), "{dir}");
        }
        assert!(names(&rs, &exec("/usr/bin/true", &["true"])).is_empty());
        assert!(
            names(&rs, &exec("/tmpfoo/x", &["x"])).is_empty(),
            "prefix is the directory, not the string"
        );
    }

    #[test]
    fn args_contain_requires_every_substring_in_arguments() {
        let rs = load(
            "- rule: marker\n  priority: notice\n  match:\n    event: exec\n    args_contain: [--mark, abc]\n",
        )
        .unwrap();
        assert_eq!(
            names(&rs, &exec("/bin/x", &["/bin/x", "--marker", "zabcz"])),
            vec!["marker"]
        );
        assert!(names(&rs, &exec("/bin/x", &["/bin/x", "--marker"])).is_empty());
        // argv[0] is not an argument.
        assert!(names(&rs, &exec("/bin/x", &["--mark abc"])).is_empty());
    }

    #[test]
    fn output_template_renders_fields() {
        let rs = load(
            "- rule: r\n  priority: warning\n  match: {event: exec}\n  output: \"ran %proc.exe as %user.uid: %proc.cmdline\"\n",
        )
        .unwrap();
        let ev = exec("/bin/ls", &["ls", "-l", "/"]);
        let mut out = Vec::new();
        rs.matches(&ev, &mut out);
        assert_eq!(out[0].output.render(&ev), "ran /bin/ls as 0: x -l /");
        assert_eq!(out[0].severity, Severity::Warning);
        assert_eq!(out[0].origin, "r.yaml:1");
    }

    #[test]
    fn file_rules_match_op_and_path() {
        use crate::event::{file::open_flags, FileInfo};
        let rs = load(
            "- rule: etc write\n  priority: error\n  match:\n    event: file\n    op: [open, rename]\n    path_startswith: [/etc/]\n  output: \"%fd.name by %proc.name\"\n",
        )
        .unwrap();
        let mut ev = exec("/bin/x", &["x"]);
        let file = |op: &'static str, path: &str, new_path: Option<&str>| FileInfo {
            op,
            syscall: "openat".into(),
            path: path.into(),
            new_path: new_path.map(Into::into),
            target: None,
            open: Some(open_flags(1)),
            flags: 1,
            mode: None,
            uid: None,
            gid: None,
            result: 3,
            error: None,
            path_truncated: false,
            path_unresolved: false,
        };
        ev.body = EventBody::File(file("open", "/etc/passwd", None));
        let mut out = Vec::new();
        rs.matches(&ev, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output.render(&ev), "/etc/passwd by x");
        ev.body = EventBody::File(file("rename", "/tmp/x", Some("/etc/cron.d/x")));
        assert_eq!(names(&rs, &ev), vec!["etc write"], "the new name counts");
        ev.body = EventBody::File(file("unlink", "/etc/passwd", None));
        assert!(names(&rs, &ev).is_empty(), "op filters");
        ev.body = EventBody::File(file("open", "/home/x", None));
        assert!(names(&rs, &ev).is_empty());

        let e = err("- rule: r\n  priority: info\n  match:\n    event: exec\n    path_startswith: [/etc/]\n");
        assert!(e.message.contains("file events only"), "{e}");
        let e = err("- rule: r\n  priority: info\n  match:\n    event: file\n    op: [write]\n");
        assert!(e.message.contains("write"), "{e}");
    }

    #[test]
    fn disabled_rules_do_not_match() {
        let rs =
            load("- rule: r\n  priority: info\n  enabled: false\n  match: {event: [exec, exit]}\n")
                .unwrap();
        assert!(rs.is_empty());
    }

    fn err(text: &str) -> RuleError {
        load(text).unwrap_err()
    }

    #[test]
    fn unknown_field_is_located() {
        let e = err(
            "- rule: r\n  priority: info\n  match:\n    event: exec\n    exe_prefix: [/tmp/]\n",
        );
        assert_eq!((e.line, e.column), (5, 5), "{e}");
        assert!(e.message.contains("unknown field `exe_prefix`"), "{e}");
        assert!(e.to_string().starts_with("r.yaml:5:5: "), "{e}");
    }

    #[test]
    fn bad_priority_event_and_output_are_located() {
        let e = err("- rule: r\n  priority: loud\n  match: {event: exec}\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("unknown priority `loud`"), "{e}");

        let e = err("- rule: r\n  priority: info\n  match:\n    event: [exec, open]\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("open"), "{e}");

        let e =
            err("- rule: r\n  priority: info\n  match: {event: exec}\n  output: \"%proc.nope\"\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("%proc.nope"), "{e}");
    }

    #[test]
    fn semantic_errors_in_match_are_located() {
        let e = err("- rule: r\n  priority: info\n  match:\n    event: fork\n    exe: [/bin/sh]\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("exec events only"), "{e}");
        let e = err(
            "- rule: r\n  priority: info\n  match:\n    event: exec\n    exe_startswith: [tmp/]\n",
        );
        assert!(e.message.contains("must be absolute"), "{e}");
    }

    #[test]
    fn syntax_error_and_missing_fields_are_located() {
        let e = err("- rule: r\n  priority: [info\n");
        assert!(e.line >= 2, "{e}");
        let e = err("- rule: r\n  match: {event: exec}\n");
        assert!(e.message.contains("missing field `priority`"), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn duplicate_rule_names_name_both_places() {
        let text = "- rule: a\n  priority: info\n  match: {event: exec}\n- rule: a\n  priority: info\n  match: {event: exit}\n";
        let e = err(text);
        assert_eq!(e.line, 4);
        assert!(e.message.contains("already defined at r.yaml:1"), "{e}");
    }

    #[test]
    fn paths_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let e = RuleSet::load(&[dir.path().join("missing.yaml")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("missing.yaml: cannot read rules path"),
            "{e}"
        );
        let e = RuleSet::load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.message.contains("no rule files"), "{e}");

        fs::write(
            dir.path().join("b.yaml"),
            "- rule: b\n  priority: info\n  match: {event: exit}\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("a.yml"),
            "- rule: a\n  priority: info\n  match: {event: exit}\n",
        )
        .unwrap();
        fs::write(dir.path().join("notes.txt"), "not rules").unwrap();
        let rs = RuleSet::load(&[dir.path().to_path_buf()]).unwrap();
        let order: Vec<_> = rs.rules().map(|r| r.name.as_str()).collect();
        assert_eq!(order, vec!["a", "b"]);

        fs::write(
            dir.path().join("c.yaml"),
            "- rule: c\n  priority: info\n  match: {event: nope}\n",
        )
        .unwrap();
        let e = RuleSet::load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.path.ends_with("c.yaml") && e.line == 3, "{e}");
    }

    #[test]
    fn empty_file_is_no_rules() {
        assert!(load("").unwrap().is_empty());
        assert!(load("# only a comment\n").unwrap().is_empty());
    }
}
