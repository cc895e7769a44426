//! This host's identity, sent with every alert batch.
use std::fs;

use vigil_proto::{
    tls::{read_valid_cert, ClientTls, Role, TlsFileError},
    v1::HostInfo,
};

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This host's name, read once.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| read_trimmed("/proc/sys/kernel/hostname"))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): a change means the
/// host rebooted; empty where the kernel has none.
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// Hostname, machine id, kernel release and agent version of this host.
pub fn detect() -> HostInfo {
    HostInfo {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        machine_id: read_trimmed("/etc/machine-id"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("{}: certificate `{name}` has role {role}, not agent: the collector will refuse its alerts (issue one with `vigil-collector pki issue DIR --agent HOST`)", .path.display())]
    NotAgent {
        path: std::path::PathBuf,
        name: String,
        role: &'static str,
    },
}

/// This host's identity for the collector. With a certificate, the host is
/// the one it names: the collector stores alerts under that name and
/// refuses batches that claim another, so a host name that differs is
/// logged and the certificate's is sent.
pub fn identity(tls: Option<&ClientTls>) -> Result<HostInfo, IdentityError> {
    let mut host = detect();
    let Some(tls) = tls else {
        return Ok(host);
    };
    let cert = read_valid_cert(&tls.cert)?;
    if cert.role != Some(Role::Agent) {
        return Err(IdentityError::NotAgent {
            path: tls.cert.clone(),
            name: cert.common_name,
            role: cert.role.map_or("none", Role::name),
        });
    }
    let named = cert.names.first().cloned().unwrap_or(cert.common_name);
    if named != host.hostname {
        tracing::warn!(
            certificate = %named,
            hostname = %host.hostname,
            "the certificate names another host; alerts are sent under the certificate's name"
        );
        host.hostname = named;
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_hostname_and_kernel() {
        let h = super::detect();
        assert!(!h.hostname.is_empty());
        assert!(!h.kernel.is_empty());
        assert_eq!(h.agent_version, env!("CARGO_PKG_VERSION"));
    }
}
