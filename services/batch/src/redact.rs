//! Keeping secrets out of what a run shows: logs, errors, reports,
//! manifests and the `_source_url` of records.
//!
//! Credentials in a URL (`https://user:pass@host/`) are taken out of it
//! when the pipelines are loaded and sent as a Basic `Authorization` header
//! instead, so the URLs the engine handles carry none. What is shown still
//! goes through [`url`], which drops any userinfo (a link or a redirect
//! could bring one) and masks the values of query parameters that name a
//! secret (`?api_key=***`).

use std::fmt;

use reqwest::Url;

/// Query parameters whose values are masked when a URL is shown (compared
/// ignoring case, `-` read as `_`).
const SECRET_PARAMS: [&str; 16] = [
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "auth_token",
    "client_secret",
    "key",
    "password",
    "passwd",
    "secret",
    "sig",
    "signature",
    "token",
    "x_amz_credential",
    "x_amz_security_token",
    "x_amz_signature",
];

/// What replaces a secret.
pub(crate) const MASK: &str = "***";

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_PARAMS.contains(&name.as_str())
}

/// `url` as it may be shown: no userinfo, secret query values masked. The
/// request itself still uses the real URL.
pub(crate) fn url(url: &Url) -> String {
    url_hiding(url, &[])
}

/// [`url`], masking the values of the query parameters in `hidden` too
/// (those a pipeline file fills from a secret reference).
pub(crate) fn url_hiding(url: &Url, hidden: &[String]) -> String {
    let secret = |name: &str| is_secret_param(name) || hidden.iter().any(|one| one == name);
    let has_userinfo = !url.username().is_empty() || url.password().is_some();
    let has_secret = url.query_pairs().any(|(name, _)| secret(&name));
    if !has_userinfo && !has_secret {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Only URLs that cannot have userinfo (no host) refuse these.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if has_secret {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Text that may be a URL which does not parse, with what looks like
/// userinfo (between `://` and the last `@` of the authority) masked.
pub(crate) fn text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!(
            "{}{MASK}{}",
            &text[..authority_start],
            &text[authority_start + at..]
        ),
        None => text.to_owned(),
    }
}

/// The user and password of a base URL, sent as HTTP Basic auth. Never
/// shown: its `Debug` prints a mask.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(")?;
        f.write_str(MASK)?;
        f.write_str(")")
    }
}

impl Credentials {
    /// Takes the userinfo out of `url`, percent-decoded; `None` when it has
    /// none.
    pub(crate) fn take_from(url: &mut Url) -> Option<Self> {
        if url.username().is_empty() && url.password().is_none() {
            return None;
        }
        let credentials = Self {
            username: percent_decode(url.username()),
            password: url.password().map(percent_decode),
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(credentials)
    }
}

/// `%XX` escapes decoded; an invalid escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = text.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At most `max` characters of `text`, with "..." when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn userinfo_and_secret_parameters_are_not_shown() {
        assert_eq!(
            url(&parse("https://alice:s3cret@api.test/v1/items?offset=0")),
            "https://api.test/v1/items?offset=0"
        );
        assert_eq!(
            url(&parse(
                "https://api.test/items?api_key=abc&page=2&X-Amz-Signature=def"
            )),
            "https://api.test/items?api_key=***&page=2&X-Amz-Signature=***"
        );
        let plain = "http://api.test/items?offset=0&limit=10&q=a%20b";
        assert_eq!(url(&parse(plain)), plain, "nothing else changes");
    }

    #[test]
    fn unparsed_text_has_its_userinfo_masked() {
        assert_eq!(
            text("https://alice:s3cret@api.test:99999/x"),
            "https://***@api.test:99999/x"
        );
        assert_eq!(text("ftp://x.test/a@b"), "ftp://x.test/a@b");
        assert_eq!(text("not a url"), "not a url");
    }

    #[test]
    fn credentials_are_taken_out_and_decoded() {
        let mut base = parse("https://al%40ice:p%3Ass@api.test/");
        let credentials = Credentials::take_from(&mut base).expect("credentials");
        assert_eq!(credentials.username, "al@ice");
        assert_eq!(credentials.password.as_deref(), Some("p:ss"));
        assert_eq!(base.as_str(), "https://api.test/");
        assert_eq!(format!("{credentials:?}"), "Credentials(***)");
        assert_eq!(Credentials::take_from(&mut base), None);
    }
}
