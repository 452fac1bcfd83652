//! Paths to fields of a JSON response ("users", "meta.total", "links.next").

use std::fmt;

use serde_json::Value;

/// A path to a field of a JSON document: `.`-separated object keys, where a
/// whole number indexes an array ("data.0.id").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses a path; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a field path cannot be empty".into());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "{text:?} has an empty segment; write names separated by single dots, e.g. \"meta.total\""
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, document: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(document, |value, segment| step(value, segment))
    }

    /// The value at this path in a JSON object (a record), if there is one.
    pub fn get_in<'v>(&self, object: &'v serde_json::Map<String, Value>) -> Option<&'v Value> {
        let (first, rest) = self.segments.split_first()?;
        rest.iter()
            .try_fold(object.get(first)?, |value, segment| step(value, segment))
    }

    /// Whether this path starts with `other`'s segments.
    pub(crate) fn starts_with(&self, other: &FieldPath) -> bool {
        self.segments.starts_with(&other.segments)
    }

    /// Moves the value at this path out of the document, leaving `null`.
    pub fn take(&self, document: &mut Value) -> Option<Value> {
        let mut value = document;
        for segment in &self.segments {
            value = match value {
                Value::Object(object) => object.get_mut(segment)?,
                Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value.take())
    }
}

fn step<'v>(value: &'v Value, segment: &str) -> Option<&'v Value> {
    match value {
        Value::Object(object) => object.get(segment),
        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
        _ => None,
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let document = json!({"meta": {"total": 3}, "data": [{"id": 7}]});
        let total = FieldPath::parse("meta.total").expect("path");
        assert_eq!(total.get(&document), Some(&json!(3)));
        let id = FieldPath::parse("data.0.id").expect("path");
        assert_eq!(id.get(&document), Some(&json!(7)));
        assert_eq!(
            FieldPath::parse("data.1.id").expect("path").get(&document),
            None
        );
        assert_eq!(
            FieldPath::parse("meta.total.x")
                .expect("path")
                .get(&document),
            None
        );
    }

    #[test]
    fn take_leaves_null_behind() {
        let mut document = json!({"users": [1, 2], "count": 2});
        let users = FieldPath::parse("users").expect("path");
        assert_eq!(users.take(&mut document), Some(json!([1, 2])));
        assert_eq!(document, json!({"users": null, "count": 2}));
        assert_eq!(
            FieldPath::parse("nope").expect("path").take(&mut document),
            None
        );
    }

    #[test]
    fn empty_segments_are_refused() {
        for bad in ["", ".a", "a.", "a..b"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
