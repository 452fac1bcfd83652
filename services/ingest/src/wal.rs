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
//! Since the second format, an accepted call is logged as an [`Events`]
//! record: each event as the exact lake line it becomes, with its id and
//! its hour partition beside it. The record is flat (no message nests
//! deeper than three levels, whatever the event held), so decoding it can
//! never fail on something the encoder wrote: the nesting of `properties`
//! that once tripped the decoder's recursion limit is opaque bytes here.
//! Logs of the first format ([`Append`] records of protobuf events) are
//! still read.
//!
//! # Replay
//!
//! On open, every segment is read in order and every frame checked (its
//! length, its CRC-32, its decoding). A frame that fails where nothing
//! readable follows it in the newest segment is a torn write (a power cut
//! in the middle of an append, which was never acknowledged): it is cut
//! away with a warning. A frame that fails where complete frames or later
//! segments follow is corruption of acknowledged data, never a torn tail:
//! reading resumes at the next frame that checks, every record that
//! decodes is kept, and the damaged bytes are copied to
//! `quarantine/segment-<index>-at-<offset>.bin` beside the log, counted in
//! `vesper_ingest_wal_damaged_bytes_total` and reported with an error that
//! names the segment and the offset. The log never refuses to start
//! because of damage.
//!
//! Replay streams: one segment at a time is in memory, and only the
//! small records (flush intents and confirmations, ids for the
//! deduplication window) are kept. The events themselves are read back by
//! the engine in bounded windows ([`Wal::read_from`]).
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
//! Segments are written over zeros written ahead of time: once the active
//! segment is a quarter full, a helper thread creates the next one and
//! fills it with zeros up to the segment size (fdatasynced). An append
//! inside that space changes no file size, so its `fdatasync` flushes the
//! data alone, where a growing file makes every sync also commit the new
//! size to the file system's journal, which it shares with every other
//! file's sync (the lake's among them): the tail latency of an
//! acknowledgement. A frame never starts with zeros (every record has a
//! payload), so where only zeros remain a segment's data ends. The first
//! segment after a start, and any segment whose filling failed, simply
//! grows as it is written.
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
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use prost::Message;
use prost_types::Timestamp;
use vesper::v1::Event;

use crate::{
    IngestError,
    fs::{WalFile, WalFs},
};

/// Bytes before each record's payload: length and checksum.
const FRAME_HEADER: usize = 8;

/// The largest payload replay believes; a larger length is garbage.
const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;

/// The first byte of every record's payload: the key of one of the
/// [`Entry`] fields (numbers 1 to 5, length-delimited). Resynchronising
/// after damage only checks candidates that start with one of these.
const RECORD_KEYS: [u8; 5] = [0x0a, 0x12, 0x1a, 0x22, 0x2a];

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".wal";

/// File name of the deduplication snapshot inside the log directory.
pub(crate) const DEDUP_SNAPSHOT: &str = "dedup.snapshot";

/// Directory beside the segments where damaged bytes are copied.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// One record of the log.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// What the record says.
    #[prost(oneof = "Entry", tags = "1, 2, 3, 4, 5")]
    pub(crate) entry: Option<Entry>,
}

/// The kinds of record.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Entry {
    /// First record of every segment.
    #[prost(message, tag = "1")]
    Start(SegmentStart),
    /// Events accepted by one Ingest call, in the first log format (read,
    /// never written).
    #[prost(message, tag = "2")]
    Append(Append),
    /// A batch about to be written to the lake.
    #[prost(message, tag = "3")]
    Intent(FlushIntent),
    /// Storage confirmed a batch.
    #[prost(message, tag = "4")]
    Done(FlushDone),
    /// Events accepted by one Ingest call, as lake lines.
    #[prost(message, tag = "5")]
    Events(Events),
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

/// The events accepted by one Ingest call in the first log format: whole
/// protobuf events, whose nesting the decoder limits.
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

/// The events accepted by one Ingest call, after filtering and
/// deduplication, each as the line it becomes in the lake.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Events {
    /// Sequence number of the first event; the others follow one by one.
    #[prost(uint64, tag = "1")]
    pub(crate) first_seq: u64,
    /// The events.
    #[prost(message, repeated, tag = "2")]
    pub(crate) events: Vec<LoggedEvent>,
    /// When the call was received (also inside every line); the age of
    /// its ids in the deduplication window.
    #[prost(message, optional, tag = "3")]
    pub(crate) received_at: Option<Timestamp>,
    /// The caller's W3C `traceparent`, so the flush can link to it.
    #[prost(string, optional, tag = "4")]
    pub(crate) trace_context: Option<String>,
}

