//! The guard under every published speed of the store (issue 22): the hot paths run from
//! SQLite's statement cache, never re-prepared and never compiled again after the first round.
//! Counted by SQLite itself, so no machine load can make this test pass or fail by chance.

use super::*;
use crate::ledger::{Kind, SpendConfig, StoreDay, Weekday};
use crate::upstream::UpstreamBalance;

const CUSTOMERS: usize = 400;
const ROUNDS: usize = 300;

fn accept_ctx(now_ms: i64) -> AcceptCtx {
    AcceptCtx {
        now_ms,
        today: "2026-11-23".into(),
        online: false,
        token_name: "reg".into(),
        earn: EarnConfig::default(),
        offline: OfflineConfig::default(),
    }
}

fn sale_ctx(now_ms: i64) -> SaleCtx {
    SaleCtx {
        now_ms,
        today: "2026-11-23".into(),
        day: StoreDay {
            date: "2026-11-23".into(),
            weekday: Weekday::Mon,
        },
        online: false,
        token_name: "reg".into(),
        rules: ledger::SaleRules {
            spend: SpendConfig::default(),
            ..ledger::SaleRules::default()
        },
        offline: OfflineConfig::default(),
        returns: ledger::ReturnsConfig::default(),
        earn_cap: None,
    }
}

fn txn(id: String, customer: &str, kind: Kind, points: i64) -> NewTxn {
    NewTxn {
        txn_id: id,
        customer_id: customer.into(),
        kind,
        points: Some(points),
        purchase_amount: None,
        reason: None,
        register_id: Some("r1".into()),
        staff_id: None,
    }
}

