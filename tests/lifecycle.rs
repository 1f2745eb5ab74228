//! Data lifecycle (DESIGN.md §15, issue 26): a writer that survives a bad job, backups,
//! a restore that never double-sends, retention, the disk floor.

mod common;

use axum::response::IntoResponse;
use pointsd::config::{EarnConfig, OfflineConfig};
use pointsd::ledger::{Kind, NewTxn};
use pointsd::store::{AcceptCtx, AcceptOutcome, Store, StoreError};
use pointsd::upstream::UpstreamBalance;

fn ctx() -> AcceptCtx {
    AcceptCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        online: true,
        token_name: "register-1".into(),
        earn: EarnConfig::default(),
        offline: OfflineConfig::default(),
    }
}

fn earn(id: &str, points: i64) -> NewTxn {
    NewTxn {
        txn_id: id.into(),
        customer_id: "c1".into(),
        kind: Kind::Earn,
        points: Some(points),
        purchase_amount: None,
        reason: None,
        register_id: None,
        staff_id: None,
    }
}

/// A panicking job in the middle of a burst of earns fails alone: its caller gets the 500
/// `internal` problem, every earn is acknowledged and still there after a reopen, and the
/// writer takes new writes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pointsd.db");
    let store = Store::open(&path).unwrap();
    store
        .upsert_balances(
            vec![UpstreamBalance {
                customer_id: "c1".into(),
                point: 100,
                expires_at: None,
                updated_at: Some("u0".into()),
            }],
            0,
            1,
        )
        .await
        .unwrap();

    // 200 earns queued at once (they share group commits), the bad job queued among them.
    let mut earns = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        earns.push(tokio::spawn(async move {
            s.accept(earn(&format!("e{i:03}"), 1), ctx()).await
        }));
        if i == 100 {
            let s = store.clone();
            earns.push(tokio::spawn(async move {
                s.write(|c| {
                    // Writes something first: the savepoint must undo it.
                    c.execute("INSERT INTO customers(customer_id) VALUES ('ghost')", [])?;
                    panic!("injected bug in a write job");
                    #[allow(unreachable_code)]
                    Ok(AcceptOutcome::UnknownCustomer)
                })
                .await
            }));
        }
    }
    let mut acknowledged = 0;
    let mut panicked = 0;
    for h in earns {
        match h.await.unwrap() {
            Ok(AcceptOutcome::Created { .. }) => acknowledged += 1,
            Ok(other) => panic!("unexpected outcome {other:?}"),
            Err(e @ StoreError::JobPanicked { .. }) => {
                panicked += 1;
                let resp = pointsd::api::ApiError::from(e).into_response();
                assert_eq!(resp.status().as_u16(), 500);
                let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["code"], "internal", "{v}");
            }
            Err(e) => panic!("an earn failed with the bad job: {e}"),
        }
    }
    assert_eq!((acknowledged, panicked), (200, 1));

    // The writer goes on.
    let after = store.accept(earn("after", 5), ctx()).await.unwrap();
    assert!(matches!(after, AcceptOutcome::Created { .. }), "{after:?}");
    assert!(store.storage_health().ok);
    store.close().await;

    // Durable: every acknowledged earn; nothing of the bad job.
    let again = Store::open(&path).unwrap();
    let (txns, sum) = again
        .read(|c| {
            c.query_row("SELECT count(*), sum(delta) FROM txns", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
        })
        .await
        .unwrap();
    assert_eq!((txns, sum), (201, 205));
    let c1 = again.customer("c1").await.unwrap().expect("customer kept");
    assert_eq!(c1.balance().available, 100 + 205);
    assert!(again.customer("ghost").await.unwrap().is_none());
    again.close().await;
}
