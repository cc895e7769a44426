//! Who may use the console: local accounts with a role and an argon2
//! password hash, and the credentials that stand for a person once they
//! are in (a browser session, an API token, a client certificate's
//! session). Stored by [`crate::sql::SqlStore`]; checked by the console.
//!
//! Only digests of tokens are stored: a copy of the database lets nobody
//! sign in.
use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use sha2::{Digest, Sha256};

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads every page; changes nothing.
    Viewer,
    /// Triage: acknowledge, resolve, close, assign, note, silence.
    Responder,
    /// A responder who also administers (for now: the same actions).
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Responder, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether this role may change groups and silences.
    pub fn may_triage(self) -> bool {
        self >= Role::Responder
    }

    /// The console role of a client certificate's role; agents' certificates
    /// do not sign in.
    pub fn of_certificate(r: vigil_proto::tls::Role) -> Option<Role> {
        match r {
            vigil_proto::tls::Role::Agent => None,
            vigil_proto::tls::Role::Responder => Some(Role::Responder),
            vigil_proto::tls::Role::Admin => Some(Role::Admin),
        }
    }
}

/// A local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub created_ns: i64,
}

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A browser session after a password sign-in.
    Session,
    /// A token for scripts (`Authorization: Bearer ...`).
    Api,
    /// A browser session of a client certificate: its role comes from the
    /// certificate, not from an account.
    Certificate,
}

impl CredentialKind {
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Session => "session",
            CredentialKind::Api => "api",
            CredentialKind::Certificate => "certificate",
        }
    }

    pub fn parse(s: &str) -> Option<CredentialKind> {
        [
            CredentialKind::Session,
            CredentialKind::Api,
            CredentialKind::Certificate,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// A live credential, as looked up by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub kind: CredentialKind,
    pub user: String,
    /// The account's role now (a changed role applies at once), or the
    /// certificate's.
    pub role: Role,
    /// The token forms must carry with this session (unused by API tokens).
    pub csrf: String,
    /// An API token's label.
    pub label: String,
    pub expires_ns: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user name `{0}`: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`")]
    BadName(String),
    #[error("the password is {0} characters long; use at least {MIN_PASSWORD} (and at most {MAX_PASSWORD} bytes)")]
    BadPassword(usize),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot make a random token: {0}")]
    Random(String),
}

pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 1024;

/// Checks an account name: printable, short, and safe in every place it is
/// shown (the audit trail, the console, logs).
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName(name.chars().take(80).collect()))
    }
}

/// Hashes a new password (argon2id with its recommended parameters and a
/// random salt), after checking its length.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(AccountError::BadPassword(chars));
    }
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| AccountError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` is the one `hash` was made from. A password longer
/// than any we accept is refused without hashing it.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so that a
/// wrong name costs as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not-a-password-anyone-has").unwrap_or_default())
}

/// A new secret token: 32 random bytes, hex, after `prefix` (`vgt_` for
/// API tokens, so a leaked one is recognizable in a scanner).
pub fn new_token(prefix: &str) -> Result<String, AccountError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| AccountError::Random(e.to_string()))?;
    Ok(format!("{prefix}{}", hex(&b)))
}

/// What is stored of a token: its SHA-256, hex.
pub fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_short_ones_are_refused() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
        assert!(matches!(
            hash_password("short"),
            Err(AccountError::BadPassword(5))
        ));
        // The same password twice: different salts.
        assert_ne!(h, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn names_roles_and_tokens() {
        check_name("alice.b-c_d@example").unwrap();
        for bad in ["", "a b", "<script>", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(Role::parse("responder"), Some(Role::Responder));
        assert!(!Role::Viewer.may_triage() && Role::Admin.may_triage());
        assert_eq!(Role::of_certificate(vigil_proto::tls::Role::Agent), None);
        let t = new_token("vgt_").unwrap();
        assert_eq!(t.len(), 4 + 64);
        assert_ne!(t, new_token("vgt_").unwrap());
        assert_eq!(token_digest(&t).len(), 64);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