/// One round of everything a register and the sync workers do, each with values of its own.
async fn one_round(s: &Store, round: usize) {
    let now = 10_000 + round as i64 * 1_000;
    let n = round % CUSTOMERS;
    let id = format!("c{n}");
    // Look-ups by id, member code and barcode (the pending sum is part of each).
    let c = s.customer(&id).await.unwrap().expect("known customer");
    assert_eq!(c.customer_id, id);
    let by_code = s
        .customer_by(LookupColumn::Code, &format!("M{n:06}"))
        .await
        .unwrap();
    assert_eq!(by_code.map(|c| c.customer_id), Some(id.clone()));
    let by_barcode = s
        .customer_by(LookupColumn::Barcode, &format!("29{n:011}"))
        .await
        .unwrap();
    assert_eq!(by_barcode.map(|c| c.customer_id), Some(id.clone()));
    // An earn and a redeem.
    let earn = s
        .accept(
            txn(format!("e{round}"), &id, Kind::Earn, 1 + round as i64 % 50),
            accept_ctx(now),
        )
        .await
        .unwrap();
    assert!(matches!(earn, AcceptOutcome::Created { .. }), "{earn:?}");
    let redeem = s
        .accept(
            txn(format!("r{round}"), &id, Kind::Redeem, 1),
            accept_ctx(now),
        )
        .await
        .unwrap();
    assert!(
        matches!(redeem, AcceptOutcome::Created { .. }),
        "{redeem:?}"
    );
    // A sale using a point, and a partial return of it.
    let sale = s
        .accept_sale(
            NewSale {
                sale_id: format!("S{round}"),
                customer_id: id.clone(),
                amount: 1_000 + round as i64,
                points_used: 1,
                register_id: Some("r1".into()),
                staff_id: None,
            },
            sale_ctx(now),
        )
        .await
        .unwrap();
    assert!(matches!(sale, SaleOutcome::Created(_)), "{sale:?}");
    let ret = s
        .accept_return(
            NewReturn {
                return_id: format!("R{round}"),
                sale_id: Some(format!("S{round}")),
                amount: Some(500),
                receipt: None,
                register_id: Some("r1".into()),
                staff_id: None,
            },
            sale_ctx(now),
        )
        .await
        .unwrap();
    assert!(matches!(ret, ReturnOutcome::Created { .. }), "{ret:?}");
    // The change feed marks a customer, the re-read queue lists it, a send's answer clears it.
    // Between the pulled balance (09:00) and the send's answer (10:00), so the answer clears it.
    let stamp_ms =
        crate::clock::parse_stamp("2026-11-23T09:30:00+09:00").unwrap() + round as i64 * 1_000;
    s.mark_changed(
        vec![SeenChange {
            customer_id: id.clone(),
            stamp: format!("stamp-{round}"),
            stamp_ms,
            strictly_newer: false,
        }],
        now,
    )
    .await
    .unwrap();
    assert!(!s.marked_customers(10).await.unwrap().is_empty());
    let _ = s.has_unsettled(&id).await.unwrap();
    // The push worker's polls, the feed's watermark, status.
    assert!(s.has_open().await.unwrap());
    assert!(s.next_due_at().await.unwrap().is_some());
    s.set_meta(Meta::FeedWatermark, format!("wm-{round}"))
        .await
        .unwrap();
    assert_eq!(
        s.meta(Meta::FeedWatermark).await.unwrap(),
        Some(format!("wm-{round}"))
    );
    assert!(s.queue_stats().await.unwrap().pending > 0);
    let _ = s.apply_counter().await.unwrap();
    // The push worker claims what is due and completes it.
    let claimed = s.claim_due(now, 8, 60_000).await.unwrap();
    assert!(!claimed.is_empty(), "round {round}: nothing due");
    for t in claimed {
        let balance = 1_000 + t.delta;
        s.mark_applied(
            t.seq,
            balance,
            Some("2026-11-23T10:00:00+09:00".into()),
            now,
            None,
            Some(vec![format!("{}", 900_000 + t.seq)]),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn hot_statements_are_never_reprepared() {
    let dir = tempfile::tempdir().unwrap();
    let (s, prepares) = Store::open_counting_prepares(&dir.path().join("t.db")).unwrap();
    s.upsert_customers(
        (0..CUSTOMERS)
            .map(|n| UpstreamCustomer {
                customer_id: format!("c{n}"),
                code: Some(format!("M{n:06}")),
                barcode: Some(format!("29{n:011}")),
                name: None,
                updated_at: None,
            })
            .collect(),
    )
    .await
    .unwrap();
    s.upsert_balances(
        (0..CUSTOMERS)
            .map(|n| UpstreamBalance {
                customer_id: format!("c{n}"),
                point: 1_000,
                expires_at: None,
                updated_at: Some("2026-11-23T09:00:00+09:00".into()),
            })
            .collect(),
        0,
        1,
    )
    .await
    .unwrap();

    // The first round prepares every hot statement once; a second settles anything the first
    // took a different branch for.
    one_round(&s, 0).await;
    one_round(&s, 1).await;
    let compiles_warm = prepares.compiles();
    let seen_warm = prepares.seen();
    for round in 2..ROUNDS {
        one_round(&s, round).await;
    }

    let statements = s.live_statements().await.unwrap();
    let reprepared: Vec<String> = statements
        .iter()
        .filter(|st| st.reprepares > 0)
        .map(|st| {
            format!(
                "{} re-prepares in {} runs: {}",
                st.reprepares, st.runs, st.sql
            )
        })
        .collect();
    assert!(
        reprepared.is_empty(),
        "statements re-prepared (their plan depends on a bound value):\n{}",
        reprepared.join("\n")
    );
    let grown: Vec<String> = prepares
        .seen()
        .into_iter()
        .filter(|(k, v)| seen_warm.get(k) != Some(v))
        .map(|(k, v)| format!("{k}: {} → {v}", seen_warm.get(&k).copied().unwrap_or(0)))
        .collect();
    assert_eq!(
        prepares.compiles(),
        compiles_warm,
        "statements compiled after the warm-up (not served from the statement cache):\n{}",
        grown.join("\n")
    );
    // The hot statements really ran from the cache, many times each.
    let hot = statements
        .iter()
        .filter(|st| st.runs >= ROUNDS as i64 - 2)
        .count();
    assert!(
        hot >= 10,
        "only {hot} statements ran every round: {statements:#?}"
    );
}

/// The look-ups keep their indexes under the planner-stability guarantee: a plan that stops
/// depending on bound values must not fall back to scanning every customer.
#[tokio::test]
async fn lookups_use_their_indexes_with_stable_plans() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db")).unwrap();
    for (name, sql) in [
        ("by id", CUSTOMER_BY_ID),
        ("by code", CUSTOMER_BY_CODE),
        ("by barcode", CUSTOMER_BY_BARCODE),
    ] {
        let plan: Vec<String> = s
            .read(move |c| {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                st.query_map(["x"], |r| r.get::<_, String>(3))?.collect()
            })
            .await
            .unwrap();
        let text = plan.join("\n");
        assert!(
            !text.contains("SCAN c"),
            "the look-up {name} scans the customers:\n{text}"
        );
        eprintln!("{name}:\n{text}");
    }
}
