//! Benchmark baseline: raw SQLite inserts, one row per transaction, WAL + synchronous=FULL
//! (the durability pointsd promises). `scripts/bench.sh` reports acknowledged earns/s as a
//! ratio of this figure, measured on the same disk in the same run.

use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let path = std::path::Path::new(&dir).join("baseline.db");
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path).expect("open");
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .expect("wal");
    c.pragma_update(None, "synchronous", "FULL").expect("sync");
    c.execute_batch(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, txn_id TEXT UNIQUE, customer_id TEXT, delta INTEGER, created_at INTEGER)",
    )
    .expect("schema");
    let start = Instant::now();
    for i in 0..n {
        c.execute(
            "INSERT INTO t(txn_id, customer_id, delta, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![format!("b-{i}"), (i % 1000).to_string(), 5, i as i64],
        )
        .expect("insert");
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.0}", n as f64 / secs);
    let _ = std::fs::remove_file(&path);
}
