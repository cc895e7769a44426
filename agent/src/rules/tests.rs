//! The rule language end to end, on events built in the test: every
//! operator, load errors at their place, lists, macros, append/override
//! and exceptions across files, sequences, dedup, the evt.type index, and
//! Falco's own rule files.
use serde_json::{json, Value};

use super::{engine::*, LoadOptions, Matcher, Unsupported};
use crate::event::Event;

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
fn threshold_fires_on_distinct_values_within_a_sliding_window() {
    let mut s = set(&(rule("burst", "evt.type = openat and fd.directory = /data")
        + "  threshold:\n    count: 3\n    window: 10s\n    by: [proc.pid]\n    distinct: fd.name\n"));
    let sec = 1_000_000_000i64;
    let f = |pid, name: &str, t| open(pid, "rm", &format!("/data/{name}"), true, t);
    // The same file again and again is one value.
    for t in 0..5 {
        assert!(fired(&mut s, &f(7, "a", t * sec)).is_empty());
    }
    assert!(fired(&mut s, &f(7, "b", 5 * sec)).is_empty());
    // Another process's files are another key.
    assert!(fired(&mut s, &f(8, "c", 5 * sec)).is_empty());
    // "a" (seen first at 0 s) has left the window by 11 s: two values.
    assert!(fired(&mut s, &f(7, "c", 11 * sec)).is_empty());
    assert_eq!(fired(&mut s, &f(7, "d", 12 * sec)), ["burst"]);
    // Reaching the count starts the key's count again.
    assert!(fired(&mut s, &f(7, "e", 12 * sec)).is_empty());
    assert!(fired(&mut s, &f(7, "g", 13 * sec)).is_empty());
    assert_eq!(fired(&mut s, &f(7, "h", 13 * sec)), ["burst"]);
    // The window is sliding, not fixed: 2 before a boundary and 1 after.
    assert!(fired(&mut s, &f(9, "x", 9 * sec)).is_empty());
    assert!(fired(&mut s, &f(9, "y", 10 * sec)).is_empty());
    assert_eq!(fired(&mut s, &f(9, "z", 11 * sec)), ["burst"]);
    // Ticks forget what left the window.
    assert!(fired(&mut s, &f(10, "p", 20 * sec)).is_empty());
    assert!(fired(&mut s, &f(10, "q", 20 * sec)).is_empty());
    s.tick(40 * sec, &mut Vec::new());
    assert!(fired(&mut s, &f(10, "r", 41 * sec)).is_empty());
    assert_eq!(s.counters.threshold_untracked, 0);
}

