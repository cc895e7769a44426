//! This host's identity, sent with every alert batch.
use std::fs;

use vigil_proto::v1::HostInfo;

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

/// Hostname, machine id, kernel release and agent version of this host.
pub fn detect() -> HostInfo {
    HostInfo {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        machine_id: read_trimmed("/etc/machine-id"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
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
