//! What the console reads and writes beyond the alert store: accounts and
//! credentials ([`crate::accounts`]), how often each rule fired, and a
//! group's notification deliveries.
use vigil_proto::v1::Alert;

use super::{db::Row, SqlStore};
use crate::{
    accounts::{Credential, CredentialKind, Role, User},
    store::{now_ns, StoreError},
    vals,
};

/// One notification of a group, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub receiver: String,
    /// opened, reopened, resolved, summary, ...
    pub event: String,
    /// pending, sent, dead, dropped.
    pub state: String,
    pub attempts: u32,
    pub last_error: String,
    pub created_ns: i64,
    pub done_ns: Option<i64>,
}

/// How often a rule fired in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub rule: String,
    pub alerts: u64,
    pub hosts: u64,
    pub last_ns: i64,
}

/// Most browser sessions of one kind kept per user: signing in again past
/// this ends the oldest, so a script that signs in in a loop cannot grow
/// the table. API tokens are not capped (an administrator makes each).
const MAX_PER_USER: i64 = 32;

fn user_row(r: &Row) -> Result<User, super::db::DbError> {
    let role: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_ns: r.get(2)?,
    })
}

impl SqlStore {
    /// Creates the account `user`, or replaces its role and password when
    /// `replace`; returns whether it existed before.
    pub fn put_user(
        &self,
        user: &User,
        password_hash: &str,
        replace: bool,
    ) -> Result<bool, StoreError> {
        self.write(|db| {
            let existed = db
                .value::<String>("SELECT name FROM users WHERE name = ?1", vals![&user.name])?
                .is_some();
            if existed && !replace {
                return Ok(true);
            }
            db.exec("DELETE FROM users WHERE name = ?1", vals![&user.name])?;
            db.exec(
                "INSERT INTO users (name, role, password, created_ns) VALUES (?1, ?2, ?3, ?4)",
                vals![&user.name, user.role.name(), password_hash, user.created_ns],
            )?;
            if existed {
                // A new password ends the sessions the old one opened.
                db.exec(
                    "DELETE FROM credentials WHERE user_name = ?1 AND kind = 'session'",
                    vals![&user.name],
                )?;
            }
            Ok::<_, StoreError>(existed)
        })
    }

