//! What the loaded rules can match, as the probe can check it in the
//! kernel ([`KernelInterest`]): the syscalls any rule (or the agent itself)
//! needs, which of them may raise an alert, and for opens the flags and
//! path prefixes that can matter.
//!
//! Each rule's condition is read as an over-approximation under the
//! assumption `evt.type = T`, for each type `T` it is indexed under: a
//! test the kernel can check (open flags, a path's prefix, success)
//! narrows; any other test (`proc.name`, a negation, a suffix) is taken as
//! "may hold". So the kernel drops only what no rule can match.
use std::collections::{BTreeMap, BTreeSet};

use agent_ebpf::{file::FileOp, syscall::PATH_FILTER_BYTES};

use super::{
    engine::RuleSet,
    fields::{ArgName, FieldId},
    load::RuleKind,
    matcher::{Slots, Test, TestKind},
    program::{Op as Cond, Program},
};
use crate::{
    event::file::OpenFlagNames,
    event::flags::FlagTable,
    kernel::{
        interest::{Follow, KernelInterest, OpenClause},
        syscalls::{Op, Syscall, TABLE},
    },
};

/// Most clauses of the kernel's open filter, and most prefixes in all.
const MAX_CLAUSES: usize = agent_ebpf::syscall::OPEN_CLAUSES;
const MAX_PREFIXES: usize = 4000;
/// Clauses kept while combining one rule's condition, before collapsing.
const MAX_WORKING_CLAUSES: usize = 64;

/// Syscalls the agent follows for itself whatever the rules: the working
/// directory of every process (enrichment), and clone's flags (the fork
/// event).
const ALWAYS: &[&str] = &["chdir", "fchdir", "clone", "clone3"];

/// The kernel-side description of what `set` can match; with `everything`
/// (`--events`), every followed syscall unfiltered.
pub fn kernel_interest(set: &RuleSet, everything: bool) -> KernelInterest {
    let (rules, program, slots) = set.compiled();
    // The environment costs a copy per exec: only for a rule that tests it.
    let exec_env =
        (0..program.test_count()).any(|i| program.test(i as u32).field == FieldId::ProcEnv);
    if everything {
        return KernelInterest {
            exec_env,
            ..KernelInterest::everything()
        };
    }
    let mut out = KernelInterest {
        exec_env,
        ..KernelInterest::default()
    };
    for name in ALWAYS {
        if let Some(s) = Syscall::by_name(name) {
            out.syscalls.insert(s, Follow::default());
        }
    }
    let mut open_clauses: Vec<OpenClause> = Vec::new();
    for r in rules {
        // (condition, may it raise an alert by itself)
        let steps: Vec<(Cond, bool)> = match &r.kind {
            RuleKind::Single(c) => vec![(*c, true)],
            RuleKind::Sequence(s) => {
                let last = s.steps.len().saturating_sub(1);
                s.steps
                    .iter()
                    .enumerate()
                    .map(|(i, (c, _))| (*c, i == last))
                    .collect()
            }
        };
        for (cond, alerts) in steps {
            let types = program.evt_types(cond);
            if types.is_none() {
                out.notes.push(format!(
                    "rule `{}` has no evt.type condition: every followed syscall is reported for it",
                    r.meta.name
                ));
            }
            for def in TABLE {
                let Some(sc) = Syscall::by_name(def.name) else {
                    continue;
                };
                if !types.as_ref().is_none_or(|t| t.contains(def.name)) {
                    continue;
                }
                let approx = approximate(cond, program, def.name, slots);
                if approx.is_empty() {
                    continue;
                }
                let is_open = matches!(def.op, Op::File(FileOp::Open));
                let follow = out.syscalls.entry(sc).or_default();
                follow.wake |= alerts;
                // creat takes no flags argument: the kernel cannot test them.
                if is_open && def.args.implied_flags == 0 {
                    follow.open_filter = true;
                    for mut c in approx {
                        c.wake = alerts;
                        open_clauses.push(c);
                    }
                }
            }
        }
    }
    out.open = simplify(open_clauses, &mut out.notes);
    if out.open.iter().any(OpenClause::is_any) || out.open.is_empty() {
        // Some rule wants every open: no filter at all.
        let wake = out.open.iter().any(|c| c.wake);
        out.open.clear();
        for f in out.syscalls.values_mut() {
            if f.open_filter {
                f.open_filter = false;
                f.wake |= wake;
            }
        }
    }
    out
}