#[test]
fn threshold_without_distinct_counts_every_match_and_errors_name_the_place() {
    let mut s =
        set(&(rule("many", "evt.type = openat") + "  threshold:\n    count: 2\n    window: 1s\n"));
    assert!(fired(&mut s, &open(1, "cat", "/x", false, 0)).is_empty());
    // No `by`: one key for all processes.
    assert_eq!(fired(&mut s, &open(2, "cat", "/x", false, 1)), ["many"]);

    let base = rule("t", "evt.type = openat");
    for (threshold, want) in [
        (
            "  threshold:\n    count: 1\n    window: 1s\n",
            "t.yaml:6:12: `threshold.count` must be a whole number from 2 to 10000",
        ),
        (
            "  threshold:\n    window: 1s\n",
            "t.yaml:6:11: `threshold` needs a `count`",
        ),
        (
            "  threshold:\n    count: 5\n",
            "t.yaml:6:10: `threshold` needs a `window`",
        ),
        (
            "  threshold:\n    count: 5\n    window: soon\n",
            "t.yaml:7:13: `threshold.window` must be a duration",
        ),
        (
            "  threshold:\n    count: 5\n    window: 1s\n    every: 2\n",
            "t.yaml:8:12: unknown threshold key `every`",
        ),
        (
            "  threshold:\n    count: 5\n    window: 25h\n",
            "t.yaml:7:13: `threshold.window` must be longer than 0 and at most 24h",
        ),
        (
            "  threshold:\n    count: 5\n    window: 1s\n    by: [proc.nosuch]\n",
            "t.yaml:8:10: ",
        ),
        ("  threshold: 5\n", "`threshold` must be a map"),
    ] {
        let e = errors(&(base.clone() + threshold));
        assert!(e.contains(want), "{threshold:?}: {e}");
    }
    let seq = "- rule: s\n  priority: warning\n  sequence:\n    window: 1s\n    steps:\n      - condition: evt.type = openat\n      - condition: evt.type = openat\n  threshold:\n    count: 2\n    window: 1s\n";
    assert!(errors(seq).contains("both `sequence` and `threshold`"));
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

/// Falco's open_read/open_write macros require `fd.num >= 0`: an open's
/// descriptor. Without it every upstream file rule loads and never fires.
#[test]
fn falco_upstream_file_rules_fire_on_successful_opens_only() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/falco/");
    let text = std::fs::read_to_string(format!("{dir}falco_rules.yaml")).unwrap();
    let mut s = RuleSet::from_sources(
        &[("falco_rules.yaml".to_string(), text)],
        LoadOptions {
            unsupported: Unsupported::Absent,
        },
    )
    .unwrap();
    // Numbered as the agent numbers events, from 1: Falco's never_true
    // macro is `evt.num = 0`.
    let mut read = open(40, "cat", "/etc/shadow", false, 1);
    read.num = 1;
    assert_eq!(fired(&mut s, &read), vec!["Read sensitive file untrusted"]);
    let mut refused = open(41, "cat", "/etc/shadow", false, 2);
    refused.num = 2;
    if let crate::event::EventBody::File(f) = &mut refused.body {
        f.result = -13;
    }
    assert!(
        fired(&mut s, &refused).is_empty(),
        "a failed open has no fd"
    );
    let mut truncated = open(42, "sh", "/var/log/auth.log", true, 3);
    truncated.num = 3;
    if let crate::event::EventBody::File(f) = &mut truncated.body {
        let o = f.open.as_mut().unwrap();
        o.truncate = true;
        o.names.push("O_TRUNC");
        f.flags = 0o1101; // O_WRONLY | O_CREAT | O_TRUNC
    }
    let hits = fired(&mut s, &truncated);
    assert!(
        hits.contains(&"Clear Log Activities".to_string()),
        "{hits:?}"
    );
}

#[test]
fn absent_fields_fail_every_test() {
    let yaml = rule("Tested", "proc.name = curl and container.mount.mode = rw")
        + &rule("Negated", "proc.name = curl and not proc.aenv contains x")
        + &rule(
            "Unfollowed",
            "evt.type = process_vm_writev or proc.name = curl",
        );
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

/// Events that exercise the default rules' lists and paths: every
/// combination of a few programs, files and ancestries, and the recorded
/// benign mix.
fn varied_events() -> Vec<Event> {
    use std::io::BufRead;
    let comms = [
        "bash", "nginx", "apt", "cat", "passwd", "useradd", "nc", "python3", "sshd", "vi",
    ];
    let paths = [
        "/etc/shadow",
        "/etc/passwd",
        "/etc/ld.so.preload",
        "/etc/sudoers.d/x",
        "/usr/bin/x",
        "/root/.ssh/id_rsa",
        "/root/.ssh/id_rsa.pub",
        "/tmp/x",
        "/var/log/syslog",
        "/home/a/.bash_history",
        "/etc/cron.d/x",
        "/etc/systemd/system/x.service",
        "/sys/fs/cgroup/x/release_agent",
        "/",
    ];
    let mut out = Vec::new();
    let mut t = 1_000;
    for comm in comms {
        for path in paths {
            for write in [false, true] {
                t += 1;
                out.push(open(t as u32, comm, path, write, t));
            }
        }
        for parent in comms {
            t += 1;
            let ancestry = json!([{"pid": 2, "comm": parent, "exe": format!("/usr/sbin/{parent}"),
                                   "argv": [parent]}]);
            out.push(exec(
                t as u32,
                &format!("/usr/bin/{comm}"),
                &[comm, "-c", "cat /dev/tcp/1.2.3.4/80"],
                t,
                ancestry,
            ));
            out.push(exec(
                t as u32,
                &format!("/tmp/{comm}"),
                &[comm],
                t,
                json!([]),
            ));
        }
    }
    for (ip, port) in [("1.2.3.4", 3333), ("10.0.0.1", 80), ("8.8.8.8", 4444)] {
        t += 1;
        out.push(connect(t as u32, ip, port, t));
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/baseline/benign.jsonl.gz"
    );
    let f = std::fs::File::open(path).unwrap();
    out.extend(
        std::io::BufReader::new(flate2::read::GzDecoder::new(f))
            .lines()
            .filter_map(|l| Event::from_recorded_line(&l.ok()?).ok().flatten()),
    );
    out
}

/// The index (per-type specialization, keys, gates, families of tests)
/// only skips work: on every event it fires exactly the rules that
/// evaluating every rule's whole condition fires.
#[test]
fn the_index_fires_what_every_condition_says() {
    let falco = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/falco/falco_rules.yaml"
    ))
    .unwrap();
    let extra = rule(
        "Named",
        "proc.name in (bash, cat) and not proc.name in (cat, vi)",
    ) + &rule(
        "Below",
        "fd.name pmatch (/etc, /root/.ssh) and not fd.name pmatch (/etc/cron.d)",
    ) + &rule(
        "One",
        "evt.type in (openat, execve) and (proc.name = nginx or fd.directory = /tmp)",
    ) + &rule(
        "Parents",
        "proc.aname in (nginx, sshd) and not proc.name = bash",
    );
    // (set, how many of its rules the events fire at least)
    let sets = [
        (RuleSet::embedded_default(), 8),
        (
            RuleSet::from_sources(
                &[("falco_rules.yaml".into(), falco)],
                LoadOptions {
                    unsupported: Unsupported::Absent,
                },
            )
            .unwrap(),
            0,
        ),
        (set(&extra), 4),
    ];
    let events = varied_events();
    for (mut s, least) in sets {
        let mut fired_rules = std::collections::BTreeSet::new();
        for ev in &events {
            let (naive, indexed) = s.firing_naively(ev);
            assert_eq!(indexed, naive, "{ev:?}");
            fired_rules.extend(naive);
        }
        // The events reach the rules: the comparison is not vacuous.
        assert!(
            fired_rules.len() >= least,
            "{} of {:?}",
            fired_rules.len(),
            s
        );
    }
}

