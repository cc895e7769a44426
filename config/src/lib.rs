//! Settings files: one YAML file per binary (`/etc/vigil/agent.yaml` for
//! `vigil-agent run`, `/etc/vigil/collector.yaml` for `vigil-collector
//! serve`) whose keys are the command's long flags, written with `_` or
//! `-` (`spool_max: 512M` is `--spool-max 512M`).
//!
//! The file is turned into flags, and the command line parsed again with
//! them, so a key accepts exactly what its flag accepts, is checked by the
//! same code, and a flag on the command line always wins over the file.
//! A repeatable flag takes a YAML list. Every error names `FILE:LINE`,
//! and a bad value lists what the flag allows.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, Arg, ArgAction, ArgMatches, Command};
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// The flag that names the settings file; every configurable command has it.
pub const CONFIG_FLAG: &str = "config";

/// Flags that make no sense in a file.
const NOT_SETTINGS: &[&str] = &["help", "version", CONFIG_FLAG];

/// A settings file is at most this big: it is a page of settings, and a
/// bound keeps a wrong path (a log, a device) from being read whole.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", .path.display())]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One value of a key, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub line: usize,
}

/// One `key: value` (or `key: [list]`) of a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As written in the file.
    pub key: String,
    pub line: usize,
    pub values: Vec<Value>,
    /// Written as a list (`[]` or `- item` lines).
    pub list: bool,
}

impl Entry {
    /// The key with `-` spelled `_`, as it is compared.
    pub fn name(&self) -> String {
        normalize(&self.key)
    }
}

fn normalize(key: &str) -> String {
    key.replace('-', "_")
}

/// A parsed settings file: its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsFile {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

impl SettingsFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        use std::io::Read as _;
        let read_err = |source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(SettingsError::At {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "larger than {} KiB: not a settings file",
                    MAX_FILE_BYTES >> 10
                ),
            });
        }
        Self::parse(path, &text)
    }

    /// Parses settings text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SettingsError> {
        let at = |line: usize, message: String| SettingsError::At {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut events = Events::default();
        Parser::new_from_str(text)
            .load(&mut events, true)
            .map_err(|e| {
                at(
                    e.marker().line(),
                    format!(
                        "column {}: not valid YAML: {}",
                        e.marker().col() + 1,
                        e.info()
                    ),
                )
            })?;
        let mut it = events.0.into_iter().peekable();
        let mut entries: Vec<Entry> = Vec::new();
        let mut documents = 0;
        while let Some((ev, line)) = it.next() {
            match ev {
                Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(at(
                            line,
                            "a second YAML document: a settings file has one".into(),
                        ));
                    }
                }
                // An empty document (only comments, or `---`).
                Event::Scalar(ref v, ..) if v.is_empty() || v == "~" || v == "null" => {}
                Event::MappingStart(..) => loop {
                    let (key_ev, key_line) =
                        it.next().ok_or_else(|| at(line, "unexpected end".into()))?;
                    let key = match key_ev {
                        Event::MappingEnd => break,
                        Event::Scalar(k, ..) => k,
                        _ => {
                            return Err(at(
                                key_line,
                                "a key must be a plain name, like `spool_max`".into(),
                            ))
                        }
                    };
                    let (value_ev, value_line) = it
                        .next()
                        .ok_or_else(|| at(key_line, "unexpected end".into()))?;
                    let (values, list) = match value_ev {
                        Event::Scalar(v, ..) => {
                            if v.is_empty() || v == "~" || v == "null" {
                                return Err(at(
                                    key_line,
                                    format!("`{key}` has no value (remove the line to keep the default)"),
                                ));
                            }
                            (vec![Value { text: v, line: value_line }], false)
                        }
                        Event::SequenceStart(..) => {
                            let mut values = Vec::new();
                            loop {
                                match it.next() {
                                    Some((Event::SequenceEnd, _)) => break,
                                    Some((Event::Scalar(v, ..), l)) => values.push(Value { text: v, line: l }),
                                    Some((_, l)) => {
                                        return Err(at(l, format!("`{key}`: a list item must be a plain value")))
                                    }
                                    None => return Err(at(key_line, "unexpected end".into())),
                                }
                            }
                            (values, true)
                        }
                        Event::MappingStart(..) => {
                            return Err(at(
                                key_line,
                                format!("`{key}` holds a mapping; settings are flat: `key: value` or `key: [a, b]`"),
                            ))
                        }
                        Event::Alias(_) => {
                            return Err(at(value_line, format!("`{key}`: YAML aliases are not supported here")))
                        }
                        _ => return Err(at(value_line, format!("`{key}`: unexpected YAML"))),
                    };
                    if let Some(first) = entries.iter().find(|e| e.name() == normalize(&key)) {
                        return Err(at(
                            key_line,
                            format!("`{key}` is set twice (first on line {})", first.line),
                        ));
                    }
                    entries.push(Entry {
                        key,
                        line: key_line,
                        values,
                        list,
                    });
                },
                _ => {
                    return Err(at(
                        line,
                        "a settings file is a mapping of `key: value` lines".into(),
                    ))
                }
            }
        }
        Ok(SettingsFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn at(&self, line: usize, message: String) -> SettingsError {
        SettingsError::At {
            path: self.path.clone(),
            line,
            message,
        }
    }
}

