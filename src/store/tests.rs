//! Unit tests of the store (the accept rule, claims, transitions, upserts, migrations).

use super::*;
use crate::ledger::Kind;

fn ctx(online: bool) -> AcceptCtx {
    AcceptCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        online,
        token_name: "t".into(),
        earn: EarnConfig::default(),
        offline: OfflineConfig::default(),
    }
}

fn txn(id: &str, kind: Kind, points: i64) -> NewTxn {
    NewTxn {
        txn_id: id.into(),
        customer_id: "c1".into(),
        kind,
        points: Some(points),
        purchase_amount: None,
        reason: None,
        register_id: None,
        staff_id: None,
    }
}

async fn store_with_customer(dir: &Path, confirmed: i64) -> Store {
    let s = Store::open(&dir.join("t.db")).unwrap();
    s.upsert_balances(
        vec![UpstreamBalance {
            customer_id: "c1".into(),
            point: confirmed,
            expires_at: None,
            updated_at: Some("u0".into()),
        }],
        0,
        1,
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn accept_replay_conflict_and_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_customer(dir.path(), 100).await;
    let r = s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
    let AcceptOutcome::Created { customer, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(customer.balance(), Balance::new(100, 10));
    assert!(matches!(
        s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap(),
        AcceptOutcome::Replay { .. }
    ));
    assert!(matches!(
        s.accept(txn("a", Kind::Earn, 11), ctx(true)).await.unwrap(),
        AcceptOutcome::Conflict { .. }
    ));
    assert!(matches!(
        s.accept(txn("b", Kind::Redeem, 111), ctx(true))
            .await
            .unwrap(),
        AcceptOutcome::Refused { .. }
    ));
    let mut unknown = txn("c", Kind::Earn, 1);
    unknown.customer_id = "nobody".into();
    assert!(matches!(
        s.accept(unknown, ctx(true)).await.unwrap(),
        AcceptOutcome::UnknownCustomer
    ));
    assert_eq!(s.queue_stats().await.unwrap().pending, 1);
}

#[tokio::test]
async fn a_clean_stop_lets_the_next_start_skip_the_check_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_customer(dir.path(), 100).await;
    s.accept(txn("a", Kind::Earn, 10), ctx(false))
        .await
        .unwrap();
    let db = s.path().to_path_buf();
    assert!(!clean_stop_matches(&db), "no clean stop yet");
    s.checkpoint().await.unwrap();
    assert!(clean_marker(&db).exists());
    assert!(clean_stop_matches(&db));
    // Any change to the file afterwards (here: one more byte) means the check runs.
    std::thread::sleep(Duration::from_millis(20));
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len + 1).unwrap();
    drop(f);
    assert!(!clean_stop_matches(&db));
    // Opening consumes the marker, so a crash during this run is never mistaken for clean.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len)
        .unwrap();
    drop(s);
    let _again = Store::open(&db).unwrap();
    assert!(!clean_marker(&db).exists());
}

#[tokio::test]
async fn claim_is_per_customer_fifo_and_pull_respects_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_customer(dir.path(), 100).await;
    s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
    s.accept(txn("b", Kind::Earn, 20), ctx(true)).await.unwrap();
    let claimed = s.claim_due(2_000, 10, 1_000_000).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the head of the customer's queue");
    assert_eq!(claimed[0].txn_id, "a");
    assert_eq!(claimed[0].before_balance, Some(100));
    // A pull while "a" is in flight must not overwrite the cached balance.
    let stale = vec![UpstreamBalance {
        customer_id: "c1".into(),
        point: 5,
        expires_at: None,
        updated_at: None,
    }];
    let rev = s.apply_counter().await.unwrap();
    assert_eq!(s.upsert_balances(stale.clone(), rev, 3).await.unwrap().0, 0);
    s.mark_applied(claimed[0].seq, 110, None, 3, None, None)
        .await
        .unwrap();
    // A pull that started before the apply must not overwrite it either.
    assert_eq!(s.upsert_balances(stale, rev, 4).await.unwrap().0, 0);
    let c = s.customer("c1").await.unwrap().unwrap();
    assert_eq!(c.balance(), Balance::new(110, 20));
    let next = s.claim_due(5_000, 10, 1_000_000).await.unwrap();
    assert_eq!(next[0].txn_id, "b");
    let q = s.queue_stats().await.unwrap();
    assert_eq!((q.pending, q.sending, q.applied), (0, 1, 1));
    assert_counts_match_history(&s).await;
}

