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
//!
//! The loop is woken through an eventfd the thread writes after each move,
//! not through the ring: both wait on the ring's fd, the thread empties
//! the ring first, and an edge-triggered poll then finds nothing to report,
//! so an exec would wait for the loop's next timed drain.
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
    /// What the event loop polls: the eventfd the reader writes after
    /// moving records, or the ring itself when there is no reader.
    fd: RawFd,
    /// The reader's eventfd (None without a reader).
    ready: Option<OwnedFd>,
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
        let ring_fd = ring.as_raw_fd();
        let eventfd = || {
            // SAFETY: eventfd takes no pointers; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor this function owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let stop = eventfd()?;
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
        // No backlog: the event loop alone reads the ring.
        if limit == 0 {
            return Ok(ProcessRing {
                shared,
                fd: ring_fd,
                ready: None,
                stop,
                reader: None,
            });
        }
        let ready = eventfd()?;
        let reader = {
            let shared = shared.clone();
            let (stop, ready) = (stop.as_raw_fd(), ready.as_raw_fd());
            std::thread::Builder::new()
                .name("vigil-process".into())
                .spawn(move || read(&shared, ring_fd, stop, ready))?
        };
        Ok(ProcessRing {
            shared,
            fd: ready.as_raw_fd(),
            ready: Some(ready),
            stop,
            reader: Some(reader),
        })
    }

    /// Hands every waiting record to `each`, oldest first: the backlog,
    /// then what is still in the kernel ring. Returns how many.
    pub fn drain(&self, mut each: impl FnMut(&[u8])) -> usize {
        if let Some(ready) = &self.ready {
            // Reset the reader's count; what it signals later wakes us again.
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(ready.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        }
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
fn read(shared: &Shared, ring: RawFd, stop: RawFd, ready: RawFd) {
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
        let mut moved = false;
        while *bytes < shared.limit {
            let Some(item) = ring.next() else {
                break;
            };
            *bytes += item.len();
            backlog.push_back(Box::from(&*item));
            moved = true;
        }
        drop(st);
        if moved {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to the loop's eventfd.
            unsafe { libc::write(ready, one.as_ptr().cast(), one.len()) };
        }
    }
}
