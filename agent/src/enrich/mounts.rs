//! A container's mounts, read from its mount table (`/proc/PID/mountinfo`),
//! with the host path behind each: a bind mount shows the directory of
//! the file system it came from, so the host's mount table (init's) turns
//! "device 0:25, path /docker.sock" back into `/run/docker.sock`.
//!
//! The table is the kernel's, but the paths in it are the container's
//! choice: lines are parsed without trusting them (escapes undone, odd
//! lines skipped), and the read and the number of mounts are bounded.
use std::{io::Read, path::Path};

use crate::event::ContainerMount;

/// Most bytes of a mount table read.
const MOUNTINFO_MAX: u64 = 1 << 20;
/// Most mounts kept per container.
pub const MOUNTS_MAX: usize = 512;

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `major:minor` of the file system.
    dev: String,
    /// The directory of the file system that is mounted.
    root: String,
    /// Where.
    point: String,
    rw: bool,
    propagation: &'static str,
    fstype: String,
    source: String,
}

/// The mounts of process `pid` (under `proc_root`), with host paths from
/// the host's table (init's).
pub fn read(proc_root: &Path, pid: u32) -> Option<Vec<ContainerMount>> {
    let own = parse(&read_bounded(
        &proc_root.join(pid.to_string()).join("mountinfo"),
    )?);
    let host = read_bounded(&proc_root.join("1/mountinfo"))
        .map(|t| parse(&t))
        .unwrap_or_default();
    Some(resolve(own, &host))
}

/// A container's table with each mount's source as the host sees it.
fn resolve(own: Vec<Entry>, host: &[Entry]) -> Vec<ContainerMount> {
    own.into_iter()
        .take(MOUNTS_MAX)
        .map(|e| ContainerMount {
            source: host_path(&e, host).unwrap_or_else(|| e.source.clone()),
            dest: e.point,
            fstype: e.fstype,
            rw: e.rw,
            propagation: e.propagation.to_string(),
        })
        .collect()
}

fn read_bounded(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MOUNTINFO_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The host path `e` shows: a host mount of the same file system whose
/// directory holds `e`'s (the longest such), and the rest of the path.
fn host_path(e: &Entry, host: &[Entry]) -> Option<String> {
    let h = host
        .iter()
        .filter(|h| h.dev == e.dev && within(&e.root, &h.root))
        .max_by_key(|h| (h.root.len(), std::cmp::Reverse(h.point.len())))?;
    let rest = e.root[h.root.len()..].trim_start_matches('/');
    Some(match (h.point.as_str(), rest) {
        (p, "") => p.to_string(),
        ("/", r) => format!("/{r}"),
        (p, r) => format!("{p}/{r}"),
    })
}

/// Whether `path` is `dir` or below it.
fn within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Parses a mount table: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 -
/// ext3 /dev/root rw`. Lines that do not have this shape are skipped.
fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut f = left.split(' ');
            let (_id, _parent) = (f.next()?, f.next()?);
            let dev = f.next()?.to_string();
            let root = unescape(f.next()?);
            let point = unescape(f.next()?);
            let rw = f.next()?.split(',').next() == Some("rw");
            let mut propagation = "private";
            for tag in f {
                if tag.starts_with("shared:") {
                    propagation = "shared";
                } else if tag.starts_with("master:") && propagation == "private" {
                    propagation = "slave";
                }
            }
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next().unwrap_or("none"));
            Some(Entry {
                dev,
                root,
                point,
                rw,
                propagation,
                fstype,
                source,
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
24 22 0:5 / /proc rw,nosuid shared:12 - proc proc rw
25 22 254:2 / /var/lib/docker rw shared:7 - xfs /dev/vdb rw
";

    const CONTAINER: &str = "\
600 500 0:80 / / rw,relatime - overlay overlay rw,lowerdir=/x
601 600 0:81 / /proc rw,nosuid - proc proc rw
602 600 0:25 /docker.sock /var/run/docker.sock rw,nosuid master:5 - tmpfs tmpfs rw
603 600 254:1 /etc /host/etc ro,relatime - ext4 /dev/vda1 rw
604 600 254:1 / /host rw,relatime master:1 - ext4 /dev/vda1 rw
605 600 254:2 /volumes/data/_data /data rw - xfs /dev/vdb rw
606 600 254:1 /home/a\\040b /mnt/with\\040space rw - ext4 /dev/vda1 rw
garbage line without the separator
607 600 0:5 /1234 /hidden rw shared:9 - proc proc rw
";

    #[test]
    fn bind_mounts_show_the_host_path() {
        let got: Vec<String> = resolve(parse(CONTAINER), &parse(HOST))
            .iter()
            .map(ContainerMount::describe)
            .collect();
        assert_eq!(
            got,
            [
                "overlay:/::true:private",
                "proc:/proc::true:private",
                "/run/docker.sock:/var/run/docker.sock::true:slave",
                "/etc:/host/etc::false:private",
                "/:/host::true:slave",
                "/var/lib/docker/volumes/data/_data:/data::true:private",
                "/home/a b:/mnt/with space::true:private",
                "/proc/1234:/hidden::true:shared",
            ]
        );
    }

    #[test]
    fn a_real_table_parses() {
        let own = std::process::id();
        let m = read(Path::new("/proc"), own).unwrap();
        // The agent's own view is the host's: / is itself.
        assert!(m.iter().any(|m| m.dest == "/" && m.source == "/"), "{m:?}");
    }
}
