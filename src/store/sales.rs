//! Sales and returns (DESIGN.md §10; schema 7): each is one local write, idempotent by its id,
//! that records its split (points used and earned; taken back, given back and the shortfall)
//! and, when its net delta is not zero, one outbox row carrying that net delta upstream.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::returns::accept_return_in;
use super::{CustomerRow, Store, StoreError, TxnRow, customer_by_id, txn_by_id, txn_by_seq};
use crate::ledger::{
    self, AppliedRule, OfflineConfig, RedeemRefusal, ReturnsConfig, SaleQuote, SaleRules,
    SpendRefusal, State, StoreDay,
};

/// A sale request that passed validation; its canonical JSON is what replays are compared to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSale {
    pub sale_id: String,
    pub customer_id: String,
    pub amount: i64,
    pub points_used: i64,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
}

/// Figures from a receipt, for a return of a sale this store never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub customer_id: String,
    pub points_earned: i64,
    pub points_used: i64,
}

/// A return request that passed validation. `amount` as sent (none: all still returnable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReturn {
    pub return_id: String,
    pub sale_id: Option<String>,
    pub amount: Option<i64>,
    pub receipt: Option<Receipt>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
}

pub(super) fn canonical<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

/// What pricing a sale needs besides the request.
#[derive(Debug, Clone)]
pub struct SaleCtx {
    pub now_ms: i64,
    /// Today where the upstream counts expiry (JST), `YYYY-MM-DD`.
    pub today: String,
    /// The store's day, for campaigns.
    pub day: StoreDay,
    pub online: bool,
    pub token_name: String,
    pub rules: SaleRules,
    pub offline: OfflineConfig,
    pub returns: ReturnsConfig,
    /// The most points this caller's sale may earn (a register token's
    /// `api.register_max_earn_points`); `None` for a manager.
    pub earn_cap: Option<i64>,
}

