//! Kernel struct offsets computed from the running kernel's BTF.
//!
//! The probe never uses offsets from the build machine's headers: the agent
//! resolves each field it needs by name in `/sys/kernel/btf/vmlinux`
//! (descending into anonymous structs and unions), and a field the kernel
//! lacks becomes `UNKNOWN_OFFSET`, which the probe reports as "unknown".
use std::path::Path;

use agent_ebpf::config::{ProbeConfig, UNKNOWN_OFFSET};
use btf_rs::{Btf, BtfType, Type};

/// Default location of the kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
}

/// The probe's configuration with every struct offset filled in from BTF
/// (the other fields at their defaults), and the fields this kernel lacks.
#[derive(Debug, Clone)]
pub struct StructOffsets {
    pub config: ProbeConfig,
    /// `struct.field` names this kernel does not have.
    pub missing: Vec<String>,
}

impl StructOffsets {
    /// Resolves every field from the BTF file at `path`.
    pub fn from_btf_file(path: &Path) -> Result<StructOffsets, LayoutError> {
        let btf = Btf::from_file(path).map_err(|source| LayoutError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_btf(&btf))
    }

    pub fn from_btf(btf: &Btf) -> StructOffsets {
        let missing = std::cell::RefCell::new(Vec::new());
        let or_unknown = |what: String, v: Option<u32>| {
            v.unwrap_or_else(|| {
                missing.borrow_mut().push(what);
                UNKNOWN_OFFSET
            })
        };
        let get = |s: &str, f: &str| or_unknown(format!("{s}.{f}"), member_offset(btf, s, f));
        // `ns.inum` inside a namespace struct: two lookups added.
        let ns_inum = |s: &str| {
            let v = member_offset(btf, s, "ns").zip(member_offset(btf, "ns_common", "inum"));
            or_unknown(format!("{s}.ns.inum"), v.map(|(a, b)| a + b))
        };
        // A `sock_common` member through `sock.__sk_common`.
        let sock_common = |f: &str| {
            let v =
                member_offset(btf, "sock", "__sk_common").zip(member_offset(btf, "sock_common", f));
            or_unknown(format!("sock.__sk_common.{f}"), v.map(|(a, b)| a + b))
        };
        let upid_size = or_unknown("sizeof(struct upid)".into(), struct_size(btf, "upid"));
        let config = ProbeConfig {
            task_real_parent: get("task_struct", "real_parent"),
            task_pid: get("task_struct", "pid"),
            task_tgid: get("task_struct", "tgid"),
            task_mm: get("task_struct", "mm"),
            task_exit_code: get("task_struct", "exit_code"),
            mm_arg_start: get("mm_struct", "arg_start"),
            mm_arg_end: get("mm_struct", "arg_end"),
            mm_env_start: get("mm_struct", "env_start"),
            mm_env_end: get("mm_struct", "env_end"),
            task_cred: get("task_struct", "cred"),
            cred_euid: get("cred", "euid"),
            cred_egid: get("cred", "egid"),
            task_loginuid: get("task_struct", "loginuid"),
            regs_args: syscall_arg_regs(btf).unwrap_or_else(|| {
                missing
                    .borrow_mut()
                    .push("pt_regs syscall argument registers".into());
                [UNKNOWN_OFFSET; 6]
            }),
            regs_nr: {
                #[cfg(target_arch = "x86_64")]
                let v = member_offset(btf, "pt_regs", "orig_ax");
                #[cfg(target_arch = "aarch64")]
                let v = member_offset(btf, "pt_regs", "syscallno");
                #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
                let v = None;
                or_unknown("pt_regs syscall number".into(), v)
            },
            cred_cap_effective: get("cred", "cap_effective"),
            cred_cap_permitted: get("cred", "cap_permitted"),
            cred_cap_inheritable: get("cred", "cap_inheritable"),
            cred_cap_bset: get("cred", "cap_bset"),
            task_group_leader: get("task_struct", "group_leader"),
            task_start_boottime: get("task_struct", "start_boottime"),
            task_nsproxy: get("task_struct", "nsproxy"),
            nsproxy_mnt_ns: get("nsproxy", "mnt_ns"),
            mnt_ns_inum: ns_inum("mnt_namespace"),
            task_thread_pid: get("task_struct", "thread_pid"),
            pid_level: get("pid", "level"),
            pid_numbers: get("pid", "numbers"),
            upid_size,
            upid_nr: get("upid", "nr"),
            upid_ns: get("upid", "ns"),
            pid_ns_inum: ns_inum("pid_namespace"),
            task_fs: get("task_struct", "fs"),
            fs_pwd: get("fs_struct", "pwd"),
            fs_root: get("fs_struct", "root"),
            mm_exe_file: get("mm_struct", "exe_file"),
            task_files: get("task_struct", "files"),
            files_fdt: get("files_struct", "fdt"),
            fdt_max_fds: get("fdtable", "max_fds"),
            fdt_fd: get("fdtable", "fd"),
            file_f_path: get("file", "f_path"),
            path_mnt: get("path", "mnt"),
            path_dentry: get("path", "dentry"),
            dentry_parent: get("dentry", "d_parent"),
            dentry_name_ptr: {
                let v =
                    member_offset(btf, "dentry", "d_name").zip(member_offset(btf, "qstr", "name"));
                or_unknown("dentry.d_name.name".into(), v.map(|(a, b)| a + b))
            },
            vfsmount_root: get("vfsmount", "mnt_root"),
            mount_mnt: get("mount", "mnt"),
            mount_parent: get("mount", "mnt_parent"),
            mount_mountpoint: get("mount", "mnt_mountpoint"),
            file_private_data: get("file", "private_data"),
            file_inode: get("file", "f_inode"),
            inode_ino: get("inode", "i_ino"),
            inode_sb: get("inode", "i_sb"),
            sb_dev: get("super_block", "s_dev"),
            socket_sk: get("socket", "sk"),
            sock_dport: sock_common("skc_dport"),
            inode_mode: get("inode", "i_mode"),
            task_signal: get("task_struct", "signal"),
            signal_tty: get("signal_struct", "tty"),
            tty_index: get("tty_struct", "index"),
            tty_driver: get("tty_struct", "driver"),
            driver_major: get("tty_driver", "major"),
            driver_minor_start: get("tty_driver", "minor_start"),
            sock_family: sock_common("skc_family"),
            socket_type: get("socket", "type"),
            inode_nlink: get("inode", "i_nlink"),
            inode_size: get("inode", "i_size"),
            inode_ctime_sec: or_unknown(
                "inode ctime".into(),
                inode_time(btf, "ctime").map(|(sec, _)| sec),
            ),
            inode_ctime_nsec: or_unknown(
                "inode ctime".into(),
                inode_time(btf, "ctime").map(|(_, ns)| ns),
            ),
            inode_mtime_sec: or_unknown(
                "inode mtime".into(),
                inode_time(btf, "mtime").map(|(sec, _)| sec),
            ),
            inode_mtime_nsec: or_unknown(
                "inode mtime".into(),
                inode_time(btf, "mtime").map(|(_, ns)| ns),
            ),
            ..ProbeConfig::UNSET
        };
        StructOffsets {
            config,
            missing: missing.into_inner(),
        }
    }
}

