//! When a partition's events become a lake object: the one set of rules
//! shared by the single-node flusher and the fleet's lake writers, so that
//! `--batch-bytes`, `--batch-size` and `--max-batch-age` mean the same in
//! both modes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tracing::Instrument;
use vesper::telemetry;
use vesper_storage::{ObjectKey, ObjectStore, PutOptions};

use crate::{IngestError, lake};

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
    /// Its lake line, without the newline.
    fn line(&self) -> &[u8];
    /// The W3C trace context of the call that brought it, if any.
    fn trace_context(&self) -> Option<&Arc<str>>;
    /// When it entered its batch (for the age trigger).
    fn arrival(&self) -> Instant;

    /// Bytes of its lake line, without the newline.
    fn line_len(&self) -> usize {
        self.line().len()
    }
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

/// The calls whose events an object holds: each call's W3C trace context,
/// with how many of its events are in the object.
pub(crate) type CallTraces = Vec<(Arc<str>, usize)>;

/// The NDJSON body of an object, and the calls whose events it holds.
pub(crate) fn object_body<T: Batched>(events: &[T]) -> (Bytes, CallTraces) {
    let size = events.iter().map(|event| event.line().len() + 1).sum();
    let mut body = Vec::with_capacity(size);
    let mut traces = CallTraces::new();
    for event in events {
        body.extend_from_slice(event.line());
        body.push(b'\n');
        if let Some(trace) = event.trace_context() {
            match traces.iter_mut().find(|(known, _)| known == trace) {
                Some((_, count)) => *count += 1,
                None => traces.push((Arc::clone(trace), 1)),
            }
        }
    }
    (Bytes::from(body), traces)
}

/// Writes one object in its own trace: batching ends the calls' traces, and
/// one write serves many calls. The flush span links to the span of every
/// call whose events it holds, and the write to storage is its child. Once
/// the object is written, each of those calls' traces gets an
/// `ingest.flushed` span (the object's key, linked back to the flush), so a
/// trace leads from a webhook call to the object that holds its events,
/// and from the object back to every call.
pub(crate) async fn put_object(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    traces: &[(Arc<str>, usize)],
    events: usize,
) -> Result<(), IngestError> {
    let span = tracing::info_span!(
        parent: None,
        "ingest.flush",
        key,
        events,
        bytes = body.len(),
        linked_calls = traces.len(),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    for (trace, _) in traces {
        telemetry::add_link(&span, trace);
    }
    let started = Instant::now();
    let result = async {
        let key = ObjectKey::new(key).map_err(|err| IngestError::storage(&err))?;
        store
            .put(&key, body, PutOptions::content_type(lake::CONTENT_TYPE))
            .await
            .map_err(|err| IngestError::storage(&err))
    }
    .instrument(span.clone())
    .await;
    match &result {
        Ok(_) => {
            for (trace, events) in traces {
                let flushed = tracing::info_span!(parent: None, "ingest.flushed", key, events);
                telemetry::set_parent_from_traceparent(&flushed, trace);
                telemetry::link_to(&flushed, &span);
            }
        }
        Err(err) => telemetry::record_error(&span, err),
    }
    metrics::histogram!("vesper_ingest_flush_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("vesper_ingest_flushes_total", "result" => label).increment(1);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct Line(Vec<u8>, Instant);

    fn line(len: usize, arrival: Instant) -> Line {
        Line(vec![b'x'; len], arrival)
    }

    impl Batched for Line {
        fn line(&self) -> &[u8] {
            &self.0
        }
        fn trace_context(&self) -> Option<&Arc<str>> {
            None
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
            batch.push(line(9, start), &by_bytes),
            "a new batch has a deadline"
        );
        assert!(!batch.push(line(9, start), &by_bytes));
        assert!(batch.push(line(9, start), &by_bytes), "30 bytes is full");
        batch.push(line(9, start), &by_bytes);
        let cut = batch.cut(&by_bytes, start, false);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [3]);
        assert_eq!((batch.events.len(), batch.bytes), (1, 10));

        let by_count = rules(2, 1 << 20);
        let mut batch = Batch::default();
        for _ in 0..5 {
            batch.push(line(1, start), &by_count);
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
        batch.push(line(5, start), &rules);
        assert!(batch.cut(&rules, start, false).is_empty());
        assert_eq!(batch.deadline(&rules), Some(start + rules.max_batch_age));
        let cut = batch.cut(&rules, start + rules.max_batch_age, false);
        assert_eq!(cut.len(), 1);
        assert_eq!(batch.deadline(&rules), None);

        batch.push(line(100, start), &rules);
        batch.push(line(5, start), &rules);
        let cut = batch.cut(&rules, start, true);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(batch.bytes, 0);
    }
}
