//! Giving up the capabilities the agent no longer needs once its probe is
//! loaded and attached, so that a flaw in what it parses afterwards
//! (container files, rule files, the collector's replies) cannot be used
//! to load a kernel module, open raw devices, kill processes or change
//! users. Capabilities are per thread: the drop happens on the main thread
//! before it starts any other, and every later thread inherits it.
//!
//! What is kept, and why, is listed in [`KEPT`] and in docs/security.md.
use std::io;

/// A capability the agent keeps: (number, name, what needs it).
pub struct Kept {
    pub number: u32,
    pub name: &'static str,
    pub why: &'static str,
}

/// Everything the agent keeps after start-up; every other capability is
/// removed from the effective, permitted, inheritable, ambient and
/// bounding sets.
pub const KEPT: &[Kept] = &[
    Kept {
        number: 2,
        name: "CAP_DAC_READ_SEARCH",
        why: "read executables to hash them and container files (passwd, group) whose modes would refuse it",
    },
    Kept {
        number: 19,
        name: "CAP_SYS_PTRACE",
        why: "read /proc/PID/exe, root, environ and ns of processes of other users",
    },
    Kept {
        number: 21,
        name: "CAP_SYS_ADMIN",
        why: "walk the kernel's BPF link table to see programs detached from outside the agent",
    },
    Kept {
        number: 38,
        name: "CAP_PERFMON",
        why: "attach syscall tracepoints when a rule reload needs new ones",
    },
    Kept {
        number: 39,
        name: "CAP_BPF",
        why: "read and write the probe's maps and attach its programs on rule reloads",
    },
];

/// What [`drop_unneeded`] did.
#[derive(Debug)]
pub struct Dropped {
    /// Names of the capabilities still effective.
    pub kept: Vec<&'static str>,
    /// Whether the bounding set was cut too (needs CAP_SETPCAP, which a
    /// root agent has; without it a later execve could regain more).
    pub bounding: bool,
}

const CAP_SETPCAP: u32 = 8;
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, k| m | 1 << k.number)
}

/// Removes every capability not in [`KEPT`] from the calling thread (and
/// so from the threads it starts later).
pub fn drop_unneeded() -> io::Result<Dropped> {
    let keep = kept_mask();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let mut data = [Data::default(); 2];
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capget writes two Data entries, as version 3 defines.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the capset below removes.
    let can_setpcap = data[0].effective & (1 << CAP_SETPCAP) != 0;
    if can_setpcap {
        for cap in (0..=last).filter(|c| keep & (1 << c) == 0) {
            // SAFETY: plain prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = io::Error::last_os_error();
                // EINVAL: a capability this kernel does not know.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: plain prctl; fails harmlessly on kernels without ambient sets.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let halves = [keep as u32, (keep >> 32) as u32];
    for (d, mask) in data.iter_mut().zip(halves) {
        d.effective &= mask;
        d.permitted &= mask;
        d.inheritable = 0;
    }
    // SAFETY: capset reads two Data entries, as version 3 defines.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let effective = data[0].effective as u64 | (data[1].effective as u64) << 32;
    Ok(Dropped {
        kept: KEPT
            .iter()
            .filter(|k| effective & (1 << k.number) != 0)
            .map(|k| k.name)
            .collect(),
        bounding: can_setpcap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_set_names_each_capability_once() {
        let mut numbers: Vec<u32> = KEPT.iter().map(|k| k.number).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), KEPT.len());
        assert_eq!(kept_mask().count_ones() as usize, KEPT.len());
        assert!(KEPT
            .iter()
            .all(|k| k.name.starts_with("CAP_") && !k.why.is_empty()));
    }
}