#[derive(Default)]
struct Events(Vec<(Event, usize)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark.line()));
    }
}

/// The settings a command takes from a file: its long flags, but help,
/// version and the `--config` flag itself.
pub fn settings_of(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional())
        .filter(|a| a.get_long().is_some_and(|l| !NOT_SETTINGS.contains(&l)))
        .collect()
}

/// The key a flag is written as in a file.
pub fn key_of(arg: &Arg) -> String {
    normalize(arg.get_long().unwrap_or_default())
}

/// What a settings file added to a command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The flags to add to the command line.
    pub args: Vec<OsString>,
    /// Keys whose flag was on the command line, which wins.
    pub overridden: Vec<String>,
    /// Every key of the file with its values, as compared on reload.
    pub values: BTreeMap<String, Vec<String>>,
}

/// Checks every entry of `file` against the settings of `cmd` (a built
/// subcommand) and turns those whose flag `matches` did not get from the
/// command line into flags.
pub fn apply(
    cmd: &Command,
    matches: &ArgMatches,
    file: &SettingsFile,
) -> Result<Applied, SettingsError> {
    let settings = settings_of(cmd);
    let mut applied = Applied::default();
    // Flags given on the command line: they win over the same key, and
    // over any key they conflict with (`--insecure-plaintext` over a
    // file's `pki`).
    let given: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .collect();
    let conflicts_with_given = |arg: &Arg| {
        given.iter().any(|g| {
            cmd.get_arg_conflicts_with(g)
                .iter()
                .any(|c| c.get_id() == arg.get_id())
                || cmd
                    .get_arg_conflicts_with(arg)
                    .iter()
                    .any(|c| c.get_id() == g.get_id())
        })
    };
    for entry in &file.entries {
        let name = entry.name();
        let Some(arg) = settings.iter().find(|a| key_of(a) == name) else {
            return Err(file.at(entry.line, unknown_key(&entry.key, &settings)));
        };
        let long = arg.get_long().unwrap_or_default();
        let texts: Vec<String> = entry.values.iter().map(|v| v.text.clone()).collect();
        applied.values.insert(name.clone(), texts);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        if entry.list && !repeatable {
            return Err(file.at(
                entry.line,
                format!("`{}` takes one value, not a list", entry.key),
            ));
        }
        if !matches!(
            arg.get_action(),
            ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
        ) {
            return Err(file.at(
                entry.line,
                format!("`{}` cannot be set in a settings file", entry.key),
            ));
        }
        let mut flags = Vec::new();
        match arg.get_action() {
            ArgAction::SetTrue => {
                let v = &entry.values[0];
                match v.text.as_str() {
                    "true" => flags.push(OsString::from(format!("--{long}"))),
                    "false" => {}
                    other => {
                        return Err(file.at(
                            v.line,
                            format!(
                                "`{}`: `{other}` is not a boolean (allowed: true, false)",
                                entry.key
                            ),
                        ))
                    }
                }
            }
            _ => {
                for v in &entry.values {
                    check_value(arg, &v.text)
                        .map_err(|m| file.at(v.line, format!("`{}`: {m}", entry.key)))?;
                    flags.push(OsString::from(format!("--{long}={}", v.text)));
                }
            }
        }
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
            || conflicts_with_given(arg)
        {
            applied.overridden.push(name);
            continue;
        }
        applied.args.extend(flags);
    }
    Ok(applied)
}

/// Checks one value with the flag's own parser, alone: the rest of the
/// command line (requirements, conflicts) is checked when it is parsed
/// whole.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_default().to_string();
    let probe = Arg::new("value")
        .long(long.clone())
        .value_name(
            arg.get_value_names()
                .and_then(|n| n.first())
                .map(|n| n.to_string())
                .unwrap_or_else(|| "VALUE".into()),
        )
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    let cmd = Command::new("settings").arg(probe);
    match cmd.try_get_matches_from([
        OsString::from("settings"),
        format!("--{long}={value}").into(),
    ]) {
        Ok(_) => Ok(()),
        Err(e) => Err(clap_message(&e)),
    }
}

