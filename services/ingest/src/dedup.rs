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
    collections::VecDeque,
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use hashbrown::HashTable;

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

/// Where an id in arrival order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Durable,
    /// Its append failed; the slot only waits to leave the front.
    Released,
}

/// One offer, in arrival order.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u128,
    /// Unix milliseconds.
    seen_ms: i64,
    state: State,
}

/// The slot at `position` of `order`, whose first slot has position
/// `popped`.
fn slot_at(order: &VecDeque<Slot>, popped: u64, position: u64) -> Option<&Slot> {
    order.get(usize::try_from(position.checked_sub(popped)?).ok()?)
}

/// The window of recently accepted event ids.
///
/// The state of an id lives in its slot of `order`; `live` indexes the
/// slots of the ids in the window by id. It holds only the slots'
/// positions (8 bytes a bucket, where a map from id to position takes 32),
/// which matters because a hash table under steady insert-and-remove churn
/// settles at about twice as many buckets as ids. Confirming, snapshotting
/// and evicting touch the slot directly, and a snapshot is one pass over
/// `order` without a lookup per id (it is taken under the engine's lock).
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    ttl: Duration,
    /// Positions of the live slots, hashed by their id. A position counts
    /// from the first slot ever pushed: `position - popped` indexes `order`.
    live: HashTable<u64>,
    /// SipHash with a key of this process: ids come from clients, who must
    /// not be able to pick ids that collide.
    hasher: RandomState,
    /// Offers in arrival order; released slots stay until they reach the
    /// front.
    order: VecDeque<Slot>,
    /// Slots popped from the front of `order` so far.
    popped: u64,
}

impl DedupWindow {
    /// An empty window of at most `capacity` ids, each kept at most `ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            live: HashTable::new(),
            hasher: RandomState::new(),
            order: VecDeque::new(),
            popped: 0,
        }
    }

    /// Ids in the window.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether `id` was seen within the window.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u128) -> bool {
        self.position(id).is_some()
    }

    /// The position of the live slot of `id`.
    fn position(&self, id: u128) -> Option<u64> {
        let Self {
            live,
            hasher,
            order,
            popped,
            ..
        } = self;
        live.find(hasher.hash_one(id), |&position| {
            slot_at(order, *popped, position).is_some_and(|slot| slot.id == id)
        })
        .copied()
    }

    fn slot_mut(&mut self, id: u128) -> Option<&mut Slot> {
        let position = self.position(id)?;
        let index = usize::try_from(position.checked_sub(self.popped)?).ok()?;
        self.order.get_mut(index)
    }

    /// Takes `id` out of the index (its slot stays in `order`).
    fn unindex(&mut self, id: u128) {
        let Self {
            live,
            hasher,
            order,
            popped,
            ..
        } = self;
        if let Ok(entry) = live.find_entry(hasher.hash_one(id), |&position| {
            slot_at(order, *popped, position).is_some_and(|slot| slot.id == id)
        }) {
            entry.remove();
        }
    }

    /// Offers `id`, seen at `now_ms` (unix milliseconds). A new id enters
    /// the window as pending (see [`DedupWindow::confirm`]), or as durable
    /// when `durable` (replay).
    pub(crate) fn offer(&mut self, id: u128, now_ms: i64, durable: bool) -> Seen {
        if let Some(slot) = self.slot_mut(id) {
            return if slot.state == State::Durable {
                Seen::Durable
            } else {
                Seen::Pending
            };
        }
        let position = self.popped + self.order.len() as u64;
        self.order.push_back(Slot {
            id,
            seen_ms: now_ms,
            state: if durable {
                State::Durable
            } else {
                State::Pending
            },
        });
        let Self {
            live,
            hasher,
            order,
            popped,
            ..
        } = self;
        live.insert_unique(hasher.hash_one(id), position, |&position| {
            slot_at(order, *popped, position).map_or(0, |slot| hasher.hash_one(slot.id))
        });
        self.evict(now_ms);
        Seen::New
    }

    /// Marks `id` durable: its append is in the log.
    pub(crate) fn confirm(&mut self, id: u128) {
        if let Some(slot) = self.slot_mut(id) {
            slot.state = State::Durable;
        }
    }

    /// Forgets `id` (its append failed, so it was never accepted).
    pub(crate) fn release(&mut self, id: u128) {
        if let Some(slot) = self.slot_mut(id) {
            slot.state = State::Released;
        }
        self.unindex(id);
    }

    /// Drops ids beyond the count bound or older than the age bound.
    pub(crate) fn evict(&mut self, now_ms: i64) {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let oldest_kept = now_ms.saturating_sub(ttl_ms);
        while let Some(front) = self.order.front() {
            let released = front.state == State::Released;
            let over = self.live.len() > self.capacity
                // Released slots still take room in `order`; keep that bounded too.
                || self.order.len() > self.capacity.saturating_mul(2);
            if !(released || over || front.seen_ms < oldest_kept) {
                break;
            }
            let id = front.id;
            if !released {
                self.unindex(id);
            }
            self.order.pop_front();
            self.popped += 1;
        }
    }

    /// The durable part of the window as snapshot bytes: magic, then (id,
    /// time) pairs oldest first, then a CRC-32 of everything before it.
    /// Pending ids are left out: their append may still fail, and a
    /// snapshot must never make an event that was refused look seen.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.live.len() * SNAPSHOT_ENTRY);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        for slot in self
            .order
            .iter()
            .filter(|slot| slot.state == State::Durable)
        {
            bytes.extend_from_slice(&slot.id.to_le_bytes());
            bytes.extend_from_slice(&slot.seen_ms.to_le_bytes());
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
    fn a_released_id_offered_again_is_tracked_by_its_new_slot() {
        let mut window = DedupWindow::new(10, Duration::from_secs(60));
        window.offer(1, 0, false);
        window.offer(2, 0, false);
        window.release(1);
        assert_eq!(window.offer(1, 1, false), Seen::New);
        assert_eq!(window.offer(1, 1, false), Seen::Pending);
        window.confirm(1);
        window.confirm(2);
        assert_eq!(window.offer(1, 2, false), Seen::Durable);
        let mut restored = DedupWindow::new(10, Duration::from_secs(60));
        assert_eq!(
            restored.restore(&window.snapshot(), 2),
            Ok(2),
            "the released slot is not in the snapshot, the new one is"
        );
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
