//! The backlog: events in the log that are not in memory, and what replay
//! gathers to rebuild the engine's state after a restart.

use super::*;

/// Events in the log that are not in memory: everything from `cursor` on
/// that is not in the lake yet. After a restart that is the whole log;
/// while running, what arrived past the memory bound.
#[derive(Debug)]
pub(super) struct Backlog {
    /// The next record to read.
    cursor: Position,
    /// Every unread event has at least this sequence number.
    pub(super) floor_seq: u64,
    /// Unread events (for the gauges; exact after a clean read).
    pub(super) events: u64,
    /// From replay: events the lake already has, ascending.
    flushed: Vec<u64>,
    /// From replay: events under a flush intent storage never confirmed,
    /// with the intent's key.
    intended: HashMap<u64, Arc<str>>,
    /// From replay: those intents, with the events read so far.
    open_intents: HashMap<Arc<str>, OpenIntent>,
}

#[derive(Debug)]
struct OpenIntent {
    expected: usize,
    events: Vec<Buffered>,
}

impl Backlog {
    /// A backlog that starts at `cursor` with event `first_seq`.
    pub(super) fn at(cursor: Position, first_seq: u64) -> Self {
        Self {
            cursor,
            floor_seq: first_seq,
            events: 0,
            flushed: Vec::new(),
            intended: HashMap::new(),
            open_intents: HashMap::new(),
        }
    }
}

/// What replay gathers while the log is opened: the small records only.
#[derive(Debug, Default)]
pub(super) struct ReplayIndex {
    /// Every logged event id with its receive time, for the window.
    pub(super) ids: Vec<(u128, i64)>,
    /// `(first_seq, count)` of every logged call.
    appends: Vec<(u64, u64)>,
    intents: Vec<FlushIntent>,
    done: HashSet<String>,
}

impl ReplayIndex {
    pub(super) fn add(&mut self, record: Record) {
        match record.entry {
            Some(Entry::Events(events)) => {
                let received_ms = events
                    .received_at
                    .map_or(0, |at| at.seconds.saturating_mul(1000));
                for event in &events.events {
                    if let Ok(id) = <[u8; 16]>::try_from(event.id.as_slice()) {
                        self.ids.push((u128::from_be_bytes(id), received_ms));
                    }
                }
                self.appends
                    .push((events.first_seq, events.events.len() as u64));
            }
            Some(Entry::Append(append)) => {
                let received_ms = append
                    .received_at
                    .map_or(0, |at| at.seconds.saturating_mul(1000));
                for event in &append.events {
                    if let Ok(id) = uuid::Uuid::try_parse(&event.event_id) {
                        self.ids.push((id.as_u128(), received_ms));
                    }
                }
                self.appends
                    .push((append.first_seq, append.events.len() as u64));
            }
            Some(Entry::Intent(intent)) => self.intents.push(intent),
            Some(Entry::Done(done)) => {
                self.done.insert(done.key);
            }
            Some(Entry::Start(_)) | None => {}
        }
    }

    /// The backlog to read from `start`, or `None` when the log holds no
    /// event the lake lacks.
    pub(super) fn into_backlog(self, start: Position) -> Option<Backlog> {
        let mut flushed = Vec::new();
        let mut intended = HashMap::new();
        let mut open_intents = HashMap::new();
        for intent in self.intents {
            if self.done.contains(&intent.key) {
                flushed.extend(intent.seqs);
                continue;
            }
            let key: Arc<str> = Arc::from(intent.key.as_str());
            if open_intents.contains_key(&key) {
                continue;
            }
            for seq in &intent.seqs {
                intended.insert(*seq, Arc::clone(&key));
            }
            open_intents.insert(
                key,
                OpenIntent {
                    expected: intent.seqs.len(),
                    events: Vec::new(),
                },
            );
        }
        flushed.sort_unstable();
        flushed.dedup();
        let mut events = 0;
        for (first, count) in &self.appends {
            let end = first + count;
            let lo = flushed.partition_point(|seq| seq < first);
            let hi = flushed.partition_point(|seq| *seq < end);
            events += count - (hi - lo) as u64;
        }
        if events == 0 {
            return None;
        }
        Some(Backlog {
            cursor: start,
            floor_seq: 0,
            events,
            flushed,
            intended,
            open_intents,
        })
    }
}

