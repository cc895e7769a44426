//! What the probe should report, in terms it can check in the kernel:
//! which followed syscalls to attach at all, which of their records may
//! raise an alert (and so wake the agent), and for opens, which flags and
//! path prefixes make one worth reporting.
//!
//! The rule engine computes it from the loaded rules
//! (`rules::interest`), the probe loader applies it (`probe`), and a
//! reload recomputes and reapplies it. Every field is an
//! over-approximation: the kernel may report more than a rule can match,
//! never less.
use std::collections::{BTreeMap, BTreeSet};

use super::syscalls::Syscall;

/// How one followed syscall is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Follow {
    /// A record of it may raise an alert on its own (not only advance a
    /// sequence): it wakes the agent instead of waiting for a batch.
    pub wake: bool,
    /// Reported only when it passes [`KernelInterest::open`] (opens).
    pub open_filter: bool,
}

/// One way an open can be worth reporting: its flags have a bit of
/// `flags_any` (0: any flags), its path starts with one of `prefixes`
/// (None: any path; an empty set: only paths the probe cannot place, which
/// always pass a prefix test), its last component is one of `names` (None:
/// any), and, with `success_only`, it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenClause {
    pub flags_any: u64,
    pub prefixes: Option<BTreeSet<String>>,
    pub names: Option<BTreeSet<String>>,
    pub success_only: bool,
    /// An open passing only this clause may raise an alert.
    pub wake: bool,
}

impl OpenClause {
    /// Every open.
    pub fn any() -> OpenClause {
        OpenClause::default()
    }

    pub fn is_any(&self) -> bool {
        self.flags_any == 0 && self.prefixes.is_none() && self.names.is_none() && !self.success_only
    }
}

/// The whole description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelInterest {
    /// The syscalls to attach, and how; the rest are not attached.
    pub syscalls: BTreeMap<Syscall, Follow>,
    /// For syscalls with `open_filter`: an open passing any clause is
    /// reported. Empty with no open followed under a filter.
    pub open: Vec<OpenClause>,
    /// Copy each new image's environment into exec records: a loaded
    /// rule tests `proc.env`.
    pub exec_env: bool,
    /// Why some rules widen what is reported (unindexed rules, filters too
    /// large for the kernel), for the log.
    pub notes: Vec<String>,
}

impl KernelInterest {
    /// Every followed syscall, unfiltered: `--events`.
    pub fn everything() -> KernelInterest {
        KernelInterest {
            syscalls: super::syscalls::TABLE
                .iter()
                .filter_map(|d| Syscall::by_name(d.name))
                .map(|s| (s, Follow::default()))
                .collect(),
            open: Vec::new(),
            exec_env: false,
            notes: Vec::new(),
        }
    }

    pub fn follows(&self, s: Syscall) -> bool {
        self.syscalls.contains_key(&s)
    }

    /// A one-line summary for the log: how many syscalls are attached, and
    /// the open filter.
    pub fn summary(&self) -> String {
        let filtered = self.syscalls.values().filter(|f| f.open_filter).count();
        let open = if filtered == 0 {
            "opens unfiltered".to_string()
        } else {
            let prefixes: usize = self
                .open
                .iter()
                .map(|c| c.prefixes.as_ref().map_or(0, BTreeSet::len))
                .sum();
            let names: usize = self
                .open
                .iter()
                .map(|c| c.names.as_ref().map_or(0, BTreeSet::len))
                .sum();
            format!(
                "opens filtered in the kernel ({} clauses, {prefixes} path prefixes, {names} file names)",
                self.open.len()
            )
        };
        let env = if self.exec_env {
            ", environment copied at exec"
        } else {
            ""
        };
        format!("{} syscalls followed, {open}{env}", self.syscalls.len())
    }
}
