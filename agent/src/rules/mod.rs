//! Detection rules: loading, validation and matching.
//!
//! The agent talks to rules only through [`Matcher`], so the minimal language
//! of [`simple`] can be replaced by the full Falco-compatible language without
//! touching the event path.
use std::{fmt, path::Path};

use crate::event::Event;
use vigil_proto::v1::Severity;

pub mod simple;
mod template;

pub use simple::RuleSet;
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
}

/// Something that decides which rules an event triggers.
pub trait Matcher: Send + Sync {
    /// Appends every rule that `event` matches to `out`.
    fn matches<'a>(&'a self, event: &Event, out: &mut Vec<&'a RuleMeta>);
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
