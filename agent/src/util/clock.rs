//! Clocks: the probe stamps events with `CLOCK_BOOTTIME`, `/proc` counts
//! start times in clock ticks, and file times come in seconds and ns.

/// Converts the probe's `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    /// realtime - boottime, in ns.
    offset_ns: i64,
}

impl BootClock {
    /// Samples both clocks now. Cheap (vDSO); re-sample to follow clock steps.
    pub fn now() -> BootClock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        BootClock {
            offset_ns: real - boot,
        }
    }

    /// A clock with a fixed offset, for tests and replays.
    pub fn with_offset(offset_ns: i64) -> BootClock {
        BootClock { offset_ns }
    }

    pub fn to_unix_ns(self, boot_ns: u64) -> i64 {
        self.offset_ns.saturating_add(boot_ns as i64)
    }
}

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Length of a clock tick (`USER_HZ`) in ns: the unit of `/proc` start times.
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// A file time (`st_ctime` + `st_ctime_nsec`, …) as ns since the epoch,
/// the unit the probe reports inode times in.
pub fn stat_time_ns(sec: i64, nsec: i64) -> u64 {
    (sec.max(0) as u64) * 1_000_000_000 + nsec.max(0) as u64
}
