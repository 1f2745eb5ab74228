//! Unit tests of sales and returns in the store.

use super::*;
use crate::ledger::{SpendConfig, Weekday};
use crate::upstream::UpstreamBalance;

fn ctx(online: bool) -> SaleCtx {
    SaleCtx {
        now_ms: 1_000,
        today: "2026-11-23".into(),
        day: StoreDay {
            date: "2026-11-23".into(),
            weekday: Weekday::Mon,
        },
        online,
        token_name: "t".into(),
        rules: SaleRules {
            spend: SpendConfig::default(),
            ..SaleRules::default()
        },
        offline: OfflineConfig::default(),
        returns: ReturnsConfig::default(),
        earn_cap: None,
    }
}

fn sale(id: &str, amount: i64, used: i64) -> NewSale {
    NewSale {
        sale_id: id.into(),
        customer_id: "c1".into(),
        amount,
        points_used: used,
        register_id: None,
        staff_id: None,
    }
}

fn ret(id: &str, sale_id: &str, amount: Option<i64>) -> NewReturn {
    NewReturn {
        return_id: id.into(),
        sale_id: Some(sale_id.into()),
        amount,
        receipt: None,
        register_id: None,
        staff_id: None,
    }
}

async fn store_with(dir: &std::path::Path, confirmed: i64) -> Store {
    let s = Store::open(&dir.join("t.db")).unwrap();
    s.upsert_balances(
        vec![UpstreamBalance {
            customer_id: "c1".into(),
            point: confirmed,
            expires_at: None,
            updated_at: None,
        }],
        0,
        1,
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn a_sale_is_one_outbox_row_and_returns_reverse_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), 500).await;
    let SaleOutcome::Created(r) = s
        .accept_sale(sale("s1", 1000, 100), ctx(true))
        .await
        .unwrap()
    else {
        panic!()
    };
    // 900 yen after points earns 9; net −91 in one row.
    assert_eq!((r.sale.points_earned, r.sale.net_delta), (9, -91));
    assert_eq!(r.txn.as_ref().unwrap().delta, -91);
    assert_eq!(
        r.txn.as_ref().unwrap().kind,
        crate::ledger::OutboxKind::Sale
    );
    assert_eq!(r.customer.balance().available, 409);
    assert_eq!(s.queue_stats().await.unwrap().pending, 1);
    assert!(matches!(
        s.accept_sale(sale("s1", 1000, 100), ctx(true))
            .await
            .unwrap(),
        SaleOutcome::Replay(_)
    ));
    assert!(matches!(
        s.accept_sale(sale("s1", 1000, 0), ctx(true)).await.unwrap(),
        SaleOutcome::Conflict { .. }
    ));
    // Returned in two parts; the whole reverses the sale.
    let mut net = 0;
    for (id, amount) in [("r1", Some(400)), ("r2", None)] {
        let ReturnOutcome::Created { ret: rr, .. } = s
            .accept_return(ret(id, "s1", amount), ctx(false))
            .await
            .unwrap()
        else {
            panic!()
        };
        net += rr.ret.net_delta;
    }
    assert_eq!(net, 91);
    let rec = s.sale("s1").await.unwrap().unwrap();
    assert_eq!(rec.returnable_amount(), 0);
    assert_eq!(rec.customer.balance().available, 500);
    assert!(matches!(
        s.accept_return(ret("r3", "s1", Some(1)), ctx(true))
            .await
            .unwrap(),
        ReturnOutcome::Exceeds { returnable: 0, .. }
    ));
    assert!(matches!(
        s.accept_return(ret("r4", "nope", None), ctx(true))
            .await
            .unwrap(),
        ReturnOutcome::UnknownSale
    ));
}

#[tokio::test]
async fn a_zero_net_sale_writes_no_outbox_row_and_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), 50).await;
    // 1100 yen with 10 points used: 1090 yen earns 10, so the net is zero.
    let SaleOutcome::Created(r) = s.accept_sale(sale("z", 1100, 10), ctx(true)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((r.sale.net_delta, r.txn.is_none()), (0, true));
    assert_eq!(r.state(), State::Applied);
    assert!(matches!(
        s.accept_sale(sale("big", 1000, 51), ctx(true))
            .await
            .unwrap(),
        SaleOutcome::Refused(PriceRefusal::Redeem(RedeemRefusal::Insufficient { .. }))
    ));
    assert!(s.sale("big").await.unwrap().is_none());
    assert_eq!(s.queue_stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_refused_take_back_is_followed_by_what_the_upstream_has() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), 0).await;
    let SaleOutcome::Created(_) = s.accept_sale(sale("s", 5000, 0), ctx(true)).await.unwrap()
    else {
        panic!()
    };
    let ReturnOutcome::Created { ret: r, .. } = s
        .accept_return(ret("r", "s", None), ctx(true))
        .await
        .unwrap()
    else {
        panic!()
    };
    // Locally 50 are available (the sale is pending), so all 50 are taken back.
    assert_eq!((r.ret.points_taken_back, r.ret.shortfall), (50, 0));
    let row = r.txn.unwrap();
    // Pretend the upstream had only 20 when it refused the take-back.
    s.write(move |c| {
        c.execute(
            "UPDATE txns SET before_balance = 20 WHERE seq = ?1",
            [row.seq],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    s.mark_rejected(
        row.seq,
        "insufficient".into(),
        r#"{"status":400}"#.into(),
        2_000,
    )
    .await
    .unwrap();
    let (rr, _) = s.return_of("r").await.unwrap().unwrap();
    assert_eq!(
        (rr.ret.points_taken_back, rr.ret.shortfall, rr.ret.net_delta),
        (20, 30, -20)
    );
    let follow = rr.txn.unwrap();
    assert_eq!((follow.delta, follow.state), (-20, State::Pending));
    let st = s.sales_stats().await.unwrap();
    assert_eq!((st.shortfall_points, st.returns_with_shortfall), (30, 1));
}
