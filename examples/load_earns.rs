//! Load generator for `scripts/drain_bench.sh`: sends N earns (unique txn_ids) over C
//! connections to a running pointsd and prints how many were acknowledged.
//! Usage: load_earns URL TOKEN N [CONCURRENCY] [CUSTOMERS]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (url, token) = (a[1].clone(), a[2].clone());
    let n: usize = a[3].parse().expect("N");
    let conc: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(32);
    let customers: usize = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let run = std::process::id();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, url, token, next, ok) = (
            http.clone(),
            url.clone(),
            token.clone(),
            next.clone(),
            ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = serde_json::json!({
                    "txn_id": format!("load-{run}-{i}"),
                    "customer_id": (i % customers + 1).to_string(),
                    "kind": "earn",
                    "points": 1,
                });
                let r = http
                    .post(format!("{url}/v1/transactions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                if matches!(r, Ok(ref r) if r.status().is_success()) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("{}", ok.load(Ordering::Relaxed));
}