/// `cond` under `evt.type = ty`, as clauses the kernel can check (empty:
/// it cannot hold).
fn approximate(cond: Cond, program: &Program, ty: &str, slots: &Slots) -> Vec<OpenClause> {
    match cond {
        Cond::Const(true) => vec![OpenClause::any()],
        Cond::Const(false) => Vec::new(),
        Cond::Test(t) => test(program.test(t), ty, slots),
        // A negation may hold for anything the kernel cannot see.
        Cond::Not(_) => vec![OpenClause::any()],
        Cond::Or(..) => {
            let mut out = Vec::new();
            for &c in program.children(cond) {
                out.extend(approximate(c, program, ty, slots));
                if out.len() > MAX_WORKING_CLAUSES {
                    return vec![OpenClause::any()];
                }
            }
            out
        }
        Cond::And(..) => {
            let mut acc = vec![OpenClause::any()];
            for &c in program.children(cond) {
                let next = approximate(c, program, ty, slots);
                acc = and(&acc, &next);
                if acc.is_empty() {
                    return acc;
                }
                if acc.len() > MAX_WORKING_CLAUSES {
                    // Too many combinations: keep the first factor alone
                    // (still a superset of the conjunction).
                    return next;
                }
            }
            acc
        }
    }
}

/// Every pair of clauses, both required.
fn and(a: &[OpenClause], b: &[OpenClause]) -> Vec<OpenClause> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let prefixes = match (&x.prefixes, &y.prefixes) {
                (None, p) | (p, None) => p.clone(),
                // "Only paths the probe cannot place" (an empty set) with
                // anything: still only those.
                (Some(p), Some(q)) if p.is_empty() || q.is_empty() => Some(BTreeSet::new()),
                (Some(p), Some(q)) => {
                    // A path starting with one of p and one of q starts
                    // with the longer of two related prefixes.
                    let both: BTreeSet<String> = p
                        .iter()
                        .flat_map(|a| {
                            q.iter().filter_map(move |b| {
                                if a.starts_with(b.as_str()) {
                                    Some(a.clone())
                                } else if b.starts_with(a.as_str()) {
                                    Some(b.clone())
                                } else {
                                    None
                                }
                            })
                        })
                        .collect();
                    if both.is_empty() {
                        continue;
                    }
                    Some(both)
                }
            };
            let names = match (&x.names, &y.names) {
                (None, n) | (n, None) => n.clone(),
                (Some(a), Some(b)) => {
                    let both: BTreeSet<String> = a.intersection(b).cloned().collect();
                    if both.is_empty() {
                        continue;
                    }
                    Some(both)
                }
            };
            out.push(OpenClause {
                // One mask per clause: either requirement alone is a
                // superset of both.
                flags_any: if x.flags_any != 0 {
                    x.flags_any
                } else {
                    y.flags_any
                },
                prefixes,
                names,
                success_only: x.success_only || y.success_only,
                wake: false,
            });
        }
    }
    out
}

