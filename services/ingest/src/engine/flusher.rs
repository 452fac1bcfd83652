//! The flusher: cuts batches, logs their intents, writes them through
//! storage, logs the confirmations, and sets aside what storage refuses
//! for good.

use super::*;

impl WalEngine {
    /// The flusher task. It logs through its own `jobs` sender, so the
    /// final flush of a shutdown still can after calls were cut off; the
    /// log writer ends when this task does.
    pub(super) async fn run_flusher(
        self,
        jobs: Sender<Job>,
        mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<FlushOutcome, IngestError>>>,
        stop: CancellationToken,
    ) {
        let mut failures: u32 = 0;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let wake = self.next_wake(retry_at);
            let mut waiters = Vec::new();
            tokio::select! {
                () = stop.cancelled() => break,
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    waiters.push(request);
                    while let Ok(request) = requests.try_recv() {
                        waiters.push(request);
                    }
                }
                () = self.shared.kick.notified() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            let forced = !waiters.is_empty();
            if !forced && retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
                continue;
            }
            let mut result = self.flush_round(&jobs, forced).await;
            if forced {
                self.flush_backlog(&jobs, &mut result).await;
            }
            match &result {
                Ok(_) => {
                    failures = 0;
                    retry_at = None;
                    self.shared.lock().retry_after = self.shared.config.retry_initial;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let bound = backoff_bound(&self.shared.config, failures);
                    let delay = vesper::retry::full_jitter(bound);
                    retry_at = Some(tokio::time::Instant::now() + delay);
                    self.shared.lock().retry_after = bound;
                    tracing::warn!(error = %err, failures, retry_in_ms = delay.as_millis() as u64, "flush failed; the events stay in the write-ahead log and are retried");
                }
            }
            for waiter in waiters {
                let _ = waiter.send(match &result {
                    Ok(outcome) => Ok(outcome.clone()),
                    Err(err) => Err(err.duplicate()),
                });
            }
        }
        for waiter in std::iter::from_fn(|| requests.try_recv().ok()) {
            let _ = waiter.send(Err(IngestError::EngineStopped));
        }
    }

    /// The rest of a flush on request, after its first round: the backlog
    /// too, a memory window at a time, until a round has cut everything
    /// accepted before the request.
    ///
    /// The log writer moves events from the log into memory on its own
    /// (the read after a restart, the read after each reclaim), so events
    /// may arrive in memory after a round's cut, and the backlog may end
    /// meanwhile. Only a round that starts after the backlog was seen empty
    /// has cut them all; stopping as soon as the backlog is empty once
    /// answered a Flush with events still waiting in memory.
    async fn flush_backlog(
        &self,
        jobs: &Sender<Job>,
        result: &mut Result<FlushOutcome, IngestError>,
    ) {
        while result.is_ok() {
            let backlog_left = self.shared.lock().backlog_floor.is_some();
            if backlog_left {
                let (ack, acked) = oneshot::channel();
                if jobs.send(Job::ReadBacklog { ack }).is_err() || acked.await.is_err() {
                    return;
                }
            }
            let more = self.flush_round(jobs, true).await;
            let progressed = more.as_ref().is_ok_and(|outcome| !outcome.keys.is_empty());
            match (&mut *result, more) {
                (Ok(so_far), Ok(outcome)) => {
                    so_far.events += outcome.events;
                    so_far.keys.extend(outcome.keys);
                }
                (_, Err(err)) => *result = Err(err),
                (Err(_), Ok(_)) => {}
            }
            // Reading made no progress (a read error, logged): stop rather
            // than spin; the backlog is read after the next flush.
            if !backlog_left || !progressed {
                return;
            }
        }
    }

    /// When the flusher must look again: now when a batch is full, when the
    /// oldest batch comes of age, never before a pending retry.
    fn next_wake(&self, retry_at: Option<tokio::time::Instant>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let rules = self.shared.config.batch_rules();
        let state = self.shared.lock();
        let mut wake = now + Duration::from_secs(3600);
        if !state.pending.is_empty() {
            wake = now;
        }
        for batch in state.partitions.values() {
            if batch.is_full(&rules) {
                wake = now;
            } else if let Some(deadline) = batch.deadline(&rules) {
                wake = wake.min(tokio::time::Instant::from_std(deadline));
            }
        }
        match retry_at {
            Some(at) => wake.max(at),
            None => wake,
        }
    }

    /// One round: cut the batches that are due (all of them when `forced`),
    /// log their intents, write every pending object, log the
    /// confirmations, reclaim. `Err` carries the first failure; whatever
    /// succeeded is kept.
    async fn flush_round(
        &self,
        jobs: &Sender<Job>,
        forced: bool,
    ) -> Result<FlushOutcome, IngestError> {
        self.cut_batches(forced);

        // Intents first: nothing reaches the lake that a replay could not
        // write again under the same key.
        let intents: Vec<(String, Vec<u64>)> = self
            .shared
            .lock()
            .pending
            .values()
            .filter(|object| !object.intent_logged)
            .map(|object| {
                (
                    object.key.clone(),
                    object.events.iter().map(|event| event.seq).collect(),
                )
            })
            .collect();
        let mut first_error = None;
        let logged = log_records(
            jobs,
            intents.into_iter().map(|(key, seqs)| {
                let record = Record::new(Entry::Intent(FlushIntent {
                    key: key.clone(),
                    seqs,
                }));
                (key, record)
            }),
        )
        .await;
        {
            let mut state = self.shared.lock();
            for (key, result) in logged {
                match result {
                    Ok(()) => {
                        if let Some(object) = state.pending.get_mut(&key) {
                            object.intent_logged = true;
                        }
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
        }

        let writes: Vec<(String, Bytes, CallTraces, usize)> = {
            let state = self.shared.lock();
            state
                .pending
                .values()
                .filter(|object| object.intent_logged)
                .map(|object| {
                    let (body, traces) = object_body(&object.events);
                    (object.key.clone(), body, traces, object.events.len())
                })
                .collect()
        };
        let store = &self.store;
        let written: Vec<(String, usize, Result<(), IngestError>)> = stream::iter(writes)
            .map(|(key, body, traces, events)| async move {
                let result = put_object(store.as_ref(), &key, body, &traces, events).await;
                (key, events, result)
            })
            .buffer_unordered(self.shared.config.flush_concurrency.max(1))
            .collect()
            .await;

        let mut confirmed = Vec::new();
        for (key, _, result) in written {
            match result {
                Ok(()) => confirmed.push(key),
                Err(err) => {
                    if err.is_permanent() && self.dead_letter_if_hopeless(&key, &err).await {
                        // Set aside for good: no longer this flush's failure.
                        confirmed.push(key);
                        continue;
                    }
                    first_error.get_or_insert(err);
                }
            }
        }
        {
            let mut state = self.shared.lock();
            match &first_error {
                Some(err @ IngestError::Storage { .. }) => {
                    state.storage_healthy = false;
                    state.last_flush_error = err.to_string();
                }
                _ if !confirmed.is_empty() => {
                    state.storage_healthy = true;
                    state.last_flush_error.clear();
                }
                _ => {}
            }
        }

        // Confirmations: only once they are logged may the space go.
        let logged = log_records(
            jobs,
            confirmed.into_iter().map(|key| {
                let record = Record::new(Entry::Done(FlushDone { key: key.clone() }));
                (key, record)
            }),
        )
        .await;
        let mut outcome = FlushOutcome::default();
        {
            let mut state = self.shared.lock();
            for (key, result) in logged {
                if let Err(err) = result {
                    // The object is in the lake; it is written again (same
                    // key, same bytes) and confirmed on a later round.
                    first_error.get_or_insert(err);
                    continue;
                }
                let Some(object) = state.pending.remove(&key) else {
                    continue;
                };
                for event in &object.events {
                    state.in_memory.remove(&event.seq);
                    state.memory_bytes = state.memory_bytes.saturating_sub(event.cost());
                }
                let events = object.events.len() as u64;
                state.counters.flushed_objects += 1;
                state.counters.flushed_events += events;
                metrics::counter!("vesper_ingest_objects_written_total").increment(1);
                outcome.events += events;
                outcome.keys.push(key);
            }
            state.record_gauges();
        }
        if !outcome.keys.is_empty() {
            let _ = jobs.send(Job::Reclaim);
        }
        outcome.keys.sort();
        match first_error {
            None => Ok(outcome),
            Some(err) => Err(err),
        }
    }

    /// Moves due events from their partitions into pending objects: full
    /// batches (by bytes or by count) always, aged ones too, every one
    /// when `forced`.
    fn cut_batches(&self, forced: bool) {
        let rules = self.shared.config.batch_rules();
        let now = Instant::now();
        let mut state = self.shared.lock();
        let mut cut = Vec::new();
        for (partition, batch) in &mut state.partitions {
            for events in batch.cut(&rules, now, forced) {
                cut.push((*partition, events));
            }
        }
        state.partitions.retain(|_, batch| !batch.events.is_empty());
        for (partition, mut events) in cut {
            events.sort_by_key(|event| event.seq);
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                continue;
            };
            let key = partition.object_key(first.seq, last.seq, &self.shared.wal_id);
            state.pending.insert(
                key.clone(),
                PendingObject {
                    key,
                    events,
                    intent_logged: false,
                    permanent_failures: 0,
                },
            );
        }
    }

    /// Counts a permanent refusal of `key`; past the bound, moves the
    /// object to the dead-letter directory beside the log (fsynced) and
    /// answers `true`: it may then be confirmed, so it never blocks the log.
    async fn dead_letter_if_hopeless(&self, key: &str, err: &IngestError) -> bool {
        let body = {
            let mut state = self.shared.lock();
            let Some(object) = state.pending.get_mut(key) else {
                return false;
            };
            object.permanent_failures += 1;
            if object.permanent_failures < PERMANENT_FAILURES_BEFORE_DEAD_LETTER {
                return false;
            }
            object_body(&object.events).0
        };
        let dir = self.shared.config.wal_dir.join(DEAD_LETTER_DIR);
        let path = dir.join(dead_letter_name(key));
        let fs = Arc::clone(&self.shared.config.fs);
        let written = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                fs.write_atomic(&path, &body)
            })
            .await
        };
        match written {
            Ok(Ok(())) => {
                let events = self
                    .shared
                    .lock()
                    .pending
                    .get(key)
                    .map_or(0, |object| object.events.len());
                self.shared.lock().counters.dead_lettered_objects += 1;
                metrics::counter!("vesper_ingest_dead_lettered_events_total")
                    .increment(events as u64);
                tracing::error!(
                    key,
                    events,
                    path = %path.display(),
                    error = %err,
                    "storage refused an object for good; it is moved to the dead-letter directory (see the docs to re-drive it)"
                );
                true
            }
            Ok(Err(io)) => {
                tracing::error!(key, path = %path.display(), error = %io, "cannot write a dead letter; the object stays in the log and is retried");
                false
            }
            Err(_) => false,
        }
    }
}

/// Sends records to the committer and waits for each; results by key.
async fn log_records(
    jobs: &Sender<Job>,
    records: impl Iterator<Item = (String, Record)>,
) -> Vec<(String, Result<(), IngestError>)> {
    let mut waiting = Vec::new();
    for (key, record) in records {
        let (ack, acked) = oneshot::channel();
        match jobs.send(Job::Log { record, ack }) {
            Ok(()) => waiting.push((key, Some(acked))),
            Err(_) => waiting.push((key, None)),
        }
    }
    let mut results = Vec::with_capacity(waiting.len());
    for (key, acked) in waiting {
        let result = match acked {
            Some(acked) => acked.await.unwrap_or(Err(IngestError::EngineStopped)),
            None => Err(IngestError::EngineStopped),
        };
        results.push((key, result));
    }
    results
}

/// The bound of the wait before retry number `failures`.
pub(super) fn backoff_bound(config: &IngestConfig, failures: u32) -> Duration {
    vesper::retry::backoff_bound(config.retry_initial, config.retry_max, failures)
}
