//! Certificates for the API's mutual TLS, shared by the agent, the query
//! client and the collector: reading PEM files with errors that name the
//! file, what a certificate says about its holder (role, names, validity),
//! and the client side of a connection (the collector's CA, this client's
//! certificate and key, the server name from the URL).
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// What a certificate allows its holder. It travels in the subject's
/// organizational unit (`OU=agent`), so the collector needs no other
/// configuration to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A host's agent: may stream alerts (as the host its certificate names).
    Agent,
    /// A person or tool investigating: may query.
    Responder,
    /// May do what a responder may, and administer the collector.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Agent, Role::Responder, Role::Admin];

    /// The subject OU value that carries this role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }

    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The PKI directory's subdirectory for this role's certificates.
    pub fn dir(self) -> &'static str {
        match self {
            Role::Agent => "agents",
            Role::Responder => "responders",
            Role::Admin => "admins",
        }
    }

    pub fn may_stream_alerts(self) -> bool {
        self == Role::Agent
    }

    pub fn may_query(self) -> bool {
        matches!(self, Role::Responder | Role::Admin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no usable PEM private key in it (PKCS#8, PKCS#1 or SEC1): {reason}", .path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error("{}: not a valid X.509 certificate: {reason}", .path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: certificate expired {} ago (valid until {})", .path.display(), ago(*.not_after), rfc3339(*.not_after))]
    Expired {
        path: PathBuf,
        not_after: SystemTime,
    },
    #[error("{}: certificate not valid before {}", .path.display(), rfc3339(*.not_before))]
    NotYetValid {
        path: PathBuf,
        not_before: SystemTime,
    },
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.into(),
        source,
    })
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate(path.into()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsFileError::NoKey {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name.
    pub common_name: String,
    /// The role from the subject's OU, if it names one.
    pub role: Option<Role>,
    /// DNS and IP subject alternative names, as text.
    pub names: Vec<String>,
    /// Serial number, big-endian bytes.
    pub serial: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let text = |attr: &AttributeTypeAndValue| attr.as_str().unwrap_or_default().to_string();
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default();
        let role = subject
            .iter_organizational_unit()
            .find_map(|ou| Role::from_name(ou.as_str().unwrap_or_default()));
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => names.push(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                        ),
                        16 => names.push(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                        ),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let time =
            |t: ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        Ok(CertInfo {
            common_name,
            role,
            names,
            serial: cert.raw_serial().to_vec(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }

    /// The serial number as lower-case hex, as logs and file names show it.
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Reads the first certificate of a PEM file and checks that it is valid
/// now, so an expired certificate is named before any connection is tried.
pub fn read_valid_cert(path: &Path) -> Result<CertInfo, TlsFileError> {
    let certs = read_certs(path)?;
    let info = CertInfo::parse(&certs[0]).map_err(|reason| TlsFileError::BadCertificate {
        path: path.into(),
        reason,
    })?;
    let now = SystemTime::now();
    if now > info.not_after {
        return Err(TlsFileError::Expired {
            path: path.into(),
            not_after: info.not_after,
        });
    }
    if now < info.not_before {
        return Err(TlsFileError::NotYetValid {
            path: path.into(),
            not_before: info.not_before,
        });
    }
    Ok(info)
}

/// A client's side of mutual TLS: the CA that signed the collector's
/// certificate, and this client's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    /// The files of `name` (with `role`) in a PKI directory made by
    /// `vigil-collector pki`: `DIR/ca.crt`, `DIR/<role>s/NAME.crt` and `.key`.
    pub fn from_pki(dir: &Path, role: Role, name: &str) -> ClientTls {
        let base = dir.join(role.dir());
        ClientTls {
            ca: dir.join("ca.crt"),
            cert: base.join(format!("{name}.crt")),
            key: base.join(format!("{name}.key")),
        }
    }

    /// Reads and checks the files: tonic's TLS settings for a connection.
    pub fn load(&self) -> Result<ClientTlsConfig, TlsFileError> {
        read_certs(&self.ca)?;
        read_valid_cert(&self.cert)?;
        read_key(&self.key)?;
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid collector address `{0}`: expected https://HOST:PORT (or http:// for a collector serving plaintext on loopback)")]
    Address(String),
    #[error("`{0}` is https:// but no client certificate was given: pass --tls-cert, --tls-key and --ca (or --pki DIR)")]
    NoClientCertificate(String),
    #[error("`{0}` is http:// (plaintext) but TLS files were given: use https://")]
    TlsOverPlaintext(String),
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("invalid TLS settings for `{0}`: {1}")]
    Tls(String, String),
}

/// The endpoint for a collector URL: `https://` with `tls` (the server's
/// certificate checked against `tls.ca` and the URL's host), `http://`
/// without.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, EndpointError> {
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(EndpointError::Address(url.into()));
    }
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|_| EndpointError::Address(url.into()))?
        .connect_timeout(Duration::from_secs(5));
    if ep.uri().host().is_none_or(str::is_empty) || ep.uri().port_u16().is_none() {
        return Err(EndpointError::Address(url.into()));
    }
    match (https, tls) {
        (true, Some(t)) => {
            let host = ep.uri().host().unwrap_or_default();
            // An IPv6 literal's brackets are not part of the server name.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            ep.tls_config(t.load()?.domain_name(host))
                .map_err(|e| EndpointError::Tls(url.into(), e.to_string()))
        }
        (true, None) => Err(EndpointError::NoClientCertificate(url.into())),
        (false, Some(_)) => Err(EndpointError::TlsOverPlaintext(url.into())),
        (false, None) => Ok(ep),
    }
}

/// What a TLS failure means, in words, from an error chain that contains
/// rustls's reason; None when it is not a TLS failure.
pub fn explain_tls_failure(chain: &str) -> Option<&'static str> {
    const REASONS: &[(&str, &str)] = &[
        ("CertificateRevoked", "the collector refused this client's certificate: it is revoked"),
        ("CertificateExpired", "the collector refused this client's certificate: it has expired"),
        ("UnknownCA", "the collector refused this client's certificate: not signed by a CA it trusts"),
        ("DecryptError", "the collector refused this client's certificate: not signed by a CA it trusts"),
        ("BadCertificate", "the collector refused this client's certificate"),
        ("NotValidForName", "the collector's certificate does not name the host in the URL"),
        ("UnknownIssuer", "the collector's certificate is not signed by the CA given (--ca)"),
        ("BadSignature", "the collector's certificate is not signed by the CA given (--ca)"),
        ("Expired", "the collector's certificate has expired"),
        ("ProtocolVersion", "the collector and this client share no TLS version (the collector speaks TLS 1.3 only)"),
    ];
    REASONS
        .iter()
        .find(|(k, _)| chain.contains(k))
        .map(|(_, v)| *v)
}

