//! SHA-256 of executables, read off the event path.
//!
//! The file is opened through `/proc/PID/exe` while the process lives (that
//! reaches deleted files and memfds too), else by path; either way it is
//! hashed only if its device, inode and change time are still those the
//! kernel reported at exec, so a file rewritten in between is never hashed
//! under the old identity.
use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::event::ExeFile;

/// What hashing an executable gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOutcome {
    /// Hex SHA-256.
    Done(String),
    /// Larger than the configured limit: not read.
    TooLarge,
    /// Gone, unreadable, or changed since the exec.
    Unavailable,
}

/// Hashes the executable `file` of process `pid` (at `path` by name).
pub fn hash_exe(pid: u32, path: Option<&str>, file: &ExeFile, max_bytes: u64) -> HashOutcome {
    if file.size > max_bytes {
        return HashOutcome::TooLarge;
    }
    let candidates = [
        Some(PathBuf::from(format!("/proc/{pid}/exe"))),
        path.filter(|p| p.starts_with('/')).map(PathBuf::from),
    ];
    for c in candidates.iter().flatten() {
        if let Some(h) = hash_file(c, file, max_bytes) {
            return h;
        }
    }
    HashOutcome::Unavailable
}

/// Hashes the file at `path` if it is still the file `want` names
/// (device, inode, change time); None when it is not, or cannot be opened.
pub fn hash_file(path: &Path, want: &ExeFile, max_bytes: u64) -> Option<HashOutcome> {
    let mut f = File::open(path).ok()?;
    let now = ExeFile::from_metadata(&f.metadata().ok()?);
    if !now.same_file_unchanged(want) {
        return None;
    }
    if now.size > max_bytes {
        return Some(HashOutcome::TooLarge);
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return Some(HashOutcome::Unavailable),
        }
    }
    Some(HashOutcome::Done(hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(path: &Path) -> ExeFile {
        ExeFile::from_metadata(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn hashes_by_path_and_refuses_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, b"abc").unwrap();
        let id = ident(&p);
        let ps = p.to_str();
        // No such pid: falls back to the path.
        assert_eq!(
            hash_exe(u32::MAX, ps, &id, 1 << 20),
            HashOutcome::Done(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            )
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&p, b"abd").unwrap();
        assert_eq!(
            hash_exe(u32::MAX, ps, &id, 1 << 20),
            HashOutcome::Unavailable
        );
        assert_eq!(hash_exe(u32::MAX, ps, &ident(&p), 2), HashOutcome::TooLarge);
    }

    #[test]
    fn hashes_a_live_process_through_proc() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let id = ident(&me);
        assert!(matches!(
            hash_exe(std::process::id(), None, &id, u64::MAX),
            HashOutcome::Done(h) if h.len() == 64
        ));
    }
}
