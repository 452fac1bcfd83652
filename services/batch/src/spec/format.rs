//! The pipeline file format as serde reads it: every table and setting of
//! the TOML, typed but not yet checked (bounds, URLs, secrets and paging
//! are the resolver's job). Unknown settings are refused here, so that a
//! typo is an error rather than a default.

use std::{collections::BTreeMap, fmt, marker::PhantomData, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use vesper::config::{ByteSize, parse_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileToml {
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) defaults: DefaultsToml,
    #[serde(deserialize_with = "in_order")]
    pub(super) pipelines: Vec<(String, PipelineToml)>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsToml {
    pub(super) timeout: Option<TomlDuration>,
    #[serde(default)]
    pub(super) retry: RetryToml,
    #[serde(default)]
    pub(super) parts: PartsToml,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) limits: LimitsToml,
    pub(super) rate_limit: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineToml {
    pub(super) base_url: Option<String>,
    #[serde(default)]
    pub(super) path: String,
    #[serde(default)]
    pub(super) query: BTreeMap<String, toml::Value>,
    pub(super) records: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) timeout: Option<TomlDuration>,
    #[serde(default)]
    pub(super) retry: RetryToml,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) pagination: PaginationToml,
    #[serde(default)]
    pub(super) stop: StopToml,
    #[serde(default)]
    pub(super) transform: TransformToml,
    #[serde(default)]
    pub(super) parts: PartsToml,
    #[serde(default)]
    pub(super) limits: LimitsToml,
    pub(super) rate_limit: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsToml {
    pub(super) max_response_size: Option<TomlSize>,
    pub(super) max_redirects: Option<i64>,
    pub(super) max_pages: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryToml {
    pub(super) attempts: Option<i64>,
    pub(super) initial_backoff: Option<TomlDuration>,
    pub(super) max_backoff: Option<TomlDuration>,
    pub(super) max_retry_after: Option<TomlDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartsToml {
    pub(super) max_records: Option<i64>,
    pub(super) max_bytes: Option<TomlSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StopToml {
    pub(super) max_pages: Option<i64>,
    pub(super) max_records: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransformToml {
    pub(super) metadata: Option<bool>,
    #[serde(default)]
    pub(super) rename: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) drop: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum PaginationToml {
    // A struct variant, so that settings given to it are refused as unknown.
    Single {},
    Offset {
        limit: i64,
        offset_param: Option<String>,
        limit_param: Option<String>,
        start: Option<i64>,
        has_more: Option<String>,
        next_offset: Option<String>,
        total: Option<String>,
        stop_on_short_page: Option<bool>,
    },
    PageNumber {
        page_param: Option<String>,
        start: Option<i64>,
        page_size: Option<i64>,
        page_size_param: Option<String>,
        has_more: Option<String>,
        total_pages: Option<String>,
        stop_on_short_page: Option<bool>,
    },
    Cursor {
        cursor: String,
        cursor_param: Option<String>,
        has_more: Option<String>,
    },
    HeaderCursor {
        cursor_header: String,
        cursor_param: Option<String>,
        has_more: Option<String>,
    },
    LastRecord {
        cursor_field: String,
        cursor_param: String,
        has_more: Option<String>,
    },
    NextLink {
        next_url: String,
        has_more: Option<String>,
    },
    LinkHeader {
        rel: Option<String>,
        has_more: Option<String>,
    },
    Repeat {
        has_more: Option<String>,
    },
}

impl Default for PaginationToml {
    fn default() -> Self {
        Self::Single {}
    }
}

/// Query parameters in order, values as sent.
pub(super) type Query = Vec<(String, String)>;

/// A humantime duration in the file ("3s", "250ms").
#[derive(Debug, Clone, Copy)]
pub(super) struct TomlDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for TomlDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A size in the file: a number of bytes or a string with a unit ("16MiB").
#[derive(Debug, Clone, Copy)]
pub(super) struct TomlSize(pub(super) u64);

impl<'de> Deserialize<'de> for TomlSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => text
                .parse::<ByteSize>()
                .map(|size| Self(size.bytes()))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A TOML table as a list, in the order the file declares it (pipelines
/// run and list in that order).
fn in_order<'de, D, T>(deserializer: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct InOrder<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for InOrder<T> {
        type Value = Vec<(String, T)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of pipelines")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_map(InOrder(PhantomData))
}
