//! Lake keys: the rules of docs/storage.md ("Key rules"), checked once, so
//! that a key can never name anything outside the lake root on any backend.

use std::{borrow::Cow, fmt};

use crate::StorageError;

/// The longest key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest segment, in bytes: the file-name limit of the usual file
/// systems (ext4, XFS, btrfs, APFS), so that every key the rules accept can
/// be a path of the directory backend. The same on every backend, so that a
/// lake can move between them.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// The first segment reserved for the directory backend's own files (temp
/// files and metadata sidecars); no object key may use it.
pub const RESERVED_SEGMENT: &str = ".vesper";

/// A key that satisfies every rule: 1..=1024 bytes of UTF-8, `/`-separated
/// non-empty segments of at most 255 bytes, none `.` or `..`, no leading
/// `/`, no backslash, NUL or control character, not under the reserved
/// `.vesper/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key` against the rules.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        match key_problem(&key) {
            None => Ok(Self(key)),
            Some(reason) => Err(StorageError::InvalidKey { key, reason }),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's `/`-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Every proper prefix that ends at a segment boundary, shortest first
    /// ("a", "a/b" for "a/b/c"): the directories a directory lake needs.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(index, _)| &self.0[..index])
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn key_problem(key: &str) -> Option<Cow<'static, str>> {
    if key.is_empty() {
        return Some("a key cannot be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Some("a key is at most 1024 bytes".into());
    }
    if key.starts_with('/') {
        return Some("a key cannot start with '/'".into());
    }
    if let Some(problem) = character_problem(key) {
        return Some(problem.into());
    }
    for (index, segment) in key.split('/').enumerate() {
        match segment {
            "" => {
                return Some("a key cannot have an empty segment ('//' or a trailing '/')".into());
            }
            "." | ".." => return Some("a key cannot have a '.' or '..' segment".into()),
            _ => {}
        }
        if let Some(problem) = segment_length_problem(index, segment) {
            return Some(problem);
        }
    }
    if key.split('/').next() == Some(RESERVED_SEGMENT) {
        return Some("keys under '.vesper/' are reserved for the lake's own files".into());
    }
    None
}

/// Names the segment (by position and start) and the limit.
fn segment_length_problem(index: usize, segment: &str) -> Option<Cow<'static, str>> {
    if segment.len() <= MAX_SEGMENT_BYTES {
        return None;
    }
    let start: String = segment.chars().take(16).collect();
    Some(
        format!(
            "segment {} (\"{start}...\") is {} bytes; a segment is at most {MAX_SEGMENT_BYTES} bytes",
            index + 1,
            segment.len()
        )
        .into(),
    )
}

fn character_problem(text: &str) -> Option<&'static str> {
    if text.contains('\\') {
        return Some("a key cannot contain a backslash");
    }
    if text.contains('\0') {
        return Some("a key cannot contain a NUL character");
    }
    if text.chars().any(char::is_control) {
        return Some("a key cannot contain a control character");
    }
    None
}

/// Checks a listing prefix: any start of a valid key. Every segment before
/// the last `/` must be a valid segment, so a prefix never leads a directory
/// walk outside the lake; the last, partial segment is only matched against
/// names, never joined to a path.
pub fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    let invalid = |reason: &'static str| {
        Err(StorageError::InvalidPrefix {
            prefix: prefix.to_owned(),
            reason: reason.into(),
        })
    };
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > MAX_KEY_BYTES {
        return invalid("a prefix is at most 1024 bytes");
    }
    if prefix.starts_with('/') {
        return invalid("a prefix cannot start with '/'");
    }
    if let Some(problem) = character_problem(prefix) {
        return invalid(problem);
    }
    let directories = prefix.rsplit_once('/').map_or("", |(dirs, _)| dirs);
    if !directories.is_empty() {
        for segment in directories.split('/') {
            match segment {
                "" => return invalid("a prefix cannot have an empty segment"),
                "." | ".." => return invalid("a prefix cannot have a '.' or '..' segment"),
                _ => {}
            }
        }
    }
    // A segment past the limit starts no key; on a directory lake it would
    // not even be a valid path.
    for (index, segment) in prefix.split('/').enumerate() {
        if let Some(reason) = segment_length_problem(index, segment) {
            return Err(StorageError::InvalidPrefix {
                prefix: prefix.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_keys_pass() {
        for key in [
            "a",
            "a/b.txt",
            "events/dt=2026-11-25/hour=07/0001.ndjson",
            "with space/ünïcödé",
            "..hidden/x",
            "a/.b",
        ] {
            assert!(ObjectKey::new(key).is_ok(), "{key}");
        }
        let segment = "k".repeat(MAX_SEGMENT_BYTES);
        let max = format!("{segment}/{segment}/{segment}/{}/k", &segment[1..]);
        assert_eq!(max.len(), MAX_KEY_BYTES);
        assert!(ObjectKey::new(max).is_ok());
        let multibyte = format!("{}x", "é".repeat(127));
        assert_eq!(multibyte.len(), MAX_SEGMENT_BYTES);
        assert!(ObjectKey::new(multibyte).is_ok());
    }

    #[test]
    fn hostile_keys_are_refused_with_a_reason() {
        let too_long = "k/".repeat(MAX_KEY_BYTES / 2) + "k";
        let long_segment = format!("ok/{}", "s".repeat(MAX_SEGMENT_BYTES + 1));
        for (key, reason) in [
            ("", "empty"),
            ("../../etc/passwd", "'..'"),
            ("a/../../b", "'..'"),
            ("./a", "'.'"),
            ("/etc/passwd", "start with '/'"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a\\..\\b", "backslash"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("a\u{7f}b", "control"),
            (".vesper/meta/x", "reserved"),
            (too_long.as_str(), "1024"),
            (
                long_segment.as_str(),
                "segment 2 (\"ssssssssssssssss...\") is 256 bytes; a segment is at most 255 bytes",
            ),
        ] {
            let err = ObjectKey::new(key).expect_err(key).to_string();
            assert!(err.contains(reason), "{key:?}: {err}");
        }
    }

    #[test]
    fn parents_are_the_directory_chain() {
        let key = ObjectKey::new("a/b/c.txt").expect("valid");
        assert_eq!(key.parents().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(key.segments().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
    }

    #[test]
    fn prefixes_may_stop_mid_segment_but_never_climb() {
        for ok in ["", "a", "a/", "events/dt=2026", "a/b/.", "a/.."] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["../", "a/../b", "/a", "a//b", "a\\b", "./x"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
        let longest = "p".repeat(MAX_SEGMENT_BYTES);
        assert!(validate_prefix(&format!("{longest}/{longest}")).is_ok());
        for bad in [
            format!("{longest}p"),
            format!("{longest}p/x"),
            format!("a/{longest}p"),
        ] {
            let err = validate_prefix(&bad).expect_err(&bad).to_string();
            assert!(err.contains("at most 255 bytes"), "{err}");
        }
    }
}
