//! The PKI in the box: a certificate authority, the collector's server
//! certificate, client certificates that carry a role, and revocation, as
//! files in one directory, so a fleet needs no openssl incantations.
//!
//! Layout of `DIR`:
//! - `ca.crt`, `ca.key`: the authority; `ca.key` signs everything else and
//!   should stay on the machine that issues certificates.
//! - `collector.crt`, `collector.key`: the server certificate, its names
//!   from `--san`.
//! - `agents/HOST.crt|key`, `responders/NAME.crt|key`, `admins/NAME.crt|key`:
//!   client certificates; the role is the subject's OU, the name its CN
//!   (and, for an agent, its DNS subject alternative name).
//! - `issued/`: a copy of every client certificate issued, as
//!   `ROLE-NAME-SERIAL.crt`, so revoking a name also revokes the
//!   certificates it was given before a reissue.
//! - `revoked/`: copies of revoked certificates; the collector refuses
//!   their serial numbers and rereads the directory while running.
//!
//! Keys are written mode 0600; no file is overwritten unless asked.
use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use vigil_proto::tls::{read_certs, CertInfo, Role};

/// Lifetime of the authority, and the default for issued certificates.
pub const CA_DAYS: u32 = 3650;
pub const DEFAULT_DAYS: u32 = 365;
/// Server names of a collector certificate when none are given.
pub const DEFAULT_SANS: [&str; 2] = ["localhost", "127.0.0.1"];
/// Subdirectory of revoked certificates.
pub const REVOKED_DIR: &str = "revoked";
/// Subdirectory of every client certificate issued.
pub const ISSUED_DIR: &str = "issued";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: already exists; refusing to overwrite it (remove it first, or pick another directory)", .0.display())]
    Exists(PathBuf),
    #[error("`{0}`: a name must be 1 to 253 characters of letters, digits, `.`, `-` and `_`, not starting with `.` or `-`")]
    BadName(String),
    #[error("`{0}`: not a DNS name or IP address")]
    BadSan(String),
    #[error("{}: no certificate authority here: create one with `vigil-collector pki init {}`", .0.join("ca.crt").display(), .0.display())]
    NoCa(PathBuf),
    #[error("{}: {reason}", .path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("no certificate named `{name}` under {}", .dir.display())]
    Unknown { dir: PathBuf, name: String },
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.into(),
        source,
    }
}

/// Checks a name used as a file name and a certificate name.
pub fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.into()))
    }
}

/// The certificate and key paths of a client certificate.
pub fn client_paths(dir: &Path, role: Role, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(role.dir());
    (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
}

/// Writes `path` whole or not at all: the data goes to a file of its own
/// beside it, which is then renamed over it (`overwrite`) or linked to
/// it (which fails if it exists, so two issuers cannot both win). A
/// reader, such as the collector rereading its certificate, never sees
/// half a file.
fn write_new(path: &Path, data: &str, mode: u32, overwrite: bool) -> Result<(), PkiError> {
    if !overwrite && path.exists() {
        return Err(PkiError::Exists(path.into()));
    }
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file}.{}.{stamp}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        f.write_all(data.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        if overwrite {
            std::fs::rename(&tmp, path).map_err(io(path))
        } else {
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(PkiError::Exists(path.into()))
                }
                r => r.map_err(io(path)),
            }
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now();
    // An hour of slack for clocks that lag the issuer's.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
}

fn sans(names: &[String]) -> Result<Vec<rcgen::SanType>, PkiError> {
    names
        .iter()
        .map(|n| {
            let p =
                CertificateParams::new(vec![n.clone()]).map_err(|_| PkiError::BadSan(n.clone()))?;
            Ok(p.subject_alt_names.into_iter().next().expect("one name"))
        })
        .collect()
}

/// A short id of a key: 8 hex digits of a hash of its public key.
fn key_id(key: &KeyPair) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.public_key_raw().hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

/// What `init` wrote.
pub struct Initialized {
    pub files: Vec<PathBuf>,
}