/// Reads the backlog into memory, in log order, until the memory bound
/// (and every replayed intent is complete) or the end of the log, where
/// the backlog ends. Runs on the committer thread, so nothing is appended
/// meanwhile.
pub(super) fn read_backlog(shared: &Shared, wal: &Wal, backlog: &mut Option<Backlog>) {
    let Some(log) = backlog.as_mut() else {
        return;
    };
    let config = &shared.config;
    let full = |state: &State, log: &Backlog| {
        state.memory_bytes >= config.max_buffered_bytes && log.open_intents.is_empty()
    };
    if full(&shared.lock(), log) {
        return;
    }
    let arrival = Instant::now();
    let mut wake_flusher = false;
    let from = log.cursor;
    let read = wal.read_from(from, |after, record| {
        let (first_seq, received_at, trace_context, events) = match record.entry {
            Some(Entry::Events(events)) => (
                events.first_seq,
                events.received_at.unwrap_or_default(),
                events.trace_context,
                events
                    .events
                    .into_iter()
                    .map(|event| (Partition::from_unix_hour(event.hour), event.line))
                    .collect::<Vec<_>>(),
            ),
            Some(Entry::Append(Append {
                first_seq,
                events,
                received_at,
                trace_context,
            })) => {
                let received_at = received_at.unwrap_or_default();
                let lines = events
                    .iter()
                    .map(|event| {
                        (
                            event.timestamp.as_ref().and_then(Partition::of),
                            Bytes::from(lake::event_line(event, &received_at)),
                        )
                    })
                    .collect();
                (first_seq, received_at, trace_context, lines)
            }
            _ => {
                log.cursor = after;
                return ControlFlow::Continue(());
            }
        };
        let _ = received_at;
        let trace_context: Option<Arc<str>> = trace_context.as_deref().map(Arc::from);
        let mut state = shared.lock();
        let end_seq = first_seq + events.len() as u64;
        for (offset, (partition, line)) in events.into_iter().enumerate() {
            let seq = first_seq + offset as u64;
            if seq < log.floor_seq || log.flushed.binary_search(&seq).is_ok() {
                continue;
            }
            log.events = log.events.saturating_sub(1);
            let Some(partition) = partition else {
                tracing::error!(
                    seq,
                    "an event in the log has no valid hour; it cannot be placed in the lake"
                );
                continue;
            };
            let event = Buffered {
                seq,
                line,
                trace_context: trace_context.clone(),
                arrival,
            };
            if let Some(key) = log.intended.remove(&seq) {
                if let Some(intent) = log.open_intents.get_mut(&key) {
                    // In memory from here on, so counted as such.
                    state.in_memory.insert(event.seq);
                    state.memory_bytes += event.cost();
                    intent.events.push(event);
                    if intent.events.len() == intent.expected
                        && let Some(intent) = log.open_intents.remove(&key)
                    {
                        adopt_intent(&mut state, &key, intent.events);
                        wake_flusher = true;
                    }
                }
                continue;
            }
            wake_flusher |= buffer_event(&mut state, config, partition, event);
        }
        log.floor_seq = log.floor_seq.max(end_seq);
        log.cursor = after;
        state.backlog_events = log.events;
        state.backlog_floor = Some(log.floor_seq);
        if full(&state, log) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    match read {
        Ok((_, true)) => {
            let mut state = shared.lock();
            for (key, intent) in std::mem::take(&mut log.open_intents) {
                // Only a damaged log gets here: writing a subset under the
                // same key could shrink an object already in the lake, so the
                // events left are batched afresh instead.
                tracing::warn!(
                    key = %key,
                    found = intent.events.len(),
                    expected = intent.expected,
                    "a flush intent refers to events no longer in the log; its remaining events are written under a new key"
                );
                let partition = partition_of_key(&key);
                for event in intent.events {
                    // Counted when read; `buffer_event` counts it again.
                    state.in_memory.remove(&event.seq);
                    state.memory_bytes = state.memory_bytes.saturating_sub(event.cost());
                    if let Some(partition) = partition {
                        wake_flusher |= buffer_event(&mut state, config, partition, event);
                    }
                }
            }
            state.backlog_events = 0;
            state.backlog_floor = None;
            state.record_gauges();
            *backlog = None;
        }
        Ok((_, false)) => shared.lock().record_gauges(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the write-ahead log backlog yet; retrying after the next flush");
        }
    }
    if wake_flusher {
        shared.kick.notify_one();
    }
}

/// Takes a replayed, complete flush intent as a pending object, to be
/// written again under its key (its events were counted in memory as they
/// were read).
fn adopt_intent(state: &mut State, key: &str, mut events: Vec<Buffered>) {
    events.sort_by_key(|event| event.seq);
    state.pending.insert(
        key.to_owned(),
        PendingObject {
            key: key.to_owned(),
            events,
            intent_logged: true,
            permanent_failures: 0,
        },
    );
}

/// The partition an event object key names (`events/dt=…/hour=…/…`).
fn partition_of_key(key: &str) -> Option<Partition> {
    let mut parts = key.strip_prefix(lake::EVENTS_PREFIX)?.split('/');
    let date = parts.next()?.strip_prefix("dt=")?;
    let hour = parts.next()?.strip_prefix("hour=")?;
    let timestamp = vesper::wire::parse_timestamp(&format!("{date}T{hour}:00:00Z"))?;
    Partition::of(&timestamp)
}
