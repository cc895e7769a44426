//! Linux capabilities by name: how a capability set reads in rules and
//! outputs (`CAP_SYS_ADMIN CAP_NET_RAW`, as Falco writes it), and the
//! bounding set a privileged container gets on this host.
use std::sync::OnceLock;

/// Names by capability number, as `<linux/capability.h>` defines them.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The names of the capabilities in `mask`, in number order, separated by
/// spaces; a capability newer than this table reads `CAP_N`.
pub fn names(mask: u64) -> String {
    let mut out = String::new();
    for n in 0..64u32 {
        if mask & (1 << n) == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        match NAMES.get(n as usize) {
            Some(name) => out.push_str(name),
            None => out.push_str(&format!("CAP_{n}")),
        }
    }
    out
}

/// The bounding set of the host's init (`CapBnd` of /proc/1/status): what
/// a privileged container is given, since a runtime cannot grant more
/// than the host holds. Every capability of the kernel
/// (`/proc/sys/kernel/cap_last_cap`) where /proc/1 cannot be read. Read
/// once.
pub fn host_bounding_set() -> u64 {
    static HOST: OnceLock<u64> = OnceLock::new();
    *HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/1/status")
            .ok()
            .and_then(|s| {
                let hex = s.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
                u64::from_str_radix(hex.trim(), 16).ok()
            })
            .unwrap_or_else(kernel_set)
    })
}

/// Every capability this kernel knows.
fn kernel_set() -> u64 {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
        .min(63);
    u64::MAX >> (63 - last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_like_falco() {
        assert_eq!(names(0), "");
        assert_eq!(names(1 << 21 | 1 << 13), "CAP_NET_RAW CAP_SYS_ADMIN");
        assert_eq!(names(1 << 45), "CAP_45");
    }

    #[test]
    fn the_kernel_set_has_every_known_capability() {
        let full = kernel_set();
        // Every kernel since 5.9 has CAP_CHECKPOINT_RESTORE (40).
        assert!(full & (1 << 40) != 0, "{full:#x}");
        assert_eq!(
            full & (full + 1),
            0,
            "a contiguous set from bit 0: {full:#x}"
        );
        // Init holds no capability the kernel lacks.
        assert_eq!(host_bounding_set() & !full, 0);
    }
}
