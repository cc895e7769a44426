//! The spool: every alert (and, in a spool of its own, every activity
//! event) bound for the collector is written to disk before it counts as
//! sent, and leaves only once the collector has acknowledged it, so an
//! agent restart, a SIGKILL or a reboot during a collector outage loses
//! nothing. Bounded: when full, the oldest records go, and what went is
//! reported as a [`Gap`] for the collector to store.
//!
//! On disk, in `--spool-dir` (activity in its `activity/` directory):
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segments named by the index of their first
//!   record; a record is `len: u32 LE, crc32: u32 LE, message (protobuf)`,
//!   an `Alert` or an `Activity`.
//!   Segments only grow by appends and are deleted whole.
//! - `acked`: the index of the first record not yet acknowledged, replaced
//!   atomically after each acknowledgement.
//! - `lock`: held (flock) while an agent uses the spool.
//!
//! A torn record at the end of the last segment (a crash mid-write) is cut
//! off at open; a bad record elsewhere ends that segment's reading and is
//! counted as lost.
use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufReader, Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use prost::Message;
use vigil_proto::v1::{Activity, Alert};

/// What a spool holds: a protobuf message with an event time.
pub trait Record: Message + Default {
    /// Event time, ns since the epoch (a dropped segment's gap spans them).
    fn time_ns(&self) -> i64;
}

impl Record for Alert {
    fn time_ns(&self) -> i64 {
        self.time_unix_ns
    }
}

impl Record for Activity {
    fn time_ns(&self) -> i64 {
        self.time_unix_ns
    }
}

/// Bytes of a record's header.
const HEADER: u64 = 8;
/// Largest record accepted back from disk (the collector takes 4 MiB
/// batches; one alert is far smaller).
const MAX_RECORD: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool {} is in use by another agent (its lock file is held)", .0.display())]
    Locked(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.into(),
        source,
    }
}

/// Alerts dropped because the spool was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    pub count: u64,
    /// Event times of the first and last alert dropped (ns since the epoch).
    pub first_ns: i64,
    pub last_ns: i64,
}

