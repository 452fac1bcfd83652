//! The write-ahead log: what makes an acknowledged event survive a crash.
//!
//! # Layout
//!
//! The log is a directory of segment files, `segment-<index>.wal` (20
//! zero-padded digits, so they sort), plus the deduplication snapshot
//! `dedup.snapshot`. Every segment is a sequence of frames:
//!
//! ```text
//! +------------------+--------------------+---------------------------+
//! | length: u32 (LE) | CRC-32 of payload  | payload: a `Record`        |
//! |                  | u32 (LE)           | (protobuf, `length` bytes) |
//! +------------------+--------------------+---------------------------+
//! ```
//!
//! A segment starts with a [`SegmentStart`] record (the log's id and the
//! next event sequence number, so neither is lost when every older segment
//! has been reclaimed). Then come, in commit order: [`Append`] records (the
//! accepted events of one request, each event numbered), [`FlushIntent`]
//! records (a batch about to be written to the lake: its object key and the
//! sequence numbers it holds) and [`FlushDone`] records (storage confirmed
//! that object).
//!
//! # Replay
//!
//! On open, every segment is read in order and every frame checked: a frame
//! whose length runs past the end of the file, whose checksum does not
//! match, or whose payload does not decode ends that segment. That is a
//! torn write (a power cut in the middle of an append, which was never
//! acknowledged): the bytes from there on are cut away with a warning and
//! every complete record before them is kept. The log never refuses to
//! start because of a torn tail.
//!
//! # Writing
//!
//! Appends happen in groups ([`Wal::append`]): the frames of every request
//! waiting at that moment are written with one `write` and made durable
//! with one `fdatasync` (group commit). If the write or the sync fails (a
//! full disk), the segment is cut back to its last good length, so no
//! partial record is ever followed by a good one; if even that fails, the
//! segment is sealed and the next append starts a new one.
//!
//! # Reclaiming
//!
//! A sealed segment is deleted once every event in it, and in every older
//! segment, is in the lake (storage confirmed, and the confirmation logged
//! as [`FlushDone`]). The active segment is sealed early when everything is
//! in the lake, so an idle log shrinks to one small segment.

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use prost::Message;
use prost_types::Timestamp;
use vesper::v1::Event;

use crate::{IngestError, fs::WalFs};

/// Bytes before each record's payload: length and checksum.
const FRAME_HEADER: usize = 8;

/// The largest payload replay believes; a larger length is garbage from a
/// torn write.
const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".wal";

/// File name of the deduplication snapshot inside the log directory.
pub(crate) const DEDUP_SNAPSHOT: &str = "dedup.snapshot";

/// One record of the log.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// What the record says.
    #[prost(oneof = "Entry", tags = "1, 2, 3, 4")]
    pub(crate) entry: Option<Entry>,
}

/// The kinds of record.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Entry {
    /// First record of every segment.
    #[prost(message, tag = "1")]
    Start(SegmentStart),
    /// Events accepted by one Ingest call.
    #[prost(message, tag = "2")]
    Append(Append),
    /// A batch about to be written to the lake.
    #[prost(message, tag = "3")]
    Intent(FlushIntent),
    /// Storage confirmed a batch.
    #[prost(message, tag = "4")]
    Done(FlushDone),
}

/// First record of every segment.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SegmentStart {
    /// The log's id, part of every object name it writes, so that two logs
    /// (two replicas, or a log deleted and started afresh) never write the
    /// same key.
    #[prost(string, tag = "1")]
    pub(crate) wal_id: String,
    /// No event in this segment or later has a smaller sequence number.
    #[prost(uint64, tag = "2")]
    pub(crate) next_seq: u64,
}

/// The events accepted by one Ingest call, after filtering and
/// deduplication.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Append {
    /// Sequence number of the first event; the others follow one by one.
    #[prost(uint64, tag = "1")]
    pub(crate) first_seq: u64,
    /// The events, validated.
    #[prost(message, repeated, tag = "2")]
    pub(crate) events: Vec<Event>,
    /// When the call was received.
    #[prost(message, optional, tag = "3")]
    pub(crate) received_at: Option<Timestamp>,
    /// The caller's W3C `traceparent`, so the flush can link to it.
    #[prost(string, optional, tag = "4")]
    pub(crate) trace_context: Option<String>,
}

