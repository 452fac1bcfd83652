//! The stream of accepted events: created with the fleet's settings, or,
//! when it exists, checked against them, every difference named.

use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

use super::StreamSettings;
use crate::IngestError;

/// The stream configuration the settings describe: work-queue retention
/// (one durable consumer shared by the writers; an acked message is in the
/// lake and is deleted, which is what Flush waits for), discard new (a full
/// stream refuses publishes instead of dropping unwritten events), no age
/// limit, file storage.
pub fn stream_config(settings: &StreamSettings) -> Config {
    Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects()],
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
        max_age: Duration::ZERO,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        storage: StorageType::File,
        ..Config::default()
    }
}

/// Every way `found` differs from `wanted`, one phrase each, naming the
/// setting and the flag that sets it.
pub fn mismatches(found: &Config, wanted: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |setting: &str, found: String, wanted: String| {
        if found != wanted {
            problems.push(format!("{setting} is {found}, expected {wanted}"));
        }
    };
    check(
        "retention",
        format!("{:?}", found.retention),
        format!("{:?}", wanted.retention),
    );
    check(
        "discard",
        format!("{:?}", found.discard),
        format!("{:?}", wanted.discard),
    );
    let mut found_subjects = found.subjects.clone();
    found_subjects.sort();
    check(
        "subjects (--subject-prefix)",
        format!("{found_subjects:?}"),
        format!("{:?}", wanted.subjects),
    );
    check(
        "replicas (--stream-replicas)",
        found.num_replicas.to_string(),
        wanted.num_replicas.to_string(),
    );
    check(
        "max_bytes (--stream-max-bytes)",
        found.max_bytes.to_string(),
        wanted.max_bytes.to_string(),
    );
    check(
        "max_age",
        format!("{:?}", found.max_age),
        format!("{:?}", wanted.max_age),
    );
    check(
        "duplicate_window (--duplicate-window)",
        format!("{:?}", found.duplicate_window),
        format!("{:?}", wanted.duplicate_window),
    );
    check(
        "storage",
        format!("{:?}", found.storage),
        format!("{:?}", wanted.storage),
    );
    problems
}

/// Creates the stream, or checks the one that exists: a stream with other
/// settings is refused ([`IngestError::StreamMismatch`], naming every
/// difference) rather than changed, because other members of the fleet
/// may depend on what it is. Two members starting at once are fine: the
/// second create of the same configuration is a no-op for JetStream, and a
/// lost race ends in the check.
pub async fn ensure_stream(
    context: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<jetstream::stream::Info, IngestError> {
    let wanted = stream_config(settings);
    match context.get_stream(&settings.name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|err| unavailable(settings, &err))?;
            check(settings, &info.config, &wanted)?;
            return Ok(info.clone());
        }
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            }
            _ => return Err(unavailable(settings, &err)),
        },
    }
    match context.create_stream(wanted.clone()).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|err| unavailable(settings, &err))?;
            tracing::info!(
                stream = settings.name,
                subjects = settings.subjects(),
                replicas = settings.replicas,
                max_bytes = settings.max_bytes,
                duplicate_window = ?settings.duplicate_window,
                "created the event stream"
            );
            Ok(info.clone())
        }
        Err(err) => match err.kind() {
            // Created meanwhile by another member, with other settings.
            CreateStreamErrorKind::JetStream(js)
                if js.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                let mut stream = context
                    .get_stream(&settings.name)
                    .await
                    .map_err(|err| unavailable(settings, &err))?;
                let info = stream
                    .info()
                    .await
                    .map_err(|err| unavailable(settings, &err))?;
                check(settings, &info.config, &wanted)?;
                Ok(info.clone())
            }
            // A cluster that is starting or has lost nodes: worth waiting
            // for (within --log-start-timeout), naming why.
            CreateStreamErrorKind::JetStream(js)
                if js.error_code() == ErrorCode::CLUSTER_NO_PEERS
                    || js.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE =>
            {
                Err(IngestError::LogUnavailable {
                    message: format!(
                        "cannot create stream {} with {} replicas now: {js}",
                        settings.name, settings.replicas
                    ),
                })
            }
            CreateStreamErrorKind::JetStream(js) => Err(IngestError::Config {
                message: format!(
                    "JetStream refused to create stream {} ({}, {} replicas, max {} bytes): {js}",
                    settings.name,
                    settings.subjects(),
                    settings.replicas,
                    settings.max_bytes
                ),
            }),
            _ => Err(unavailable(settings, &err)),
        },
    }
}

/// [`ensure_stream`], tried again (with backoff) while the cluster does
/// not answer, for up to `timeout`: a fleet may start before its NATS
/// cluster. A mismatch or a refusal ends the wait at once.
pub async fn ensure_stream_within(
    context: &jetstream::Context,
    settings: &StreamSettings,
    timeout: Duration,
) -> Result<jetstream::stream::Info, IngestError> {
    super::while_cluster_starts(timeout, async || ensure_stream(context, settings).await).await
}

fn check(settings: &StreamSettings, found: &Config, wanted: &Config) -> Result<(), IngestError> {
    let problems = mismatches(found, wanted);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IngestError::StreamMismatch {
            stream: settings.name.clone(),
            mismatches: problems,
        })
    }
}

fn unavailable(settings: &StreamSettings, err: &dyn std::fmt::Display) -> IngestError {
    IngestError::LogUnavailable {
        message: format!("cannot reach stream {}: {err}", settings.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_stream_is_a_bounded_replicated_work_queue() {
        let settings = StreamSettings::new("VESPER_EVENTS", "vesper.events");
        let config = stream_config(&settings);
        assert_eq!(config.retention, RetentionPolicy::WorkQueue);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert_eq!(config.subjects, ["vesper.events.>"]);
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.max_bytes, 1 << 30);
        assert_eq!(config.max_age, Duration::ZERO);
        assert_eq!(config.storage, StorageType::File);
        assert!(mismatches(&config, &config).is_empty());
    }

    #[test]
    fn every_difference_is_named() {
        let wanted = stream_config(&StreamSettings::new("S", "vesper.events"));
        let found = Config {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            subjects: vec!["other.>".into()],
            num_replicas: 1,
            max_bytes: 1024,
            max_age: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(1),
            storage: StorageType::Memory,
            ..wanted.clone()
        };
        let problems = mismatches(&found, &wanted);
        let text = problems.join("; ");
        for setting in [
            "retention",
            "discard",
            "subjects",
            "replicas",
            "max_bytes",
            "max_age",
            "duplicate_window",
            "storage",
        ] {
            assert!(text.contains(setting), "{setting} not named: {text}");
        }
        assert_eq!(problems.len(), 8, "{text}");
    }
}