impl Gap {
    fn add(&mut self, count: u64, first_ns: i64, last_ns: i64) {
        if count == 0 {
            return;
        }
        if self.count == 0 {
            *self = Gap {
                count,
                first_ns,
                last_ns,
            };
        } else {
            self.count += count;
            self.first_ns = self.first_ns.min(first_ns);
            self.last_ns = self.last_ns.max(last_ns);
        }
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Index of its first record.
    first: u64,
    /// Records and bytes in it.
    count: u64,
    bytes: u64,
    /// Event time range of its records (for a gap when it is dropped).
    min_ns: i64,
    max_ns: i64,
    path: PathBuf,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// Where sequential reading stands.
struct Cursor {
    index: u64,
    segment_first: u64,
    reader: BufReader<File>,
}

pub struct Spool<M = Alert> {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Appends go here: the last segment.
    writer: Option<File>,
    /// Index the next appended record gets.
    next: u64,
    /// Index of the first record not acknowledged.
    acked: u64,
    total_bytes: u64,
    gap: Gap,
    cursor: Option<Cursor>,
    /// Records found unreadable at open (a bad record mid-spool).
    pub corrupt: u64,
    _lock: File,
    _records: std::marker::PhantomData<M>,
}

impl<M> std::fmt::Debug for Spool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("next", &self.next)
            .field("acked", &self.acked)
            .finish()
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// Reads one record; None at a clean end, Err(()) at a torn or bad one.
fn read_record<M: Record>(r: &mut impl Read) -> Result<Option<(M, u64)>, ()> {
    let mut h = [0u8; HEADER as usize];
    match r.read_exact(&mut h[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(()),
    }
    r.read_exact(&mut h[1..]).map_err(|_| ())?;
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if len > MAX_RECORD {
        return Err(());
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(|_| ())?;
    if crc32fast::hash(&buf) != crc {
        return Err(());
    }
    let m = M::decode(buf.as_slice()).map_err(|_| ())?;
    Ok(Some((m, HEADER + len as u64)))
}

impl<M: Record> Spool<M> {
    /// Opens (creating) the spool in `dir`, holding it for this process.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool<M>, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError::Locked(dir.into()));
        }
        let acked_path = dir.join("acked");
        let acked: u64 = std::fs::read_to_string(&acked_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut spool = Spool {
            dir: dir.into(),
            max_bytes: max_bytes.max(1 << 16),
            segment_bytes: (max_bytes / 16).clamp(1 << 14, 8 << 20),
            segments: VecDeque::new(),
            writer: None,
            next: acked,
            acked,
            total_bytes: 0,
            gap: Gap::default(),
            cursor: None,
            corrupt: 0,
            _lock: lock,
            _records: std::marker::PhantomData,
        };
        let last = firsts.len().saturating_sub(1);
        for (i, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let seg = spool.scan(first, &path, i == last)?;
            if seg.end() <= acked {
                // Acknowledged already; left by a crash before deletion.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            spool.next = seg.end();
            spool.total_bytes += seg.bytes;
            spool.segments.push_back(seg);
        }
        if spool.next < acked {
            spool.next = acked;
        }
        spool.enforce_bound();
        Ok(spool)
    }

    /// Reads a segment's records to learn its extent; cuts a torn tail off
    /// the last one.
    fn scan(&mut self, first: u64, path: &Path, last: bool) -> Result<Segment, SpoolError> {
        let f = File::open(path).map_err(io(path))?;
        let mut r = BufReader::new(f);
        let mut seg = Segment {
            first,
            count: 0,
            bytes: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            path: path.into(),
        };
        loop {
            match read_record::<M>(&mut r) {
                Ok(Some((a, n))) => {
                    seg.count += 1;
                    seg.bytes += n;
                    seg.min_ns = seg.min_ns.min(a.time_ns());
                    seg.max_ns = seg.max_ns.max(a.time_ns());
                }
                Ok(None) => break,
                Err(()) => {
                    if last {
                        // A crash mid-append: the rest was never whole.
                        let f = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io(path))?;
                        f.set_len(seg.bytes).map_err(io(path))?;
                        tracing::warn!(spool = %path.display(), kept = seg.count, "cut a torn record off the spool's end");
                    } else {
                        self.corrupt += 1;
                        tracing::error!(spool = %path.display(), kept = seg.count, "unreadable record in the spool: the rest of this segment is lost");
                    }
                    break;
                }
            }
        }
        Ok(seg)
    }

    /// Records not yet acknowledged.
    pub fn depth(&self) -> u64 {
        self.next - self.acked
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Index the next appended record gets.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Index of the first record not acknowledged.
    pub fn acked_index(&self) -> u64 {
        self.acked
    }

    /// Index of the oldest record still kept.
    pub fn first_index(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.next, |s| s.first.max(self.acked))
    }

    /// The alerts dropped for room since the last call.
    pub fn take_gap(&mut self) -> Option<Gap> {
        let g = std::mem::take(&mut self.gap);
        (g.count > 0).then_some(g)
    }

    /// Appends `alerts` and flushes them to disk (fsync): once this
    /// returns, they survive a crash or a reboot.
    pub fn append(&mut self, alerts: &[M]) -> Result<(), SpoolError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for a in alerts {
            let body = a.encode_to_vec();
            buf.clear();
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
            if self.writer.is_none()
                || self
                    .segments
                    .back()
                    .is_none_or(|s| s.bytes >= self.segment_bytes)
            {
                self.start_segment()?;
            }
            let seg = self.segments.back_mut().expect("a segment to write");
            let w = self.writer.as_mut().expect("open writer");
            w.write_all(&buf).map_err(io(&seg.path))?;
            seg.count += 1;
            seg.bytes += buf.len() as u64;
            seg.min_ns = seg.min_ns.min(a.time_ns());
            seg.max_ns = seg.max_ns.max(a.time_ns());
            self.total_bytes += buf.len() as u64;
            self.next += 1;
        }
        if let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back()) {
            w.sync_data().map_err(io(&seg.path))?;
        }
        self.enforce_bound();
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(self.next));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // The new name must survive a crash too.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.writer = Some(f);
        self.segments.push_back(Segment {
            first: self.next,
            count: 0,
            bytes: 0,
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            path,
        });
        Ok(())
    }

