//! When a partition's events become a lake object: the one set of rules
//! shared by the single-node flusher and the fleet's lake writers, so that
//! `--batch-bytes`, `--batch-size` and `--max-batch-age` mean the same in
//! both modes.

use std::time::{Duration, Instant};

/// The batching settings: an object is cut at `batch_bytes` of NDJSON, or
/// at `batch_size` events (0 = no count), or when its oldest event has
/// waited `max_batch_age`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRules {
    /// Events per object; 0 turns the count off.
    pub batch_size: u32,
    /// NDJSON bytes (newlines included) per object.
    pub batch_bytes: u64,
    /// The longest an event waits in an open batch.
    pub max_batch_age: Duration,
}

impl BatchRules {
    /// Whether a batch of `events` holding `bytes` of NDJSON is due now.
    pub(crate) fn is_full(&self, events: usize, bytes: u64) -> bool {
        let by_count = self.batch_size > 0 && events >= self.batch_size as usize;
        by_count || bytes >= self.batch_bytes
    }

    /// The event cap of one object, when the count is on.
    fn events_per_object(&self) -> usize {
        match self.batch_size {
            0 => usize::MAX,
            size => size as usize,
        }
    }

    /// How many events (from the front, given by their line lengths) make
    /// one object, and their NDJSON bytes: at most `batch_size` events and
    /// `batch_bytes` bytes, and always at least one event.
    pub(crate) fn prefix(&self, line_lengths: impl Iterator<Item = usize>) -> (usize, u64) {
        let mut bytes = 0;
        let mut count = 0;
        for length in line_lengths.take(self.events_per_object()) {
            let size = length as u64 + 1;
            if count > 0 && bytes + size > self.batch_bytes {
                break;
            }
            bytes += size;
            count += 1;
        }
        (count, bytes)
    }
}

/// An event waiting in a partition's batch.
pub(crate) trait Batched {
    /// Bytes of its lake line, without the newline.
    fn line_len(&self) -> usize;
    /// When it entered its batch (for the age trigger).
    fn arrival(&self) -> Instant;
}

/// The events of one partition waiting to be cut into objects.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    pub(crate) events: Vec<T>,
    /// NDJSON bytes of the events, newlines included.
    pub(crate) bytes: u64,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T: Batched> Batch<T> {
    /// Adds an event; `true` when whoever cuts batches has something new
    /// to watch (the batch started, so a new deadline, or it is full).
    pub(crate) fn push(&mut self, event: T, rules: &BatchRules) -> bool {
        self.bytes += event.line_len() as u64 + 1;
        self.events.push(event);
        self.events.len() == 1 || self.is_full(rules)
    }

    pub(crate) fn is_full(&self, rules: &BatchRules) -> bool {
        rules.is_full(self.events.len(), self.bytes)
    }

    /// When the batch comes of age; `None` when it is empty.
    pub(crate) fn deadline(&self, rules: &BatchRules) -> Option<Instant> {
        self.events
            .first()
            .map(|first| first.arrival() + rules.max_batch_age)
    }

    /// Cuts the objects that are due: full ones always, everything when
    /// the batch has come of age or when `forced`. Each object holds at
    /// most `batch_size` events and `batch_bytes` bytes (and at least one
    /// event), in arrival order.
    pub(crate) fn cut(&mut self, rules: &BatchRules, now: Instant, forced: bool) -> Vec<Vec<T>> {
        let aged = self.deadline(rules).is_some_and(|deadline| now >= deadline);
        let take_all = forced || aged;
        let mut cut = Vec::new();
        while !self.events.is_empty() && (take_all || self.is_full(rules)) {
            let (count, bytes) = rules.prefix(self.events.iter().map(Batched::line_len));
            self.bytes -= bytes;
            cut.push(self.events.drain(..count).collect());
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    struct Line(usize, Instant);

    impl Batched for Line {
        fn line_len(&self) -> usize {
            self.0
        }
        fn arrival(&self) -> Instant {
            self.1
        }
    }

    fn rules(batch_size: u32, batch_bytes: u64) -> BatchRules {
        BatchRules {
            batch_size,
            batch_bytes,
            max_batch_age: Duration::from_secs(5),
        }
    }

    #[test]
    fn full_batches_are_cut_by_bytes_and_by_count_and_the_rest_waits() {
        let start = Instant::now();
        let by_bytes = rules(0, 30);
        let mut batch = Batch::default();
        assert!(
            batch.push(Line(9, start), &by_bytes),
            "a new batch has a deadline"
        );
        assert!(!batch.push(Line(9, start), &by_bytes));
        assert!(batch.push(Line(9, start), &by_bytes), "30 bytes is full");
        batch.push(Line(9, start), &by_bytes);
        let cut = batch.cut(&by_bytes, start, false);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [3]);
        assert_eq!((batch.events.len(), batch.bytes), (1, 10));

        let by_count = rules(2, 1 << 20);
        let mut batch = Batch::default();
        for _ in 0..5 {
            batch.push(Line(1, start), &by_count);
        }
        let cut = batch.cut(&by_count, start, false);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(batch.events.len(), 1);
    }

    #[test]
    fn an_aged_or_forced_batch_is_cut_whole_an_oversized_event_alone() {
        let start = Instant::now();
        let rules = rules(0, 30);
        let mut batch = Batch::default();
        batch.push(Line(5, start), &rules);
        assert!(batch.cut(&rules, start, false).is_empty());
        assert_eq!(batch.deadline(&rules), Some(start + rules.max_batch_age));
        let cut = batch.cut(&rules, start + rules.max_batch_age, false);
        assert_eq!(cut.len(), 1);
        assert_eq!(batch.deadline(&rules), None);

        batch.push(Line(100, start), &rules);
        batch.push(Line(5, start), &rules);
        let cut = batch.cut(&rules, start, true);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(batch.bytes, 0);
    }
}