/// One accepted event as the log keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LoggedEvent {
    /// The event id as 16 big-endian bytes: the deduplication key.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) id: Vec<u8>,
    /// The hour of event time since the Unix epoch: the lake partition.
    #[prost(int64, tag = "2")]
    pub(crate) hour: i64,
    /// The lake line, without its newline.
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) line: Bytes,
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

    /// The sequence number of the last event the record holds, in either
    /// log format; `None` when it holds none.
    pub(crate) fn last_event_seq(&self) -> Option<u64> {
        let (first_seq, count) = match &self.entry {
            Some(Entry::Events(events)) => (events.first_seq, events.events.len()),
            Some(Entry::Append(append)) => (append.first_seq, append.events.len()),
            _ => return None,
        };
        (count as u64).checked_sub(1).map(|last| first_seq + last)
    }

    /// The record framed for the log: length, checksum, payload.
    pub(crate) fn frame(&self) -> Vec<u8> {
        let length = self.encoded_len();
        let mut frame = Vec::with_capacity(FRAME_HEADER + length);
        frame.extend_from_slice(&[0; FRAME_HEADER]);
        // Encoding into a Vec cannot run out of space.
        let _ = self.encode(&mut frame);
        // Payloads are bounded by the gRPC message limit, far below 4 GiB.
        let length = u32::try_from(length).unwrap_or(u32::MAX);
        let checksum = crc32fast::hash(&frame[FRAME_HEADER..]);
        frame[..4].copy_from_slice(&length.to_le_bytes());
        frame[4..FRAME_HEADER].copy_from_slice(&checksum.to_le_bytes());
        frame
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Fewer bytes than a frame header.
    PartialHeader,
    /// The length runs past the end of the file (or is absurd).
    PartialPayload,
    /// The checksum does not match.
    Checksum,
    /// The payload is not a record.
    Undecodable,
    /// Zeros where a frame should start, with data after them.
    Blank,
}

impl FrameFault {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::PartialHeader => "a partial frame header",
            Self::PartialPayload => "a partial record",
            Self::Checksum => "a checksum mismatch",
            Self::Undecodable => "an undecodable record",
            Self::Blank => "zeros where a record should start",
        }
    }
}

/// Bytes of a segment that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where the damage starts, from the start of what was scanned.
    pub(crate) offset: usize,
    /// How many bytes it covers.
    pub(crate) len: usize,
    /// Why the first frame there failed.
    pub(crate) fault: FrameFault,
    /// Nothing readable follows it: a torn tail when the segment is the
    /// newest.
    pub(crate) at_end: bool,
}

/// Checks and decodes the frame at `offset`: the record and the frame's
/// length.
fn read_frame(bytes: &[u8], offset: usize) -> Result<(Record, usize), FrameFault> {
    let rest = bytes.get(offset..).unwrap_or_default();
    let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER>() else {
        return Err(FrameFault::PartialHeader);
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length == 0 {
        return Err(FrameFault::Blank);
    }
    let length_usize = usize::try_from(length).unwrap_or(usize::MAX);
    if length > MAX_PAYLOAD || length_usize > body.len() {
        return Err(FrameFault::PartialPayload);
    }
    let payload = &body[..length_usize];
    if crc32fast::hash(payload) != checksum {
        return Err(FrameFault::Checksum);
    }
    let record = Record::decode(payload).map_err(|_| FrameFault::Undecodable)?;
    Ok((record, FRAME_HEADER + length_usize))
}

/// The offset of the first frame after `from` that checks and decodes.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(FRAME_HEADER)).find(|&offset| {
        let header = &bytes[offset..offset + FRAME_HEADER];
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let room = bytes.len() - offset - FRAME_HEADER;
        // Cheap filters first: most offsets fail them, so the checksum is
        // rarely computed.
        usize::try_from(length).is_ok_and(|length| length > 0 && length <= room)
            && RECORD_KEYS.contains(&bytes[offset + FRAME_HEADER])
            && read_frame(bytes, offset).is_ok()
    })
}

/// Reads every frame of `bytes`: each record with its offset and the
/// offset after it, in order, until `visit` breaks. Damaged stretches are
/// skipped (reading resumes at the next frame that checks) and returned.
/// Returns the offset where reading stopped: where `visit` broke, where
/// the zeros written ahead of the data begin, else `bytes.len()`.
pub(crate) fn scan_frames(
    bytes: &[u8],
    mut visit: impl FnMut(usize, usize, Record) -> ControlFlow<()>,
) -> (usize, Vec<Damage>) {
    let mut damages = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match read_frame(bytes, offset) {
            Ok((record, length)) => {
                let next = offset + length;
                if visit(offset, next, record).is_break() {
                    return (next, damages);
                }
                offset = next;
            }
            Err(_) if bytes[offset..].iter().all(|byte| *byte == 0) => {
                return (offset, damages);
            }
            Err(fault) => match resync(bytes, offset + 1) {
                Some(next) => {
                    damages.push(Damage {
                        offset,
                        len: next - offset,
                        fault,
                        at_end: false,
                    });
                    offset = next;
                }
                None => {
                    // The zeros after a torn write are not part of it.
                    let end = bytes
                        .iter()
                        .rposition(|byte| *byte != 0)
                        .map_or(offset, |last| last + 1);
                    damages.push(Damage {
                        offset,
                        len: end - offset,
                        fault,
                        at_end: true,
                    });
                    return (bytes.len(), damages);
                }
            },
        }
    }
    (offset, damages)
}

/// A place in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Position {
    /// The segment's index (its file name).
    pub(crate) segment: u64,
    /// Bytes from the start of the segment.
    pub(crate) offset: u64,
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
    index: u64,
    path: PathBuf,
    bytes: u64,
    max_event_seq: Option<u64>,
}