    /// Removes the oldest segment, its file and a cursor inside it.
    fn drop_oldest_segment(&mut self) -> Segment {
        let seg = self.segments.pop_front().expect("a segment to drop");
        self.total_bytes -= seg.bytes;
        let _ = std::fs::remove_file(&seg.path);
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.segment_first == seg.first)
        {
            self.cursor = None;
        }
        seg
    }

    /// Drops the oldest segments while over the bound (never the one being
    /// written); unacknowledged records in them become the gap.
    fn enforce_bound(&mut self) {
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let seg = self.drop_oldest_segment();
            let lost = seg.end().saturating_sub(seg.first.max(self.acked));
            self.gap.add(lost, seg.min_ns, seg.max_ns);
            tracing::error!(
                records = lost,
                spool = %self.dir.display(),
                "spool full: dropped the oldest unsent records"
            );
        }
    }

    /// Up to `max` records from index `from` on (`from` below the oldest
    /// kept record starts at the oldest), with their indices.
    pub fn read(&mut self, from: u64, max: usize) -> Result<Vec<(u64, M)>, SpoolError> {
        let from = from.max(self.first_index());
        let mut out = Vec::new();
        let mut index = from;
        while out.len() < max && index < self.next {
            let Some(seg) = self
                .segments
                .iter()
                .find(|s| s.first <= index && index < s.end())
            else {
                break;
            };
            let (seg_first, seg_end, path) = (seg.first, seg.end(), seg.path.clone());
            let positioned = self
                .cursor
                .as_ref()
                .is_some_and(|c| c.index == index && c.segment_first == seg_first);
            if !positioned {
                let f = File::open(&path).map_err(io(&path))?;
                let mut reader = BufReader::new(f);
                reader.seek(SeekFrom::Start(0)).map_err(io(&path))?;
                let mut i = seg_first;
                while i < index {
                    match read_record::<M>(&mut reader) {
                        Ok(Some(_)) => i += 1,
                        _ => break,
                    }
                }
                self.cursor = Some(Cursor {
                    index: i,
                    segment_first: seg_first,
                    reader,
                });
                if i != index {
                    // Unreadable before `index`: skip to the next segment.
                    index = seg_end;
                    continue;
                }
            }
            let c = self.cursor.as_mut().expect("positioned");
            while out.len() < max && c.index < seg_end {
                match read_record(&mut c.reader) {
                    Ok(Some((a, _))) => {
                        out.push((c.index, a));
                        c.index += 1;
                    }
                    _ => {
                        // Unreadable: the rest of this segment is lost.
                        c.index = seg_end;
                        break;
                    }
                }
            }
            index = c.index;
            if index >= seg_end {
                self.cursor = None;
            }
        }
        Ok(out)
    }

    /// Everything below `end` is acknowledged: recorded durably, and whole
    /// segments below it deleted.
    pub fn ack_through(&mut self, end: u64) -> Result<(), SpoolError> {
        if end <= self.acked {
            return Ok(());
        }
        self.acked = end.min(self.next);
        let path = self.dir.join("acked");
        let tmp = self.dir.join("acked.tmp");
        std::fs::write(&tmp, format!("{}\n", self.acked)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        while self.segments.len() > 1
            && self.segments.front().is_some_and(|s| s.end() <= self.acked)
        {
            self.drop_oldest_segment();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: u64) -> Alert {
        Alert {
            id: format!("id-{i}"),
            rule: "r".into(),
            time_unix_ns: 1000 + i as i64,
            output: "x".repeat(200),
            ..Default::default()
        }
    }

    fn ids(v: &[(u64, Alert)]) -> Vec<String> {
        v.iter().map(|(_, a)| a.id.clone()).collect()
    }

    #[test]
    fn survives_reopen_and_replays_only_the_unacknowledged() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s: Spool = Spool::open(d.path(), 1 << 20).unwrap();
            s.append(&(0..10).map(alert).collect::<Vec<_>>()).unwrap();
            let got = s.read(0, 4).unwrap();
            assert_eq!(ids(&got), ["id-0", "id-1", "id-2", "id-3"]);
            s.ack_through(4).unwrap();
            assert_eq!(s.depth(), 6);
            // The same directory cannot be opened twice.
            assert!(matches!(
                Spool::<Alert>::open(d.path(), 1 << 20),
                Err(SpoolError::Locked(_))
            ));
        }
        let mut s: Spool = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.depth(), 6);
        let got = s.read(s.acked_index(), 100).unwrap();
        assert_eq!(got.first().unwrap().1.id, "id-4");
        assert_eq!(got.len(), 6);
        assert_eq!(got.last().unwrap().0, 9);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s: Spool = Spool::open(d.path(), 1 << 20).unwrap();
            s.append(&(0..3).map(alert).collect::<Vec<_>>()).unwrap();
        }
        // Half a record at the end, as a crash mid-write leaves it.
        let seg = d.path().join(segment_name(0));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut s: Spool = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.depth(), 3);
        s.append(&[alert(3)]).unwrap();
        assert_eq!(
            ids(&s.read(0, 10).unwrap()),
            ["id-0", "id-1", "id-2", "id-3"]
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_reports_the_gap() {
        let d = tempfile::tempdir().unwrap();
        let mut s: Spool = Spool::open(d.path(), 1 << 16).unwrap();
        // ~250 bytes each: 1000 of them are four times the bound.
        for chunk in (0..1000).collect::<Vec<u64>>().chunks(50) {
            s.append(&chunk.iter().map(|&i| alert(i)).collect::<Vec<_>>())
                .unwrap();
        }
        assert!(s.bytes() <= (1 << 16) + s.segment_bytes, "{}", s.bytes());
        let gap = s.take_gap().expect("a gap");
        let kept = s.next_index() - s.first_index();
        assert_eq!(gap.count + kept, 1000, "every alert is kept or counted");
        assert_eq!(gap.first_ns, 1000);
        assert!(s.take_gap().is_none());
        let got = s.read(0, 10_000).unwrap();
        assert_eq!(got.len() as u64, kept);
        assert_eq!(got.last().unwrap().1.id, "id-999");
        // Reading from an index that was dropped starts at the oldest kept.
        assert_eq!(got[0].0, s.first_index());
    }

    #[test]
    fn acknowledged_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 18).unwrap();
        for chunk in (0..400).collect::<Vec<u64>>().chunks(20) {
            s.append(&chunk.iter().map(|&i| alert(i)).collect::<Vec<_>>())
                .unwrap();
        }
        let before = std::fs::read_dir(d.path()).unwrap().count();
        s.ack_through(400).unwrap();
        let after = std::fs::read_dir(d.path()).unwrap().count();
        assert!(after < before, "{before} -> {after}");
        assert_eq!(s.depth(), 0);
        drop(s);
        let s: Spool = Spool::open(d.path(), 1 << 18).unwrap();
        assert_eq!(s.depth(), 0);
        assert_eq!(s.next_index(), 400);
    }
}
