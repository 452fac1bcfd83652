//! Bearer tokens on the gateway's REST and control routes
//! (`vesper::auth`): each route needs one right; a missing or unknown
//! token gets 401 with `WWW-Authenticate: Bearer`, a token without the
//! right 403 naming it, both as `{"error": ...}`. `/health` and `/metrics`
//! stay open; the webhook checks its own way (the webhook module). Off
//! when the gateway has no tokens file.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use vesper::auth::{Refusal, Right, TokenTable};

use crate::GatewayError;

/// What a route needs: a token with `right`, when auth is on.
#[derive(Debug, Clone)]
pub(crate) struct Needs {
    pub(crate) tokens: Option<Arc<TokenTable>>,
    pub(crate) right: Right,
}

/// The middleware of a route that needs a right.
pub(crate) async fn require_right(
    State(needs): State<Needs>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &needs.tokens else {
        return next.run(request).await;
    };
    match tokens.authorize(request.headers(), needs.right) {
        Ok(principal) => {
            tracing::Span::current().record("enduser.id", &*principal.name);
            next.run(request).await
        }
        Err(refusal) => {
            let what = format!("{} {}", request.method(), request.uri().path());
            refused(&refusal, &what, needs.right).into_response()
        }
    }
}

/// The error for a refusal of `what`, which needs `right`.
pub(crate) fn refused(refusal: &Refusal, what: &str, right: Right) -> GatewayError {
    if let Refusal::Lacks { name, .. } = refusal {
        tracing::Span::current().record("enduser.id", &**name);
    }
    let message = refusal.message(what, Some(right));
    if refusal.is_unauthenticated() {
        GatewayError::Unauthenticated { message }
    } else {
        GatewayError::Forbidden { message }
    }
}