/// A batch about to be written to the lake. Logged before the write, so a
/// replay writes exactly the same events under exactly the same key, which
/// overwrites the object if it was written before the crash instead of
/// adding a copy.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FlushIntent {
    /// The object key.
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    /// Sequence numbers of the events in the object, ascending.
    #[prost(uint64, repeated, tag = "2")]
    pub(crate) seqs: Vec<u64>,
}

/// Storage confirmed the object of a [`FlushIntent`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FlushDone {
    /// The object key.
    #[prost(string, tag = "1")]
    pub(crate) key: String,
}

impl Record {
    /// A record holding `entry`.
    pub(crate) fn new(entry: Entry) -> Self {
        Self { entry: Some(entry) }
    }

    /// The record framed for the log: length, checksum, payload.
    pub(crate) fn frame(&self) -> Vec<u8> {
        let payload = self.encode_to_vec();
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        // Payloads are bounded by the gRPC message limit, far below 4 GiB.
        let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        frame.extend_from_slice(&length.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TornReason {
    /// Fewer bytes than a frame header.
    PartialHeader,
    /// The length runs past the end of the file (or is absurd).
    PartialPayload,
    /// The checksum does not match.
    Checksum,
    /// The payload is not a record.
    Undecodable,
}

impl TornReason {
    fn describe(self) -> &'static str {
        match self {
            Self::PartialHeader => "a partial frame header",
            Self::PartialPayload => "a partial record",
            Self::Checksum => "a checksum mismatch",
            Self::Undecodable => "an undecodable record",
        }
    }
}

/// Decodes the frames of one segment: every complete record, and where and
/// why decoding stopped when it stopped before the end.
pub(crate) fn decode_frames(bytes: &[u8]) -> (Vec<Record>, Option<(usize, TornReason)>) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER>() else {
            return (records, Some((offset, TornReason::PartialHeader)));
        };
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let length_usize = usize::try_from(length).unwrap_or(usize::MAX);
        if length > MAX_PAYLOAD || length_usize > body.len() {
            return (records, Some((offset, TornReason::PartialPayload)));
        }
        let payload = &body[..length_usize];
        if crc32fast::hash(payload) != checksum {
            return (records, Some((offset, TornReason::Checksum)));
        }
        match Record::decode(payload) {
            Ok(record) => records.push(record),
            Err(_) => return (records, Some((offset, TornReason::Undecodable))),
        }
        offset += FRAME_HEADER + length_usize;
    }
    (records, None)
}

/// One frame to append, with the largest event sequence number it holds
/// (for reclaiming).
#[derive(Debug)]
pub(crate) struct Frame {
    /// The framed record.
    pub(crate) bytes: Vec<u8>,
    /// The largest event sequence number in it, if it holds events.
    pub(crate) max_event_seq: Option<u64>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    max_event_seq: Option<u64>,
}

#[derive(Debug)]
struct ActiveSegment {
    segment: Segment,
    file: Box<dyn crate::fs::WalFile>,
    /// Length of the segment's start record: an active segment no longer
    /// than this holds nothing.
    start_bytes: u64,
    /// A failed append could not be cut back; nothing more may follow it.
    poisoned: bool,
}

/// What the log held when it was opened, in commit order.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Every record after the segment starts.
    pub(crate) records: Vec<Record>,
    /// Complete records were kept but a torn tail was cut in this many
    /// segments.
    pub(crate) torn_segments: usize,
}