/// Why a sale (or its quote) is refused before anything is written.
#[derive(Debug, Clone)]
pub enum PriceRefusal {
    /// Against a spend rule (422, naming the rule).
    Spend(SpendRefusal),
    /// Not enough points, or the offline policy (409, as for a redeem).
    Redeem(RedeemRefusal),
    /// The sale would earn more than the caller's cap (`SaleCtx::earn_cap`).
    EarnCap { earned: i64, cap: i64 },
    /// The sale would earn more than one transaction may carry (`ledger::MAX_POINTS`).
    TooManyPoints { earned: i64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct SaleRow {
    pub sale_id: String,
    pub request: String,
    pub customer_id: String,
    pub amount: i64,
    pub points_used: i64,
    pub points_earned: i64,
    pub net_delta: i64,
    pub applied_rules: Vec<AppliedRule>,
    pub txn_id: Option<String>,
    pub external: bool,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
    pub token_name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReturnRow {
    pub return_id: String,
    pub request: String,
    pub sale_id: String,
    pub amount: i64,
    pub points_taken_back: i64,
    pub points_given_back: i64,
    pub shortfall: i64,
    pub net_delta: i64,
    pub txn_id: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
    pub token_name: String,
    pub created_at: i64,
}

/// A return with its current outbox row.
#[derive(Debug, Clone)]
pub struct ReturnRecord {
    pub ret: ReturnRow,
    pub txn: Option<TxnRow>,
}

impl ReturnRecord {
    /// Where its net delta is: its outbox row's state, or applied when there was nothing to send.
    pub fn state(&self) -> State {
        self.txn.as_ref().map_or(State::Applied, |t| t.state)
    }
}

/// A sale with its outbox row, its returns and its customer as read together.
#[derive(Debug, Clone)]
pub struct SaleRecord {
    pub sale: SaleRow,
    pub txn: Option<TxnRow>,
    pub returns: Vec<ReturnRecord>,
    pub customer: CustomerRow,
}

impl SaleRecord {
    pub fn state(&self) -> State {
        self.txn.as_ref().map_or(State::Applied, |t| t.state)
    }
    pub fn returned_amount(&self) -> i64 {
        self.returns.iter().map(|r| r.ret.amount).sum()
    }
    pub fn returnable_amount(&self) -> i64 {
        self.sale.amount - self.returned_amount()
    }
}

#[derive(Debug)]
pub enum SaleOutcome {
    Created(SaleRecord),
    /// The same id with the same body was seen before.
    Replay(SaleRecord),
    /// The same id with a different body.
    Conflict {
        existing: SaleRow,
    },
    /// The id's outbox name is held by an ordinary transaction.
    IdTaken {
        txn_id: String,
    },
    UnknownCustomer,
    Refused(PriceRefusal),
}

#[derive(Debug)]
pub enum ReturnOutcome {
    Created {
        ret: ReturnRecord,
        customer: CustomerRow,
    },
    Replay {
        ret: ReturnRecord,
        customer: CustomerRow,
    },
    Conflict {
        existing: ReturnRow,
    },
    IdTaken {
        id: String,
    },
    UnknownSale,
    UnknownCustomer,
    /// More than is still returnable (`returnable` yen).
    Exceeds {
        returnable: i64,
        asked: i64,
    },
    /// The sale's own delta does not count (refused upstream or discarded).
    SaleNotCounted {
        state: State,
    },
}

/// The sale or the return an outbox row of kind `sale` or `return` carries: where its split
/// is kept (the outbox row has only the net delta).
#[derive(Debug, Clone)]
pub enum TxnSplit {
    Sale(SaleRow),
    Return(ReturnRow),
}

/// The split behind one outbox row, if it is a sale's or a return's. A sale's row is named
/// after its sale; a return's rows (a refused take-back is followed by a smaller one) all carry
/// the return's canonical request, which names it.
pub(super) fn split_of(c: &Connection, t: &TxnRow) -> rusqlite::Result<Option<TxnSplit>> {
    use crate::ledger::OutboxKind;
    match t.kind {
        OutboxKind::Sale => {
            let Some(id) = t.txn_id.strip_prefix("sale:") else {
                return Ok(None);
            };
            Ok(sale_row(c, id)?.map(TxnSplit::Sale))
        }
        OutboxKind::Return => {
            let Ok(req) = serde_json::from_str::<NewReturn>(&t.request) else {
                return Ok(None);
            };
            Ok(return_row(c, &req.return_id)?.map(TxnSplit::Return))
        }
        _ => Ok(None),
    }
}

/// Totals for `status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SalesStats {
    pub sales: i64,
    /// Over this store's own sales (not receipts recorded for returns).
    pub points_used: i64,
    pub points_earned: i64,
    pub returns: i64,
    pub points_taken_back: i64,
    pub points_given_back: i64,
    /// Earned points returns could not take back (summed over all returns).
    pub shortfall_points: i64,
    pub returns_with_shortfall: i64,
}

pub(super) const SALE_COLS: &str = "sale_id, request, customer_id, amount, points_used, points_earned, \
    net_delta, applied_rules, txn_id, external, register_id, staff_id, token_name, created_at";
pub(super) const RETURN_COLS: &str = "return_id, request, sale_id, amount, points_taken_back, \
    points_given_back, shortfall, net_delta, txn_id, register_id, staff_id, token_name, created_at";

pub(super) fn sale_from_row(r: &Row<'_>) -> rusqlite::Result<SaleRow> {
    let rules: String = r.get(7)?;
    Ok(SaleRow {
        sale_id: r.get(0)?,
        request: r.get(1)?,
        customer_id: r.get(2)?,
        amount: r.get(3)?,
        points_used: r.get(4)?,
        points_earned: r.get(5)?,
        net_delta: r.get(6)?,
        applied_rules: serde_json::from_str(&rules).unwrap_or_default(),
        txn_id: r.get(8)?,
        external: r.get::<_, i64>(9)? != 0,
        register_id: r.get(10)?,
        staff_id: r.get(11)?,
        token_name: r.get(12)?,
        created_at: r.get(13)?,
    })
}

pub(super) fn return_from_row(r: &Row<'_>) -> rusqlite::Result<ReturnRow> {
    Ok(ReturnRow {
        return_id: r.get(0)?,
        request: r.get(1)?,
        sale_id: r.get(2)?,
        amount: r.get(3)?,
        points_taken_back: r.get(4)?,
        points_given_back: r.get(5)?,
        shortfall: r.get(6)?,
        net_delta: r.get(7)?,
        txn_id: r.get(8)?,
        register_id: r.get(9)?,
        staff_id: r.get(10)?,
        token_name: r.get(11)?,
        created_at: r.get(12)?,
    })
}

pub(super) fn sale_row(c: &Connection, id: &str) -> rusqlite::Result<Option<SaleRow>> {
    c.prepare_cached(&format!("SELECT {SALE_COLS} FROM sales WHERE sale_id = ?1"))?
        .query_row([id], sale_from_row)
        .optional()
}

pub(super) fn return_row(c: &Connection, id: &str) -> rusqlite::Result<Option<ReturnRow>> {
    c.prepare_cached(&format!(
        "SELECT {RETURN_COLS} FROM returns WHERE return_id = ?1"
    ))?
    .query_row([id], return_from_row)
    .optional()
}

pub(super) fn return_record(c: &Connection, ret: ReturnRow) -> rusqlite::Result<ReturnRecord> {
    let txn = match &ret.txn_id {
        Some(t) => txn_by_id(c, t)?,
        None => None,
    };
    Ok(ReturnRecord { ret, txn })
}

pub(super) fn sale_record(c: &Connection, id: &str) -> rusqlite::Result<Option<SaleRecord>> {
    let Some(sale) = sale_row(c, id)? else {
        return Ok(None);
    };
    let txn = match &sale.txn_id {
        Some(t) => txn_by_id(c, t)?,
        None => None,
    };
    let rows: Vec<ReturnRow> = c
        .prepare_cached(&format!(
            "SELECT {RETURN_COLS} FROM returns WHERE sale_id = ?1 ORDER BY created_at, return_id"
        ))?
        .query_map([id], return_from_row)?
        .collect::<Result<_, _>>()?;
    let returns = rows
        .into_iter()
        .map(|r| return_record(c, r))
        .collect::<Result<_, _>>()?;
    let Some(customer) = customer_by_id(c, &sale.customer_id)? else {
        return Ok(None);
    };
    Ok(Some(SaleRecord {
        sale,
        txn,
        returns,
        customer,
    }))
}

/// The figures of a sale for this customer now, or why it would be refused.
pub(super) fn price(
    customer: &CustomerRow,
    amount: i64,
    points_used: i64,
    ctx: &SaleCtx,
) -> Result<SaleQuote, PriceRefusal> {
    let balance = customer.balance();
    let tier = ledger::tier_config_for(balance.available, &ctx.rules.tiers);
    let quote = ledger::quote_sale(amount, points_used, &ctx.rules, tier, &ctx.day)
        .map_err(PriceRefusal::Spend)?;
    if quote.points_earned > ledger::MAX_POINTS {
        return Err(PriceRefusal::TooManyPoints {
            earned: quote.points_earned,
        });
    }
    if let Some(cap) = ctx.earn_cap
        && quote.points_earned > cap
    {
        return Err(PriceRefusal::EarnCap {
            earned: quote.points_earned,
            cap,
        });
    }
    if points_used > 0 {
        let expired = customer.expired(&ctx.today, ctx.now_ms);
        ledger::check_owner_expiry(
            points_used,
            balance,
            customer.owner_expired_at(ctx.now_ms).as_deref(),
        )
        .and_then(|()| {
            ledger::check_changed_elsewhere(
                customer.changed_elsewhere_at.as_deref(),
                ctx.online,
                &ctx.offline,
            )
        })
        .and_then(|()| {
            ledger::check_redeem(points_used, balance, expired, ctx.online, &ctx.offline)
        })
        .map_err(PriceRefusal::Redeem)?;
    }
    Ok(quote)
}

/// Inserts one outbox row; returns it.
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_txn(
    c: &Connection,
    txn_id: &str,
    request: &str,
    customer_id: &str,
    kind: &str,
    delta: i64,
    amount: i64,
    register_id: Option<&str>,
    staff_id: Option<&str>,
    token_name: &str,
    now_ms: i64,
) -> Result<TxnRow, StoreError> {
    c.prepare_cached(
        "INSERT INTO txns(txn_id, request, customer_id, kind, delta, purchase_amount, \
           register_id, staff_id, token_name, created_at, state, next_attempt_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?10, ?10)",
    )?
    .execute(params![
        txn_id,
        request,
        customer_id,
        kind,
        delta,
        amount,
        register_id,
        staff_id,
        token_name,
        now_ms
    ])?;
    Ok(txn_by_seq(c, c.last_insert_rowid())?)
}

/// The outbox row names of a sale and a return.
pub fn sale_txn_id(sale_id: &str) -> String {
    format!("sale:{sale_id}")
}
pub fn return_txn_id(return_id: &str) -> String {
    format!("return:{return_id}")
}

pub(super) fn accept_sale_in(
    c: &Connection,
    new: &NewSale,
    ctx: &SaleCtx,
) -> Result<SaleOutcome, StoreError> {
    let request = canonical(new)?;
    if let Some(existing) = sale_row(c, &new.sale_id)? {
        if existing.request == request {
            let rec = sale_record(c, &new.sale_id)?
                .ok_or_else(|| StoreError::Batch("sale without customer".into()))?;
            return Ok(SaleOutcome::Replay(rec));
        }
        return Ok(SaleOutcome::Conflict { existing });
    }
    let txn_id = sale_txn_id(&new.sale_id);
    if txn_by_id(c, &txn_id)?.is_some() {
        return Ok(SaleOutcome::IdTaken { txn_id });
    }
    let customer = match customer_by_id(c, &new.customer_id)? {
        Some(cu) => cu,
        // As for an earn: offline, a sale without points used for a customer the cache has
        // not seen may be kept when the store allows it; the upstream decides later.
        None if !ctx.online && ctx.offline.allow_unknown_customers && new.points_used == 0 => {
            c.prepare_cached("INSERT INTO customers(customer_id, local_only) VALUES (?1, 1)")?
                .execute([&new.customer_id])?;
            customer_by_id(c, &new.customer_id)?.ok_or(StoreError::RowMissing("customer"))?
        }
        None => return Ok(SaleOutcome::UnknownCustomer),
    };
    let q = match price(&customer, new.amount, new.points_used, ctx) {
        Ok(q) => q,
        Err(r) => return Ok(SaleOutcome::Refused(r)),
    };
    let outbox = if q.net_delta != 0 {
        insert_txn(
            c,
            &txn_id,
            &request,
            &new.customer_id,
            "sale",
            q.net_delta,
            new.amount,
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
        "INSERT INTO sales({SALE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        new.sale_id,
        request,
        new.customer_id,
        new.amount,
        q.points_used,
        q.points_earned,
        q.net_delta,
        serde_json::to_string(&q.applied_rules)?,
        outbox,
        new.register_id,
        new.staff_id,
        ctx.token_name,
        ctx.now_ms,
    ])?;
    let rec = sale_record(c, &new.sale_id)?.ok_or(StoreError::RowMissing("sale"))?;
    Ok(SaleOutcome::Created(rec))
}

/// A quote: the figures of a sale, or why it would be refused (`None`: unknown customer).
pub type QuoteOutcome = Option<(Result<SaleQuote, PriceRefusal>, CustomerRow)>;

impl Store {
    /// The figures a sale would have now, without writing anything.
    pub async fn quote_sale(
        &self,
        customer_id: &str,
        amount: i64,
        points_used: i64,
        ctx: &SaleCtx,
    ) -> Result<QuoteOutcome, StoreError> {
        let Some(customer) = self.customer(customer_id).await? else {
            return Ok(None);
        };
        Ok(Some((price(&customer, amount, points_used, ctx), customer)))
    }

    /// The sale rule, atomically: idempotency, customer, spend and balance checks, one outbox
    /// row for the net delta, the sale's row.
    pub async fn accept_sale(&self, new: NewSale, ctx: SaleCtx) -> Result<SaleOutcome, StoreError> {
        self.floor.admit()?;
        self.write(move |c| accept_sale_in(c, &new, &ctx)).await
    }

    /// The return rule, atomically: idempotency, the sale (or the receipt), what is still
    /// returnable, the cumulative split, the take-back policy, one outbox row, the return's row.
    pub async fn accept_return(
        &self,
        new: NewReturn,
        ctx: SaleCtx,
    ) -> Result<ReturnOutcome, StoreError> {
        self.floor.admit()?;
        self.write(move |c| accept_return_in(c, &new, &ctx)).await
    }

    pub async fn sale(&self, sale_id: &str) -> Result<Option<SaleRecord>, StoreError> {
        let id = sale_id.to_string();
        self.read(move |c| sale_record(c, &id)).await
    }

    /// A return with its current outbox row and the customer's balance.
    pub async fn return_of(
        &self,
        return_id: &str,
    ) -> Result<Option<(ReturnRecord, CustomerRow)>, StoreError> {
        let id = return_id.to_string();
        self.read(move |c| {
            let Some(ret) = return_row(c, &id)? else {
                return Ok(None);
            };
            let Some(sale) = sale_row(c, &ret.sale_id)? else {
                return Ok(None);
            };
            let Some(customer) = customer_by_id(c, &sale.customer_id)? else {
                return Ok(None);
            };
            Ok(Some((return_record(c, ret)?, customer)))
        })
        .await
    }

    /// The sale or return behind each row (`None` for earn, redeem, adjust), in order.
    pub async fn splits(&self, txns: Vec<TxnRow>) -> Result<Vec<Option<TxnSplit>>, StoreError> {
        if !txns.iter().any(|t| {
            matches!(
                t.kind,
                crate::ledger::OutboxKind::Sale | crate::ledger::OutboxKind::Return
            )
        }) {
            return Ok(vec![None; txns.len()]);
        }
        self.read(move |c| txns.iter().map(|t| split_of(c, t)).collect())
            .await
    }

    pub async fn sales_stats(&self) -> Result<SalesStats, StoreError> {
        self.read(|c| {
            let (sales, points_used, points_earned) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(points_used), 0), COALESCE(SUM(points_earned), 0) \
                 FROM sales WHERE external = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let (returns, taken, given, shortfall_points, returns_with_shortfall) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(points_taken_back), 0), \
                   COALESCE(SUM(points_given_back), 0), COALESCE(SUM(shortfall), 0), \
                   COUNT(*) FILTER (WHERE shortfall > 0) \
                 FROM returns",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            Ok(SalesStats {
                sales,
                points_used,
                points_earned,
                returns,
                points_taken_back: taken,
                points_given_back: given,
                shortfall_points,
                returns_with_shortfall,
            })
        })
        .await
    }
}

#[cfg(test)]
#[path = "sales_tests.rs"]
mod tests;
