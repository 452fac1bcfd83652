//! The recent-window of event ids that makes a resent event a duplicate
//! instead of a second copy.
//!
//! The window is bounded twice: by count (the oldest ids leave first) and by
//! age (ids older than the time-to-live leave even when there is room). It
//! survives restarts: the write-ahead log replays every id it still holds,
//! and before segments are reclaimed the window is written to a snapshot
//! (`dedup.snapshot` in the log directory), which is read back on start.
//! The union of the two is the window as it was.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

/// Magic and version of the snapshot format.
const SNAPSHOT_MAGIC: &[u8; 8] = b"VDEDUP01";

/// Bytes per id in the snapshot: 16 of id, 8 of millisecond timestamp.
const SNAPSHOT_ENTRY: usize = 24;

/// What the window knew of an id offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New: now in the window, pending until its append is durable.
    New,
    /// Seen before, and durable.
    Durable,
    /// Seen before, in an append not yet durable: the caller must wait for
    /// that append before calling this a duplicate.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    generation: u64,
    durable: bool,
}

/// The window of recently accepted event ids.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    ttl: Duration,
    /// Id -> its live entry.
    live: HashMap<u128, Live>,
    /// Ids in arrival order, with their generation and arrival time (unix
    /// milliseconds). Entries whose generation no longer matches `live` were
    /// released and are skipped.
    order: VecDeque<(u128, u64, i64)>,
    next_generation: u64,
}

impl DedupWindow {
    /// An empty window of at most `capacity` ids, each kept at most `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            live: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Ids in the window.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether `id` was seen within the window.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u128) -> bool {
        self.live.contains_key(&id)
    }

    /// Offers `id`, seen at `now_ms` (unix milliseconds). A new id enters
    /// the window as pending (see [`DedupWindow::confirm`]), or as durable
    /// when `durable` (replay).
    pub(crate) fn offer(&mut self, id: u128, now_ms: i64, durable: bool) -> Seen {
        if let Some(live) = self.live.get(&id) {
            return if live.durable {
                Seen::Durable
            } else {
                Seen::Pending
            };
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(
            id,
            Live {
                generation,
                durable,
            },
        );
        self.order.push_back((id, generation, now_ms));
        self.evict(now_ms);
        Seen::New
    }

    /// Marks `id` durable: its append is in the log.
    pub(crate) fn confirm(&mut self, id: u128) {
        if let Some(live) = self.live.get_mut(&id) {
            live.durable = true;
        }
    }

    /// Forgets `id` (its append failed, so it was never accepted).
    pub(crate) fn release(&mut self, id: u128) {
        self.live.remove(&id);
    }

    /// Drops ids beyond the count bound or older than the age bound.
    pub(crate) fn evict(&mut self, now_ms: i64) {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let oldest_kept = now_ms.saturating_sub(ttl_ms);
        while let Some(&(id, generation, seen_ms)) = self.order.front() {
            let released = self.live.get(&id).map(|live| live.generation) != Some(generation);
            let over = self.live.len() > self.capacity
                // Released entries still take room in `order`; keep that bounded too.
                || self.order.len() > self.capacity.saturating_mul(2);
            if !(released || over || seen_ms < oldest_kept) {
                break;
            }
            self.order.pop_front();
            if !released {
                self.live.remove(&id);
            }
        }
    }

    /// The durable part of the window as snapshot bytes: magic, then (id,
    /// time) pairs oldest first, then a CRC-32 of everything before it.
    /// Pending ids are left out: their append may still fail, and a
    /// snapshot must never make an event that was refused look seen.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.live.len() * SNAPSHOT_ENTRY);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        for &(id, generation, seen_ms) in &self.order {
            let live = self.live.get(&id);
            if live.is_some_and(|live| live.generation == generation && live.durable) {
                bytes.extend_from_slice(&id.to_le_bytes());
                bytes.extend_from_slice(&seen_ms.to_le_bytes());
            }
        }
        let checksum = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Adds the ids of a snapshot; `Err` says why the snapshot is unusable
    /// (then the window is rebuilt from the log alone).
    pub(crate) fn restore(&mut self, bytes: &[u8], now_ms: i64) -> Result<usize, &'static str> {
        let Some((body, checksum)) = bytes.split_last_chunk::<4>() else {
            return Err("too short");
        };
        if crc32fast::hash(body) != u32::from_le_bytes(*checksum) {
            return Err("checksum mismatch");
        }
        let Some(entries) = body.strip_prefix(SNAPSHOT_MAGIC) else {
            return Err("not a vesper deduplication snapshot");
        };
        if entries.len() % SNAPSHOT_ENTRY != 0 {
            return Err("truncated entry");
        }
        let mut restored = 0;
        for entry in entries.chunks_exact(SNAPSHOT_ENTRY) {
            let (id, seen) = entry.split_at(16);
            let id = u128::from_le_bytes(id.try_into().map_err(|_| "truncated entry")?);
            let seen_ms = i64::from_le_bytes(seen.try_into().map_err(|_| "truncated entry")?);
            if self.offer(id, seen_ms, true) == Seen::New {
                restored += 1;
            }
        }
        self.evict(now_ms);
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_seen_once_until_they_leave_the_window() {
        let mut window = DedupWindow::new(3, Duration::from_secs(60));
        assert_eq!(window.offer(1, 0, false), Seen::New);
        assert_eq!(window.offer(1, 1, false), Seen::Pending);
        window.confirm(1);
        assert_eq!(window.offer(1, 1, false), Seen::Durable);
        for id in 2..=4 {
            assert_eq!(window.offer(id, 2, true), Seen::New);
        }
        assert!(!window.contains(1), "the oldest leaves past the count");
        assert!(window.contains(4));
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn ids_expire_by_age() {
        let mut window = DedupWindow::new(100, Duration::from_secs(1));
        window.offer(7, 0, true);
        window.offer(8, 900, true);
        window.evict(1_500);
        assert!(!window.contains(7));
        assert!(window.contains(8));
    }

    #[test]
    fn released_ids_can_be_accepted_again() {
        let mut window = DedupWindow::new(2, Duration::from_secs(60));
        window.offer(1, 0, false);
        window.release(1);
        assert!(!window.contains(1));
        assert_eq!(window.offer(1, 1, false), Seen::New);
        window.offer(2, 2, true);
        window.offer(3, 3, true);
        assert!(!window.contains(1));
        assert!(window.contains(2) && window.contains(3));
    }

    #[test]
    fn snapshots_round_trip_and_bad_ones_are_refused() {
        let mut window = DedupWindow::new(10, Duration::from_secs(60));
        for id in [5_u128, u128::MAX, 42, 43] {
            window.offer(id, 1_000, true);
        }
        window.release(42);
        window.offer(44, 1_000, false);
        let bytes = window.snapshot();
        let mut restored = DedupWindow::new(10, Duration::from_secs(60));
        assert_eq!(restored.restore(&bytes, 2_000), Ok(3));
        assert!(restored.contains(5) && restored.contains(u128::MAX));
        assert!(
            !restored.contains(42),
            "released ids are not in the snapshot"
        );
        assert!(
            !restored.contains(44),
            "pending ids are not in the snapshot"
        );

        let mut expired = DedupWindow::new(10, Duration::from_secs(60));
        assert_eq!(expired.restore(&bytes, 1_000_000), Ok(3));
        assert_eq!(expired.len(), 0, "restored ids still age out");

        let mut corrupt = bytes.clone();
        corrupt[9] ^= 1;
        assert!(restored.restore(&corrupt, 0).is_err());
        assert!(restored.restore(b"xy", 0).is_err());
    }
}