/// The open log. Owned by one writer thread; see the module docs.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    fs: Arc<dyn WalFs>,
    wal_id: String,
    segment_bytes: u64,
    sealed: VecDeque<Segment>,
    active: Option<ActiveSegment>,
    next_index: u64,
    /// One more than the largest event sequence number ever written.
    next_seq: u64,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, replays it, and starts a
    /// new active segment.
    pub(crate) fn open(
        dir: &Path,
        fs: Arc<dyn WalFs>,
        segment_bytes: u64,
    ) -> Result<(Self, Replayed), IngestError> {
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| IngestError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
        let mut indices = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error("cannot list", dir))? {
            let entry = entry.map_err(io_error("cannot list", dir))?;
            if let Some(index) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(SEGMENT_PREFIX))
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|digits| digits.parse::<u64>().ok())
            {
                indices.push(index);
            }
        }
        indices.sort_unstable();

        let mut wal_id = None;
        let mut next_seq = 0;
        let mut records = Vec::new();
        let mut sealed = VecDeque::new();
        let mut torn_segments = 0;
        for index in &indices {
            let path = segment_path(dir, *index);
            let bytes = std::fs::read(&path).map_err(io_error("cannot read", &path))?;
            let (decoded, torn) = decode_frames(&bytes);
            let mut length = bytes.len();
            if let Some((offset, reason)) = torn {
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    dropped_bytes = bytes.len() - offset,
                    kept_records = decoded.len(),
                    "torn write-ahead log tail: {}; every complete record before it is kept, the rest is cut (it was never acknowledged)",
                    reason.describe()
                );
                truncate(&path, offset).map_err(io_error("cannot cut the torn tail of", &path))?;
                length = offset;
                torn_segments += 1;
            }
            if length == 0 {
                // Created but never written (a crash right after creation).
                fs.remove(&path).map_err(io_error("cannot remove", &path))?;
                continue;
            }
            let mut max_event_seq = None;
            for record in decoded {
                match record.entry {
                    Some(Entry::Start(start)) => {
                        wal_id = Some(start.wal_id);
                        next_seq = next_seq.max(start.next_seq);
                    }
                    Some(Entry::Append(append)) if !append.events.is_empty() => {
                        let last = append.first_seq + append.events.len() as u64 - 1;
                        max_event_seq = Some(last);
                        next_seq = next_seq.max(last + 1);
                        records.push(Record::new(Entry::Append(append)));
                    }
                    Some(entry) => records.push(Record::new(entry)),
                    None => {}
                }
            }
            sealed.push_back(Segment {
                path,
                bytes: length as u64,
                max_event_seq,
            });
        }
        fs.sync_dir(dir).map_err(io_error("cannot sync", dir))?;

        let mut wal = Self {
            dir: dir.to_owned(),
            fs,
            wal_id: wal_id.unwrap_or_else(new_wal_id),
            segment_bytes,
            sealed,
            active: None,
            next_index: indices.last().map_or(0, |last| last + 1),
            next_seq,
        };
        wal.rotate()
            .map_err(io_error("cannot start a segment in", dir))?;
        Ok((
            wal,
            Replayed {
                records,
                torn_segments,
            },
        ))
    }

    /// The log's id (part of every object name).
    pub(crate) fn wal_id(&self) -> &str {
        &self.wal_id
    }

    /// The sequence number the next event gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Never hands out numbers below `next_seq` again (they went into a
    /// record, even one whose write failed).
    pub(crate) fn advance_next_seq(&mut self, next_seq: u64) {
        self.next_seq = self.next_seq.max(next_seq);
    }

    /// Bytes of log on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.sealed.iter().map(|segment| segment.bytes).sum::<u64>()
            + self
                .active
                .as_ref()
                .map_or(0, |active| active.segment.bytes)
    }

    /// Number of segment files.
    #[cfg(test)]
    pub(crate) fn segments(&self) -> usize {
        self.sealed.len() + usize::from(self.active.is_some())
    }

    /// Appends `frames` with one write and one fdatasync. On error nothing
    /// of them is left in the log (see the module docs).
    pub(crate) fn append(&mut self, frames: &[Frame]) -> io::Result<()> {
        let needs_segment = match &self.active {
            None => true,
            Some(active) => active.poisoned || active.segment.bytes >= self.segment_bytes,
        };
        if needs_segment {
            self.rotate()?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        let mut buffer = Vec::with_capacity(frames.iter().map(|frame| frame.bytes.len()).sum());
        for frame in frames {
            buffer.extend_from_slice(&frame.bytes);
        }
        let before = active.segment.bytes;
        let written = active
            .file
            .write_all(&buffer)
            .and_then(|()| active.file.sync_data());
        if let Err(err) = written {
            let cut = active
                .file
                .set_len(before)
                .and_then(|()| active.file.sync_data());
            if let Err(cut_err) = cut {
                tracing::error!(segment = %active.segment.path.display(), error = %cut_err, "cannot cut a failed append; sealing the segment, the next append starts a new one");
                active.poisoned = true;
            }
            return Err(err);
        }
        active.segment.bytes += buffer.len() as u64;
        if let Some(max) = frames.iter().filter_map(|frame| frame.max_event_seq).max() {
            active.segment.max_event_seq = Some(max);
            self.next_seq = self.next_seq.max(max + 1);
        }
        Ok(())
    }

    /// Deletes the oldest segments whose events are all in the lake: every
    /// event sequence number below `unflushed_floor` is. When `drained`
    /// (nothing at all is waiting for the lake), the active segment is
    /// sealed first so that it can go too. `snapshot` gives the bytes of the
    /// deduplication snapshot, written before anything is deleted so that
    /// the window outlives the segments. Returns the segments deleted.
    pub(crate) fn reclaim(
        &mut self,
        unflushed_floor: u64,
        drained: bool,
        snapshot: impl FnOnce() -> Vec<u8>,
    ) -> io::Result<usize> {
        let active_has_data = self
            .active
            .as_ref()
            .is_some_and(|active| active.segment.bytes > active.start_bytes);
        if drained && active_has_data {
            self.rotate()?;
        }
        let mut deletable = 0;
        for segment in &self.sealed {
            if segment
                .max_event_seq
                .is_some_and(|max| max >= unflushed_floor)
            {
                break;
            }
            deletable += 1;
        }
        if deletable == 0 {
            return Ok(0);
        }
        self.fs
            .write_atomic(&self.dir.join(DEDUP_SNAPSHOT), &snapshot())?;
        for _ in 0..deletable {
            let Some(segment) = self.sealed.front() else {
                break;
            };
            match self.fs.remove(&segment.path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            self.sealed.pop_front();
        }
        self.fs.sync_dir(&self.dir)?;
        Ok(deletable)
    }

    /// Seals the active segment and starts a new one with its start record.
    fn rotate(&mut self) -> io::Result<()> {
        let index = self.next_index;
        let path = segment_path(&self.dir, index);
        let start = Record::new(Entry::Start(SegmentStart {
            wal_id: self.wal_id.clone(),
            next_seq: self.next_seq,
        }))
        .frame();
        let mut file = self.fs.create(&path)?;
        let written = file
            .write_all(&start)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.fs.sync_dir(&self.dir));
        if let Err(err) = written {
            drop(file);
            // Best effort: an empty or partial segment is cut on replay anyway.
            let _ = self.fs.remove(&path);
            return Err(err);
        }
        self.next_index += 1;
        if let Some(previous) = self.active.take() {
            self.sealed.push_back(previous.segment);
        }
        self.active = Some(ActiveSegment {
            segment: Segment {
                path,
                bytes: start.len() as u64,
                max_event_seq: None,
            },
            file,
            start_bytes: start.len() as u64,
            poisoned: false,
        });
        Ok(())
    }

    /// The active segment's file.
    #[cfg(test)]
    pub(crate) fn active_path(&self) -> Option<&Path> {
        self.active
            .as_ref()
            .map(|active| active.segment.path.as_path())
    }
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{index:020}{SEGMENT_SUFFIX}"))
}