#[test]
fn hostile_rule_files_are_refused_within_budgets() {
    let t = std::time::Instant::now();
    // YAML aliases that double at every level.
    let mut src = String::from("- list: l0\n  items: &a0 [x, x]\n");
    for i in 1..40 {
        src.push_str(&format!(
            "- list: l{i}\n  items: &a{i} [*a{}, *a{}]\n",
            i - 1,
            i - 1
        ));
    }
    let e = errors(&src);
    assert!(e.contains("more than 1000000 nodes"), "{e}");
    // Lists of lists that double at every step.
    let mut src = String::from("- list: l0\n  items: [a, b]\n");
    for i in 1..40 {
        src.push_str(&format!(
            "- list: l{i}\n  items: [l{}, l{}]\n",
            i - 1,
            i - 1
        ));
    }
    let e = errors(&src);
    assert!(e.contains("expands to more than 100000 items"), "{e}");
    // Macros that double at every step.
    let mut src = String::from("- macro: m0\n  condition: proc.name = a\n");
    for i in 1..40 {
        src.push_str(&format!(
            "- macro: m{i}\n  condition: (m{} or m{})\n",
            i - 1,
            i - 1
        ));
    }
    src.push_str("- rule: r\n  desc: d\n  priority: info\n  output: o\n  condition: evt.type = execve and m39\n");
    let e = errors(&src);
    assert!(e.contains("expands to more than 200000 tests"), "{e}");
    assert!(
        t.elapsed().as_secs() < 20,
        "bounded work: {:?}",
        t.elapsed()
    );
}

#[test]
fn a_path_longer_than_the_probe_keeps_is_visible_to_rules() {
    let mut s = set(&rule(
        "Padded path",
        "evt.type in (open, openat) and fd.name_truncated = true",
    ));
    let short = open(1, "cat", "/etc/hostname", false, 1);
    assert!(fired(&mut s, &short).is_empty());
    let mut long = open(1, "cat", &format!("/{}", "./".repeat(600)), false, 2);
    if let crate::event::EventBody::File(f) = &mut long.body {
        f.path_truncated = true;
    }
    assert_eq!(fired(&mut s, &long), ["Padded path"]);
}
