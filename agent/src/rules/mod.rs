//! Detection rules in Falco's language: loading, validation and matching.
//!
//! The agent talks to rules only through [`Matcher`]. The pieces:
//! [`yaml`] (positions), [`cond`] (condition syntax), [`fields`] (what a
//! condition can name), [`compile`] (match trees), [`load`] (files, macros,
//! lists, append/override, exceptions), [`program`] (conditions lowered
//! for matching), [`index`] (which rules an event may fire), [`engine`]
//! (matching, sequences, dedup), [`interest`] (what the kernel may drop)
//! and [`template`] (outputs).
use std::{fmt, path::Path, sync::Arc};

use crate::event::Event;
use vigil_proto::v1::Severity;

pub mod compile;
pub mod cond;
pub mod engine;
pub mod extract;
pub mod fields;
pub mod glob;
pub mod index;
pub mod interest;
mod items;
pub mod load;
pub mod matcher;
pub mod optimize;
pub mod program;
mod rule_item;
mod template;
pub mod yaml;

#[cfg(test)]
mod tests;

pub use engine::{EngineCounters, RuleSet, DEFAULT_RULES, DEFAULT_RULES_ORIGIN};
pub use load::{LoadOptions, Skipped, Unsupported};
pub use template::Template;

/// A rule's identity and what an alert from it says.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    pub name: String,
    pub desc: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub output: Template,
    /// `file:line` where the rule is defined.
    pub origin: String,
    /// The fields whose values, with the rule and host, say which alerts
    /// are the same thing happening again (the collector's groups): the
    /// dedup `by` fields, or the default dedup key. By name.
    pub key: Vec<(String, fields::FieldRef)>,
}

/// A rule that fired.
#[derive(Debug, Clone)]
pub struct Hit {
    pub rule: Arc<RuleMeta>,
    /// How many occurrences this alert stands for: 1, or the number folded
    /// into a dedup summary.
    pub count: u64,
    /// A dedup summary's last event; None: the event being matched.
    pub event: Option<Box<Event>>,
}

/// Something that decides which rules an event triggers.
pub trait Matcher: Send {
    /// Appends every rule that `event` fires to `out`.
    fn matches(&mut self, event: &Event, out: &mut Vec<Hit>);
    /// Closes dedup windows that ended by `now_unix_ns`, appending their
    /// summaries.
    fn tick(&mut self, now_unix_ns: i64, out: &mut Vec<Hit>);
    /// Number of enabled rules.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A rule file problem, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub path: String,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.path, self.message),
            (l, 0) => write!(f, "{}:{}: {}", self.path, l, self.message),
            (l, c) => write!(f, "{}:{}:{}: {}", self.path, l, c, self.message),
        }
    }
}

impl RuleError {
    pub(crate) fn whole_file(path: &Path, message: impl Into<String>) -> RuleError {
        RuleError {
            path: path.display().to_string(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

/// Several rule errors, one per line.
pub fn format_errors(errs: &[RuleError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