fn truncate(path: &Path, len: usize) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len as u64)?;
    file.sync_all()
}

/// A fresh log id: 16 hex digits, random.
fn new_wal_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;

    fn append(first_seq: u64, count: usize) -> Frame {
        let events = (0..count)
            .map(|n| Event {
                event_id: format!("event-{}", first_seq + n as u64),
                ..Event::default()
            })
            .collect();
        Frame {
            bytes: Record::new(Entry::Append(Append {
                first_seq,
                events,
                received_at: None,
                trace_context: None,
            }))
            .frame(),
            max_event_seq: (count > 0).then(|| first_seq + count as u64 - 1),
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> (Wal, Replayed) {
        Wal::open(dir, Arc::new(StdFs), segment_bytes).expect("open")
    }

    fn appended_seqs(replayed: &Replayed) -> Vec<u64> {
        replayed
            .records
            .iter()
            .filter_map(|record| match &record.entry {
                Some(Entry::Append(append)) => Some(append.first_seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_and_every_torn_shape_is_detected() {
        let frame = append(0, 3).bytes;
        let mut two = frame.clone();
        two.extend_from_slice(&append(3, 1).bytes);
        assert_eq!(decode_frames(&two).0.len(), 2);
        assert_eq!(decode_frames(&two).1, None);

        let cut_header = &two[..frame.len() + 5];
        assert_eq!(
            decode_frames(cut_header).1,
            Some((frame.len(), TornReason::PartialHeader))
        );
        let cut_payload = &two[..two.len() - 1];
        assert_eq!(
            decode_frames(cut_payload).1,
            Some((frame.len(), TornReason::PartialPayload))
        );
        let mut flipped = two.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(
            decode_frames(&flipped).1,
            Some((frame.len(), TornReason::Checksum))
        );
        let mut garbage = two[..frame.len()].to_vec();
        let junk = [0xff_u8; 4];
        garbage.extend_from_slice(&4_u32.to_le_bytes());
        garbage.extend_from_slice(&crc32fast::hash(&junk).to_le_bytes());
        garbage.extend_from_slice(&junk);
        assert_eq!(
            decode_frames(&garbage).1,
            Some((frame.len(), TornReason::Undecodable))
        );
    }

    #[test]
    fn replay_keeps_every_complete_record_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, replayed) = open(dir.path(), 1 << 20);
        assert!(replayed.records.is_empty());
        let id = wal.wal_id().to_owned();
        wal.append(&[append(0, 2), append(2, 1)]).expect("append");
        wal.append(&[append(3, 4)]).expect("append");
        let segment = wal.active_path().expect("active").to_owned();
        drop(wal);

        let full = std::fs::metadata(&segment).expect("segment").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open");
        file.set_len(full - 3).expect("tear");
        drop(file);

        let (mut wal, replayed) = open(dir.path(), 1 << 20);
        assert_eq!(wal.wal_id(), id, "the id survives");
        assert_eq!(appended_seqs(&replayed), [0, 2]);
        assert_eq!(replayed.torn_segments, 1);
        // The cut record's numbers are free again, but never reused below
        // what was durable.
        wal.append(&[append(3, 1)]).expect("append after the cut");
        drop(wal);
        let (_, replayed) = open(dir.path(), 1 << 20);
        assert_eq!(appended_seqs(&replayed), [0, 2, 3]);
        assert_eq!(replayed.torn_segments, 0);
    }

    #[test]
    fn segments_rotate_and_are_reclaimed_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 64);
        for first in 0..6 {
            wal.append(&[append(first * 2, 2)]).expect("append");
        }
        let segments = wal.segments();
        assert!(segments >= 3, "small segments rotate: {segments}");

        // Events 0..4 are in the lake, 4.. are not.
        let deleted = wal.reclaim(4, false, || b"snap".to_vec()).expect("reclaim");
        assert!(deleted >= 1);
        assert_eq!(
            std::fs::read(dir.path().join(DEDUP_SNAPSHOT)).expect("snapshot"),
            b"snap"
        );
        drop(wal);
        let (mut wal, replayed) = open(dir.path(), 64);
        let kept = appended_seqs(&replayed);
        assert!(kept.contains(&4) && kept.contains(&10), "{kept:?}");

        // Everything in the lake: only the fresh active segment stays.
        wal.reclaim(12, true, Vec::new).expect("reclaim all");
        assert_eq!(wal.segments(), 1);
        drop(wal);
        let (wal, replayed) = open(dir.path(), 64);
        assert!(appended_seqs(&replayed).is_empty());
        assert_eq!(wal.next_seq, 12, "sequence numbers are never reused");
    }
}
