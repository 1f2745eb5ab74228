//! Benchmark baseline: the smallest axum server answering a fixed customer-sized JSON body.
//! `scripts/bench.sh` measures pointsd's look-ups as a ratio of this, on the same machine.

use axum::{Json, Router, routing::get};
use serde_json::json;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18999".into());
    let body = json!({"customer_id":"1","code":"M000001","barcode":"2000000000015","name":"中村 健",
        "balance":{"confirmed":746,"pending":0,"available":746},"as_of":"2026-11-23T09:48:26.331Z",
        "stale":false,"online":true,"expires_at":"2028-08-21","expired":false,"tier":null,"local_only":false});
    let app = Router::new().route(
        "/v1/customers/{id}",
        get(move || async move { Json(body.clone()) }),
    );
    let l = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("baseline listening on {addr}");
    axum::serve(l, app).await.expect("serve");
}
