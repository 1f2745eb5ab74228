//! Property tests of the ledger rules on the real store: for any sequence of earns, redeems,
//! adjusts, replays and upstream outcomes, `available = confirmed + pending`, a redeem never
//! drives `available` below zero, and replays are idempotent. For sales and returns (DESIGN.md
//! §10): for any rules, sale and sequence of partial returns, replays and spends in between,
//! the cumulative rule holds, taken back ≤ earned and given back ≤ used, replays are the first
//! answer, no answer shows `available < 0` unless negative balances are allowed, and a full
//! return right after a sale restores the pre-sale balance exactly.

use std::collections::HashMap;

use pointsd::config::{EarnConfig, OfflineConfig};
use pointsd::ledger::{
    EarnBasis, Kind, NewTxn, ReturnsConfig, Rounding, SaleRules, SpendConfig, State, StoreDay,
    TierConfig, Weekday,
};
use pointsd::store::{
    AcceptCtx, AcceptOutcome, NewReturn, NewSale, ReturnOutcome, SaleCtx, SaleOutcome, Store,
    TxnFilter,
};
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

// ----- sales and returns -----

#[derive(Debug, Clone)]
enum SaleOp {
    /// A return of the sale: part of it (`Some`) or all that is left; `key` picks its id from a
    /// small range, so an id comes again (a replay of its first body).
    Return { key: u8, amount: Option<i64> },
    /// Another sale for the customer using this share of the available points (over 1: more
    /// than there is, refused): spends what later returns would take back.
    Spend { share: f64 },
    /// The sale sent again with the same id and body.
    ReplaySale,
}

fn sale_op(amount: i64) -> impl Strategy<Value = SaleOp> {
    prop_oneof![
        4 => (0u8..5, proptest::option::weighted(0.8, 1..=amount))
            .prop_map(|(key, amount)| SaleOp::Return { key, amount }),
        2 => (0.0f64..1.2).prop_map(|share| SaleOp::Spend { share }),
        1 => Just(SaleOp::ReplaySale),
    ]
}

fn sale_rules() -> impl Strategy<Value = SaleRules> {
    (
        1i64..500,
        prop_oneof![
            Just(Rounding::Floor),
            Just(Rounding::Round),
            Just(Rounding::Ceil)
        ],
        prop_oneof![Just(EarnBasis::AfterPoints), Just(EarnBasis::FullAmount)],
        1.0f64..3.0,
    )
        .prop_map(|(yen_per_point, rounding, basis, multiplier)| SaleRules {
            earn: EarnConfig {
                yen_per_point,
                rounding,
                basis,
                campaigns: Vec::new(),
                ..EarnConfig::default()
            },
            spend: SpendConfig::default(),
            tiers: vec![TierConfig {
                name: "Gold".into(),
                min_points: 1000,
                earn_multiplier: multiplier,
            }],
            register_grants: false,
        })
}

fn sale_ctx(rules: &SaleRules, allow_negative_balance: bool) -> SaleCtx {
    SaleCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        day: StoreDay {
            date: "2026-11-23".into(),
            weekday: Weekday::Mon,
        },
        online: true,
        token_name: "prop".into(),
        rules: rules.clone(),
        offline: OfflineConfig::default(),
        returns: ReturnsConfig {
            allow_negative_balance,
        },
        earn_cap: None,
    }
}

fn new_sale(id: &str, amount: i64, points_used: i64) -> NewSale {
    NewSale {
        sale_id: id.into(),
        customer_id: "c".into(),
        amount,
        points_used,
        register_id: None,
        staff_id: None,
    }
}

fn new_return(id: &str, amount: Option<i64>) -> NewReturn {
    NewReturn {
        return_id: id.into(),
        sale_id: Some("s".into()),
        amount,
        receipt: None,
        register_id: None,
        staff_id: None,
    }
}

async fn sale_store(start: i64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let b = UpstreamBalance {
        customer_id: "c".into(),
        point: start,
        expires_at: None,
        updated_at: None,
    };
    store.upsert_balances(vec![b], 0, 1).await.unwrap();
    (dir, store)
}

async fn available(store: &Store) -> i64 {
    store
        .customer("c")
        .await
        .unwrap()
        .unwrap()
        .balance()
        .available
}

