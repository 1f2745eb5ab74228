//! Returns: the cumulative take-back and give-back of a sale, the shortfall when the points
//! are gone, and the smaller take-back that follows one the upstream refused.

use rusqlite::{Connection, OptionalExtension, params};

use super::sales::*;
use super::{StoreError, customer_by_id, txn_by_id, txn_by_seq};
use crate::ledger::{self, AppliedRule, State};

pub(super) fn accept_return_in(
    c: &Connection,
    new: &NewReturn,
    ctx: &SaleCtx,
) -> Result<ReturnOutcome, StoreError> {
    let request = canonical(new)?;
    if let Some(existing) = return_row(c, &new.return_id)? {
        if existing.request == request {
            let sale = sale_row(c, &existing.sale_id)?
                .ok_or_else(|| StoreError::Batch("return without sale".into()))?;
            let customer = customer_by_id(c, &sale.customer_id)?
                .ok_or_else(|| StoreError::Batch("sale without customer".into()))?;
            let ret = return_record(c, existing)?;
            return Ok(ReturnOutcome::Replay { ret, customer });
        }
        return Ok(ReturnOutcome::Conflict { existing });
    }
    let txn_id = return_txn_id(&new.return_id);
    if txn_by_id(c, &txn_id)?.is_some() {
        return Ok(ReturnOutcome::IdTaken { id: txn_id });
    }
    let sale_id = match (&new.sale_id, &new.receipt) {
        (Some(id), _) => id.clone(),
        (None, Some(receipt)) => {
            // A sale this store never recorded: its figures come from the receipt, and it is
            // recorded (not pushed: it reached the upstream where it was sold) to be returned.
            let id = format!("receipt:{}", new.return_id);
            if sale_row(c, &id)?.is_some() {
                return Ok(ReturnOutcome::IdTaken { id });
            }
            if customer_by_id(c, &receipt.customer_id)?.is_none() {
                return Ok(ReturnOutcome::UnknownCustomer);
            }
            let amount = new.amount.unwrap_or(0);
            let rules = vec![AppliedRule {
                rule: "receipt".into(),
                detail: format!(
                    "figures from the receipt of a sale not recorded here: {amount} yen, {} points earned, {} used",
                    receipt.points_earned, receipt.points_used
                ),
            }];
            c.prepare_cached(&format!(
                "INSERT INTO sales({SALE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 1, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                id,
                request,
                receipt.customer_id,
                amount,
                receipt.points_used,
                receipt.points_earned,
                receipt.points_earned - receipt.points_used,
                serde_json::to_string(&rules)?,
                new.register_id,
                new.staff_id,
                ctx.token_name,
                ctx.now_ms,
            ])?;
            id
        }
        (None, None) => return Ok(ReturnOutcome::UnknownSale),
    };
    let Some(sale) = sale_record(c, &sale_id)? else {
        return Ok(ReturnOutcome::UnknownSale);
    };
    let state = sale.state();
    if matches!(state, State::Rejected | State::Discarded) {
        return Ok(ReturnOutcome::SaleNotCounted { state });
    }
    let returnable = sale.returnable_amount();
    let amount = new.amount.unwrap_or(returnable);
    if amount <= 0 || amount > returnable {
        return Ok(ReturnOutcome::Exceeds {
            returnable,
            asked: amount,
        });
    }
    let s = &sale.sale;
    let split = ledger::return_split(
        s.amount,
        s.points_earned,
        s.points_used,
        sale.returned_amount(),
        amount,
    );
    let (taken, shortfall) = ledger::settle_take_back(
        split.take_due,
        split.give_back,
        sale.customer.balance().available,
        ctx.returns.allow_negative_balance,
    );
    let net = split.give_back - taken;
    let outbox = if net != 0 {
        insert_txn(
            c,
            &txn_id,
            &request,
            &s.customer_id,
            "return",
            net,
            amount,
            new.register_id.as_deref(),
            new.staff_id.as_deref(),
            &ctx.token_name,
            ctx.now_ms,
        )?;
        Some(txn_id)
    } else {
        None
    };
    c.prepare_cached(&format!(
        "INSERT INTO returns({RETURN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        new.return_id,
        request,
        sale_id,
        amount,
        taken,
        split.give_back,
        shortfall,
        net,
        outbox,
        new.register_id,
        new.staff_id,
        ctx.token_name,
        ctx.now_ms,
    ])?;
    let ret = return_record(
        c,
        return_row(c, &new.return_id)?.ok_or(StoreError::RowMissing("return"))?,
    )?;
    let customer = customer_by_id(c, &s.customer_id)?.ok_or(StoreError::RowMissing("customer"))?;
    Ok(ReturnOutcome::Created { ret, customer })
}

/// Called in the same transaction that marks an outbox row rejected. A return's take-back the
/// upstream refused (for lack of points: any refusal but an unknown customer) is not a lost
/// return: a smaller take-back follows — what the upstream had before the send, as far as the
/// evidence says, or half when the evidence claimed enough — and the difference is recorded
/// as the return's shortfall. Each follow-up is strictly smaller, so this ends.
pub(super) fn after_rejected(c: &Connection, seq: i64, now_ms: i64) -> Result<(), StoreError> {
    let t = txn_by_seq(c, seq)?;
    if t.kind != crate::ledger::OutboxKind::Return || t.delta >= 0 {
        return Ok(());
    }
    let status = t
        .upstream_result
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|v| v["status"].as_i64());
    if status == Some(404) {
        return Ok(());
    }
    let Some(ret) = c
        .prepare_cached(&format!(
            "SELECT {RETURN_COLS} FROM returns INDEXED BY returns_txn WHERE txn_id = ?1"
        ))?
        .query_row([&t.txn_id], return_from_row)
        .optional()?
    else {
        return Ok(());
    };
    let owed = -t.delta;
    let had = t.before_balance.unwrap_or(0).max(0);
    let take = if had < owed { had } else { owed / 2 };
    let short = owed - take;
    let next = if take > 0 {
        let id = format!("{}:{seq}", return_txn_id(&ret.return_id));
        insert_txn(
            c,
            &id,
            &ret.request,
            &t.customer_id,
            "return",
            -take,
            ret.amount,
            ret.register_id.as_deref(),
            ret.staff_id.as_deref(),
            &ret.token_name,
            now_ms,
        )?;
        Some(id)
    } else {
        None
    };
    c.prepare_cached(
        "UPDATE returns SET points_taken_back = points_taken_back - ?2, shortfall = shortfall + ?2, \
           net_delta = net_delta + ?2, txn_id = ?3 WHERE return_id = ?1",
    )?
    .execute(params![ret.return_id, short, next])?;
    tracing::warn!(return_id = %ret.return_id, refused = owed, follow_up = take, shortfall = short,
        "the upstream refused a return's take-back; taking back what it has, the rest is shortfall");
    Ok(())
}
