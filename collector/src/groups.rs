//! Alert groups: which alerts are the same thing happening again, and the
//! lifecycle a responder moves a group through.
//!
//! A group is one rule on one host (and container) with one key: the
//! values of the rule's key fields, which the agent sends with each alert
//! (the rule's dedup `by` fields, or the default key). Its id is a digest
//! of those, so the same thing maps to the same group on every collector
//! and after every restart.
//!
//! States: `open` → `acknowledged` → `resolved` or `closed` (each with a
//! reason). A new alert on a resolved or closed group reopens it. Every
//! change is an audit entry naming who made it; this module decides what
//! a change does, the store applies it and its entry in one transaction.
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use vigil_proto::v1::{Alert, AlertGroup, AuditEntry, GroupAction, GroupUpdate, HostInfo};

use crate::store::StoreError;

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Open,
    Acknowledged,
    Resolved,
    Closed,
}

impl GroupState {
    pub const ALL: [GroupState; 4] = [
        GroupState::Open,
        GroupState::Acknowledged,
        GroupState::Resolved,
        GroupState::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupState::Open => "open",
            GroupState::Acknowledged => "acknowledged",
            GroupState::Resolved => "resolved",
            GroupState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<GroupState> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }

    /// Resolved or closed: a new alert reopens it.
    pub fn is_done(self) -> bool {
        matches!(self, GroupState::Resolved | GroupState::Closed)
    }
}

/// Why a group was resolved or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TruePositive,
    FalsePositive,
    Benign,
    Duplicate,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::TruePositive,
        Reason::FalsePositive,
        Reason::Benign,
        Reason::Duplicate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::TruePositive => "true_positive",
            Reason::FalsePositive => "false_positive",
            Reason::Benign => "benign",
            Reason::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Result<Reason, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!("`{s}`: expected true_positive, false_positive, benign or duplicate")
            })
    }
}

/// One group as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub id: String,
    pub rule: String,
    /// The highest severity seen (proto enum value).
    pub severity: i32,
    pub hostname: String,
    /// Container id, or `host`.
    pub container: String,
    pub state: GroupState,
    pub reason: Option<Reason>,
    pub assignee: String,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    /// The newest alert's output.
    pub output: String,
    pub key: BTreeMap<String, String>,
    pub state_changed_ns: i64,
    /// The rule's tags, as its first alert carried them.
    pub tags: Vec<String>,
}

/// Which groups a query wants; `None` does not constrain.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub state: Option<GroupState>,
    /// Seen at or after.
    pub since_ns: Option<i64>,
    pub host: Option<String>,
    pub rule: Option<String>,
    /// Only the group with this id.
    pub id: Option<String>,
    /// Severity at least this (proto enum value).
    pub min_severity: Option<i32>,
    /// Whose rule carries this tag.
    pub tag: Option<String>,
    pub limit: u32,
}

/// What a responder does to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Acknowledge,
    Resolve(Reason),
    Close(Reason),
    /// To someone; empty: to nobody.
    Assign(String),
    /// Only the note.
    Note,
}

/// Who made a change, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `responder:alice` (a certificate), `local:alice` (plaintext
    /// loopback), or [`COLLECTOR`].
    pub name: String,
    /// The client's address; empty for the collector itself.
    pub client: String,
}

/// The actor of changes the collector makes itself (a group opened or
/// reopened by a new alert).
pub const COLLECTOR: &str = "vigil";

impl Actor {
    pub fn collector() -> Actor {
        Actor {
            name: COLLECTOR.into(),
            client: String::new(),
        }
    }
}

/// One entry of a group's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub group_id: String,
    pub time_ns: i64,
    pub actor: String,
    pub client: String,
    /// opened, reopened, acknowledged, resolved, closed, assigned, note.
    pub action: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no alert group or alert with id {0}")]
    NotFound(String),
    #[error("no silence with id {0}")]
    NoSilence(String),
    /// The change does not apply to the group as it is.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest note or assignee kept.
pub const MAX_NOTE: usize = 4096;
pub const MAX_ASSIGNEE: usize = 128;

