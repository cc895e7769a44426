//! User and group names from `passwd` and `group` files.
//!
//! Names come from the process's own view of the system: the host's files
//! for host processes, the container's (read through `/proc/PID/root`)
//! for processes in another mount namespace, where uid 1000 may well be a
//! different user.
use std::{collections::HashMap, fs, path::Path, sync::Arc, time::SystemTime};

use crate::util::files::read_in_root;

/// Identity of the passwd and group files when read: their modification
/// times and inodes (a file replaced by rename keeps its mtime).
pub type UserStamp = [Option<(SystemTime, u64)>; 2];

/// Most bytes read of a passwd or group file (a real one is a few KiB).
pub const MAX_ID_FILE: usize = 4 << 20;

/// uid and gid to name, from one root's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserDb {
    users: HashMap<u32, Arc<str>>,
    groups: HashMap<u32, Arc<str>>,
    /// The files' identity when read, to reload on change.
    pub stamp: UserStamp,
}

impl UserDb {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; missing files give
    /// no names. A container controls these files, so they are read
    /// inside its root, as regular files only, up to [`MAX_ID_FILE`]
    /// bytes (see [`crate::util::files`]); anything else gives no names.
    pub fn load(root: &Path) -> UserDb {
        let read = |rel: &str| match read_in_root(root, rel, MAX_ID_FILE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(root = %root.display(), file = rel, error = %e, "user names not read");
                }
                String::new()
            }
        };
        UserDb {
            users: parse_id_file(&read("etc/passwd")),
            groups: parse_id_file(&read("etc/group")),
            stamp: Self::stamp_of(root),
        }
    }

    pub fn stamp_of(root: &Path) -> UserStamp {
        use std::os::unix::fs::MetadataExt;
        let m = |f: &str| {
            let m = fs::metadata(root.join(f)).ok()?;
            Some((m.modified().ok()?, m.ino() ^ m.dev().rotate_left(32)))
        };
        [m("etc/passwd"), m("etc/group")]
    }

    pub fn user(&self, uid: u32) -> Option<Arc<str>> {
        self.users.get(&uid).cloned()
    }

    pub fn group(&self, gid: u32) -> Option<Arc<str>> {
        self.groups.get(&gid).cloned()
    }
}

/// `name:x:id:...` lines (passwd and group share the first three fields).
/// Comments, blank and malformed lines are skipped; the first name of an
/// id wins, as with getpwuid.
fn parse_id_file(text: &str) -> HashMap<u32, Arc<str>> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u32>() else {
            continue;
        };
        if !name.is_empty() {
            out.entry(id).or_insert_with(|| Arc::from(name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\napp:x:1000:1000::/home/app:/bin/sh\ndup:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let db = UserDb::load(dir.path());
        assert_eq!(db.user(0).as_deref(), Some("root"));
        assert_eq!(db.user(1000).as_deref(), Some("app"), "first name wins");
        assert_eq!(db.user(5), None);
        assert_eq!(db.group(50).as_deref(), Some("staff"));
    }

    #[test]
    fn missing_files_give_no_names() {
        let db = UserDb::load(Path::new("/nonexistent"));
        assert_eq!(db.user(0), None);
    }
}