#[derive(Debug)]
struct ActiveSegment {
    segment: Segment,
    file: Box<dyn WalFile>,
    /// Length of the segment's start record: an active segment no longer
    /// than this holds nothing.
    start_bytes: u64,
    /// A failed append could not be cut back; nothing more may follow it.
    poisoned: bool,
}

/// Whether `dir` holds segments of a log (a missing dir holds none).
pub(crate) fn has_segments(dir: &Path) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|name| name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What opening the log found, beside the records it handed over.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Segments whose torn tail was cut.
    pub(crate) torn_segments: usize,
    /// Damaged stretches found before readable data (quarantined).
    pub(crate) damaged: usize,
    /// Bytes quarantined, torn tails included.
    pub(crate) quarantined_bytes: u64,
    /// Where the oldest segment starts: events are read back from here.
    pub(crate) start: Position,
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
    /// The segment after the active one, being filled with zeros.
    next: Option<NextSegment>,
    /// The reclaim whose files are being written and deleted: `Err` gives
    /// back the segments it did not delete.
    reclaiming: Option<std::thread::JoinHandle<ReclaimResult>>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // A clean stop leaves no segment behind that the lake has.
        self.finish_reclaim();
    }
}

/// A segment created ahead of time and filled with zeros by a helper
/// thread. Until its start record is written it holds only zeros, which a
/// replay removes like a segment created and never written.
#[derive(Debug)]
struct NextSegment {
    index: u64,
    path: PathBuf,
    filling: std::thread::JoinHandle<io::Result<Box<dyn WalFile>>>,
}

/// Bytes of zeros written at a time when filling a segment.
const ZERO_CHUNK: usize = 256 * 1024;

