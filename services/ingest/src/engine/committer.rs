//! The committer: the one thread that owns the log. It appends groups of
//! records with one fsync, moves committed events into memory (or leaves
//! them in the backlog past the memory bound), reads the backlog back, and
//! reclaims confirmed segments.

use super::backlog::{Backlog, read_backlog};
use super::*;

pub(super) fn run_committer(
    shared: &Shared,
    mut wal: Wal,
    mut backlog: Option<Backlog>,
    queue: &Receiver<Job>,
) {
    read_backlog(shared, &wal, &mut backlog);
    let mut jobs: VecDeque<Job> = VecDeque::new();
    loop {
        if jobs.is_empty() {
            match queue.recv() {
                Ok(job) => jobs.push_back(job),
                Err(_) => break,
            }
        }
        while jobs.len() < MAX_GROUP_JOBS {
            match queue.try_recv() {
                Ok(job) => jobs.push_back(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let writes = jobs.iter().take_while(|job| job.is_write()).count();
        if writes > 0 {
            let group: Vec<Job> = jobs.drain(..writes).collect();
            if let Err(err) = commit(shared, &mut wal, &mut backlog, group) {
                // Everything queued behind the failed group may count on it
                // (an id it claimed); fail it all, atomically with respect
                // to new calls.
                let mut state = shared.lock();
                let message = err.to_string();
                for job in jobs
                    .drain(..)
                    .chain(std::iter::from_fn(|| queue.try_recv().ok()))
                {
                    job.fail(&mut state, &message);
                }
                state.wal_bytes = wal.bytes();
                state.record_gauges();
                continue;
            }
        }
        match jobs.pop_front() {
            Some(Job::Barrier { ack }) => {
                let _ = ack.send(Ok(()));
            }
            Some(Job::Reclaim) => {
                read_backlog(shared, &wal, &mut backlog);
                reclaim(shared, &mut wal);
            }
            Some(Job::ReadBacklog { ack }) => {
                read_backlog(shared, &wal, &mut backlog);
                let _ = ack.send(Ok(()));
            }
            Some(other) => jobs.push_front(other),
            None => {}
        }
    }
}

/// Writes one group of records with one fsync, then batches (or leaves in
/// the backlog) and acknowledges the appends. On error the group is failed
/// here and the error returned so the caller fails what queued behind it.
fn commit(
    shared: &Shared,
    wal: &mut Wal,
    backlog: &mut Option<Backlog>,
    group: Vec<Job>,
) -> Result<(), std::io::Error> {
    let mut frames = Vec::with_capacity(group.len());
    let mut next_seq = wal.next_seq();
    let mut appended = Vec::with_capacity(group.len());
    let mut logs = Vec::new();
    for job in group {
        match job {
            Job::Append {
                events,
                ids,
                received_at,
                trace_context,
                estimated_bytes,
                ack,
            } => {
                let count = events.len() as u64;
                let first_seq = next_seq;
                next_seq += count;
                let record = Record::new(Entry::Events(Events {
                    first_seq,
                    events,
                    received_at: Some(received_at),
                    trace_context,
                }));
                let offset = frames
                    .iter()
                    .map(|frame: &Frame| frame.bytes.len())
                    .sum::<usize>();
                frames.push(Frame {
                    bytes: record.frame(),
                    max_event_seq: count.checked_sub(1).map(|last| first_seq + last),
                });
                let Some(Entry::Events(events)) = record.entry else {
                    continue;
                };
                appended.push((events, offset, ids, estimated_bytes, ack));
            }
            Job::Log { record, ack } => {
                frames.push(Frame {
                    bytes: record.frame(),
                    max_event_seq: None,
                });
                logs.push(ack);
            }
            Job::Barrier { .. } | Job::Reclaim | Job::ReadBacklog { .. } => {}
        }
    }
    // Numbers handed out are never handed out again, even if this write
    // fails half-way and leaves a complete record behind.
    wal.advance_next_seq(next_seq);
    // Every acknowledgement of the group waits this long: the disk's share
    // of the webhook's latency.
    let started = Instant::now();
    let result = wal.append(&frames);
    metrics::histogram!("vesper_ingest_wal_sync_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let mut state = shared.lock();
    state.wal_bytes = wal.bytes();
    match result {
        Ok(start) => {
            let config = &shared.config;
            let arrival = Instant::now();
            let mut wake_flusher = false;
            for (events, offset, ids, estimated_bytes, _) in &mut appended {
                state.queued_bytes = state.queued_bytes.saturating_sub(*estimated_bytes);
                for id in ids.iter() {
                    state.dedup.confirm(*id);
                }
                let count = events.events.len() as u64;
                // Past the memory bound the events stay in the log only, and
                // so does everything after them until the backlog is read.
                if backlog.is_some() || state.memory_bytes >= config.max_buffered_bytes {
                    let log = backlog.get_or_insert_with(|| {
                        Backlog::at(
                            Position {
                                segment: start.segment,
                                offset: start.offset + *offset as u64,
                            },
                            events.first_seq,
                        )
                    });
                    log.events += count;
                    state.backlog_events = log.events;
                    state.backlog_floor = Some(log.floor_seq);
                    continue;
                }
                let trace_context: Option<Arc<str>> =
                    events.trace_context.as_deref().map(Arc::from);
                let first_seq = events.first_seq;
                for (offset, event) in std::mem::take(&mut events.events).into_iter().enumerate() {
                    let Some(partition) = Partition::from_unix_hour(event.hour) else {
                        continue;
                    };
                    wake_flusher |= buffer_event(
                        &mut state,
                        config,
                        partition,
                        Buffered {
                            seq: first_seq + offset as u64,
                            line: event.line,
                            trace_context: trace_context.clone(),
                            arrival,
                        },
                    );
                }
            }
            state.record_gauges();
            drop(state);
            if wake_flusher {
                shared.kick.notify_one();
            }
            for (_, _, _, _, ack) in appended {
                let _ = ack.send(Ok(()));
            }
            for ack in logs {
                let _ = ack.send(Ok(()));
            }
            Ok(())
        }
        Err(err) => {
            tracing::warn!(error = %err, "write-ahead log append failed; the batch is refused and nothing of it is kept");
            let message = err.to_string();
            for (_, _, ids, estimated_bytes, ack) in appended {
                refuse_append(&mut state, &ids, estimated_bytes, ack, &message);
            }
            for ack in logs {
                let _ = ack.send(Err(IngestError::WalWrite {
                    message: message.clone(),
                }));
            }
            Err(err)
        }
    }
}

fn reclaim(shared: &Shared, wal: &mut Wal) {
    let (floor, drained) = {
        let state = shared.lock();
        let floor = state
            .unflushed_floor()
            .unwrap_or(u64::MAX)
            .min(wal.next_seq());
        let drained =
            state.in_memory.is_empty() && state.backlog_floor.is_none() && state.queued_bytes == 0;
        (floor, drained)
    };
    let result = wal.reclaim(floor, drained, || shared.lock().dedup.snapshot());
    let mut state = shared.lock();
    state.wal_bytes = wal.bytes();
    state.record_gauges();
    match result {
        Ok(0) => {}
        Ok(deleted) => tracing::debug!(
            deleted,
            wal_bytes = state.wal_bytes,
            "log segments reclaimed"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "cannot reclaim log segments yet; retrying after the next flush")
        }
    }
}
