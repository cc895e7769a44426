use std::{ffi::OsString, path::PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use super::*;

#[derive(Parser, Debug)]
struct Cli {
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Run(RunArgs),
    Other,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Error,
    Skip,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "256M")]
    spool_max: String,
    #[arg(long, default_value_t = 2)]
    rules_poll: u32,
    #[arg(long)]
    rules: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Error)]
    unsupported: Mode,
    #[arg(long)]
    bpf_stats: bool,
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, conflicts_with = "cert")]
    plaintext: bool,
    #[arg(long)]
    key: Option<PathBuf>,
}

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.yaml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn argv(file: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["agent".into(), "run".into(), "--config".into(), file.into()];
    v.extend(extra.iter().map(OsString::from));
    v
}

fn run_args(p: Parsed<Cli>) -> RunArgs {
    match p.cli.cmd {
        Cmd::Run(a) => a,
        Cmd::Other => panic!("not run"),
    }
}

const NO_DEFAULT: &[(&str, &Path)] = &[];

fn configurable() -> Vec<(&'static str, &'static Path)> {
    vec![("run", Path::new("/nonexistent/vigil/agent.yaml"))]
}

#[test]
fn keys_become_flags_and_flags_win() {
    let (_d, p) = write(
        "# the agent\nspool_max: 512M\nrules-poll: 5\nrules:\n  - /a\n  - /b\nunsupported: skip\nbpf_stats: true\nlog_level: debug\n",
    );
    let parsed = parse::<Cli>(&argv(&p, &["--rules-poll", "9"]), &configurable()).unwrap();
    let (file, applied) = parsed.file.clone().unwrap();
    assert_eq!(file.entries.len(), 6);
    assert_eq!(file.entries[0].line, 2);
    assert_eq!(file.entries[2].values[1].line, 6);
    assert_eq!(applied.overridden, vec!["rules_poll".to_string()]);
    assert_eq!(parsed.cli.log_level, "debug");
    let run = run_args(parsed);
    assert_eq!(run.spool_max, "512M");
    assert_eq!(run.rules_poll, 9, "the command line wins");
    assert_eq!(run.rules, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(run.unsupported, Mode::Skip);
    assert!(run.bpf_stats);
}

#[test]
fn a_repeatable_flag_on_the_command_line_replaces_the_files_list() {
    let (_d, p) = write("rules: [/a, /b]\n");
    let run = run_args(parse::<Cli>(&argv(&p, &["--rules", "/c"]), &configurable()).unwrap());
    assert_eq!(run.rules, vec![PathBuf::from("/c")]);
}

fn settings_error(text: &str, extra: &[&str]) -> String {
    let (_d, p) = write(text);
    let e = parse::<Cli>(&argv(&p, extra), &configurable()).unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with(&p.display().to_string()),
        "names the file: {s}"
    );
    s.strip_prefix(&p.display().to_string())
        .unwrap()
        .to_string()
}

#[test]
fn errors_name_the_line_and_what_is_allowed() {
    assert_eq!(
        settings_error("spool_max: 1M\nspool_mx: 2M\n", &[]),
        ":2: unknown key `spool_mx`; did you mean `spool_max`?"
    );
    let e = settings_error("zzz: 1\n", &[]);
    assert!(
        e.starts_with(
            ":1: unknown key `zzz`; the keys are: bpf_stats, cert, key, log_level, plaintext, rules,"
        ),
        "{e}"
    );
    let e = settings_error("\nunsupported: maybe\n", &[]);
    assert!(
        e.starts_with(":2: `unsupported`: invalid value 'maybe'"),
        "{e}"
    );
    assert!(e.contains("[possible values: error, skip]"), "{e}");
    let e = settings_error("rules_poll: often\n", &[]);
    assert!(
        e.starts_with(":1: `rules_poll`: invalid value 'often'"),
        "{e}"
    );
    assert_eq!(
        settings_error("bpf_stats: yes\n", &[]),
        ":1: `bpf_stats`: `yes` is not a boolean (allowed: true, false)"
    );
    assert_eq!(
        settings_error("spool_max: [1M]\n", &[]),
        ":1: `spool_max` takes one value, not a list"
    );
    assert_eq!(
        settings_error("spool_max:\n  nested: 2\n", &[]),
        ":1: `spool_max` holds a mapping; settings are flat: `key: value` or `key: [a, b]`"
    );
    assert_eq!(
        settings_error("spool_max: 1M\nrules_poll: 3\nspool-max: 2M\n", &[]),
        ":3: `spool-max` is set twice (first on line 1)"
    );
    assert_eq!(
        settings_error("spool_max:\n", &[]),
        ":1: `spool_max` has no value (remove the line to keep the default)"
    );
    let e = settings_error("spool_max: 1M\n  rules: [\n", &[]);
    assert!(e.starts_with(":2: column"), "{e}");
    let e = settings_error("- a\n- b\n", &[]);
    assert_eq!(e, ":1: a settings file is a mapping of `key: value` lines");
}