/// Offsets of the seconds and nanoseconds of an inode time (`which`:
/// "ctime" or "mtime"). Kernels since 6.11 split them into `i_<which>_sec`
/// and `i_<which>_nsec`; 6.6 to 6.10 have a `timespec64 __i_<which>`, older
/// ones `i_<which>`. `tv_nsec` is read as its low 32 bits (little endian).
fn inode_time(btf: &Btf, which: &str) -> Option<(u32, u32)> {
    let split = member_offset(btf, "inode", &format!("i_{which}_sec")).zip(member_offset(
        btf,
        "inode",
        &format!("i_{which}_nsec"),
    ));
    split.or_else(|| {
        let ts = member_offset(btf, "inode", &format!("__i_{which}"))
            .or_else(|| member_offset(btf, "inode", &format!("i_{which}")))?;
        let sec = member_offset(btf, "timespec64", "tv_sec")?;
        let nsec = member_offset(btf, "timespec64", "tv_nsec")?;
        Some((ts + sec, ts + nsec))
    })
}

/// Where the syscall ABI keeps arguments 0..6 in `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
fn syscall_arg_regs(btf: &Btf) -> Option<[u32; 6]> {
    let mut out = [0; 6];
    for (i, r) in ["di", "si", "dx", "r10", "r8", "r9"].iter().enumerate() {
        out[i] = member_offset(btf, "pt_regs", r)?;
    }
    Some(out)
}