impl Wal {
    /// Opens (creating if needed) the log in `dir`, hands every record to
    /// `visit` in commit order (with where it is), and starts a new active
    /// segment. Damage is handled as the module docs say.
    pub(crate) fn open(
        dir: &Path,
        fs: Arc<dyn WalFs>,
        segment_bytes: u64,
        mut visit: impl FnMut(Position, Record),
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
        // Names are never reused, not even those of the segments dropped
        // just below.
        let next_index = indices.last().map_or(0, |last| last + 1);
        // A segment filled with zeros ahead of time and never started holds
        // nothing: drop it first, so that the newest segment is the newest
        // that holds data (a torn tail is cut only there).
        while let Some(&last) = indices.last() {
            let path = segment_path(dir, last);
            let bytes = std::fs::read(&path).map_err(io_error("cannot read", &path))?;
            if bytes.iter().any(|byte| *byte != 0) {
                break;
            }
            fs.remove(&path).map_err(io_error("cannot remove", &path))?;
            indices.pop();
        }

        let mut wal_id = None;
        let mut next_seq = 0;
        let mut sealed = VecDeque::new();
        let mut replayed = Replayed {
            start: Position {
                segment: indices.first().copied().unwrap_or_default(),
                offset: 0,
            },
            ..Replayed::default()
        };
        for (position, index) in indices.iter().enumerate() {
            let newest = position + 1 == indices.len();
            let path = segment_path(dir, *index);
            let bytes = std::fs::read(&path).map_err(io_error("cannot read", &path))?;
            let mut max_event_seq = None;
            let (data_end, damages) = scan_frames(&bytes, |offset, _, record| {
                match &record.entry {
                    Some(Entry::Start(start)) => {
                        wal_id.get_or_insert_with(|| start.wal_id.clone());
                        next_seq = next_seq.max(start.next_seq);
                    }
                    _ => {
                        if let Some(last) = record.last_event_seq() {
                            max_event_seq = Some(last);
                            next_seq = next_seq.max(last + 1);
                        }
                    }
                }
                visit(
                    Position {
                        segment: *index,
                        offset: offset as u64,
                    },
                    record,
                );
                ControlFlow::Continue(())
            });
            let mut length = data_end;
            for damage in &damages {
                let damaged = &bytes[damage.offset..damage.offset + damage.len];
                let copy = quarantine(dir, *index, damage.offset, damaged);
                replayed.quarantined_bytes += damage.len as u64;
                metrics::counter!("vesper_ingest_wal_damaged_bytes_total")
                    .increment(damage.len as u64);
                if damage.at_end && newest {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = damage.offset,
                        cut_bytes = damage.len,
                        quarantined_to = %copy.display(),
                        "torn write-ahead log tail: {}; every complete record before it is kept and the tail (never acknowledged) is cut",
                        damage.fault.describe()
                    );
                    truncate(&path, damage.offset)
                        .map_err(io_error("cannot cut the torn tail of", &path))?;
                    length = damage.offset;
                    replayed.torn_segments += 1;
                } else {
                    tracing::error!(
                        segment = %path.display(),
                        offset = damage.offset,
                        damaged_bytes = damage.len,
                        quarantined_to = %copy.display(),
                        "damaged write-ahead log record: {}; every readable record around it is kept, the damaged bytes are copied aside for inspection",
                        damage.fault.describe()
                    );
                    replayed.damaged += 1;
                }
            }
            if length == 0 {
                // Created but never written (a crash right after creation,
                // or a segment filled with zeros ahead of time).
                fs.remove(&path).map_err(io_error("cannot remove", &path))?;
                if replayed.start.segment == *index {
                    replayed.start.segment = index + 1;
                }
                continue;
            }
            if length < bytes.len() && damages.is_empty() {
                // Sealed from now on: the zeros after its data are only
                // disk space.
                truncate(&path, length).map_err(io_error("cannot trim", &path))?;
            }
            sealed.push_back(Segment {
                index: *index,
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
            next_index,
            next_seq,
            next: None,
            reclaiming: None,
        };
        wal.rotate()
            .map_err(io_error("cannot start a segment in", dir))?;
        Ok((wal, replayed))
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

    /// Bytes of log data (on disk, the active segment and the next one
    /// also hold the zeros written ahead of the data).
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

    /// Appends `frames` with one write and one fdatasync; returns where the
    /// first of them starts. On error nothing of them is left in the log
    /// (see the module docs).
    pub(crate) fn append(&mut self, frames: &[Frame]) -> io::Result<Position> {
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
            .write_all_at(before, &buffer)
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
        let position = Position {
            segment: active.segment.index,
            offset: before,
        };
        if self.next.is_none() && active.segment.bytes >= self.segment_bytes / 4 {
            self.fill_next_segment();
        }
        Ok(position)
    }

    /// Starts creating the next segment and filling it with zeros on a
    /// helper thread, so that it is ready when the active one is full.
    fn fill_next_segment(&mut self) {
        let index = self.next_index;
        let path = segment_path(&self.dir, index);
        let (fs, dir, len) = (Arc::clone(&self.fs), self.dir.clone(), self.segment_bytes);
        let filling = {
            let path = path.clone();
            std::thread::Builder::new()
                .name("vesper-wal-fill".into())
                .spawn(move || {
                    let mut file = fs.create(&path)?;
                    let filled = write_zeros(file.as_mut(), len).and_then(|()| fs.sync_dir(&dir));
                    if let Err(err) = filled {
                        drop(file);
                        let _ = fs.remove(&path);
                        return Err(err);
                    }
                    Ok(file)
                })
        };
        match filling {
            Ok(filling) => {
                self.next_index += 1;
                self.next = Some(NextSegment {
                    index,
                    path,
                    filling,
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot start filling the next log segment ahead of time; it grows as it is written");
            }
        }
    }

    /// Reads the records from `from` on, in commit order, handing each to
    /// `visit` with the position after it, until `visit` breaks or the
    /// log's end. One segment at a time is in memory. Returns where reading
    /// stopped and whether that is the end of everything written so far.
    /// Damage was reported when the log was opened; here it is skipped.
    pub(crate) fn read_from(
        &self,
        from: Position,
        mut visit: impl FnMut(Position, Record) -> ControlFlow<()>,
    ) -> io::Result<(Position, bool)> {
        let segments = self
            .sealed
            .iter()
            .chain(self.active.as_ref().map(|active| &active.segment))
            .filter(|segment| segment.index >= from.segment);
        let mut position = from;
        for segment in segments {
            let offset = if segment.index == from.segment {
                from.offset
            } else {
                0
            };
            position = Position {
                segment: segment.index,
                offset,
            };
            if offset >= segment.bytes {
                continue;
            }
            let bytes = read_range(&segment.path, offset, segment.bytes)?;
            let mut stopped = false;
            let (end, _) = scan_frames(&bytes, |_, next, record| {
                let after = Position {
                    segment: segment.index,
                    offset: offset + next as u64,
                };
                let flow = visit(after, record);
                stopped = flow.is_break();
                flow
            });
            position.offset = offset + end as u64;
            if stopped {
                let at_end = self.active.as_ref().is_some_and(|active| {
                    active.segment.index == position.segment
                        && position.offset >= active.segment.bytes
                });
                return Ok((position, at_end));
            }
        }
        Ok((position, true))
    }

    /// Takes out of the log the oldest segments whose events are all in the
    /// lake (every event sequence number below `unflushed_floor` is), and
    /// deletes them on a helper thread. When `drained` (nothing at all is
    /// waiting for the lake), the active segment is sealed first so that it
    /// can go too. `snapshot` gives the bytes of the deduplication
    /// snapshot, written before anything is deleted so that the window
    /// outlives the segments. Returns the segments taken out. A crash
    /// before they are deleted leaves them for the replay, which finds
    /// their events confirmed.
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
        if self.reclaimable(unflushed_floor) == 0 {
            return Ok(0);
        }
        // One reclaim at a time, in order: the snapshots land oldest first,
        // and segments a failed one kept are deleted with these.
        self.finish_reclaim();
        let deletable = self.reclaimable(unflushed_floor);
        let snapshot = snapshot();
        let segments: Vec<Segment> = self.sealed.drain(..deletable).collect();
        let (fs, dir) = (Arc::clone(&self.fs), self.dir.clone());
        // The writes (a snapshot of megabytes, its fsync, a directory sync)
        // happen beside the log writer, whose every stall is the latency of
        // the acknowledgements waiting behind it.
        let deleting = std::thread::Builder::new()
            .name("vesper-wal-reclaim".into())
            .spawn(move || delete_segments(fs.as_ref(), &dir, &snapshot, segments));
        match deleting {
            Ok(deleting) => self.reclaiming = Some(deleting),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start reclaiming log segments; retrying after the next flush");
                return Err(err);
            }
        }
        Ok(deletable)
    }

    /// How many of the oldest sealed segments hold only events below
    /// `unflushed_floor` (all in the lake).
    fn reclaimable(&self, unflushed_floor: u64) -> usize {
        self.sealed
            .iter()
            .take_while(|segment| {
                segment
                    .max_event_seq
                    .is_none_or(|max| max < unflushed_floor)
            })
            .count()
    }

    /// Waits for the reclaim in progress; segments it could not delete go
    /// back into the log, to be deleted by the next one.
    pub(crate) fn finish_reclaim(&mut self) {
        let Some(deleting) = self.reclaiming.take() else {
            return;
        };
        let kept = match deleting.join() {
            Ok(Ok(())) => return,
            Ok(Err((err, kept))) => {
                tracing::warn!(error = %err, segments = kept.len(), "cannot reclaim log segments yet; retrying after the next flush");
                kept
            }
            Err(_) => {
                tracing::warn!("reclaiming log segments failed; retrying after the next flush");
                return;
            }
        };
        for segment in kept.into_iter().rev() {
            self.sealed.push_front(segment);
        }
    }

    /// The oldest position still in the log.
    #[cfg(test)]
    pub(crate) fn start(&self) -> Position {
        let segment = self
            .sealed
            .front()
            .or(self.active.as_ref().map(|active| &active.segment))
            .map_or(0, |segment| segment.index);
        Position { segment, offset: 0 }
    }

    /// Seals the active segment and starts a new one with its start record:
    /// the one filled ahead of time when there is one, else a new file.
    fn rotate(&mut self) -> io::Result<()> {
        let start = Record::new(Entry::Start(SegmentStart {
            wal_id: self.wal_id.clone(),
            next_seq: self.next_seq,
        }))
        .frame();
        let (index, path, mut file, filled) = match self.take_filled_segment() {
            Some((index, path, file)) => (index, path, file, true),
            None => {
                let index = self.next_index;
                let path = segment_path(&self.dir, index);
                let file = self.fs.create(&path)?;
                self.next_index += 1;
                (index, path, file, false)
            }
        };
        // A filled segment's name is durable already (its filler synced the
        // directory).
        let written = file
            .write_all_at(0, &start)
            .and_then(|()| file.sync_data())
            .and_then(|()| {
                if filled {
                    Ok(())
                } else {
                    self.fs.sync_dir(&self.dir)
                }
            });
        if let Err(err) = written {
            drop(file);
            // Best effort: an empty or partial segment is cut on replay anyway.
            let _ = self.fs.remove(&path);
            return Err(err);
        }
        if let Some(previous) = self.active.take() {
            self.sealed.push_back(previous.segment);
        }
        self.active = Some(ActiveSegment {
            segment: Segment {
                index,
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

    /// The segment filled ahead of time, once its filling is done (waiting
    /// for it if need be: it started a quarter of a segment ago); `None`
    /// when there is none or its filling failed.
    fn take_filled_segment(&mut self) -> Option<(u64, PathBuf, Box<dyn WalFile>)> {
        let next = self.next.take()?;
        match next.filling.join() {
            Ok(Ok(file)) => Some((next.index, next.path, file)),
            Ok(Err(err)) => {
                tracing::warn!(segment = %next.path.display(), error = %err, "cannot fill the next log segment with zeros ahead of time; it grows as it is written");
                None
            }
            Err(_) => {
                tracing::warn!(segment = %next.path.display(), "filling the next log segment ahead of time failed; it grows as it is written");
                None
            }
        }
    }

    /// The active segment's index.
    #[cfg(test)]
    pub(crate) fn active_index(&self) -> Option<u64> {
        self.active.as_ref().map(|active| active.segment.index)
    }

    /// The active segment's file.
    #[cfg(test)]
    pub(crate) fn active_path(&self) -> Option<&Path> {
        self.active
            .as_ref()
            .map(|active| active.segment.path.as_path())
    }
}

/// What a reclaim did: `Err` gives back the segments it did not delete.
type ReclaimResult = Result<(), (io::Error, Vec<Segment>)>;

/// Writes the deduplication snapshot (atomically, durably), then deletes
/// `segments`, whose ids it holds; on error, the segments not deleted.
fn delete_segments(
    fs: &dyn WalFs,
    dir: &Path,
    snapshot: &[u8],
    segments: Vec<Segment>,
) -> ReclaimResult {
    if let Err(err) = fs.write_atomic(&dir.join(DEDUP_SNAPSHOT), snapshot) {
        return Err((err, segments));
    }
    let mut segments = VecDeque::from(segments);
    while let Some(segment) = segments.front() {
        match fs.remove(&segment.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err((err, segments.into())),
        }
        segments.pop_front();
    }
    fs.sync_dir(dir).map_err(|err| (err, Vec::new()))
}

/// Fills a new file with `len` zeros and makes them durable.
fn write_zeros(file: &mut dyn WalFile, len: u64) -> io::Result<()> {
    let zeros = vec![0_u8; ZERO_CHUNK];
    let mut offset = 0;
    while offset < len {
        let chunk = usize::try_from(len - offset).map_or(ZERO_CHUNK, |left| left.min(ZERO_CHUNK));
        file.write_all_at(offset, &zeros[..chunk])?;
        offset += chunk as u64;
    }
    file.sync_data()
}

/// Bytes `from..to` of a file.
fn read_range(path: &Path, from: u64, to: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    file.take(to - from).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Copies damaged bytes beside the log for inspection; where they went.
/// A failure to copy is logged: the damage is reported either way.
fn quarantine(dir: &Path, segment: u64, offset: usize, bytes: &[u8]) -> PathBuf {
    let folder = dir.join(QUARANTINE_DIR);
    let path = folder.join(format!("segment-{segment:020}-at-{offset}.bin"));
    let written = std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(&path, bytes));
    if let Err(err) = written {
        tracing::error!(path = %path.display(), error = %err, "cannot copy damaged log bytes aside");
    }
    path
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

    fn events(first_seq: u64, count: usize) -> Frame {
        let events = (0..count)
            .map(|n| LoggedEvent {
                id: (first_seq + n as u64).to_be_bytes().to_vec(),
                hour: 490_000,
                line: Bytes::from(format!("{{\"n\":{}}}", first_seq + n as u64)),
            })
            .collect();
        Frame {
            bytes: Record::new(Entry::Events(Events {
                first_seq,
                events,
                received_at: None,
                trace_context: None,
            }))
            .frame(),
            max_event_seq: (count > 0).then(|| first_seq + count as u64 - 1),
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> (Wal, Replayed, Vec<u64>) {
        let mut seqs = Vec::new();
        let (wal, replayed) = Wal::open(dir, Arc::new(StdFs), segment_bytes, |_, record| {
            if let Some(Entry::Events(events)) = record.entry {
                seqs.push(events.first_seq);
            }
        })
        .expect("open");
        (wal, replayed, seqs)
    }

    /// Cuts the last `bytes` of a segment, as a write torn by a power cut.
    fn tear(segment: &Path, bytes: u64) {
        let length = std::fs::metadata(segment).expect("segment").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .and_then(|file| file.set_len(length - bytes))
            .expect("tear");
    }

    fn quarantined(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(QUARANTINE_DIR)).map_or(0, Iterator::count)
    }

    #[test]
    fn frames_round_trip_and_every_fault_is_detected() {
        let frame = events(0, 3).bytes;
        let mut two = frame.clone();
        two.extend_from_slice(&events(3, 1).bytes);
        let read = |bytes: &[u8]| {
            let mut offsets = Vec::new();
            let (_, damages) = scan_frames(bytes, |offset, _, _| {
                offsets.push(offset);
                ControlFlow::Continue(())
            });
            (offsets, damages)
        };
        assert_eq!(read(&two), (vec![0, frame.len()], vec![]));

        // Zeros written ahead of the data end it; they are no damage.
        let mut zero_tail = two.clone();
        zero_tail.extend_from_slice(&[0; 100]);
        assert_eq!(read(&zero_tail), (vec![0, frame.len()], vec![]));
        let (end, _) = scan_frames(&zero_tail, |_, _, _| ControlFlow::Continue(()));
        assert_eq!(end, two.len());
        // Zeros with data after them are.
        let mut blank = frame.clone();
        blank.extend_from_slice(&[0; FRAME_HEADER]);
        blank.extend_from_slice(&events(3, 1).bytes);
        let (offsets, damages) = read(&blank);
        assert_eq!(offsets, [0, frame.len() + FRAME_HEADER]);
        assert_eq!(damages.len(), 1);
        assert_eq!(damages[0].fault, FrameFault::Blank);
        assert!(!damages[0].at_end);

        let fault_at_end = |bytes: &[u8]| {
            let (offsets, damages) = read(bytes);
            assert_eq!(offsets, [0]);
            assert_eq!(damages.len(), 1);
            assert!(damages[0].at_end);
            assert_eq!(damages[0].offset, frame.len());
            damages[0].fault
        };
        assert_eq!(
            fault_at_end(&two[..frame.len() + 5]),
            FrameFault::PartialHeader
        );
        assert_eq!(
            fault_at_end(&two[..two.len() - 1]),
            FrameFault::PartialPayload
        );
        let mut flipped = two.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(fault_at_end(&flipped), FrameFault::Checksum);
        let mut garbage = two[..frame.len()].to_vec();
        let junk = [0xff_u8; 4];
        garbage.extend_from_slice(&4_u32.to_le_bytes());
        garbage.extend_from_slice(&crc32fast::hash(&junk).to_le_bytes());
        garbage.extend_from_slice(&junk);
        assert_eq!(fault_at_end(&garbage), FrameFault::Undecodable);
    }

    #[test]
    fn a_torn_tail_of_the_newest_segment_is_cut_and_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, seqs) = open(dir.path(), 1 << 20);
        assert!(seqs.is_empty());
        let id = wal.wal_id().to_owned();
        wal.append(&[events(0, 2), events(2, 1)]).expect("append");
        wal.append(&[events(3, 4)]).expect("append");
        let segment = wal.active_path().expect("active").to_owned();
        drop(wal);

        tear(&segment, 3);

        let (mut wal, replayed, seqs) = open(dir.path(), 1 << 20);
        assert_eq!(wal.wal_id(), id, "the id survives");
        assert_eq!(seqs, [0, 2]);
        assert_eq!(replayed.torn_segments, 1);
        assert_eq!(replayed.damaged, 0);
        assert_eq!(quarantined(dir.path()), 1, "the cut tail is kept aside");
        // The cut record's numbers are free again, but never reused below
        // what was durable.
        wal.append(&[events(3, 1)]).expect("append after the cut");
        drop(wal);
        let (_, replayed, seqs) = open(dir.path(), 1 << 20);
        assert_eq!(seqs, [0, 2, 3]);
        assert_eq!(replayed.torn_segments, 0);
    }

    #[test]
    fn damage_in_the_middle_of_a_sealed_segment_loses_only_the_damaged_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, _) = open(dir.path(), 1 << 20);
        let mut offsets = Vec::new();
        for first in 0..10 {
            offsets.push(wal.append(&[events(first * 3, 3)]).expect("append"));
        }
        let segment = wal.active_path().expect("active").to_owned();
        drop(wal);
        // A later segment follows (the reopen starts one), so nothing in
        // this one is a tail: flip a byte inside the fifth record's payload
        // and smash the length of the eighth.
        let mut bytes = std::fs::read(&segment).expect("read");
        let fifth = usize::try_from(offsets[4].offset).expect("offset");
        bytes[fifth + FRAME_HEADER + 5] ^= 0x55;
        let eighth = usize::try_from(offsets[7].offset).expect("offset");
        bytes[eighth..eighth + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&segment, &bytes).expect("write");

        let (wal, replayed, seqs) = open(dir.path(), 1 << 20);
        assert_eq!(seqs, [0, 3, 6, 9, 15, 18, 24, 27]);
        assert_eq!(replayed.damaged, 2);
        assert_eq!(replayed.torn_segments, 0);
        assert_eq!(quarantined(dir.path()), 2);
        assert_eq!(
            std::fs::read(&segment).expect("read").len(),
            bytes.len(),
            "a damaged segment is never cut"
        );
        assert_eq!(wal.next_seq(), 30);

        // Reading back from the start gives the same records.
        let mut read = Vec::new();
        let (_, at_end) = wal
            .read_from(wal.start(), |_, record| {
                if let Some(Entry::Events(events)) = record.entry {
                    read.push(events.first_seq);
                }
                ControlFlow::Continue(())
            })
            .expect("read");
        assert!(at_end);
        assert_eq!(read, seqs);
    }

    #[test]
    fn reading_back_stops_and_resumes_where_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, _) = open(dir.path(), 128);
        for first in 0..8 {
            wal.append(&[events(first * 2, 2)]).expect("append");
        }
        let mut position = wal.start();
        let mut read = Vec::new();
        loop {
            let mut taken = 0;
            let (next, at_end) = wal
                .read_from(position, |_, record| {
                    if let Some(Entry::Events(events)) = record.entry {
                        read.push(events.first_seq);
                        taken += 1;
                        if taken == 3 {
                            return ControlFlow::Break(());
                        }
                    }
                    ControlFlow::Continue(())
                })
                .expect("read");
            position = next;
            if at_end {
                break;
            }
        }
        assert_eq!(read, [0, 2, 4, 6, 8, 10, 12, 14]);
    }

    /// Appends small records until the log moves to a new segment; the
    /// sequence numbers appended.
    fn append_until_rotation(wal: &mut Wal, first_seq: &mut u64) -> Vec<u64> {
        let start = wal.start().segment;
        let mut appended = Vec::new();
        while wal.active_index() == Some(start) {
            wal.append(&[events(*first_seq, 2)]).expect("append");
            appended.push(*first_seq);
            *first_seq += 2;
        }
        appended
    }

    #[test]
    fn segments_are_written_over_zeros_filled_ahead_of_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_bytes = 4096;
        let (mut wal, _, _) = open(dir.path(), segment_bytes);
        let mut next = 0;
        let mut appended = append_until_rotation(&mut wal, &mut next);
        // The segment the log moved to was filled ahead of time: full size
        // from its first record on.
        let active = wal.active_path().expect("active").to_owned();
        assert_eq!(
            std::fs::metadata(&active).expect("active").len(),
            segment_bytes
        );
        wal.append(&[events(next, 3)]).expect("append over zeros");
        appended.push(next);
        drop(wal);

        let (wal, replayed, seqs) = open(dir.path(), segment_bytes);
        assert_eq!(seqs, appended, "every record back, nothing after them");
        assert_eq!((replayed.torn_segments, replayed.damaged), (0, 0));
        assert_eq!(quarantined(dir.path()), 0);
        assert_eq!(wal.next_seq(), next + 3);
        // Sealed now: its zeros are given back.
        let data = wal.sealed.back().expect("sealed").bytes;
        assert_eq!(std::fs::metadata(&active).expect("sealed").len(), data);
    }

