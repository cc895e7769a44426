//! Which system utility a program is a copy of, whatever it is called.
//!
//! `cp /bin/bash /tmp/kworker` gives a shell that name-based rules and a
//! glance at `ps` miss. The system binary directories are indexed by file
//! size (a `stat` of each name, symlinks followed, so `python3` and
//! `python3.11` are both names of one file); when a program is hashed
//! anyway for `proc.sha256`, the system binaries of its exact size are
//! hashed too (once per file identity, cached) and compared. Almost every
//! program matches no size, so the usual cost is one map lookup.
//!
//! The index is rebuilt when a directory's modification time changes (a
//! package installed or removed), checked at most every
//! [`RECHECK_EVERY`].
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::hash::{hash_file, HashOutcome};
use crate::event::ExeFile;

/// The directories whose programs are "system utilities".
pub const SYSTEM_BIN_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Where else a system binary's own copies and hard links live by design
/// (`/usr/lib/git-core/git-*` are links to git; helpers in libexec): a
/// program there is not compared.
const SYSTEM_OWN_DIRS: &[&str] = &[
    "/usr/lib/",
    "/usr/lib32/",
    "/usr/lib64/",
    "/usr/libexec/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/usr/share/",
    "/nix/",
];

/// Most names indexed: a directory with more is cut, with a warning.
const MAX_NAMES: usize = 65_536;
/// How often directory times are looked at again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// One file of the system binary directories: its identity and its
/// names, as host paths.
type Named = (ExeFile, Vec<Arc<str>>);

/// The system binary directories, by file size.
pub struct SystemBinaries {
    /// The host's root (`/`, or init's root for an agent in a container).
    root: PathBuf,
    /// Each directory's modification time when the index was built.
    stamps: Vec<Option<SystemTime>>,
    checked: Option<Instant>,
    /// The files of each size.
    by_size: HashMap<u64, Vec<Named>>,
    /// Hashes of system binaries, by identity.
    hashed: HashMap<ExeFile, Arc<str>>,
}

impl SystemBinaries {
    pub fn new(root: &Path) -> SystemBinaries {
        SystemBinaries {
            root: root.to_path_buf(),
            stamps: Vec::new(),
            checked: None,
            by_size: HashMap::new(),
            hashed: HashMap::new(),
        }
    }