/// What `change` (with `note`) does to `g`: its new state, reason and
/// assignee, and the audit entry's action and detail. Refuses changes
/// that make no sense for the group's state, naming the state.
pub fn apply(
    g: &GroupRecord,
    change: &Change,
    note: &str,
) -> Result<(GroupState, Option<Reason>, String, &'static str, String), GroupError> {
    if note.len() > MAX_NOTE {
        return Err(GroupError::Refused(format!(
            "a note holds at most {MAX_NOTE} bytes"
        )));
    }
    let with_note = |d: String| match (d.is_empty(), note.is_empty()) {
        (_, true) => d,
        (true, false) => note.to_string(),
        (false, false) => format!("{d}: {note}"),
    };
    let done = |what: &str| {
        GroupError::Refused(format!(
            "group {} is {}{}; a new alert reopens it",
            g.id,
            g.state.name(),
            g.reason
                .map(|r| format!(" ({})", r.name()))
                .unwrap_or_default(),
        ))
        .with_context(what)
    };
    Ok(match change {
        Change::Acknowledge => match g.state {
            GroupState::Open => (
                GroupState::Acknowledged,
                None,
                g.assignee.clone(),
                "acknowledged",
                with_note(String::new()),
            ),
            GroupState::Acknowledged => {
                return Err(GroupError::Refused(format!(
                    "group {} is acknowledged already",
                    g.id
                )))
            }
            _ => return Err(done("acknowledge")),
        },
        Change::Resolve(r) | Change::Close(r) => {
            if g.state.is_done() {
                return Err(done(if matches!(change, Change::Resolve(_)) {
                    "resolve"
                } else {
                    "close"
                }));
            }
            let (state, action) = match change {
                Change::Resolve(_) => (GroupState::Resolved, "resolved"),
                _ => (GroupState::Closed, "closed"),
            };
            (
                state,
                Some(*r),
                g.assignee.clone(),
                action,
                with_note(format!("as {}", r.name())),
            )
        }
        Change::Assign(who) => {
            if who.len() > MAX_ASSIGNEE || who.chars().any(char::is_control) {
                return Err(GroupError::Refused(format!(
                    "an assignee is at most {MAX_ASSIGNEE} printable characters"
                )));
            }
            let detail = if who.is_empty() {
                "to nobody".to_string()
            } else {
                format!("to {who}")
            };
            (
                g.state,
                g.reason,
                who.clone(),
                "assigned",
                with_note(detail),
            )
        }
        Change::Note => {
            if note.trim().is_empty() {
                return Err(GroupError::Refused("a note needs text".into()));
            }
            (
                g.state,
                g.reason,
                g.assignee.clone(),
                "note",
                note.to_string(),
            )
        }
    })
}

impl From<&GroupRecord> for AlertGroup {
    fn from(g: &GroupRecord) -> AlertGroup {
        AlertGroup {
            id: g.id.clone(),
            rule: g.rule.clone(),
            severity: g.severity,
            hostname: g.hostname.clone(),
            container: g.container.clone(),
            state: g.state.name().into(),
            reason: g.reason.map(|r| r.name().to_string()).unwrap_or_default(),
            assignee: g.assignee.clone(),
            count: g.count,
            first_seen_unix_ns: g.first_seen_ns,
            last_seen_unix_ns: g.last_seen_ns,
            output: g.output.clone(),
            key: g.key.clone().into_iter().collect(),
            state_changed_unix_ns: g.state_changed_ns,
        }
    }
}

impl From<AuditRecord> for AuditEntry {
    fn from(a: AuditRecord) -> AuditEntry {
        AuditEntry {
            group_id: a.group_id,
            time_unix_ns: a.time_ns,
            actor: a.actor,
            client: a.client,
            action: a.action,
            detail: a.detail,
        }
    }
}

/// The change a `GroupUpdate` asks for, or why it is malformed.
pub fn change_of(u: &GroupUpdate) -> Result<Change, String> {
    let reason = || {
        if u.reason.is_empty() {
            Err("resolving or closing needs a reason: true_positive, false_positive, benign or duplicate".to_string())
        } else {
            Reason::parse(&u.reason)
        }
    };
    match GroupAction::try_from(u.action) {
        Ok(GroupAction::Acknowledge) => Ok(Change::Acknowledge),
        Ok(GroupAction::Resolve) => Ok(Change::Resolve(reason()?)),
        Ok(GroupAction::Close) => Ok(Change::Close(reason()?)),
        Ok(GroupAction::Assign) => Ok(Change::Assign(u.assignee.trim().to_string())),
        Ok(GroupAction::Note) => Ok(Change::Note),
        _ => Err(format!("unknown group action {}", u.action)),
    }
}