/// What one test says under `evt.type = ty`.
fn test(t: &Test, ty: &str, slots: &Slots) -> Vec<OpenClause> {
    let any = || vec![OpenClause::any()];
    let clause = |c: OpenClause| vec![c];
    // `evt.type` is known exactly here.
    if t.field == FieldId::EvtType {
        return if t.test_str(ty) != t.neg {
            any()
        } else {
            Vec::new()
        };
    }
    if t.neg {
        return any();
    }
    match (t.field, &t.kind) {
        (FieldId::EvtRes, TestKind::StrEq(v)) if &**v == "SUCCESS" => clause(OpenClause {
            success_only: true,
            ..OpenClause::any()
        }),
        (FieldId::EvtIsOpenWrite, TestKind::Bool(true)) => clause(OpenClause {
            flags_any: (libc::O_WRONLY | libc::O_RDWR) as u64,
            ..OpenClause::any()
        }),
        (FieldId::EvtIsOpenCreate, TestKind::Bool(true)) => clause(OpenClause {
            flags_any: (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u64,
            ..OpenClause::any()
        }),
        (FieldId::EvtArg, TestKind::Contains(name))
            if slots.get(t.slot).arg == Some(ArgName::Flags) =>
        {
            match open_flag_bits(name) {
                Some(bits) => clause(OpenClause {
                    flags_any: bits,
                    ..OpenClause::any()
                }),
                None => any(),
            }
        }
        // Only a path the probe cannot place (relative, or with a `..`
        // or `.` component) satisfies these: the probe always passes such
        // paths, so the clause passes nothing more.
        (FieldId::FdNameraw, TestKind::Contains(s)) if s.contains("/../") || s.contains("/./") => {
            clause(OpenClause {
                prefixes: Some(BTreeSet::new()),
                ..OpenClause::any()
            })
        }
        (FieldId::FdNameraw, TestKind::StartsWith(s))
            if s.starts_with("../") || s.starts_with("./") =>
        {
            clause(OpenClause {
                prefixes: Some(BTreeSet::new()),
                ..OpenClause::any()
            })
        }
        (FieldId::FdName | FieldId::FdNameraw, kind) => {
            match (path_prefixes(kind), last_components(kind)) {
                (None, None) => any(),
                (prefixes, names) => clause(OpenClause {
                    prefixes,
                    names,
                    ..OpenClause::any()
                }),
            }
        }
        (FieldId::FdFilename, TestKind::StrEq(v)) => match file_names([&**v]) {
            Some(n) => clause(OpenClause {
                names: Some(n),
                ..OpenClause::any()
            }),
            None => any(),
        },
        (FieldId::FdFilename, TestKind::StrIn(set)) => match file_names(set.iter().map(|v| &**v)) {
            Some(n) => clause(OpenClause {
                names: Some(n),
                ..OpenClause::any()
            }),
            None => any(),
        },
        // A path longer than the probe keeps is longer than the filter's
        // window, which the probe always passes: an empty prefix set
        // passes those and nothing the filter can place.
        (FieldId::FdNameTruncated, TestKind::Bool(true)) => clause(OpenClause {
            prefixes: Some(BTreeSet::new()),
            ..OpenClause::any()
        }),
        (FieldId::FdDirectory, TestKind::StrEq(d)) => clause(OpenClause {
            prefixes: Some([dir_prefix(d)].into()),
            ..OpenClause::any()
        }),
        (FieldId::FdDirectory, TestKind::StrIn(set)) => clause(OpenClause {
            prefixes: Some(set.iter().map(|d| dir_prefix(d)).collect()),
            ..OpenClause::any()
        }),
        _ => any(),
    }
}

/// The bits of open flag `name` (`O_TRUNC`), when one bit says it; None for
/// names that are not bits (`O_RDONLY`, which is zero) or unknown text.
fn open_flag_bits(name: &str) -> Option<u64> {
    match name {
        "O_WRONLY" => Some(libc::O_WRONLY as u64),
        "O_RDWR" => Some(libc::O_RDWR as u64),
        "O_TMPFILE" => Some((libc::O_TMPFILE & !libc::O_DIRECTORY) as u64),
        _ => OpenFlagNames::BITS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(b, _)| *b),
    }
}

