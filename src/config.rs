//! The conventions every service shares: default addresses and paths, how a
//! peer address, a lake, a duration, a range and a byte size are written on
//! the command line, binding a listener, and the ready line.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use http::Uri;
use tokio::net::TcpListener;

/// Defaults (docs/architecture.md and the README's conventions): where each service listens when run alone, and
/// where the lake and the write-ahead log live.
pub mod defaults {
    /// `vesper storage`'s gRPC address, and `vesper up`'s single gRPC port.
    pub const STORAGE_GRPC_ADDR: &str = "127.0.0.1:50051";
    /// `vesper datasource`'s gRPC address.
    pub const DATASOURCE_GRPC_ADDR: &str = "127.0.0.1:50052";
    /// `vesper ingest`'s gRPC address.
    pub const INGEST_GRPC_ADDR: &str = "127.0.0.1:50053";
    /// `vesper batch serve`'s gRPC address.
    pub const BATCH_GRPC_ADDR: &str = "127.0.0.1:50054";
    /// `vesper up`'s gRPC address (every service on one port).
    pub const UP_GRPC_ADDR: &str = STORAGE_GRPC_ADDR;
    /// The HTTP address of the gateway and of `vesper up`.
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    /// The lake when none is given: a directory under the working directory.
    pub const LAKE: &str = "./lake";
    /// The write-ahead log directory when none is given; never inside the lake.
    pub const WAL_DIR: &str = "./wal";
}

/// Error of parsing a command-line value; the text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl ParseError {
    /// An error with this text.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The address of a gRPC peer: `host:port` or `http://host:port` in
/// plaintext, `https://host:port` over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(Uri);

impl PeerAddr {
    /// The peer as a URI with an `http` or `https` scheme, ready for a
    /// tonic endpoint.
    pub fn uri(&self) -> &Uri {
        &self.0
    }

    /// Whether the peer is reached over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl FromStr for PeerAddr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let expected = || {
            ParseError::new(format!(
                "expected host:port, http://host:port or https://host:port, got {text:?}"
            ))
        };
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| expected())?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            _ => {
                return Err(ParseError::new(format!(
                    "a peer is http:// (plaintext) or https:// (TLS), got {text:?}"
                )));
            }
        };
        let authority = uri.authority().ok_or_else(expected)?;
        if authority.port_u16().is_none() || authority.host().is_empty() {
            return Err(expected());
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(expected());
        }
        let normalized = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| expected())?;
        Ok(Self(normalized))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.scheme_str(), self.0.authority()) {
            (Some(scheme), Some(authority)) => write!(f, "{scheme}://{authority}"),
            _ => write!(f, "{}", self.0),
        }
    }
}

/// Where the lake is: a local directory or an S3 bucket with an optional
/// key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lake {
    /// A directory on the local file system (created if missing).
    Dir(PathBuf),
    /// `s3://bucket[/prefix]`; every key is stored under `prefix/`.
    S3 {
        /// The bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/`; empty for the bucket
        /// root.
        prefix: String,
    },
}

impl FromStr for Lake {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ParseError::new(
                "the lake is empty: give a directory or s3://bucket[/prefix]",
            ));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Dir(PathBuf::from(text)));
        };
        if scheme != "s3" {
            return Err(ParseError::new(format!(
                "unsupported lake {text:?}: give a directory or s3://bucket[/prefix]"
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket)?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.split('/').any(|segment| segment.is_empty()) && !prefix.is_empty() {
            return Err(ParseError::new(format!(
                "lake prefix {prefix:?} has an empty path segment"
            )));
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// S3's bucket naming rules, so that a typo fails at start, not at the first
/// write.
fn validate_bucket(bucket: &str) -> Result<(), ParseError> {
    let valid_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let valid_ends = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(first, last)| first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && valid_chars && valid_ends {
        Ok(())
    } else {
        Err(ParseError::new(format!(
            "invalid bucket name {bucket:?}: 3 to 63 lower-case letters, digits, '-' or '.', starting and ending with a letter or digit"
        )))
    }
}

impl fmt::Display for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Parses a humantime duration ("500ms", "5s", "10m"), for clap.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        ParseError::new(format!(
            "invalid duration {text:?} ({err}); write e.g. 500ms, 5s or 10m"
        ))
    })
}

/// Parses a count of at least 1 (a limit of 0 would refuse everything),
/// for clap.
pub fn parse_positive_count(text: &str) -> Result<usize, ParseError> {
    match text.trim().parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(ParseError::new(format!(
            "expected a whole number of at least 1, got {text:?}"
        ))),
    }
}