impl GroupError {
    fn with_context(self, what: &str) -> GroupError {
        match self {
            GroupError::Refused(m) => GroupError::Refused(format!("cannot {what}: {m}")),
            e => e,
        }
    }
}

/// The group an alert from `host` belongs to: (id, container, key). The
/// key is what the agent sent; alerts without one (older agents, the
/// collector's own) are keyed by their program and target.
pub fn identify(host: &HostInfo, a: &Alert) -> (String, String, BTreeMap<String, String>) {
    let container = a
        .container
        .as_ref()
        .map(|c| c.id.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let key: BTreeMap<String, String> = if a.group_key.is_empty() {
        let mut k = BTreeMap::new();
        if let Some(p) = &a.process {
            k.insert("proc.exepath".to_string(), p.exe.clone());
            k.insert("user.uid".to_string(), p.uid.to_string());
        }
        if let Some(f) = a.fields.get("fd.name") {
            k.insert("fd.name".to_string(), f.clone());
        }
        k
    } else {
        a.group_key
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut h = Sha256::new();
    for part in [a.rule.as_str(), host.hostname.as_str(), container.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in &key {
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let id: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    (id, container, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(state: GroupState) -> GroupRecord {
        GroupRecord {
            id: "g1".into(),
            rule: "r".into(),
            severity: 4,
            hostname: "h".into(),
            container: "host".into(),
            state,
            reason: None,
            assignee: String::new(),
            count: 1,
            first_seen_ns: 1,
            last_seen_ns: 1,
            output: "o".into(),
            key: BTreeMap::new(),
            state_changed_ns: 1,
            tags: Vec::new(),
        }
    }

    #[test]
    fn the_lifecycle_moves_forward_and_refuses_what_makes_no_sense() {
        let open = group(GroupState::Open);
        let (s, _, _, action, detail) = apply(&open, &Change::Acknowledge, "looking").unwrap();
        assert_eq!(
            (s, action, detail.as_str()),
            (GroupState::Acknowledged, "acknowledged", "looking")
        );
        let acked = group(GroupState::Acknowledged);
        let e = apply(&acked, &Change::Acknowledge, "").unwrap_err();
        assert!(e.to_string().contains("acknowledged already"), "{e}");
        let (s, r, _, action, detail) =
            apply(&acked, &Change::Resolve(Reason::FalsePositive), "cron").unwrap();
        assert_eq!(s, GroupState::Resolved);
        assert_eq!(r, Some(Reason::FalsePositive));
        assert_eq!(
            (action, detail.as_str()),
            ("resolved", "as false_positive: cron")
        );
        let mut done = group(GroupState::Closed);
        done.reason = Some(Reason::Benign);
        let e = apply(&done, &Change::Acknowledge, "").unwrap_err();
        assert!(e.to_string().contains("closed (benign)"), "{e}");
        // Assigning and noting work in any state.
        let (s, _, who, _, _) = apply(&done, &Change::Assign("bob".into()), "").unwrap();
        assert_eq!((s, who.as_str()), (GroupState::Closed, "bob"));
        assert!(apply(&done, &Change::Note, " ").is_err());
        assert!(apply(&open, &Change::Note, &"x".repeat(MAX_NOTE + 1)).is_err());
        assert!(apply(&open, &Change::Assign("a\nb".into()), "").is_err());
    }

    #[test]
    fn groups_are_identified_by_rule_host_container_and_key() {
        let host = HostInfo {
            hostname: "web-1".into(),
            ..Default::default()
        };
        let mut a = Alert {
            rule: "Shell".into(),
            ..Default::default()
        };
        a.group_key.insert("proc.exepath".into(), "/bin/sh".into());
        let (id, container, key) = identify(&host, &a);
        assert_eq!(container, "host");
        assert_eq!(key.len(), 1);
        assert_eq!(id.len(), 20);
        // Same everything: same group; another value: another group.
        assert_eq!(identify(&host, &a.clone()).0, id);
        let mut b = a.clone();
        b.group_key
            .insert("proc.exepath".into(), "/bin/bash".into());
        assert_ne!(identify(&host, &b).0, id);
        let other = HostInfo {
            hostname: "web-2".into(),
            ..Default::default()
        };
        assert_ne!(identify(&other, &a).0, id);
        // Severity and output do not split a group.
        let mut c = a.clone();
        c.severity = 6;
        c.output = "else".into();
        assert_eq!(identify(&host, &c).0, id);
    }
}