/// A status's message and its causes, on one line (tonic's own display
/// repeats them in debug form).
pub fn status_chain(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    if let Some(src) = std::error::Error::source(s) {
        let more = error_chain(src);
        if more.starts_with(&out) {
            out = more;
        } else if !out.contains(&more) {
            out.push_str(": ");
            out.push_str(&more);
        }
    }
    out
}

/// A tonic error with its causes, on one line: a TLS failure is only in
/// the chain ("invalid peer certificate: certificate expired ...").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_tls_must_agree() {
        assert!(endpoint("http://127.0.0.1:5", None).is_ok());
        assert!(matches!(
            endpoint("https://127.0.0.1:5", None),
            Err(EndpointError::NoClientCertificate(_))
        ));
        let t = ClientTls::from_pki(Path::new("/nonexistent"), Role::Agent, "h");
        assert!(matches!(
            endpoint("http://127.0.0.1:5", Some(&t)),
            Err(EndpointError::TlsOverPlaintext(_))
        ));
        let e = endpoint("https://127.0.0.1:5", Some(&t))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.crt: cannot read"), "{e}");
        assert!(matches!(
            endpoint("collector:5", None),
            Err(EndpointError::Address(_))
        ));
        assert!(matches!(
            endpoint("http://collector", None),
            Err(EndpointError::Address(_))
        ));
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
        assert!(Role::Agent.may_stream_alerts() && !Role::Agent.may_query());
        assert!(Role::Responder.may_query() && !Role::Responder.may_stream_alerts());
    }
}
