//! User-configured exclusions, resolved at start-up into the keys the probe
//! checks in the kernel: cgroup v2 ids, and executables by (device, inode).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_ebpf::config::{ExeKey, MAX_EXCLUSIONS};

use crate::util::kernel_dev;

#[derive(Debug, thiserror::Error)]
pub enum ExclusionError {
    #[error("--exclude-exe {0}: {1}")]
    Exe(String, String),
    #[error("--exclude-cgroup {0}: {1}")]
    Cgroup(String, String),
    #[error("at most {MAX_EXCLUSIONS} exclusions of each kind")]
    TooMany,
}

/// What the probe must skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub exes: Vec<ExeKey>,
    pub cgroups: Vec<u64>,
}

/// The key of an executable file. Symlinks are followed, as exec does.
pub fn exe_key(path: &Path) -> Result<ExeKey, ExclusionError> {
    let err = |m: String| ExclusionError::Exe(path.display().to_string(), m);
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    Ok(ExeKey {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
    })
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A cgroup v2 id: given as a number, or as the cgroup's directory (its
/// inode number is the id).
pub fn cgroup_id(spec: &str) -> Result<u64, ExclusionError> {
    if let Ok(id) = spec.parse::<u64>() {
        return Ok(id);
    }
    let err = |m: &str| ExclusionError::Cgroup(spec.to_string(), m.to_string());
    let path = PathBuf::from(spec);
    let meta = std::fs::metadata(&path).map_err(|e| err(&e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("not a directory"));
    }
    let c = std::ffi::CString::new(spec).map_err(|_| err("path has a NUL byte"))?;
    // SAFETY: valid C string and out-pointer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != CGROUP2_SUPER_MAGIC
    {
        return Err(err(
            "not a cgroup v2 directory (give the path under the cgroup2 mount, or the numeric id)",
        ));
    }
    Ok(meta.ino())
}

impl Exclusions {
    pub fn resolve(exes: &[PathBuf], cgroups: &[String]) -> Result<Exclusions, ExclusionError> {
        if exes.len() > MAX_EXCLUSIONS as usize || cgroups.len() > MAX_EXCLUSIONS as usize {
            return Err(ExclusionError::TooMany);
        }
        Ok(Exclusions {
            exes: exes.iter().map(|p| exe_key(p)).collect::<Result<_, _>>()?,
            cgroups: cgroups
                .iter()
                .map(|c| cgroup_id(c))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exes.is_empty() && self.cgroups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_keys_follow_symlinks_and_name_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"x").unwrap();
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(exe_key(&f).unwrap(), exe_key(&l).unwrap());
        let e = exe_key(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.starts_with("--exclude-exe ") && e.contains("nope"), "{e}");
        let e = exe_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn cgroup_ids_from_numbers_and_bad_paths() {
        assert_eq!(cgroup_id("12345").unwrap(), 12345);
        let dir = tempfile::tempdir().unwrap();
        let e = cgroup_id(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a cgroup v2 directory"), "{e}");
        assert!(cgroup_id("/nonexistent/cg")
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/cg"));
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
    }
}