/// The kept queue counts agree with counting the rows themselves.
async fn assert_counts_match_history(s: &Store) {
    let (kept, counted) = s
        .read(|c| {
            let q = |sql: &str| -> rusqlite::Result<Vec<(String, i64)>> {
                c.prepare(sql)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            };
            Ok((
                q("SELECT state, n FROM txn_counts WHERE n <> 0 ORDER BY state")?,
                q("SELECT state, COUNT(*) FROM txns GROUP BY state ORDER BY state")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(kept, counted);
}

#[tokio::test]
async fn in_flight_rows_become_ambiguous_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store_with_customer(dir.path(), 100).await;
        s.accept(txn("a", Kind::Earn, 10), ctx(true)).await.unwrap();
        s.claim_due(2_000, 10, 1_000_000).await.unwrap();
    }
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    assert_eq!(s.recover_in_flight(3_000, 3_000).await.unwrap(), 1);
    let t = s.txn("a").await.unwrap().unwrap();
    assert_eq!(t.state, State::Ambiguous);
    assert_eq!(t.before_balance, Some(100));
}

/// A store written by the previous schema (v3) keeps every row, its balances, its review
/// history and its sequence's high-water mark through the table rebuild of v4.
#[tokio::test]
async fn a_version_3_database_is_rebuilt_without_losing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    {
        let mut c = Connection::open(&db).unwrap();
        c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        let tx = c.transaction().unwrap();
        for sql in &schema::MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute_batch(
            "INSERT INTO customers(customer_id, code, barcode, name, confirmed, as_of) \
               VALUES ('c1', 'M1', 'B1', 'Ann', 100, 5), ('c2', NULL, NULL, NULL, 7, NULL); \
             INSERT INTO txns(seq, txn_id, request, customer_id, kind, delta, token_name, \
               created_at, state, next_attempt_at, updated_at) VALUES \
               (1, 'a', '{}', 'c1', 'earn', 10, 't', 1, 'applied', 1, 1), \
               (2, 'b', '{}', 'c1', 'redeem', -30, 't', 2, 'pending', 2, 2), \
               (3, 'c', '{}', 'c2', 'adjust', 5, 't', 3, 'needs_review', 3, 3), \
               (41, 'd', '{}', 'c1', 'earn', 4, 't', 4, 'ambiguous', 4, 4); \
             INSERT INTO resolutions(txn_id, from_state, action, resolved_by, note, at) \
               VALUES ('c', 'ambiguous', 'resend', 'mgr', 'checked', 5); \
             UPDATE sqlite_sequence SET seq = 50 WHERE name = 'txns';",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&db).unwrap();
    let c1 = s.customer("c1").await.unwrap().unwrap();
    assert_eq!(
        (c1.confirmed, c1.pending, c1.name.as_deref()),
        (100, -26, Some("Ann"))
    );
    assert_eq!(
        s.customer_by(LookupColumn::Barcode, "B1")
            .await
            .unwrap()
            .unwrap()
            .customer_id,
        "c1"
    );
    assert_eq!(s.customer("c2").await.unwrap().unwrap().pending, 0);
    let q = s.queue_stats().await.unwrap();
    assert_eq!(
        (q.applied, q.pending, q.ambiguous, q.needs_review),
        (1, 1, 1, 1)
    );
    assert_eq!(q.oldest_pending_created_at, Some(2));
    assert_eq!(s.resolutions("c").await.unwrap().len(), 1);
    // Numbering goes on after the old high-water mark, never reusing a seq.
    let r = s.accept(txn("e", Kind::Earn, 1), ctx(false)).await.unwrap();
    let AcceptOutcome::Created { txn, customer } = r else {
        panic!("{r:?}")
    };
    assert_eq!(txn.seq, 51);
    assert_eq!(customer.pending, -25);
    assert_eq!(s.queue_stats().await.unwrap().pending, 2);
    assert_counts_match_history(&s).await;
    // The rebuilt CHECKs still refuse what they refused.
    let bad = s
        .write(|c| {
            c.execute("UPDATE txns SET state = 'lost' WHERE txn_id = 'e'", [])
                .map_err(StoreError::from)
        })
        .await;
    assert!(bad.is_err(), "{bad:?}");
    let v: i64 = s
        .read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(v, schema::known_version());
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.db");
    drop(Store::open(&p).unwrap());
    let c = Connection::open(&p).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Store::open(&p).err().expect("must refuse");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_file_is_reported_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.db");
    std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
    let err = Store::open(&p).err().expect("must refuse");
    assert!(err.to_string().contains("t.db"), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), vec![0x42u8; 8192]);
}

#[tokio::test]
async fn close_commits_what_was_acknowledged_then_joins_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_customer(dir.path(), 100).await;
    let r = s
        .accept(txn("c-1", Kind::Earn, 5), ctx(true))
        .await
        .unwrap();
    assert!(matches!(r, AcceptOutcome::Created { .. }), "{r:?}");
    let other = s.clone();
    s.close().await;
    assert!(s.threads.lock().unwrap().is_empty(), "threads joined");
    // Any handle now fails to write, with the error that says why.
    let e = other.set_meta(Meta::LastReconcile, "x".into()).await;
    assert!(matches!(e, Err(StoreError::WriterGone)), "{e:?}");
    // What was acknowledged is on disk for the next start.
    let again = Store::open(&dir.path().join("t.db")).unwrap();
    assert!(again.txn("c-1").await.unwrap().is_some());
}