/// arm64: `regs[0..6]` (the syscall wrapper passes the original x0 in
/// `orig_x0`, but the raw tracepoint sees the entry registers).
#[cfg(target_arch = "aarch64")]
fn syscall_arg_regs(btf: &Btf) -> Option<[u32; 6]> {
    let base = member_offset(btf, "user_pt_regs", "regs")
        .or_else(|| member_offset(btf, "pt_regs", "regs"))?;
    Some(std::array::from_fn(|i| base + 8 * i as u32))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn syscall_arg_regs(_btf: &Btf) -> Option<[u32; 6]> {
    None
}

/// Size in bytes of `struct name`.
pub fn struct_size(btf: &Btf, name: &str) -> Option<u32> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) if !s.members.is_empty() => u32::try_from(s.size()).ok(),
        _ => None,
    })
}

/// Byte offset of `field` in `struct name`, searching anonymous members.
/// Bitfields are not byte-addressable and count as missing.
pub fn member_offset(btf: &Btf, name: &str, field: &str) -> Option<u32> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) if !s.members.is_empty() => find_in_struct(btf, s, field, 0),
        _ => None,
    })
}

fn find_in_struct(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let bits = base_bits + m.bit_offset();
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == field {
            if m.bitfield_size().is_some_and(|sz| sz != 0) || !bits.is_multiple_of(8) {
                return None;
            }
            return Some(bits / 8);
        }
        if mname.is_empty() {
            if let Some(inner) = anonymous_aggregate(btf, m) {
                if let Some(off) = find_in_struct(btf, &inner, field, bits) {
                    return Some(off);
                }
            }
        }
    }
    None
}

/// The struct or union type of an unnamed member, through typedefs and
/// qualifiers.
fn anonymous_aggregate(btf: &Btf, m: &dyn BtfType) -> Option<btf_rs::Struct> {
    let mut t = btf.resolve_chained_type(m).ok()?;
    for _ in 0..8 {
        match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref x) => t = btf.resolve_chained_type(x).ok()?,
            Type::Const(ref x) | Type::Volatile(ref x) => t = btf.resolve_chained_type(x).ok()?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF, which every supported host has.
    #[test]
    fn resolves_task_struct_fields_from_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI host lacks {VMLINUX_BTF}"
            );
            return;
        }
        let offs = StructOffsets::from_btf_file(path).unwrap();
        assert!(offs.missing.is_empty(), "missing: {:?}", offs.missing);
        // pid and tgid are adjacent pid_t fields in every kernel since 2.6.
        assert_eq!(offs.config.task_tgid, offs.config.task_pid + 4);
        assert!(offs.config.mm_arg_end > offs.config.mm_arg_start);
        // struct upid { int nr; struct pid_namespace *ns; } on 64-bit.
        assert_eq!(offs.config.upid_size, 16);
        assert_eq!(offs.config.upid_ns, 8);
        assert_eq!(
            offs.config.cred_egid,
            offs.config.cred_euid + 4,
            "euid, egid are adjacent in struct cred"
        );
    }

    #[test]
    fn missing_field_is_unknown_not_garbage() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        assert_eq!(member_offset(&btf, "task_struct", "no_such_field"), None);
        assert_eq!(member_offset(&btf, "no_such_struct", "pid"), None);
    }

    #[test]
    fn unreadable_btf_names_the_path_and_config() {
        let err = StructOffsets::from_btf_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/vmlinux") && msg.contains("CONFIG_DEBUG_INFO_BTF"),
            "{msg}"
        );
    }
}