/// The first paragraph of a clap error, without its `error: ` prefix:
/// what was wrong and, for a choice, `[possible values: ...]`.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let para: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    para.join(" ").trim_start_matches("error: ").to_string()
}

fn unknown_key(key: &str, settings: &[&Arg]) -> String {
    let name = normalize(key);
    let mut known: Vec<String> = settings.iter().map(|a| key_of(a)).collect();
    known.sort();
    let close = known
        .iter()
        .map(|k| (edit_distance(k, &name), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match close {
        Some((_, k)) => format!("unknown key `{key}`; did you mean `{k}`?"),
        None => format!("unknown key `{key}`; the keys are: {}", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" (the rule loader uses it
/// too).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where a command's settings file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--config PATH`: it must exist.
    Given(PathBuf),
    /// The default path: used when it exists.
    Default(PathBuf),
}

impl Source {
    /// `--config` of `matches`, or `default`.
    pub fn of(matches: &ArgMatches, default: &Path) -> Self {
        match matches.get_one::<PathBuf>(CONFIG_FLAG) {
            Some(p) => Source::Given(p.clone()),
            None => Source::Default(default.to_path_buf()),
        }
    }

    /// Loads the file, `None` for an absent default.
    pub fn load(&self) -> Result<Option<SettingsFile>, SettingsError> {
        match self {
            Source::Given(p) => SettingsFile::load(p).map(Some),
            Source::Default(p) if !p.exists() => Ok(None),
            Source::Default(p) => SettingsFile::load(p).map(Some),
        }
    }
}

/// A command line parsed with its settings file.
#[derive(Debug)]
pub struct Parsed<C> {
    pub cli: C,
    /// The file read, if any, and what it added.
    pub file: Option<(SettingsFile, Applied)>,
}

/// Why a command line with its settings file does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// `--help`, `--version` or a bad command line: clap prints and exits.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The flags parse alone but not with the file's (a key that needs
    /// another, two that conflict).
    #[error("{} (with the settings from {})", .message, .path.display())]
    Combined { path: PathBuf, message: String },
}

/// Parses `argv` as `C`, merging in the settings file of the subcommand
/// the line runs when it is one of `configurable` (name and default
/// path). Flags on the command line win over the file.
pub fn parse<C: clap::Parser>(
    argv: &[OsString],
    configurable: &[(&str, &Path)],
) -> Result<Parsed<C>, ParseError> {
    let mut cmd = C::command();
    cmd.build();
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(Parsed {
            cli: C::from_arg_matches(&matches)?,
            file: None,
        });
    };
    let Some((_, default)) = configurable.iter().find(|(n, _)| *n == name) else {
        return Ok(Parsed {
            cli: C::from_arg_matches(&matches)?,
            file: None,
        });
    };
    let sub = cmd
        .find_subcommand(name)
        .expect("matched subcommand exists");
    let Some(file) = Source::of(sub_matches, default).load()? else {
        return Ok(Parsed {
            cli: C::from_arg_matches(&matches)?,
            file: None,
        });
    };
    let applied = apply(sub, sub_matches, &file)?;
    let mut full = argv.to_vec();
    full.extend(applied.args.iter().cloned());
    let cli = C::try_parse_from(&full).map_err(|e| ParseError::Combined {
        path: file.path.clone(),
        message: clap_message(&e),
    })?;
    Ok(Parsed {
        cli,
        file: Some((file, applied)),
    })
}

/// [`parse`], for a binary's `main`: `--help`, `--version` and command
/// line errors print and exit as clap does; a settings error prints
/// `BIN: error: ...` and exits 2.
pub fn parse_or_exit<C: clap::Parser>(
    bin: &str,
    argv: &[OsString],
    configurable: &[(&str, &Path)],
) -> Parsed<C> {
    match parse::<C>(argv, configurable) {
        Ok(p) => p,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("{bin}: error: {e}");
            std::process::exit(2)
        }
    }
}

/// Keys of `cmd` that `doc` does not name as `` `key` ``: what a binary's
/// test checks against docs/configuration.md.
pub fn undocumented_keys(cmd: &Command, doc: &str) -> Vec<String> {
    settings_of(cmd)
        .into_iter()
        .map(key_of)
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect()
}

/// Keys whose values differ between two readings of a file (set, unset or
/// changed), in name order.
pub fn changed_keys(old: &Applied, new: &Applied) -> Vec<String> {
    let mut keys: Vec<String> = old
        .values
        .keys()
        .chain(new.values.keys())
        .filter(|k| old.values.get(*k) != new.values.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests;