/// Register sales: a purchase earn near one is a possible double (earn), a redeem near one
/// that used points is one too (use); a sale far from any operation of ours is dropped once
/// nothing can pair with it any more, a paired one stays listed.
#[tokio::test]
async fn register_sales_pair_with_our_operations_and_the_rest_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_customer(dir.path(), 500).await;
    let mut earn = txn("e1", Kind::Earn, 0);
    earn.points = None;
    earn.purchase_amount = Some(3000);
    assert!(matches!(
        s.accept(earn, ctx(true)).await.unwrap(),
        AcceptOutcome::Created { .. }
    ));
    assert!(matches!(
        s.accept(txn("r1", Kind::Redeem, 20), ctx(true))
            .await
            .unwrap(),
        AcceptOutcome::Created { .. }
    ));
    // A gift is no purchase grant.
    assert!(matches!(
        s.accept(txn("g1", Kind::Earn, 5), ctx(true)).await.unwrap(),
        AcceptOutcome::Created { .. }
    ));
    let row = |id: &str, new_point, spend_point, sold_ms| RegisterSaleRow {
        transaction_head_id: id.into(),
        customer_id: "c1".into(),
        store_id: Some("2".into()),
        kind: "sale",
        new_point,
        spend_point,
        sold_at: None,
        sold_ms,
        upd_ms: sold_ms,
    };
    let window = 600_000;
    // ctx's clock: operations at 1_000 ms.
    let n = s
        .record_register_sales(
            vec![
                row("h-near-earn", 30, 0, 61_000),
                row("h-near-use", 0, 20, -59_000),
                row("h-far", 10, 0, 50_000_000),
            ],
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // Again: recorded once each.
    assert_eq!(
        s.record_register_sales(vec![row("h-far", 10, 0, 50_000_000)], 1_000)
            .await
            .unwrap(),
        0
    );
    let now = 60_000_000;
    let d = s.possible_doubles(window, now).await.unwrap();
    let kinds: Vec<(&str, &str, &str, i64)> = d
        .iter()
        .map(|x| {
            (
                x.kind.as_str(),
                x.register.transaction_head_id.as_str(),
                x.pointsd.id.as_str(),
                x.pointsd.points,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("earn", "h-near-earn", "e1", 30),
            ("use", "h-near-use", "r1", 20)
        ]
    );
    // h-far has nothing near it and its time is past: dropped; the pairs stay.
    assert_eq!(s.prune_register_sales(window, now).await.unwrap(), 1);
    assert_eq!(s.possible_doubles(window, now).await.unwrap().len(), 2);
}