#[test]
fn a_combination_the_file_completes_wrongly_says_so() {
    let (_d, p) = write("cert: /c.pem\n");
    let e = parse::<Cli>(&argv(&p, &[]), &configurable()).unwrap_err();
    let ParseError::Combined { path, message } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(path, &p);
    assert!(message.contains("--key"), "{message}");
    // Completed on the command line, it parses.
    assert!(parse::<Cli>(&argv(&p, &["--key", "/k.pem"]), &configurable()).is_ok());
}

#[test]
fn the_default_file_is_optional_and_a_given_one_is_not() {
    let argv: Vec<OsString> = vec!["agent".into(), "run".into()];
    let parsed = parse::<Cli>(&argv, &configurable()).unwrap();
    assert!(parsed.file.is_none());
    let missing: Vec<OsString> = vec![
        "agent".into(),
        "run".into(),
        "--config".into(),
        "/nonexistent/x.yaml".into(),
    ];
    let e = parse::<Cli>(&missing, &configurable()).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/x.yaml: "), "{e}");
    // A subcommand that takes no file ignores it.
    let other: Vec<OsString> = vec!["agent".into(), "other".into()];
    assert!(parse::<Cli>(&other, NO_DEFAULT).unwrap().file.is_none());
}

#[test]
fn an_empty_or_comment_only_file_sets_nothing() {
    for text in ["", "# nothing yet\n", "---\n"] {
        let (_d, p) = write(text);
        let parsed = parse::<Cli>(&argv(&p, &[]), &configurable()).unwrap();
        assert!(parsed.file.unwrap().0.entries.is_empty(), "{text:?}");
    }
}

#[test]
fn changed_keys_are_those_set_unset_or_changed() {
    let applied = |text: &str| {
        let (_d, p) = write(text);
        parse::<Cli>(&argv(&p, &[]), &configurable())
            .unwrap()
            .file
            .unwrap()
            .1
    };
    let old = applied("spool_max: 1M\nrules: [/a]\nbpf_stats: true\n");
    let new = applied("spool_max: 1M\nrules: [/a, /b]\nunsupported: skip\n");
    assert_eq!(
        changed_keys(&old, &new),
        vec!["bpf_stats", "rules", "unsupported"]
    );
    assert!(changed_keys(&old, &old).is_empty());
}

#[test]
fn every_flag_has_a_key() {
    let mut cmd = Cli::command();
    cmd.build();
    let run = cmd.find_subcommand("run").unwrap();
    let mut keys: Vec<String> = settings_of(run).into_iter().map(key_of).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bpf_stats",
            "cert",
            "key",
            "log_level",
            "plaintext",
            "rules",
            "rules_poll",
            "spool_max",
            "unsupported"
        ]
    );
}

#[test]
fn a_flag_wins_over_a_file_key_it_conflicts_with() {
    let (_d, p) = write("cert: /c.pem\nkey: /k.pem\n");
    let parsed = parse::<Cli>(&argv(&p, &["--plaintext"]), &configurable()).unwrap();
    assert_eq!(
        parsed.file.as_ref().unwrap().1.overridden,
        vec!["cert".to_string()]
    );
    let run = run_args(parsed);
    assert!(run.plaintext);
    assert_eq!(run.cert, None);
    assert_eq!(run.key, Some(PathBuf::from("/k.pem")));
}
