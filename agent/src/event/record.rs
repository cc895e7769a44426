//! Decoding steps every family shares: a record read out of ring-buffer
//! bytes, the variable tail of a syscall record split into its parts,
//! paths made absolute, C strings, and error numbers by name.
use std::{borrow::Cow, fmt, mem::size_of};

use agent_ebpf::syscall::SyscallRecord;

use super::DecodeError;

/// Reads a wire record from the start of `bytes`, which need not be
/// aligned. `aya::Pod` (implemented in the wire crate for its records
/// only) is the promise that any bytes of the right length make a valid
/// `T`: no references, no enums, no padding that matters.
pub fn read_record<T: aya::Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length is checked, and T is plain old data.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// A syscall record with its variable tail split: the first path (or
/// name, or raw buffer) and its base directory, then the second pair.
pub struct SyscallParts<'a> {
    pub rec: SyscallRecord,
    pub path1: &'a [u8],
    pub base1: &'a [u8],
    pub path2: &'a [u8],
    pub base2: &'a [u8],
}

impl<'a> SyscallParts<'a> {
    /// Reads the record and splits its tail; lengths that claim more than
    /// the record holds are clamped to what is there.
    pub fn read(bytes: &'a [u8], what: &'static str) -> Result<SyscallParts<'a>, DecodeError> {
        let rec: SyscallRecord = read_record(bytes, what)?;
        let mut tail = &bytes[size_of::<SyscallRecord>()..];
        let mut next = |len: u16| {
            let (part, rest) = tail.split_at((len as usize).min(tail.len()));
            tail = rest;
            part
        };
        let path1 = next(rec.path1_len);
        let base1 = next(rec.base1_len);
        let path2 = next(rec.path2_len);
        let base2 = next(rec.base2_len);
        Ok(SyscallParts {
            rec,
            path1,
            base1,
            path2,
            base2,
        })
    }
}

/// Text up to the first NUL, lossily decoded.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Joins `raw` onto the directory given as leaf-first NUL-separated
/// components and normalizes `.` and `..` lexically.
pub fn absolute(raw: &str, base_components: &[u8]) -> String {
    // Most paths are absolute and normal already: copied as they are.
    if raw == "/"
        || (raw.starts_with('/') && raw[1..].split('/').all(|c| !matches!(c, "" | "." | "..")))
    {
        return raw.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    if !raw.starts_with('/') {
        let comps: Vec<&[u8]> = base_components
            .split(|&b| b == 0)
            .filter(|c| !c.is_empty() && *c != b"/")
            .collect();
        // A file on an internal filesystem (nsfs, pipefs, anon_inode) has
        // only its own name, e.g. `uts:[4026531838]`, as d_path reports it.
        if raw.is_empty() && comps.len() == 1 && comps[0].windows(2).any(|w| w == b":[") {
            return String::from_utf8_lossy(comps[0]).into_owned();
        }
        for c in comps.iter().rev() {
            parts.push(std::str::from_utf8(c).unwrap_or("?"));
        }
    }
    let mut out: Vec<&str> = Vec::new();
    for p in parts.into_iter().chain(raw.split('/')) {
        match p {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

/// A syscall's error number, printed and parsed by name (`ENOENT`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENOEXEC, "ENOEXEC"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::EMFILE, "EMFILE"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EROFS, "EROFS"),
    (libc::EMLINK, "EMLINK"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EINPROGRESS, "EINPROGRESS"),
];

impl Errno {
    /// The error of a syscall result (`-errno`); None on success.
    pub fn of_result(result: i64) -> Option<Errno> {
        (result < 0).then(|| Errno((-result).min(i32::MAX as i64) as i32))
    }

    /// `ENOENT`, or `errno N` for a number without a name here.
    pub fn name(self) -> Cow<'static, str> {
        match ERRNO_NAMES.iter().find(|(n, _)| *n == self.0) {
            Some((_, name)) => Cow::Borrowed(name),
            None => Cow::Owned(format!("errno {}", self.0)),
        }
    }

    fn from_name(s: &str) -> Option<Errno> {
        if let Some(n) = s.strip_prefix("errno ") {
            return n.parse().ok().map(Errno);
        }
        ERRNO_NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| Errno(*n))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Errno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<str>>::deserialize(d)?;
        Errno::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an error name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_from_components() {
        assert_eq!(absolute("passwd", b"etc\0"), "/etc/passwd");
        assert_eq!(absolute("x", b""), "/x");
        assert_eq!(absolute("../shadow", b"ssh\0etc\0"), "/etc/shadow");
        assert_eq!(absolute("./a/./b/", b"tmp\0"), "/tmp/a/b");
        assert_eq!(absolute("/etc//hosts", b"ignored\0"), "/etc/hosts");
        assert_eq!(absolute("/etc/hosts", b"ignored\0"), "/etc/hosts");
        assert_eq!(absolute("/etc/./hosts/..", b""), "/etc");
        assert_eq!(absolute("/etc/", b""), "/etc");
        assert_eq!(absolute("/", b""), "/");
        assert_eq!(absolute("../../../..", b"a\0"), "/");
        assert_eq!(absolute("", b"uts:[4026531838]\0"), "uts:[4026531838]");
        assert_eq!(
            absolute("x", b"/\0"),
            "/x",
            "the real root's own name is skipped"
        );
    }

    #[test]
    fn errno_names() {
        assert_eq!(Errno::of_result(3), None);
        assert_eq!(Errno::of_result(-2).unwrap().name(), "ENOENT");
        assert_eq!(Errno::of_result(-9999).unwrap().name(), "errno 9999");
        for text in ["\"ENOENT\"", "\"errno 9999\""] {
            let e: Errno = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&e).unwrap(), text);
        }
        assert!(serde_json::from_str::<Errno>("\"ENOTANERROR\"").is_err());
    }
}
