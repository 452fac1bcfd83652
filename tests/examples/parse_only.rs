//! The yardstick of the webhook benchmark: an axum handler on the same
//! route that only parses the body (`serde_json::from_slice::<Value>`) and
//! answers 200: no validation, no gRPC, no disk. What the machine allows an
//! HTTP JSON endpoint to do; `scripts/bench-webhook` runs it beside
//! `vesper up` under the same load.
//!
//! `parse_only [ADDR]` (default 127.0.0.1:0) prints `listening http=ADDR`.

#![allow(clippy::print_stdout, missing_docs)]

use axum::{Router, body::Bytes, http::StatusCode, routing::post};

async fn receive(body: Bytes) -> (StatusCode, &'static str) {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => (StatusCode::OK, r#"{"status":"success"}"#),
        Err(_) => (StatusCode::BAD_REQUEST, r#"{"error":"Invalid payload"}"#),
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind the parse-only handler");
    println!(
        "listening http={}",
        listener.local_addr().expect("bound address")
    );
    let app = Router::new().route("/webhook/events", post(receive));
    axum::serve(listener, app).await.expect("serve");
}
