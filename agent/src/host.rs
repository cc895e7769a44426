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

static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// This host's name: the one [`set_hostname`] gave, or else [`discover`]'s,
/// found once.
pub fn hostname() -> &'static str {
    NAME.get_or_init(discover)
}

/// Names this host for the rest of the run (`--hostname`: in Kubernetes,
/// the node's name). Returns false if the name was already fixed.
pub fn set_hostname(name: &str) -> bool {
    NAME.set(name.to_string()).is_ok()
}

/// The kernel's host name, or, in a container with a UTS namespace of its
/// own that shares the host's PID namespace (a DaemonSet with hostPID, or
/// `--pid=host`), the host's: the kernel's own threads (kthreadd, PID 2)
/// live in the initial UTS namespace, which holds the host's name. (PID
/// 1's would serve as well, but some hosts refuse even root a look at
/// it.) Entering it needs CAP_SYS_ADMIN, in a thread of its own that ends
/// at once; without it the container's name is used and a warning says
/// to pass `--hostname`.
pub fn discover() -> String {
    let own = read_trimmed("/proc/sys/kernel/hostname");
    let mine = fs::read_link("/proc/self/ns/uts").ok();
    let Some((path, initial)) = initial_uts_ns() else {
        // No kernel thread in sight: a container without hostPID. Its
        // own name is all there is.
        return own;
    };
    if mine.is_none() || mine.as_ref() == Some(&initial) {
        return own;
    }
    match std::thread::spawn(move || name_in_uts_ns(&path)).join() {
        Ok(Ok(name)) if !name.is_empty() => name,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, container = %own, "in a container with its own host name, and the host's cannot be read (it needs CAP_SYS_ADMIN); events carry the container's name: pass --hostname");
            own
        }
        _ => own,
    }
}

/// The path and identity of the initial UTS namespace, through kthreadd
/// (PID 2), or PID 1 when PID 2 is not the kernel's.
fn initial_uts_ns() -> Option<(String, std::path::PathBuf)> {
    let pid = if read_trimmed("/proc/2/comm") == "kthreadd" {
        2
    } else {
        1
    };
    let path = format!("/proc/{pid}/ns/uts");
    let id = fs::read_link(&path).ok()?;
    Some((path, id))
}

/// The node name of the UTS namespace at `ns`, read from a thread that
/// enters it (setns moves only the calling thread).
fn name_in_uts_ns(ns: &str) -> std::io::Result<String> {
    use std::os::fd::AsRawFd as _;
    let f = fs::File::open(ns)?;
    // SAFETY: a valid namespace fd; only this short-lived thread moves.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: uname fills the zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates nodename.
    let name = unsafe { std::ffi::CStr::from_ptr(u.nodename.as_ptr()) };
    Ok(name.to_string_lossy().trim().to_string())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): a change means the
/// host rebooted; empty where the kernel has none.
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// Hostname, machine id, kernel release and agent version of this host.
pub fn detect() -> HostInfo {
    HostInfo {
        hostname: hostname().to_string(),
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
