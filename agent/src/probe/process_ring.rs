//! The process ring's own reader: a thread that moves exec, fork and exit
//! records out of the kernel ring the moment the probe wakes it, into a
//! backlog in memory that the event loop empties on its next drain.
//!
//! The event loop works through the syscall ring in slices, and a slice
//! of a flood (decode, enrichment, every rule) can take the loop a second
//! or more on a starved CPU, or longer in a debug build. A process ring
//! read only between slices then fills and loses execs, and with them
//! every alert about those programs and the ancestry of their children.
//! This thread does no work but copying, so it gets the CPU when woken,
//! and the kernel ring's room stays free for the next burst.
//!
//! Order is kept: the thread and the event loop move records only while
//! holding the lock, the backlog first, so the loop sees every process
//! record older than the syscall records it has just read.
use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};

/// The process ring and its reader thread.
pub struct ProcessRing {
    shared: Arc<Shared>,
    /// The ring's descriptor, for the event loop's poll.
    fd: RawFd,
    /// Written once to stop the reader.
    stop: OwnedFd,
    reader: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the event loop empties the backlog.
    room: Condvar,
    /// Most bytes the backlog holds.
    limit: usize,
}

struct State {
    ring: RingBuf<MapData>,
    backlog: VecDeque<Box<[u8]>>,
    bytes: usize,
    stopping: bool,
}

impl ProcessRing {
    /// Starts the reader for `ring`, holding at most `limit` bytes of
    /// records: when the loop stays behind past that, the kernel ring
    /// fills and the probe counts what it loses, per kind.
    pub fn start(ring: RingBuf<MapData>, limit: usize) -> io::Result<ProcessRing> {
        let fd = ring.as_raw_fd();
        // SAFETY: eventfd takes no pointers; the result is checked.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor this function owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ring,
                backlog: VecDeque::new(),
                bytes: 0,
                stopping: false,
            }),
            room: Condvar::new(),
            limit,
        });
        let reader = {
            let shared = shared.clone();
            let stop = stop.as_raw_fd();
            std::thread::Builder::new()
                .name("vigil-process".into())
                .spawn(move || read(&shared, fd, stop))?
        };
        Ok(ProcessRing {
            shared,
            fd,
            stop,
            reader: Some(reader),
        })
    }

    /// Hands every waiting record to `each`, oldest first: the backlog,
    /// then what is still in the kernel ring. Returns how many.
    pub fn drain(&self, mut each: impl FnMut(&[u8])) -> usize {
        let mut st = self.shared.lock();
        let mut n = st.backlog.len();
        for record in st.backlog.drain(..) {
            each(&record);
        }
        st.bytes = 0;
        while let Some(item) = st.ring.next() {
            each(&item);
            n += 1;
        }
        drop(st);
        self.shared.room.notify_one();
        n
    }

    /// Frees the room a burst grew the backlog to.
    pub fn shrink(&self) {
        self.shared.lock().backlog.shrink_to_fit();
    }
}

impl AsRawFd for ProcessRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for ProcessRing {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.room.notify_one();
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reader thread: sleeps until the probe wakes the ring (or `stop`
/// is written), then copies what waits into the backlog.
fn read(shared: &Shared, ring: RawFd, stop: RawFd) {
    if let Err(e) = crate::util::sched::request_short_slice() {
        tracing::debug!(error = %e, "process reader: no short scheduler slice");
    }
    let mut fds = [
        libc::pollfd {
            fd: ring,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfd entries.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "process reader: poll failed; the event loop reads the process ring alone");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let mut st = shared.lock();
        // Full: wait for the loop rather than poll a ring that stays
        // readable (the kernel ring then holds what comes, and counts
        // what it cannot).
        while st.bytes >= shared.limit && !st.stopping {
            st = shared.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.stopping {
            return;
        }
        let State {
            ring,
            backlog,
            bytes,
            ..
        } = &mut *st;
        while *bytes < shared.limit {
            let Some(item) = ring.next() else {
                break;
            };
            *bytes += item.len();
            backlog.push_back(Box::from(&*item));
        }
    }
}