    /// Whether a program at `path` is compared at all: it runs from
    /// outside the system binary directories and the places their own
    /// links live, and from a file (not a memfd).
    pub fn compares(path: &str) -> bool {
        path.starts_with('/')
            && !path.starts_with("/memfd:")
            && !SYSTEM_BIN_DIRS
                .iter()
                .any(|d| path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
            && !SYSTEM_OWN_DIRS.iter().any(|d| path.starts_with(d))
    }

    /// The names of the system binaries with the contents of `file`
    /// (whose hash is `sha256`), as host paths; empty when none. A system
    /// binary run from its own place is one of them: its hash is taken as
    /// given, not computed twice.
    pub fn names_of(&mut self, file: &ExeFile, sha256: &str, max_bytes: u64) -> Vec<Arc<str>> {
        self.refresh();
        let Some(files) = self.by_size.get(&file.size) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for (_, file_names) in files {
            // The file as it is now: a chmod, a setcap or a new hard link
            // changes its change time, and so its identity, without
            // touching the directory the index watches.
            let path = self.root.join(file_names[0].trim_start_matches('/'));
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            let id = ExeFile::from_metadata(&m);
            let h = if id == *file {
                Some(Arc::from(sha256))
            } else if let Some(h) = self.hashed.get(&id) {
                Some(h.clone())
            } else {
                // Failures are not cached: the file may be readable, or
                // settled, next time.
                match hash_file(&path, &id, max_bytes) {
                    Some(HashOutcome::Done(h)) => {
                        let h: Arc<str> = Arc::from(h);
                        self.hashed.insert(id, h.clone());
                        Some(h)
                    }
                    _ => None,
                }
            };
            if h.as_deref() == Some(sha256) {
                names.extend(file_names.iter().cloned());
            }
        }
        names
    }

    /// Rebuilds the index when a directory changed.
    fn refresh(&mut self) {
        if self.checked.is_some_and(|t| t.elapsed() < RECHECK_EVERY) {
            return;
        }
        self.checked = Some(Instant::now());
        let stamps: Vec<Option<SystemTime>> = (SYSTEM_BIN_DIRS.iter())
            .map(|d| {
                std::fs::metadata(self.root.join(d.trim_start_matches('/')))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .collect();
        if stamps == self.stamps && !self.by_size.is_empty() {
            return;
        }
        self.stamps = stamps;
        self.by_size.clear();
        // Hashes stay valid for identities still there (an upgraded
        // file has a new change time, so a new identity).
        let mut ids: HashMap<ExeFile, Vec<Arc<str>>> = HashMap::new();
        let mut seen_dirs = Vec::new();
        let mut count = 0;
        for d in SYSTEM_BIN_DIRS {
            let dir = self.root.join(d.trim_start_matches('/'));
            // /bin is /usr/bin on merged-/usr systems: index it once, under
            // the name it is given first.
            let Ok(real) = std::fs::canonicalize(&dir) else {
                continue;
            };
            if seen_dirs.contains(&real) {
                continue;
            }
            seen_dirs.push(real);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if count >= MAX_NAMES {
                    tracing::warn!(
                        max = MAX_NAMES,
                        "system binary directories hold more names than are indexed for renamed-copy detection"
                    );
                    break;
                }
                let Ok(m) = std::fs::metadata(e.path()) else {
                    continue;
                };
                if !m.is_file() || m.len() == 0 {
                    continue;
                }
                let name = format!("{d}/{}", e.file_name().to_string_lossy());
                ids.entry(ExeFile::from_metadata(&m))
                    .or_default()
                    .push(Arc::from(name));
                count += 1;
            }
        }
        // Identities no longer in the directories go; a changed file is
        // hashed again under its new one.
        let live: std::collections::HashSet<(u64, u64)> =
            ids.keys().map(|id| (id.dev, id.ino)).collect();
        self.hashed.retain(|id, _| live.contains(&(id.dev, id.ino)));
        for (id, mut names) in ids {
            names.sort();
            self.by_size.entry(id.size).or_default().push((id, names));
        }
        tracing::debug!(
            names = count,
            sizes = self.by_size.len(),
            "system binaries indexed"
        );
    }
}

/// The system binary `exe` (the program's path) is a copy of under
/// another file name: the first of `names` when none of them has the
/// program's file name. None for a program that is not compared.
pub fn renamed_from(exe: &str, names: &[Arc<str>]) -> Option<Arc<str>> {
    if names.is_empty() || !SystemBinaries::compares(exe) {
        return None;
    }
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let own = base(exe);
    if names.iter().any(|n| base(n) == own) {
        return None;
    }
    names.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::hash::hash_exe;

    /// The file's identity and hash.
    fn sha(path: &Path) -> (ExeFile, String) {
        let id = ExeFile::from_metadata(&std::fs::metadata(path).unwrap());
        match hash_exe(0, path.to_str(), &id, u64::MAX) {
            HashOutcome::Done(h) => (id, h),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_copy_under_another_name_is_found_by_contents() {
        // A root of the test's own: usr/bin with two names of one file
        // (a hard link and a symlink) and a file of the same size but
        // other contents.
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
        std::fs::hard_link(bin.join("tool"), bin.join("tool-alias")).unwrap();
        std::os::unix::fs::symlink("tool", bin.join("tool-link")).unwrap();
        std::fs::write(bin.join("other"), b"#!/bin/sh\necho othr\n").unwrap();
        let copy = root.path().join("kworker");
        std::fs::copy(bin.join("tool"), &copy).unwrap();

        let mut s = SystemBinaries::new(root.path());
        let (id, h) = sha(&copy);
        let names = s.names_of(&id, &h, u64::MAX);
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["/usr/bin/tool", "/usr/bin/tool-alias", "/usr/bin/tool-link"]
        );
        assert_eq!(
            renamed_from("/tmp/kworker", &names).as_deref(),
            Some("/usr/bin/tool")
        );
        // Under one of its own names, in a system directory, or in a
        // place system binaries link from: not renamed.
        assert_eq!(renamed_from("/tmp/tool-link", &names), None);
        assert_eq!(renamed_from("/usr/bin/tool-alias", &names), None);
        assert_eq!(renamed_from("/usr/lib/git-core/git-x", &names), None);
        assert_eq!(renamed_from("/memfd:runc (deleted)", &names), None);
        // Same size, other contents: no match.
        std::fs::write(&copy, b"#!/bin/sh\necho tooo\n").unwrap();
        let (id, h) = sha(&copy);
        assert!(s.names_of(&id, &h, u64::MAX).is_empty());
        // A hard link is the same file: found without hashing it again.
        let (id, h) = sha(&bin.join("tool-alias"));
        assert_eq!(s.names_of(&id, &h, u64::MAX).len(), 3);
        // A hard link made after the index changes the file's change
        // time: the candidate is looked at as it is now.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let link = root.path().join("hidden-link");
        std::fs::hard_link(bin.join("tool"), &link).unwrap();
        let (id, h) = sha(&link);
        assert_eq!(
            renamed_from("/tmp/hidden-link", &s.names_of(&id, &h, u64::MAX)).as_deref(),
            Some("/usr/bin/tool")
        );
        // No file of that size: nothing hashed.
        let bigger = ExeFile {
            size: id.size + 1,
            ..id
        };
        assert!(s.names_of(&bigger, "00", u64::MAX).is_empty());
    }
}
