//! Property tests of the ledger rules on the real store: for any sequence of earns, redeems,
//! adjusts, replays and upstream outcomes, `available = confirmed + pending`, a redeem never
//! drives `available` below zero, and replays are idempotent.

use std::collections::HashMap;

use pointsd::config::{EarnConfig, OfflineConfig};
use pointsd::ledger::{Kind, NewTxn, State};
use pointsd::store::{AcceptCtx, AcceptOutcome, Store, TxnFilter};
use pointsd::upstream::UpstreamBalance;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A register's write; `key` picks an idempotency key (small range, so replays happen).
    Write {
        key: u8,
        kind: Kind,
        points: i64,
        online: bool,
    },
    /// The upstream applies the oldest open transaction.
    Apply,
    /// The upstream refuses the oldest open transaction for good.
    Reject,
    /// A pull brings a balance changed elsewhere (only when nothing is in flight).
    Pull { delta: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, prop_oneof![Just(Kind::Earn), Just(Kind::Redeem), Just(Kind::Adjust)],
              -300i64..300, any::<bool>())
            .prop_map(|(key, kind, points, online)| {
                let points = match kind {
                    Kind::Adjust if points == 0 => 1,
                    Kind::Adjust => points,
                    _ => points.abs().max(1),
                };
                Op::Write { key, kind, points, online }
            }),
        2 => Just(Op::Apply),
        1 => Just(Op::Reject),
        1 => (-200i64..200).prop_map(|delta| Op::Pull { delta }),
    ]
}

fn ctx(online: bool) -> AcceptCtx {
    AcceptCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        online,
        token_name: "prop".into(),
        earn: EarnConfig::default(),
        offline: OfflineConfig {
            max_redeem_points: 250,
            ..OfflineConfig::default()
        },
    }
}

async fn check_sequence(ops: Vec<Op>, start: i64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("p.db")).unwrap();
    let bal = |point| UpstreamBalance {
        customer_id: "c".into(),
        point,
        expires_at: None,
        updated_at: None,
    };
    store.upsert_balances(vec![bal(start)], 0, 1).await.unwrap();
    // What each key was first used for: a replay must match it exactly.
    let mut first: HashMap<u8, NewTxn> = HashMap::new();
    let mut upstream = start;
    for op in ops {
        match op {
            Op::Write {
                key,
                kind,
                points,
                online,
            } => {
                let txn = NewTxn {
                    txn_id: format!("k{key}"),
                    customer_id: "c".into(),
                    kind,
                    points: Some(points),
                    purchase_amount: None,
                    reason: None,
                    register_id: None,
                    staff_id: None,
                };
                let before = store.customer("c").await.unwrap().unwrap().balance();
                let out = store.accept(txn.clone(), ctx(online)).await.unwrap();
                let rows_before = first.len();
                match (&out, first.get(&key)) {
                    (AcceptOutcome::Replay { .. }, Some(orig)) => prop_assert_eq!(orig, &txn),
                    (AcceptOutcome::Conflict { .. }, Some(orig)) => prop_assert_ne!(orig, &txn),
                    (AcceptOutcome::Created { customer, .. }, None) => {
                        first.insert(key, txn.clone());
                        // A redeem (or negative adjust) never takes the balance below zero.
                        if txn.delta(&EarnConfig::default()) < 0 {
                            prop_assert!(
                                customer.balance().available >= 0,
                                "overdrawn by a write: {:?}",
                                customer.balance()
                            );
                        }
                    }
                    (AcceptOutcome::Refused { .. }, None) => {
                        // Refused only when it would overdraw (or break the offline policy).
                        let spend = -txn.delta(&EarnConfig::default());
                        prop_assert!(
                            spend > before.available || (!online && spend > 250),
                            "refused {spend} with {before:?}"
                        );
                    }
                    (o, f) => prop_assert!(false, "unexpected {o:?} for key used before: {f:?}"),
                }
                if !matches!(out, AcceptOutcome::Created { .. }) {
                    prop_assert_eq!(first.len(), rows_before, "a replay or refusal wrote a row");
                }
            }
            Op::Apply | Op::Reject => {
                let claimed = store.claim_due(i64::MAX / 4, 1, 1_000_000).await.unwrap();
                if let Some(t) = claimed.first() {
                    if matches!(op, Op::Apply) {
                        upstream += t.delta;
                        store
                            .mark_applied(t.seq, upstream, None, 2, None, None)
                            .await
                            .unwrap();
                    } else {
                        store
                            .mark_rejected(t.seq, "refused".into(), "{}".into(), 2)
                            .await
                            .unwrap();
                    }
                }
            }
            Op::Pull { delta } => {
                upstream += delta;
                let rev = store.apply_counter().await.unwrap();
                store
                    .upsert_balances(vec![bal(upstream)], rev, 3)
                    .await
                    .unwrap();
            }
        }
        // available = confirmed + the deltas not yet confirmed, whatever happened.
        let c = store.customer("c").await.unwrap().unwrap();
        let rows = store
            .list_txns(TxnFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let unconfirmed: i64 = rows
            .iter()
            .filter(|t| t.state.is_unconfirmed())
            .map(|t| t.delta)
            .sum();
        prop_assert_eq!(c.balance().available, c.confirmed + unconfirmed);
        prop_assert_eq!(
            c.confirmed,
            upstream,
            "the cache follows the upstream's figures"
        );
        prop_assert!(
            rows.iter().all(|t| t.state != State::Sending),
            "a claimed row was left in flight"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ledger_rules_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..40), start in 0i64..1000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check_sequence(ops, start))?;
    }
}