/// A value that can be a bound of a [`Range`].
pub trait RangeBound: Copy + PartialOrd + fmt::Debug {
    /// Parses one bound.
    fn parse_bound(text: &str) -> Result<Self, ParseError>;
    /// Writes one bound the way it is parsed.
    fn fmt_bound(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl RangeBound for u32 {
    fn parse_bound(text: &str) -> Result<Self, ParseError> {
        text.trim()
            .parse()
            .map_err(|_| ParseError::new(format!("expected a whole number, got {text:?}")))
    }
    fn fmt_bound(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl RangeBound for Duration {
    fn parse_bound(text: &str) -> Result<Self, ParseError> {
        parse_duration(text)
    }
    fn fmt_bound(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(*self))
    }
}

/// An inclusive range written "MIN-MAX" ("2s-6s", "1-10"); a single value
/// means MIN = MAX.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range<T> {
    /// Smallest value.
    pub min: T,
    /// Largest value (not smaller than `min`).
    pub max: T,
}

impl<T: RangeBound> FromStr for Range<T> {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (min, max) = match text.split_once('-') {
            Some((min, max)) => (T::parse_bound(min)?, T::parse_bound(max)?),
            None => {
                let only = T::parse_bound(text)?;
                (only, only)
            }
        };
        if min > max {
            return Err(ParseError::new(format!(
                "range {text:?} has its minimum above its maximum"
            )));
        }
        Ok(Self { min, max })
    }
}

impl<T: RangeBound> fmt::Display for Range<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.min.fmt_bound(f)?;
        f.write_str("-")?;
        self.max.fmt_bound(f)
    }
}

/// A size in bytes, written as a number with an optional binary unit
/// ("1048576", "512KiB", "64MiB", "2GiB"; K, M, G are read as KiB, MiB, GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let invalid = || {
            ParseError::new(format!(
                "invalid size {text:?}; write e.g. 1048576, 512KiB, 64MiB or 2GiB"
            ))
        };
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            _ => return Err(invalid()),
        };
        number.checked_mul(multiplier).map(Self).ok_or_else(invalid)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Binds a TCP listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")))
}

/// Logs the ready line every server prints once it accepts connections:
/// `listening grpc=ADDR http=ADDR`, with the real bound addresses (so a
/// port 0 shows the port the system chose). Tests and scripts wait for it.
pub fn announce_listening(grpc: Option<SocketAddr>, http: Option<SocketAddr>) {
    let mut line = String::from("listening");
    if let Some(addr) = grpc {
        line.push_str(&format!(" grpc={addr}"));
    }
    if let Some(addr) = http {
        line.push_str(&format!(" http={addr}"));
    }
    tracing::info!(target: "vesper::ready", "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_accept_both_spellings() {
        let bare: PeerAddr = "storage:50051".parse().expect("bare");
        let with_scheme: PeerAddr = "http://storage:50051/".parse().expect("scheme");
        assert_eq!(bare, with_scheme);
        assert_eq!(bare.to_string(), "http://storage:50051");
        assert_eq!(
            "127.0.0.1:9"
                .parse::<PeerAddr>()
                .expect("ip")
                .uri()
                .to_string(),
            "http://127.0.0.1:9/"
        );
        let tls: PeerAddr = "https://storage:50051".parse().expect("https");
        assert!(tls.is_tls() && !bare.is_tls());
        assert_eq!(tls.to_string(), "https://storage:50051");
    }

    #[test]
    fn peers_without_port_or_with_path_are_refused() {
        for bad in [
            "storage",
            "http://storage",
            "https://storage",
            "ftp://storage:1",
            "storage:1/x",
            "",
            ":1",
        ] {
            let err = bad.parse::<PeerAddr>().expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn lakes_are_directories_or_buckets() {
        assert_eq!(
            "./lake".parse::<Lake>(),
            Ok(Lake::Dir(PathBuf::from("./lake")))
        );
        assert_eq!(
            "s3://datalake".parse::<Lake>(),
            Ok(Lake::S3 {
                bucket: "datalake".into(),
                prefix: String::new()
            })
        );
        let nested: Lake = "s3://datalake/team/raw/".parse().expect("prefix");
        assert_eq!(
            nested,
            Lake::S3 {
                bucket: "datalake".into(),
                prefix: "team/raw".into()
            }
        );
        assert_eq!(nested.to_string(), "s3://datalake/team/raw");
    }

    #[test]
    fn bad_lakes_say_why() {
        for (bad, hint) in [
            ("", "empty"),
            ("gs://bucket", "unsupported"),
            ("s3://Upper", "bucket"),
            ("s3://ab", "bucket"),
            ("s3://bucket/a//b", "empty path segment"),
        ] {
            let err = bad.parse::<Lake>().expect_err(bad).to_string();
            assert!(err.contains(hint), "{bad}: {err}");
        }
    }

    #[test]
    fn ranges_parse_durations_and_counts() {
        let interval: Range<Duration> = "2s-6s".parse().expect("durations");
        assert_eq!(interval.min, Duration::from_secs(2));
        assert_eq!(interval.max, Duration::from_secs(6));
        assert_eq!(interval.to_string(), "2s-6s");
        let batch: Range<u32> = "1-10".parse().expect("counts");
        assert_eq!((batch.min, batch.max), (1, 10));
        let fixed: Range<u32> = "7".parse().expect("single");
        assert_eq!((fixed.min, fixed.max), (7, 7));
        assert!("10-1".parse::<Range<u32>>().is_err());
        assert!("1-x".parse::<Range<u32>>().is_err());
    }

    #[test]
    fn durations_and_sizes_have_friendly_errors() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("5 parsecs")
                .expect_err("unit")
                .to_string()
                .contains("5s")
        );
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize::mib(64)));
        assert_eq!("1024".parse::<ByteSize>(), Ok(ByteSize(1024)));
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert!("64 furlongs".parse::<ByteSize>().is_err());
        assert!("99999999999999999999G".parse::<ByteSize>().is_err());
    }
}