    /// The account `name` with its password hash.
    pub fn user_with_password(&self, name: &str) -> Result<Option<(User, String)>, StoreError> {
        self.read(|db| {
            let Some(r) = db.row(
                "SELECT name, role, created_ns, password FROM users WHERE name = ?1",
                vals![name],
            )?
            else {
                return Ok(None);
            };
            Ok(Some((user_row(&r)?, r.get(3)?)))
        })
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT name, role, created_ns FROM users ORDER BY name",
                &[],
                user_row,
            )
            .map_err(StoreError::from)
        })
    }

    /// Deletes the account `name` and every credential it holds; returns
    /// whether it existed.
    pub fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|db| {
            db.exec("DELETE FROM credentials WHERE user_name = ?1", vals![name])?;
            Ok::<_, StoreError>(db.exec("DELETE FROM users WHERE name = ?1", vals![name])? > 0)
        })
    }

    /// Stores a credential under its token's digest; drops expired
    /// credentials, and the user's oldest of that kind past
    /// [`MAX_PER_USER`].
    pub fn add_credential(&self, digest: &str, c: &Credential) -> Result<(), StoreError> {
        let now = now_ns();
        self.write(|db| {
            db.exec("DELETE FROM credentials WHERE expires_ns <= ?1", vals![now])?;
            // API tokens are made by an administrator, one by one, and
            // are never dropped to make room.
            if c.kind != CredentialKind::Api {
                db.exec(
                    "DELETE FROM credentials WHERE user_name = ?1 AND kind = ?2
                       AND hash NOT IN (
                         SELECT hash FROM credentials WHERE user_name = ?1 AND kind = ?2
                         ORDER BY created_ns DESC, hash LIMIT ?3)",
                    vals![&c.user, c.kind.name(), MAX_PER_USER - 1],
                )?;
            }
            db.exec(
                "INSERT INTO credentials (hash, kind, user_name, role, csrf, label, created_ns,
                     expires_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                vals![
                    digest,
                    c.kind.name(),
                    &c.user,
                    c.role.name(),
                    &c.csrf,
                    &c.label,
                    now,
                    c.expires_ns
                ],
            )?;
            Ok::<_, StoreError>(())
        })
    }

    /// The live credential whose token has this digest. A session or API
    /// token whose account is gone is not live, and takes the account's
    /// role as it is now.
    pub fn credential(&self, digest: &str) -> Result<Option<Credential>, StoreError> {
        let now = now_ns();
        self.read(|db| {
            let Some(r) = db.row(
                "SELECT c.kind, c.user_name, c.role, c.csrf, c.label, c.expires_ns, u.role
                 FROM credentials c LEFT JOIN users u ON u.name = c.user_name
                 WHERE c.hash = ?1 AND c.expires_ns > ?2",
                vals![digest, now],
            )?
            else {
                return Ok(None);
            };
            let kind: String = r.get(0)?;
            let Some(kind) = CredentialKind::parse(&kind) else {
                return Ok(None);
            };
            let own: String = r.get(2)?;
            let account: Option<String> = r.get(6)?;
            let role = match (kind, account) {
                (CredentialKind::Certificate, _) => Role::parse(&own),
                (_, Some(role)) => Role::parse(&role),
                (_, None) => None,
            };
            let Some(role) = role else {
                return Ok(None);
            };
            Ok(Some(Credential {
                kind,
                user: r.get(1)?,
                role,
                csrf: r.get(3)?,
                label: r.get(4)?,
                expires_ns: r.get(5)?,
            }))
        })
    }

    /// Ends the credential whose token has this digest.
    pub fn remove_credential(&self, digest: &str) -> Result<(), StoreError> {
        self.write(|db| {
            db.exec("DELETE FROM credentials WHERE hash = ?1", vals![digest])?;
            Ok::<_, StoreError>(())
        })
    }

    /// Alerts per rule since `since_ns`, most first, at most `limit` rules.
    pub fn rule_counts(&self, since_ns: i64, limit: u32) -> Result<Vec<RuleCount>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT rule, COUNT(*), COUNT(DISTINCT hostname), MAX(time_unix_ns) FROM alerts
                 WHERE time_unix_ns >= ?1 GROUP BY rule ORDER BY COUNT(*) DESC, rule LIMIT ?2",
                vals![since_ns, limit],
                |r| {
                    Ok(RuleCount {
                        rule: r.get(0)?,
                        alerts: r.get::<i64>(1)? as u64,
                        hosts: r.get::<i64>(2)? as u64,
                        last_ns: r.get(3)?,
                    })
                },
            )
            .map_err(StoreError::from)
        })
    }

    /// What changes when groups do: the newest audit entry's number and
    /// when the collector last stored an alert (its clock, not the event's:
    /// a late alert counts too). Both are indexed maxima.
    pub fn change_marks(&self) -> Result<(i64, i64), StoreError> {
        self.read(|db| {
            let r = db.row(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM audit),
                        (SELECT COALESCE(MAX(received_ns), 0) FROM alerts)",
                &[],
            )?;
            Ok(match r {
                Some(r) => (r.get(0)?, r.get(1)?),
                None => (0, 0),
            })
        })
    }

    /// The newest alerts of a group, newest first (at most `limit`), each
    /// with its host filled in.
    pub fn group_alerts(&self, group_id: &str, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let bodies = self.read(|db| {
            db.map(
                "SELECT body FROM alerts WHERE group_id = ?1
                 ORDER BY time_unix_ns DESC, id LIMIT ?2",
                vals![group_id, limit],
                |r| r.get::<Vec<u8>>(0),
            )
            .map_err(StoreError::from)
        })?;
        super::decode_alerts(&bodies)
    }

    /// The group's notifications, oldest first (at most `limit`).
    pub fn deliveries(&self, group_id: &str, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.read(|db| {
            db.map(
                "SELECT receiver, event, state, attempts, last_error, created_ns, done_ns
                 FROM outbox WHERE group_id = ?1 ORDER BY id LIMIT ?2",
                vals![group_id, limit],
                |r| {
                    Ok(Delivery {
                        receiver: r.get(0)?,
                        event: r.get(1)?,
                        state: r.get(2)?,
                        attempts: r.get::<i64>(3)? as u32,
                        last_error: r.get(4)?,
                        created_ns: r.get(5)?,
                        done_ns: r.get(6)?,
                    })
                },
            )
            .map_err(StoreError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts;

    #[test]
    fn accounts_and_credentials_on_both_engines() {
        for s in crate::sql::tests::both() {
            let alice = User {
                name: "alice".into(),
                role: Role::Responder,
                created_ns: 1,
            };
            let hash = accounts::hash_password("a long enough password").unwrap();
            assert!(!s.put_user(&alice, &hash, false).unwrap());
            assert!(s.put_user(&alice, "other", false).unwrap());
            let (u, h) = s.user_with_password("alice").unwrap().unwrap();
            assert_eq!((u, h), (alice.clone(), hash.clone()), "not replaced");
            let session = Credential {
                kind: CredentialKind::Session,
                user: "alice".into(),
                role: Role::Responder,
                csrf: "c".into(),
                label: String::new(),
                expires_ns: now_ns() + 1_000_000_000_000,
            };
            s.add_credential("d1", &session).unwrap();
            assert_eq!(s.credential("d1").unwrap().unwrap(), session);
            // A role change applies to live sessions at once.
            let viewer = User {
                role: Role::Viewer,
                ..alice.clone()
            };
            s.put_user(&viewer, &hash, true).unwrap();
            // ... and a replaced password ends them.
            assert_eq!(s.credential("d1").unwrap(), None);
            s.add_credential("d2", &session).unwrap();
            assert_eq!(s.credential("d2").unwrap().unwrap().role, Role::Viewer);
            // Expired credentials are not live.
            let old = Credential {
                expires_ns: now_ns() - 1,
                ..session.clone()
            };
            s.add_credential("d3", &old).unwrap();
            assert_eq!(s.credential("d3").unwrap(), None);
            // Certificates' sessions need no account.
            let cert = Credential {
                kind: CredentialKind::Certificate,
                user: "bob".into(),
                role: Role::Admin,
                ..session.clone()
            };
            s.add_credential("d4", &cert).unwrap();
            assert_eq!(s.credential("d4").unwrap().unwrap().role, Role::Admin);
            // At most MAX_PER_USER sessions a user.
            for i in 0..MAX_PER_USER + 5 {
                s.add_credential(&format!("many{i}"), &session).unwrap();
            }
            assert_eq!(s.credential("many0").unwrap(), None);
            assert!(s
                .credential(&format!("many{}", MAX_PER_USER + 4))
                .unwrap()
                .is_some());
            s.remove_credential("d2").unwrap();
            assert_eq!(s.credential("d2").unwrap(), None);
            assert!(s.remove_user("alice").unwrap());
            assert_eq!(
                s.credential(&format!("many{}", MAX_PER_USER + 4)).unwrap(),
                None
            );
            assert_eq!(s.users().unwrap(), vec![]);
        }
    }
}
