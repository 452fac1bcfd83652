//! Signed webhooks, both ends: HMAC-SHA256 over the raw body with a
//! timestamp, so a captured request cannot be replayed later. The gateway
//! verifies; the DataSource generator (and any client) signs.
//!
//! The header is `X-Vesper-Signature: t=<unix seconds>,v1=<hex digest>`,
//! where the digest is `HMAC-SHA256(secret, "<t>.<raw body>")`, as
//! `printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret"`
//! computes it. The secret comes from the environment only, never from a
//! flag, so that it does not show in `ps` or in shell history.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries a webhook's signature.
pub const SIGNATURE_HEADER: &str = "x-vesper-signature";

/// The environment variable that holds the shared secret; signing is on
/// when it is set and not empty.
pub const WEBHOOK_SECRET_ENV: &str = "VESPER_WEBHOOK_SECRET";

type HmacSha256 = Hmac<Sha256>;

/// Bytes of an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;

/// The shared secret of signed webhooks. Its `Debug` form is redacted.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A secret; `None` when empty (an empty key signs nothing).
    pub fn new(secret: impl Into<Vec<u8>>) -> Option<Self> {
        let secret = secret.into();
        (!secret.is_empty()).then_some(Self(secret))
    }

    /// The secret in `VESPER_WEBHOOK_SECRET`, if it is set and not empty.
    pub fn from_env() -> Option<Self> {
        Self::new(std::env::var_os(WEBHOOK_SECRET_ENV)?.into_encoded_bytes())
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The `X-Vesper-Signature` value for `body` sent at unix time
    /// `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        sign_webhook(&self.0, timestamp, body)
    }

    /// Whether `digest` is this secret's digest of `body` at `timestamp`,
    /// compared in constant time.
    pub fn matches(&self, timestamp: i64, body: &[u8], digest: &[u8]) -> bool {
        self.expected(timestamp, body).matches(digest)
    }

    /// This secret's digest of `body` at `timestamp`, computed once, to
    /// compare any number of candidate digests against (the MAC costs a
    /// pass over the body; a comparison does not).
    pub fn expected(&self, timestamp: i64, body: &[u8]) -> ExpectedDigest {
        ExpectedDigest(mac(&self.0, timestamp, body).finalize())
    }
}

/// The digest a signature must carry; compares in constant time.
pub struct ExpectedDigest(hmac::digest::CtOutput<HmacSha256>);

impl ExpectedDigest {
    /// Whether `candidate` is this digest. Its length is public (every
    /// digest has the same); its bytes are compared in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.len() != DIGEST_LEN {
            return false;
        }
        let candidate = hmac::digest::CtOutput::<HmacSha256>::new(
            hmac::digest::generic_array::GenericArray::clone_from_slice(candidate),
        );
        candidate == self.0
    }
}

impl fmt::Debug for ExpectedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExpectedDigest(<redacted>)")
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `X-Vesper-Signature` value for `body` signed with `secret` at unix
/// time `timestamp`.
pub fn sign_webhook(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the error case cannot happen.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The current unix time in whole seconds, as signatures carry it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_vector_matches_openssl() {
        // printf '1790000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign_webhook(b"s3cret", 1_790_000_000, b"{}"),
            "t=1790000000,v1=0d84afbca530158326e0549a7a1c3579755f9b8ba4cceba2c143dbe14147b60f"
        );
    }

    #[test]
    fn only_the_right_secret_body_and_time_match() {
        let secret = WebhookSecret::new("s3cret").expect("secret");
        let digest =
            hex::decode("0d84afbca530158326e0549a7a1c3579755f9b8ba4cceba2c143dbe14147b60f")
                .expect("hex");
        assert!(secret.matches(1_790_000_000, b"{}", &digest));
        assert!(!secret.matches(1_790_000_001, b"{}", &digest));
        assert!(!secret.matches(1_790_000_000, b"{ }", &digest));
        let other = WebhookSecret::new("other").expect("secret");
        assert!(!other.matches(1_790_000_000, b"{}", &digest));
        let expected = secret.expected(1_790_000_000, b"{}");
        assert!(expected.matches(&digest));
        assert!(!expected.matches(&digest[..31]), "a short digest");
        assert!(
            !expected.matches(&[digest.as_slice(), &[0]].concat()),
            "a long one"
        );
        assert!(!expected.matches(&[0; 32]));
        assert!(WebhookSecret::new("").is_none());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }
}