#[allow(clippy::too_many_arguments)]
async fn check_sale_sequence(
    rules: SaleRules,
    allow_negative: bool,
    start: i64,
    amount: i64,
    used_share: f64,
    ops: Vec<SaleOp>,
) -> Result<(), TestCaseError> {
    let (_dir, store) = sale_store(start).await;
    let ctx = sale_ctx(&rules, allow_negative);
    let used = ((start.min(amount) as f64) * used_share).floor() as i64;
    let SaleOutcome::Created(first) = store
        .accept_sale(new_sale("s", amount, used), ctx.clone())
        .await
        .unwrap()
    else {
        return Err(TestCaseError::fail("a sale within the balance is accepted"));
    };
    let (earned, used) = (first.sale.points_earned, first.sale.points_used);
    prop_assert_eq!(first.sale.net_delta, earned - used);
    prop_assert_eq!(first.customer.balance().available, start - used + earned);
    prop_assert!(first.customer.balance().available >= 0);

    // What each return id was first sent with, and the figures it got.
    let mut first_returns: HashMap<u8, (Option<i64>, i64, i64, i64, i64)> = HashMap::new();
    let mut returned = 0i64;
    let (mut taken, mut given, mut short) = (0i64, 0i64, 0i64);
    let mut spends = 0;
    for op in ops {
        let before = available(&store).await;
        match op {
            SaleOp::ReplaySale => {
                let out = store
                    .accept_sale(new_sale("s", amount, used), ctx.clone())
                    .await
                    .unwrap();
                let SaleOutcome::Replay(r) = out else {
                    return Err(TestCaseError::fail("the same sale again is a replay"));
                };
                prop_assert_eq!((r.sale.points_used, r.sale.points_earned), (used, earned));
                prop_assert_eq!(available(&store).await, before, "a replay changes nothing");
            }
            SaleOp::Spend { share } => {
                let points = ((before.max(0) as f64 * share).ceil() as i64).max(1);
                spends += 1;
                let id = format!("spend-{spends}");
                let out = store
                    // Paid wholly with points, so it earns little or nothing back.
                    .accept_sale(new_sale(&id, points, points), ctx.clone())
                    .await
                    .unwrap();
                match out {
                    SaleOutcome::Created(r) => {
                        prop_assert!(points <= before, "spent {points} of {before}");
                        prop_assert!(r.customer.balance().available >= 0);
                    }
                    SaleOutcome::Refused(_) => {
                        prop_assert!(points > before.max(0), "refused {points} of {before}");
                        prop_assert_eq!(
                            available(&store).await,
                            before,
                            "a refusal changes nothing"
                        );
                    }
                    other => return Err(TestCaseError::fail(format!("spend: {other:?}"))),
                }
            }
            SaleOp::Return { key, amount: asked } => {
                let id = format!("r{key}");
                let replay = first_returns.get(&key).copied();
                let body_amount = replay.map_or(asked, |f| f.0);
                let out = store
                    .accept_return(new_return(&id, body_amount), ctx.clone())
                    .await
                    .unwrap();
                match (out, replay) {
                    (ReturnOutcome::Replay { ret, customer }, Some(f)) => {
                        let x = ret.ret;
                        prop_assert_eq!(
                            (
                                x.amount,
                                x.points_taken_back,
                                x.points_given_back,
                                x.shortfall
                            ),
                            (f.1, f.2, f.3, f.4),
                            "a replay is the first answer"
                        );
                        prop_assert_eq!(customer.balance().available, before);
                    }
                    (ReturnOutcome::Created { ret, customer }, None) => {
                        let x = ret.ret;
                        returned += x.amount;
                        taken += x.points_taken_back;
                        given += x.points_given_back;
                        short += x.shortfall;
                        first_returns.insert(
                            key,
                            (
                                body_amount,
                                x.amount,
                                x.points_taken_back,
                                x.points_given_back,
                                x.shortfall,
                            ),
                        );
                        let after = customer.balance().available;
                        prop_assert_eq!(after, before + x.points_given_back - x.points_taken_back);
                        prop_assert_eq!(x.net_delta, x.points_given_back - x.points_taken_back);
                        if !allow_negative {
                            prop_assert!(after >= 0, "available {after} after a return");
                        } else {
                            prop_assert_eq!(x.shortfall, 0);
                        }
                    }
                    (ReturnOutcome::Exceeds { returnable, .. }, None) => {
                        prop_assert_eq!(returnable, amount - returned);
                        prop_assert!(body_amount.map_or(returnable == 0, |a| a > returnable));
                        prop_assert_eq!(
                            available(&store).await,
                            before,
                            "a refusal changes nothing"
                        );
                    }
                    (other, _) => {
                        return Err(TestCaseError::fail(format!("return {id}: {other:?}")));
                    }
                }
                // The cumulative rule, after every return.
                let due = (earned as i128 * returned as i128 / amount as i128) as i64;
                let back = (used as i128 * returned as i128 / amount as i128) as i64;
                prop_assert_eq!(taken + short, due, "taken back + shortfall");
                prop_assert_eq!(given, back, "given back");
                prop_assert!(taken <= earned && given <= used);
            }
        }
        let now = available(&store).await;
        if !allow_negative {
            prop_assert!(now >= 0, "available {now}");
        }
    }
    if returned == amount {
        prop_assert_eq!(
            (taken + short, given),
            (earned, used),
            "a full return reverses the sale"
        );
    }
    Ok(())
}

async fn check_full_return(
    rules: SaleRules,
    allow_negative: bool,
    start: i64,
    amount: i64,
    used_share: f64,
) -> Result<(), TestCaseError> {
    let (_dir, store) = sale_store(start).await;
    let ctx = sale_ctx(&rules, allow_negative);
    let used = ((start.min(amount) as f64) * used_share).floor() as i64;
    let out = store
        .accept_sale(new_sale("s", amount, used), ctx.clone())
        .await
        .unwrap();
    prop_assert!(matches!(out, SaleOutcome::Created(_)), "{out:?}");
    let out = store
        .accept_return(new_return("r", None), ctx.clone())
        .await
        .unwrap();
    let ReturnOutcome::Created { ret, customer } = out else {
        return Err(TestCaseError::fail(format!("{out:?}")));
    };
    prop_assert_eq!(ret.ret.shortfall, 0, "nothing was spent in between");
    prop_assert_eq!(
        customer.balance().available,
        start,
        "the pre-sale balance exactly"
    );
    prop_assert_eq!(available(&store).await, start);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sales_and_returns_follow_the_rules_for_any_sequence(
        rules in sale_rules(),
        allow_negative in any::<bool>(),
        start in 0i64..6000,
        (amount, ops) in (1i64..50_000).prop_flat_map(|a| (Just(a), proptest::collection::vec(sale_op(a), 1..16))),
        used_share in 0.0f64..=1.0,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check_sale_sequence(rules, allow_negative, start, amount, used_share, ops))?;
    }

    #[test]
    fn a_full_return_right_after_a_sale_restores_the_balance(
        rules in sale_rules(),
        allow_negative in any::<bool>(),
        start in 0i64..6000,
        amount in 1i64..50_000,
        used_share in 0.0f64..=1.0,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check_full_return(rules, allow_negative, start, amount, used_share))?;
    }
}