/// Creates the authority and the collector's certificate in `dir`.
pub fn init(dir: &Path, san: &[String], days: u32) -> Result<Initialized, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    for p in [&ca_crt, &ca_key] {
        if p.exists() {
            return Err(PkiError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vigil");
    // Named apart from every other Vigil CA, so a certificate from
    // another PKI reads as "unknown issuer", not as a bad signature.
    dn.push(DnType::CommonName, format!("Vigil CA {}", key_id(&key)));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    write_new(&ca_key, &key.serialize_pem(), 0o600, false)?;
    write_new(&ca_crt, &cert.pem(), 0o644, false)?;
    let mut files = vec![ca_crt, ca_key];
    files.extend(issue_collector(dir, san, days, false)?);
    std::fs::create_dir_all(dir.join(REVOKED_DIR)).map_err(io(dir))?;
    Ok(Initialized { files })
}

/// The authority of `dir`, to sign with.
fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    if !ca_crt.exists() {
        return Err(PkiError::NoCa(dir.into()));
    }
    let key_pem = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Bad {
        path: ca_key.clone(),
        reason: format!("not a private key: {e}"),
    })?;
    let crt_pem = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
    Issuer::from_ca_cert_pem(&crt_pem, key).map_err(|e| PkiError::Bad {
        path: ca_crt,
        reason: format!("not a CA certificate: {e}"),
    })
}