    #[test]
    fn a_torn_write_over_zeros_is_cut_and_only_its_bytes_are_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, _) = open(dir.path(), 4096);
        let mut next = 0;
        let appended = append_until_rotation(&mut wal, &mut next);
        let last = events(next, 3);
        let at = wal.append(&[last]).expect("append");
        let active = wal.active_path().expect("active").to_owned();
        drop(wal);
        // The write tore: its last 10 bytes never reached the disk, which
        // still holds the zeros written ahead of time there.
        let mut bytes = std::fs::read(&active).expect("read");
        let frame_len = events(next, 3).bytes.len();
        let offset = usize::try_from(at.offset).expect("offset");
        bytes[offset + frame_len - 10..offset + frame_len].fill(0);
        std::fs::write(&active, &bytes).expect("write");

        let (_, replayed, seqs) = open(dir.path(), 4096);
        assert_eq!(seqs, appended);
        assert_eq!((replayed.torn_segments, replayed.damaged), (1, 0));
        assert_eq!(
            replayed.quarantined_bytes,
            (frame_len - 10) as u64,
            "the zeros after the torn bytes are not kept aside"
        );
    }

    #[test]
    fn a_segment_filled_ahead_of_time_but_never_started_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, _) = open(dir.path(), 1 << 20);
        wal.append(&[events(0, 2), events(2, 1)]).expect("append");
        wal.append(&[events(3, 4)]).expect("append");
        let active = wal.active_path().expect("active").to_owned();
        let index = wal.active_index().expect("active");
        drop(wal);
        // The crash came after the next segment was filled with zeros, and
        // tore the last append of the active one.
        let blank = segment_path(dir.path(), index + 1);
        std::fs::write(&blank, vec![0_u8; 8192]).expect("blank segment");
        tear(&active, 3);

        let (wal, replayed, seqs) = open(dir.path(), 1 << 20);
        assert!(!blank.exists(), "the blank segment is removed");
        assert_eq!(seqs, [0, 2]);
        assert_eq!(
            (replayed.torn_segments, replayed.damaged),
            (1, 0),
            "the segment before the blank one is the newest: its tail is torn, not damaged"
        );
        assert!(
            wal.active_index().is_some_and(|active| active > index + 1),
            "segment names are never reused"
        );
    }

    /// The real file system, except that the snapshot cannot be written
    /// while `refuse` is set.
    #[derive(Debug, Default)]
    struct SnapshotRefusingFs {
        refuse: std::sync::atomic::AtomicBool,
    }

    impl WalFs for SnapshotRefusingFs {
        fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
            StdFs.create(path)
        }
        fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28));
            }
            StdFs.write_atomic(path, bytes)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            StdFs.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdFs.sync_dir(dir)
        }
    }

    #[test]
    fn a_reclaim_whose_snapshot_fails_keeps_its_segments_for_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = Arc::new(SnapshotRefusingFs::default());
        fs.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        let (mut wal, _) = Wal::open(dir.path(), fs.clone(), 64, |_, _| {}).expect("open");
        for first in 0..6 {
            wal.append(&[events(first * 2, 2)]).expect("append");
        }
        let segments = wal.segments();
        let oldest = segment_path(dir.path(), wal.start().segment);
        wal.reclaim(4, false, || b"snap".to_vec()).expect("reclaim");
        wal.finish_reclaim();
        assert_eq!(wal.segments(), segments, "no snapshot, no delete");
        assert!(oldest.exists());

        fs.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
        let deleted = wal.reclaim(4, false, || b"snap".to_vec()).expect("reclaim");
        assert!(deleted >= 1);
        wal.finish_reclaim();
        assert!(!oldest.exists());
        assert_eq!(wal.segments(), segments - deleted);
    }

    #[test]
    fn segments_rotate_and_are_reclaimed_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _, _) = open(dir.path(), 64);
        for first in 0..6 {
            wal.append(&[events(first * 2, 2)]).expect("append");
        }
        let segments = wal.segments();
        assert!(segments >= 3, "small segments rotate: {segments}");

        // Events 0..4 are in the lake, 4.. are not.
        let oldest = segment_path(dir.path(), wal.start().segment);
        let deleted = wal.reclaim(4, false, || b"snap".to_vec()).expect("reclaim");
        assert!(deleted >= 1);
        assert_eq!(wal.segments(), segments - deleted);
        wal.finish_reclaim();
        assert!(!oldest.exists(), "deleted once the reclaim is done");
        assert_eq!(
            std::fs::read(dir.path().join(DEDUP_SNAPSHOT)).expect("snapshot"),
            b"snap"
        );
        drop(wal);
        let (mut wal, _, kept) = open(dir.path(), 64);
        assert!(kept.contains(&4) && kept.contains(&10), "{kept:?}");

        // Everything in the lake: only the fresh active segment stays.
        wal.reclaim(12, true, Vec::new).expect("reclaim all");
        assert_eq!(wal.segments(), 1);
        // Dropped mid-reclaim, as at a stop: the deletes still finish.
        drop(wal);
        let files = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|entry| {
                entry.as_ref().is_ok_and(|entry| {
                    entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with(SEGMENT_PREFIX)
                })
            })
            .count();
        assert_eq!(files, 1, "only the active segment is left on disk");
        let (wal, _, kept) = open(dir.path(), 64);
        assert!(kept.is_empty());
        assert_eq!(wal.next_seq, 12, "sequence numbers are never reused");
    }
}
