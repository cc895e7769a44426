//! The text formats of `/proc` files and of the kernel's argument blocks.

/// `comm`, ppid and start time from `/proc/PID/stat`. The comm is in
/// parentheses and may itself contain ") ", so the rest is split after the
/// last one.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// The first number after `name` in `/proc/PID/status` (the real id for
/// `Uid:`/`Gid:`).
pub fn status_field(status: &str, name: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Splits a NUL-separated argument block (`/proc/PID/cmdline`, or the one
/// the probe copies at exec). A block cut mid-way ends without a NUL; its
/// last, partial argument is kept.
pub fn split_argv(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_comm() {
        let stat = "42 (a) b) c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_stat(stat), Some(("a) b) c".into(), 7, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn argv_blocks() {
        assert_eq!(split_argv(b"ls\0-l\0"), vec!["ls", "-l"]);
        assert_eq!(split_argv(b"cut\0par"), vec!["cut", "par"]);
        assert!(split_argv(b"").is_empty());
    }
}