/// (Re)issues the collector's server certificate for `san` (default:
/// localhost and 127.0.0.1). A running collector picks it up.
pub fn issue_collector(
    dir: &Path,
    san: &[String],
    days: u32,
    overwrite: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    let issuer = load_ca(dir)?;
    let names: Vec<String> = if san.is_empty() {
        DEFAULT_SANS.iter().map(|s| s.to_string()).collect()
    } else {
        san.to_vec()
    };
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans(&names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vigil");
    dn.push(DnType::CommonName, "vigil-collector");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let crt = dir.join("collector.crt");
    let kp = dir.join("collector.key");
    // The key first: a reloading collector then never pairs the new
    // certificate with the old key (it checks, and keeps the old pair).
    write_new(&kp, &key.serialize_pem(), 0o600, overwrite)?;
    write_new(&crt, &cert.pem(), 0o644, overwrite)?;
    Ok(vec![crt, kp])
}

/// Issues a client certificate for `name` with `role`: `DIR/<role>s/NAME.crt`
/// and `.key`. An agent's name is its host name, also written as the
/// certificate's DNS name.
pub fn issue_client(
    dir: &Path,
    role: Role,
    name: &str,
    days: u32,
    overwrite: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    check_name(name)?;
    let issuer = load_ca(dir)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vigil");
    dn.push(DnType::OrganizationalUnitName, role.name());
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    if role == Role::Agent {
        params.subject_alt_names = sans(&[name.to_string()])?;
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let sub = dir.join(role.dir());
    std::fs::create_dir_all(&sub).map_err(io(&sub))?;
    let (crt, kp) = client_paths(dir, role, name);
    if !overwrite && (crt.exists() || kp.exists()) {
        return Err(PkiError::Exists(crt));
    }
    // Recorded before it is handed out, so it can always be revoked.
    let issued = dir.join(ISSUED_DIR);
    std::fs::create_dir_all(&issued).map_err(io(&issued))?;
    let serial = CertInfo::parse(cert.der())
        .map_err(|reason| PkiError::Bad {
            path: crt.clone(),
            reason,
        })?
        .serial_hex();
    write_new(
        &issued.join(format!("{}-{name}-{serial}.crt", role.name())),
        &cert.pem(),
        0o644,
        false,
    )?;
    write_new(&kp, &key.serialize_pem(), 0o600, overwrite)?;
    write_new(&crt, &cert.pem(), 0o644, overwrite)?;
    Ok(vec![crt, kp])
}

/// Revokes every client certificate ever issued to `name` (in any role,
/// including those replaced by a reissue): copies each to
/// `DIR/revoked/ROLE-NAME-SERIAL.crt`. Returns the copies.
pub fn revoke(dir: &Path, name: &str) -> Result<Vec<PathBuf>, PkiError> {
    check_name(name)?;
    let revoked = dir.join(REVOKED_DIR);
    std::fs::create_dir_all(&revoked).map_err(io(&revoked))?;
    // The current files, and every copy in issued/ (older PKIs lack it).
    let mut sources: Vec<PathBuf> = Role::ALL
        .into_iter()
        .map(|role| client_paths(dir, role, name).0)
        .filter(|p| p.exists())
        .collect();
    let issued = dir.join(ISSUED_DIR);
    if let Ok(rd) = std::fs::read_dir(&issued) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = Role::ALL
                .into_iter()
                .find_map(|r| f.strip_prefix(&format!("{}-{name}-", r.name())))
            else {
                continue;
            };
            // ROLE-NAME-SERIAL.crt: what follows the name is the serial
            // alone (a longer name sharing the prefix has more dashes).
            if rest
                .strip_suffix(".crt")
                .is_some_and(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                sources.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for src in sources {
        let certs = read_certs(&src).map_err(|e| PkiError::Bad {
            path: src.clone(),
            reason: e.to_string(),
        })?;
        let info = CertInfo::parse(&certs[0]).map_err(|reason| PkiError::Bad {
            path: src.clone(),
            reason,
        })?;
        let role = info.role.map_or("unknown", Role::name);
        let dst = revoked.join(format!("{role}-{name}-{}.crt", info.serial_hex()));
        if out.contains(&dst) {
            continue;
        }
        let pem = std::fs::read_to_string(&src).map_err(io(&src))?;
        write_new(&dst, &pem, 0o644, true)?;
        out.push(dst);
    }
    if out.is_empty() {
        return Err(PkiError::Unknown {
            dir: dir.into(),
            name: name.into(),
        });
    }
    Ok(out)
}

/// Serial numbers of the certificates in a revoked directory; a file that
/// is not a certificate is an error naming it (a revocation that silently
/// did nothing would be worse).
pub fn revoked_serials(dir: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for e in entries {
        let path = e.map_err(io(dir))?.path();
        if path.extension().is_none_or(|x| x != "crt" && x != "pem") {
            continue;
        }
        let certs = read_certs(&path).map_err(|e| PkiError::Bad {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for c in certs {
            let info = CertInfo::parse(&c).map_err(|reason| PkiError::Bad {
                path: path.clone(),
                reason,
            })?;
            out.push(info.serial);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::tls::read_valid_cert;

    #[test]
    fn init_issue_revoke() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pki");
        init(&dir, &[], DEFAULT_DAYS).unwrap();
        let server = read_valid_cert(&dir.join("collector.crt")).unwrap();
        assert_eq!(server.names, ["localhost", "127.0.0.1"]);
        assert!(matches!(
            init(&dir, &[], DEFAULT_DAYS),
            Err(PkiError::Exists(_))
        ));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("collector.key")), 0o600);

        issue_client(&dir, Role::Agent, "web-1", 30, false).unwrap();
        let (crt, key) = client_paths(&dir, Role::Agent, "web-1");
        assert_eq!(mode(&key), 0o600);
        let a = read_valid_cert(&crt).unwrap();
        assert_eq!(a.role, Some(Role::Agent));
        assert_eq!(a.common_name, "web-1");
        assert_eq!(a.names, ["web-1"]);
        let life = a.not_after.duration_since(a.not_before).unwrap();
        assert_eq!(life.as_secs(), 30 * 86_400 + 3600);
        issue_client(&dir, Role::Responder, "alice", 1, false).unwrap();
        let first = read_valid_cert(&client_paths(&dir, Role::Responder, "alice").0).unwrap();
        assert!(issue_client(&dir, Role::Responder, "alice", 1, false).is_err());
        assert!(issue_client(&dir, Role::Responder, "alice", 1, true).is_ok());
        let second = read_valid_cert(&client_paths(&dir, Role::Responder, "alice").0).unwrap();
        assert_ne!(first.serial, second.serial);
        // A name sharing alice's prefix is not alice.
        issue_client(&dir, Role::Responder, "alice-2", 1, false).unwrap();
        let copies = revoke(&dir, "alice").unwrap();
        assert_eq!(copies.len(), 2, "the replaced certificate too: {copies:?}");
        let serials = revoked_serials(&dir.join(REVOKED_DIR)).unwrap();
        assert!(serials.contains(&first.serial) && serials.contains(&second.serial));
        for c in copies {
            std::fs::remove_file(c).unwrap();
        }

        assert!(matches!(
            issue_client(&dir, Role::Agent, "../x", 1, false),
            Err(PkiError::BadName(_))
        ));
        assert!(revoked_serials(&dir.join(REVOKED_DIR)).unwrap().is_empty());
        let copies = revoke(&dir, "web-1").unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(revoked_serials(&dir.join(REVOKED_DIR)).unwrap(), [a.serial]);
        assert!(matches!(
            revoke(&dir, "nobody"),
            Err(PkiError::Unknown { .. })
        ));
    }

    #[test]
    fn no_ca_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = issue_client(d.path(), Role::Agent, "h", 1, false).unwrap_err();
        assert!(e.to_string().contains("pki init"), "{e}");
    }
}
