//! What the gateway refuses before any handler runs: requests past the
//! in-flight limit (503, so an overload sheds instead of queueing without
//! bound), and state-changing requests a browser sends from another site
//! (403, so a web page cannot post events or stop the generator through a
//! visitor's browser).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Method, header::HOST, header::ORIGIN};
use tokio::sync::Semaphore;

use crate::{GatewayError, config::AllowedOrigin};

/// The header browsers set to tell where a request comes from.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// The requests being handled, and their limit.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// Handles the request if a slot is free, else answers 503 at once.
pub(crate) async fn shed_over_limit(
    State(in_flight): State<InFlight>,
    request: Request,
    next: Next,
) -> Response {
    match in_flight.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => GatewayError::Overloaded {
            limit: in_flight.limit,
        }
        .into_response(),
    }
}

/// Refuses a state-changing request that a browser marks as coming from
/// another site, unless its origin is allowed.
pub(crate) async fn refuse_cross_site(
    State(allowed): State<Arc<[AllowedOrigin]>>,
    request: Request,
    next: Next,
) -> Response {
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    match cross_site_reason(request.headers(), &allowed) {
        Some(reason) => GatewayError::CrossSite { reason }.into_response(),
        None => next.run(request).await,
    }
}

/// Methods that change nothing, which any page may send.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a state-changing request is refused, or `None` when it may go on.
///
/// Browsers say where a request comes from: `Sec-Fetch-Site` (modern
/// browsers) and `Origin` (on every POST). A client that sends neither is
/// not a browser (curl, a service, the generator) and is not a cross-site
/// risk. A browser request is let through when it comes from the gateway's
/// own origin or from an allowed one.
fn cross_site_reason(headers: &HeaderMap, allowed: &[AllowedOrigin]) -> Option<String> {
    let origin = headers
        .get(ORIGIN)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let is_allowed = |origin: &str| allowed.iter().any(|allowed| allowed.matches(origin));
    let hint = "add it to --allowed-origins (VESPER_ALLOWED_ORIGINS) to allow it";
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = String::from_utf8_lossy(site.as_bytes()).to_ascii_lowercase();
        if matches!(site.as_str(), "same-origin" | "none") {
            return None;
        }
        return match origin {
            Some(origin) if is_allowed(&origin) => None,
            Some(origin) => Some(format!(
                "cross-site request refused: Sec-Fetch-Site is {site:?} and the origin {origin:?} is not allowed; {hint}"
            )),
            None => Some(format!(
                "cross-site request refused: Sec-Fetch-Site is {site:?} and the request names no Origin; allowed origins are set with --allowed-origins (VESPER_ALLOWED_ORIGINS)"
            )),
        };
    }
    let origin = origin?;
    if is_allowed(&origin) || is_same_origin(&origin, headers) {
        return None;
    }
    Some(format!(
        "cross-site request refused: the origin {origin:?} is not this server's and is not allowed; {hint}"
    ))
}

/// Whether `origin` names the host the request was sent to.
fn is_same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|host| host.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.trim_end_matches('/').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn allowed() -> Vec<AllowedOrigin> {
        vec!["https://app.example.com".parse().expect("origin")]
    }

    #[test]
    fn clients_that_are_not_browsers_pass() {
        assert_eq!(cross_site_reason(&headers(&[]), &[]), None);
        assert_eq!(
            cross_site_reason(&headers(&[("host", "gw:8080")]), &[]),
            None
        );
    }

    #[test]
    fn same_origin_and_allowed_origins_pass() {
        for pairs in [
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![("origin", "http://gw:8080"), ("host", "gw:8080")],
            vec![("origin", "https://APP.example.com")],
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://app.example.com"),
            ],
        ] {
            let headers = headers(&pairs);
            assert_eq!(cross_site_reason(&headers, &allowed()), None, "{pairs:?}");
        }
    }

    #[test]
    fn cross_site_browsers_are_refused_with_the_flag_named() {
        for pairs in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site"), ("origin", "http://a.gw")],
            vec![("origin", "https://evil.example"), ("host", "gw:8080")],
            vec![("origin", "null"), ("host", "gw:8080")],
            vec![("origin", "http://gw:8080")],
        ] {
            let headers = headers(&pairs);
            let reason = cross_site_reason(&headers, &allowed()).expect("refused");
            assert!(reason.contains("--allowed-origins"), "{pairs:?}: {reason}");
            assert!(reason.starts_with("cross-site request refused"), "{reason}");
        }
    }

    #[test]
    fn origins_parse_strictly() {
        let origin: AllowedOrigin = "HTTPS://App.Example.com:8443/".parse().expect("origin");
        assert_eq!(origin.to_string(), "https://app.example.com:8443");
        for bad in ["app.example.com", "https://", "https://a/b", "://a", ""] {
            assert!(bad.parse::<AllowedOrigin>().is_err(), "{bad}");
        }
    }
}
