//! Per-record transform steps: drop fields, rename fields, the Rust hooks,
//! then the run metadata, in that order.
//!
//! `drop` and `rename` both name the upstream's fields; hooks see the
//! renamed record; metadata comes last so that no step can remove or
//! overwrite it.

use std::{fmt, sync::Arc};

use serde_json::{Map, Value};

/// One record: a JSON object, as the API sent it until transformed.
pub type Record = Map<String, Value>;

/// A custom transformation, applied to every record of a pipeline;
/// returning `None` drops the record. What the old batch job's `func`
/// parameter was for.
pub type Hook = Arc<dyn Fn(Record) -> Option<Record> + Send + Sync>;

/// The fields the metadata step adds.
pub const METADATA_FIELDS: [&str; 3] = ["_extracted_at", "_run_id", "_source_url"];

/// The declared steps of a pipeline.
#[derive(Clone, Default)]
pub(crate) struct Transform {
    metadata: bool,
    rename: Vec<(String, String)>,
    drop: Vec<String>,
    hooks: Vec<Hook>,
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transform")
            .field("metadata", &self.metadata)
            .field("rename", &self.rename)
            .field("drop", &self.drop)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

/// The run metadata of one page, shared by its records.
#[derive(Debug, Clone)]
pub(crate) struct PageMetadata {
    pub(crate) extracted_at: Value,
    pub(crate) run_id: Value,
    pub(crate) source_url: Value,
}

impl Transform {
    pub(crate) fn new(metadata: bool, rename: Vec<(String, String)>, drop: Vec<String>) -> Self {
        Self {
            metadata,
            rename,
            drop,
            hooks: Vec::new(),
        }
    }

    pub(crate) fn push_hook(&mut self, hook: Hook) {
        self.hooks.push(hook);
    }

    /// The record with the renames applied, each renamed field in its
    /// place; a renamed field replaces a field that already had its new
    /// name.
    fn renamed(&self, mut record: Record) -> Record {
        for (from, to) in &self.rename {
            if record.contains_key(from) {
                record.shift_remove(to);
            }
        }
        record
            .into_iter()
            .map(|(name, value)| {
                let name = match self.rename.iter().find(|(from, _)| *from == name) {
                    Some((_, to)) => to.clone(),
                    None => name,
                };
                (name, value)
            })
            .collect()
    }

    /// Applies every step; `None` when a hook dropped the record.
    pub(crate) fn apply(&self, mut record: Record, metadata: &PageMetadata) -> Option<Record> {
        for name in &self.drop {
            record.shift_remove(name);
        }
        if !self.rename.is_empty() {
            record = self.renamed(record);
        }
        for hook in &self.hooks {
            record = hook(record)?;
        }
        if self.metadata {
            record.insert("_extracted_at".into(), metadata.extracted_at.clone());
            record.insert("_run_id".into(), metadata.run_id.clone());
            record.insert("_source_url".into(), metadata.source_url.clone());
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(value: Value) -> Record {
        match value {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        }
    }

    fn metadata() -> PageMetadata {
        PageMetadata {
            extracted_at: json!("2026-11-25T10:00:00Z"),
            run_id: json!("run"),
            source_url: json!("http://api.test/x"),
        }
    }

    #[test]
    fn steps_run_drop_rename_hooks_metadata() {
        let mut transform = Transform::new(
            true,
            vec![("id".into(), "user_id".into())],
            vec!["secret".into()],
        );
        transform.push_hook(Arc::new(|mut record: Record| {
            assert!(record.contains_key("user_id"), "hooks see renamed fields");
            assert!(
                !record.contains_key("_run_id"),
                "metadata comes after hooks"
            );
            record.insert("seen".into(), json!(true));
            Some(record)
        }));
        let out = transform
            .apply(
                record(json!({"id": 1, "secret": "x", "age": 3})),
                &metadata(),
            )
            .expect("kept");
        let order: Vec<_> = out.keys().map(String::as_str).collect();
        assert_eq!(
            order,
            [
                "user_id",
                "age",
                "seen",
                "_extracted_at",
                "_run_id",
                "_source_url"
            ],
            "a renamed field keeps its place"
        );
        assert_eq!(
            Value::Object(out),
            json!({"user_id": 1, "age": 3, "seen": true, "_extracted_at": "2026-11-25T10:00:00Z",
                   "_run_id": "run", "_source_url": "http://api.test/x"})
        );
    }

    #[test]
    fn a_hook_can_drop_records() {
        let mut transform = Transform::new(false, Vec::new(), Vec::new());
        transform.push_hook(Arc::new(|record: Record| {
            (record.get("keep") == Some(&json!(true))).then_some(record)
        }));
        assert!(
            transform
                .apply(record(json!({"keep": false})), &metadata())
                .is_none()
        );
        assert_eq!(
            transform.apply(record(json!({"keep": true})), &metadata()),
            Some(record(json!({"keep": true})))
        );
    }
}
