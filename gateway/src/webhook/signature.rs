//! Signed webhooks: HMAC-SHA256 over the raw body, with a timestamp so a
//! captured request cannot be replayed later.
//!
//! The header is `X-Vesper-Signature: t=<unix seconds>,v1=<hex digest>`,
//! where the digest is `HMAC-SHA256(secret, "<t>.<raw body>")`. Several
//! `v1=` entries may be given (while rotating secrets), up to
//! [`MAX_SIGNATURES`]; one must match. The MAC is computed once per request
//! and each entry compared to it in constant time, so extra entries cost
//! next to nothing; `t` must be within the tolerance of the gateway's
//! clock, either way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use vesper::signature::SIGNATURE_HEADER;

use crate::{GatewayError, WebhookSigning};

/// The most `v1=` entries one signature header may carry (a few cover any
/// key rotation).
pub(crate) const MAX_SIGNATURES: usize = 8;

/// Why a webhook's signature was refused; each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// No signature header.
    #[error("missing X-Vesper-Signature header: this webhook requires signed requests")]
    Missing,
    /// The header is not `t=...,v1=...`.
    #[error(
        "malformed X-Vesper-Signature header: expected t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">"
    )]
    Malformed,
    /// More `v1=` entries than anyone rotating keys needs.
    #[error(
        "too many signatures in X-Vesper-Signature: at most {MAX_SIGNATURES} v1= entries are accepted"
    )]
    TooMany,
    /// The timestamp is too far from now.
    #[error(
        "stale signature: its timestamp is {skew_secs} s from the gateway's clock, over the {tolerance_secs} s tolerance"
    )]
    Stale {
        /// Distance from the gateway's clock.
        skew_secs: u64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// No digest matches.
    #[error("wrong signature: it does not match the body and the secret")]
    Wrong,
}

impl From<SignatureError> for GatewayError {
    fn from(err: SignatureError) -> Self {
        Self::Unauthenticated {
            message: err.to_string(),
        }
    }
}

/// Checks the signature of `body` against `signing` at time `now`.
pub(crate) fn verify(
    signing: &WebhookSigning,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), SignatureError> {
    let Some(header) = headers.get(SIGNATURE_HEADER) else {
        return Err(SignatureError::Missing);
    };
    let malformed = || SignatureError::Malformed;
    let header = header.to_str().map_err(|_| malformed())?;
    let mut timestamp = None;
    let mut digests = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) if timestamp.is_none() => {
                timestamp = Some(value.parse::<i64>().map_err(|_| malformed())?);
            }
            Some(("v1", _)) if digests.len() == MAX_SIGNATURES => {
                return Err(SignatureError::TooMany);
            }
            Some(("v1", value)) => digests.push(hex::decode(value).map_err(|_| malformed())?),
            // Unknown schemes are skipped, so a newer client can send more.
            Some((key, _)) if key != "t" => {}
            _ => return Err(malformed()),
        }
    }
    let (Some(timestamp), false) = (timestamp, digests.is_empty()) else {
        return Err(malformed());
    };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    });
    let skew = now_secs.abs_diff(timestamp);
    if Duration::from_secs(skew) > signing.tolerance {
        return Err(SignatureError::Stale {
            skew_secs: skew,
            tolerance_secs: signing.tolerance.as_secs(),
        });
    }
    let expected = signing.secret.expected(timestamp, body);
    // Every entry is compared, so the time taken does not tell which one
    // matched.
    let matched = digests
        .iter()
        .fold(false, |matched, digest| expected.matches(digest) | matched);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use vesper::signature::{WebhookSecret, sign_webhook};

    use super::*;

    const NOW: u64 = 1_790_000_000;

    fn signing() -> WebhookSigning {
        WebhookSigning {
            secret: WebhookSecret::new("s3cret").expect("secret"),
            tolerance: Duration::from_secs(300),
        }
    }

    fn check(header: Option<&str>, body: &[u8]) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(header) = header {
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(header).expect("header"),
            );
        }
        verify(
            &signing(),
            &headers,
            body,
            UNIX_EPOCH + Duration::from_secs(NOW),
        )
        .map_err(|err| err.to_string())
    }

    #[test]
    fn a_known_vector_matches() {
        // printf '1790000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign_webhook(b"s3cret", 1_790_000_000, b"{}"),
            "t=1790000000,v1=0d84afbca530158326e0549a7a1c3579755f9b8ba4cceba2c143dbe14147b60f"
        );
        let header = sign_webhook(b"s3cret", NOW as i64, b"{}");
        assert_eq!(check(Some(&header), b"{}"), Ok(()));
    }

    #[test]
    fn signature_entries_are_capped() {
        let body = br#"{"events":[]}"#;
        let good = sign_webhook(b"s3cret", NOW as i64, body);
        let decoys = |count: usize| {
            (0..count)
                .map(|_| format!(",v1={}", "00".repeat(32)))
                .collect::<String>()
        };
        let at_cap = format!("{good}{}", decoys(MAX_SIGNATURES - 1));
        assert_eq!(check(Some(&at_cap), body), Ok(()));
        let over_cap = format!("{good}{}", decoys(MAX_SIGNATURES));
        let err = check(Some(&over_cap), body).expect_err("over the cap");
        assert!(err.starts_with("too many signatures"), "{err}");
        assert!(err.contains(&format!("at most {MAX_SIGNATURES}")), "{err}");
        // A flood of entries is refused before any MAC is computed.
        let flood = format!("t={NOW}{}", decoys(10_000));
        let err = check(Some(&flood), body).expect_err("flood");
        assert!(err.starts_with("too many signatures"), "{err}");
    }

    #[test]
    fn every_bad_signature_says_what_is_wrong() {
        let body = br#"{"events":[]}"#;
        let good = sign_webhook(b"s3cret", NOW as i64, body);
        assert_eq!(check(Some(&good), body), Ok(()));
        let rotated = format!("{good},v1={}", "00".repeat(32));
        assert_eq!(check(Some(&rotated), body), Ok(()), "any v1 may match");

        let missing = check(None, body).expect_err("missing");
        assert!(missing.starts_with("missing"), "{missing}");
        for malformed in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            let err = check(Some(malformed), body).expect_err(malformed);
            assert!(err.starts_with("malformed"), "{malformed}: {err}");
        }
        let wrong = check(Some(&sign_webhook(b"other", NOW as i64, body)), body).expect_err("key");
        assert!(wrong.starts_with("wrong"), "{wrong}");
        let tampered = check(Some(&good), br#"{"events":[1]}"#).expect_err("body");
        assert!(tampered.starts_with("wrong"), "{tampered}");
        for skewed in [NOW - 301, NOW + 301] {
            let stale = check(Some(&sign_webhook(b"s3cret", skewed as i64, body)), body)
                .expect_err("stale");
            assert!(stale.starts_with("stale"), "{stale}");
        }
        assert_eq!(
            check(
                Some(&sign_webhook(b"s3cret", (NOW - 299) as i64, body)),
                body
            ),
            Ok(())
        );
    }
}