/// The path prefixes a test on the path implies, if it implies any.
fn path_prefixes(kind: &TestKind) -> Option<BTreeSet<String>> {
    let set = match kind {
        TestKind::StrEq(v) | TestKind::StartsWith(v) => [v.to_string()].into(),
        TestKind::StrIn(set) => set.iter().map(|v| v.to_string()).collect(),
        TestKind::PrefixAny(_, pats) => pats.iter().map(|v| v.to_string()).collect(),
        TestKind::Pmatch(set, _) => set.iter().map(|v| v.to_string()).collect(),
        TestKind::Glob(toks, false) => {
            let lit: String = toks
                .iter()
                .map_while(|t| match t {
                    super::matcher::GlobTok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect();
            [lit].into()
        }
        _ => return None,
    };
    // Only absolute prefixes narrow anything ("" or "/" is any path).
    let set: BTreeSet<String> = set;
    if set.iter().any(|p| !p.starts_with('/') || p == "/") {
        return None;
    }
    Some(set)
}

/// The last path components a test on the whole path implies: an
/// `endswith` whose suffix holds a `/` (`/.aws/credentials` ends in the
/// component `credentials`), or a glob ending in a literal component
/// (`/proc/*/environ`).
fn last_components(kind: &TestKind) -> Option<BTreeSet<String>> {
    match kind {
        TestKind::EndsWith(v) => {
            let (_, name) = v.rsplit_once('/')?;
            file_names([name])
        }
        TestKind::Glob(toks, false) => {
            let mut tail: Vec<char> = Vec::new();
            for t in toks.iter().rev() {
                match t {
                    super::matcher::GlobTok::Lit('/') => {
                        tail.reverse();
                        let name: String = tail.into_iter().collect();
                        return file_names([name.as_str()]);
                    }
                    super::matcher::GlobTok::Lit(c) => tail.push(*c),
                    _ => return None,
                }
            }
            None
        }
        _ => None,
    }
}

/// File names the kernel's name test can hold: non-empty, without `/`,
/// short enough for its window with their NUL. None when any is not
/// (then the test says nothing the kernel can check).
fn file_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for n in names {
        if n.is_empty() || n.contains('/') || n.len() >= PATH_FILTER_BYTES {
            return None;
        }
        out.insert(n.to_string());
    }
    (!out.is_empty()).then_some(out)
}

fn dir_prefix(d: &str) -> String {
    if d.ends_with('/') {
        d.to_string()
    } else {
        format!("{d}/")
    }
}

/// Clauses merged into one: flags, success only, and for clauses with
/// names, their path prefixes (None: any path).
type MergeKey = (u64, bool, Option<Option<BTreeSet<String>>>);

/// Merges clauses that differ only in their paths, drops those another
/// one covers, and fits the result in the kernel's limits (widening it
/// where it must, with a note).
fn simplify(clauses: Vec<OpenClause>, notes: &mut Vec<String>) -> Vec<OpenClause> {
    // Same flags and success requirement: clauses without names become
    // one, paths together; clauses with names and the same paths (or any
    // path) become one, names together.
    let mut merged: BTreeMap<MergeKey, OpenClause> = BTreeMap::new();
    for c in clauses {
        let Some(names) = c.names.clone() else {
            let slot = merged
                .entry((c.flags_any, c.success_only, None))
                .or_insert_with(|| OpenClause {
                    prefixes: Some(BTreeSet::new()),
                    ..c.clone()
                });
            slot.wake |= c.wake;
            match (&mut slot.prefixes, c.prefixes) {
                (Some(p), Some(q)) => p.extend(q),
                (p, _) => *p = None,
            }
            continue;
        };
        let slot = merged
            .entry((c.flags_any, c.success_only, Some(c.prefixes.clone())))
            .or_insert_with(|| c.clone());
        slot.wake |= c.wake;
        if let Some(n) = &mut slot.names {
            n.extend(names);
        }
    }
    let mut list: Vec<OpenClause> = merged.into_values().collect();
    // Drop a clause that another passes whenever it does.
    let covers = |a: &OpenClause, b: &OpenClause| {
        let flags = a.flags_any == 0 || (b.flags_any != 0 && b.flags_any & !a.flags_any == 0);
        let success = !a.success_only || b.success_only;
        let paths = match (&a.prefixes, &b.prefixes) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(q)) => q
                .iter()
                .all(|x| p.iter().any(|y| x.starts_with(y.as_str()))),
        };
        let names = match (&a.names, &b.names) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(q)) => q.is_subset(p),
        };
        flags && success && paths && names
    };
    let mut i = 0;
    while i < list.len() {
        let covered = (0..list.len()).any(|j| {
            j != i && covers(&list[j], &list[i]) && (j < i || !covers(&list[i], &list[j]))
        });
        if covered {
            let wake = list[i].wake;
            list.remove(i);
            // Whoever covers it now also wakes for it.
            if wake {
                for c in list.iter_mut() {
                    c.wake = true;
                }
            }
        } else {
            i += 1;
        }
    }
    // Prefixes below another in the same clause add nothing.
    for c in list.iter_mut() {
        if let Some(p) = &mut c.prefixes {
            let all: Vec<String> = p.iter().cloned().collect();
            p.retain(|x| !all.iter().any(|y| y != x && x.starts_with(y.as_str())));
        }
    }
    // Names share the prefixes' map.
    let prefixes: usize = list
        .iter()
        .map(|c| {
            c.prefixes.as_ref().map_or(0, BTreeSet::len) + c.names.as_ref().map_or(0, BTreeSet::len)
        })
        .sum();
    if list.len() > MAX_CLAUSES || prefixes > MAX_PREFIXES {
        notes.push(format!(
            "the rules' open filter ({} clauses, {prefixes} path prefixes) is larger than the kernel's ({MAX_CLAUSES}, {MAX_PREFIXES}): every open is reported",
            list.len()
        ));
        return vec![OpenClause {
            wake: list.iter().any(|c| c.wake),
            ..OpenClause::any()
        }];
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::LoadOptions;

    fn set(yaml: &str) -> RuleSet {
        RuleSet::from_sources(&[("t.yaml".into(), yaml.into())], LoadOptions::default()).unwrap()
    }

    fn rule(name: &str, cond: &str) -> String {
        format!(
            "- rule: {name}\n  desc: d\n  priority: WARNING\n  output: o\n  condition: {cond}\n"
        )
    }

    fn followed(i: &KernelInterest) -> Vec<&'static str> {
        i.syscalls.keys().map(|s| s.name()).collect()
    }

    #[test]
    fn only_the_syscalls_rules_name_are_followed() {
        let i = kernel_interest(&set(&rule("r", "evt.type = ptrace")), false);
        let mut names = followed(&i);
        names.sort();
        assert_eq!(names, ["chdir", "clone", "clone3", "fchdir", "ptrace"]);
        assert!(i.syscalls[&Syscall::by_name("ptrace").unwrap()].wake);
        assert!(!i.syscalls[&Syscall::by_name("chdir").unwrap()].wake);
        let all = kernel_interest(&set(&rule("r", "evt.type = ptrace")), true);
        assert_eq!(
            all.syscalls.len(),
            TABLE.len(),
            "--events follows everything"
        );
    }

    #[test]
    fn reads_of_named_files_and_writes_anywhere() {
        let rules = [
            rule(
                "read",
                "evt.type in (open, openat) and evt.is_open_read = true and (fd.name in (/etc/shadow, /etc/gshadow) or fd.directory = /etc/sudoers.d or fd.name glob '/root/.ssh/id_*') and not proc.name = sshd",
            ),
            rule(
                "write",
                "evt.type in (open, openat) and evt.is_open_write = true and evt.res = SUCCESS and fd.name startswith /etc/",
            ),
            rule(
                "trunc",
                "evt.type = openat and evt.arg.flags contains O_TRUNC and fd.name pmatch (/var/log)",
            ),
        ]
        .concat();
        let i = kernel_interest(&set(&rules), false);
        let openat = i.syscalls[&Syscall::by_name("openat").unwrap()];
        assert!(openat.open_filter && openat.wake);
        let mut clauses = i.open.clone();
        clauses.sort_by_key(|c| c.flags_any);
        let p = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        assert_eq!(
            clauses,
            vec![
                OpenClause {
                    flags_any: 0,
                    prefixes: p(&[
                        "/etc/gshadow",
                        "/etc/shadow",
                        "/etc/sudoers.d/",
                        "/root/.ssh/id_"
                    ]),
                    names: None,
                    success_only: false,
                    wake: true,
                },
                OpenClause {
                    flags_any: (libc::O_WRONLY | libc::O_RDWR) as u64,
                    prefixes: p(&["/etc/"]),
                    names: None,
                    success_only: true,
                    wake: true,
                },
                OpenClause {
                    flags_any: libc::O_TRUNC as u64,
                    prefixes: p(&["/var/log"]),
                    names: None,
                    success_only: false,
                    wake: true,
                },
            ]
        );
    }

    #[test]
    fn reads_of_file_names_are_filtered_by_name() {
        let rules = [
            rule(
                "creds",
                "evt.type = openat and evt.is_open_read = true and (fd.name endswith /.aws/credentials or fd.filename in (.netrc, .pgpass))",
            ),
            rule("environ", "evt.type = openat and fd.name glob '/proc/*/environ'"),
            // A suffix without a `/` names no whole component.
            rule("suffix", "evt.type = openat and fd.name endswith .pem"),
        ]
        .concat();
        let i = kernel_interest(&set(&rules[..rules.find("- rule: suffix").unwrap()]), false);
        let n = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        let mut clauses = i.open.clone();
        clauses.sort_by_key(|c| c.prefixes.is_some());
        assert_eq!(clauses.len(), 2, "{clauses:#?}");
        assert_eq!(clauses[0].names, n(&[".netrc", ".pgpass", "credentials"]));
        assert_eq!(clauses[0].prefixes, None);
        assert_eq!(clauses[1].names, n(&["environ"]));
        assert_eq!(clauses[1].prefixes, n(&["/proc/"]));
        // With the suffix rule every open passes: no filter.
        let i = kernel_interest(&set(&rules), false);
        assert!(i.open.is_empty());
    }

    #[test]
    fn a_rule_on_every_open_removes_the_filter() {
        let rules = [
            rule("named", "evt.type = openat and fd.name = /etc/shadow"),
            rule("any", "evt.type = openat and proc.name = cat"),
        ]
        .concat();
        let i = kernel_interest(&set(&rules), false);
        assert!(i.open.is_empty());
        assert!(!i.syscalls[&Syscall::by_name("openat").unwrap()].open_filter);
    }

    #[test]
    fn sequence_steps_before_the_last_do_not_wake() {
        let y = r#"
- rule: seq
  desc: d
  priority: WARNING
  output: o
  sequence:
    window: 10s
    steps:
      - condition: evt.type = openat and evt.is_open_create = true
      - condition: evt.type = execve
"#;
        let i = kernel_interest(&set(y), false);
        assert_eq!(i.open.len(), 1);
        assert!(!i.open[0].wake, "the first step only advances the sequence");
        assert!(i.open[0].flags_any & libc::O_CREAT as u64 != 0);
    }

    #[test]
    fn a_truncated_path_passes_only_what_the_probe_cannot_place() {
        let i = kernel_interest(
            &set(&rule(
                "t",
                "evt.type = openat and fd.name_truncated = true and fd.name startswith /etc/",
            )),
            false,
        );
        assert_eq!(i.open.len(), 1, "{:#?}", i.open);
        assert_eq!(i.open[0].prefixes, Some(BTreeSet::new()), "{:#?}", i.open);
    }

    #[test]
    fn a_traversal_test_passes_only_what_the_probe_cannot_place() {
        for cond in [
            "evt.type = openat and fd.nameraw contains \"/../\"",
            "evt.type = openat and fd.nameraw startswith \"../\"",
        ] {
            let i = kernel_interest(&set(&rule("t", cond)), false);
            assert_eq!(i.open.len(), 1, "{cond}: {:#?}", i.open);
            assert_eq!(i.open[0].prefixes, Some(BTreeSet::new()), "{cond}");
        }
        // "x../" may be a file name ending in "..": no narrowing.
        let i = kernel_interest(
            &set(&rule(
                "t",
                "evt.type = openat and fd.nameraw contains \"../\"",
            )),
            false,
        );
        assert!(!i.syscalls[&Syscall::by_name("openat").unwrap()].open_filter);
    }

    #[test]
    fn the_default_rules_filter_opens() {
        let i = kernel_interest(&RuleSet::embedded_default(), false);
        let openat = i.syscalls[&Syscall::by_name("openat").unwrap()];
        assert!(openat.open_filter, "{:#?}", i.open);
        // A plain read of an ordinary file passes no clause.
        let plain_read = i.open.iter().any(|c| {
            c.flags_any == 0
                && c.prefixes.as_ref().is_none_or(|p| {
                    p.iter()
                        .any(|x| "/usr/lib/libc.so.6".starts_with(x.as_str()))
                })
                && c.names.as_ref().is_none_or(|n| n.contains("libc.so.6"))
        });
        assert!(!plain_read, "{:#?}", i.open);
        // The truncated-path rule adds no clause of its own: it merges
        // with the successful reads of sensitive files (both pass what the
        // probe cannot place, and nothing else new). Creations pass only
        // below /dev. Truncations pass below /var/log, and, by file name,
        // for shell history files wherever they are; reads, by file name,
        // for credential files anywhere and environ or mem below /proc/.
        // The path-traversal rule passes only what the probe cannot place
        // too, failed opens included: one clause more.
        assert_eq!(i.open.len(), 8, "{:#?}", i.open);
        let names = |c: &OpenClause, n: &str| c.names.as_ref().is_some_and(|s| s.contains(n));
        assert!(
            i.open
                .iter()
                .any(|c| c.flags_any == 0 && c.prefixes.is_none() && names(c, "credentials")),
            "{:#?}",
            i.open
        );
        assert!(
            i.open.iter().any(
                |c| c.prefixes == Some(BTreeSet::from(["/proc/".to_string()]))
                    && names(c, "environ")
                    && names(c, "mem")
            ),
            "{:#?}",
            i.open
        );
        assert!(
            i.open.iter().any(|c| c.flags_any == libc::O_TRUNC as u64
                && c.prefixes.is_none()
                && c.names
                    .as_ref()
                    .is_some_and(|n| n.contains(".bash_history"))),
            "{:#?}",
            i.open
        );
        assert!(
            i.open.iter().any(
                |c| c.prefixes == Some(BTreeSet::from(["/dev/".to_string()]))
                    && c.flags_any & libc::O_CREAT as u64 != 0
            ),
            "{:#?}",
            i.open
        );
        for unused in ["rmdir", "listen"] {
            if let Some(s) = Syscall::by_name(unused) {
                assert!(
                    !i.follows(s),
                    "{unused} is not attached for the default rules"
                );
            }
        }
    }
}
