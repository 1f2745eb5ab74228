//! The rules of a sale and a return, free of I/O (DESIGN.md §10): the spend rules, the earn
//! rule with its basis, tier multiplier and campaigns, and the proportional return.
//!
//! A sale's figures are computed in one documented order (README "Sales and returns"):
//!
//! 1. Spend rules on the points used: `spend.min_points`, `spend.unit`, `spend.max_share`
//!    (at most that share of the amount may be paid with points, at `spend.yen_per_point`).
//! 2. The earning amount: `earn.basis = "after_points"` is the amount less the yen paid with
//!    points; `"full_amount"` is the whole amount.
//! 3. Base points: the earning amount at `earn.yen_per_point`, rounded by `earn.rounding`.
//! 4. Multipliers: the customer's tier `earn_multiplier` times every campaign `multiplier`
//!    active on the store's date and weekday, taken to three decimals; the base points times
//!    that, rounded by `earn.rounding` again.
//! 5. Bonuses: plus every active campaign's `bonus_points`.
//!
//! A return takes back earned points and gives back used points by the cumulative rule:
//! after returns totalling `R` of a sale of amount `A` that earned `E` and used `U` points,
//! exactly `floor(E·R/A)` earned points are due back and `floor(U·R/A)` used points given
//! back. Partial returns therefore never add up to more than the sale, and a full return
//! reverses it exactly.

use serde::{Deserialize, Serialize};

use super::rules::{EarnConfig, Rounding, TierConfig};

/// Which amount of a sale earns points.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EarnBasis {
    /// What the customer paid after the points used (common in Japanese retail).
    #[default]
    AfterPoints,
    /// The whole amount, points used or not.
    FullAmount,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<time::Weekday> for Weekday {
    fn from(w: time::Weekday) -> Self {
        match w {
            time::Weekday::Monday => Weekday::Mon,
            time::Weekday::Tuesday => Weekday::Tue,
            time::Weekday::Wednesday => Weekday::Wed,
            time::Weekday::Thursday => Weekday::Thu,
            time::Weekday::Friday => Weekday::Fri,
            time::Weekday::Saturday => Weekday::Sat,
            time::Weekday::Sunday => Weekday::Sun,
        }
    }
}

/// One `[[earn.campaigns]]` entry: on the days it covers, a sale's points are multiplied
/// and/or a bonus is added.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CampaignConfig {
    pub name: String,
    /// First day (`YYYY-MM-DD`, store time), inclusive; none: no start.
    pub from: Option<String>,
    /// Last day, inclusive; none: no end.
    pub to: Option<String>,
    /// Days of the week it runs; empty: every day.
    pub weekdays: Vec<Weekday>,
    pub multiplier: Option<f64>,
    pub bonus_points: Option<i64>,
}

impl CampaignConfig {
    pub fn applies(&self, day: &StoreDay) -> bool {
        self.from.as_deref().is_none_or(|f| day.date.as_str() >= f)
            && self.to.as_deref().is_none_or(|t| day.date.as_str() <= t)
            && (self.weekdays.is_empty() || self.weekdays.contains(&day.weekday))
    }
}

/// The `[spend]` section: how points may pay for a sale.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SpendConfig {
    /// Fewest points that may be used on one sale (when any are used).
    pub min_points: i64,
    /// Points are used in multiples of this.
    pub unit: i64,
    /// Largest share of the amount that may be paid with points (0.0..=1.0).
    pub max_share: f64,
    /// Yen one point pays.
    pub yen_per_point: i64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            min_points: 1,
            unit: 1,
            max_share: 1.0,
            yen_per_point: 1,
        }
    }
}

/// The `[returns]` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct ReturnsConfig {
    /// May a return take back points the customer no longer has (the balance goes below
    /// zero)? No (default): take back what is available and record the rest as shortfall.
    pub allow_negative_balance: bool,
}

/// The store's calendar day of a moment, where campaigns are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub weekday: Weekday,
}

/// `agent.timezone` as an offset from UTC in seconds: `Asia/Tokyo` (and `Japan`), `UTC`, or
/// a fixed offset `+09:00` / `-05:30`. No other zone names are known (Japanese stores keep
/// one offset all year, so no daylight-saving table is needed).
pub fn parse_timezone(s: &str) -> Option<i32> {
    match s.trim() {
        "Asia/Tokyo" | "Japan" => Some(9 * 3600),
        "UTC" | "Etc/UTC" | "Z" => Some(0),
        other => {
            let (sign, rest) = match other.as_bytes().first()? {
                b'+' => (1, &other[1..]),
                b'-' => (-1, &other[1..]),
                _ => return None,
            };
            let (h, m) = rest.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
        }
    }
}

/// The store's day at `ms` (unix ms) with its UTC offset in seconds.
pub fn store_day(ms: i64, offset_s: i32) -> StoreDay {
    let offset = time::UtcOffset::from_whole_seconds(offset_s).unwrap_or(time::UtcOffset::UTC);
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    StoreDay {
        date: t.date().to_string(),
        weekday: t.weekday().into(),
    }
}

/// One rule that shaped a figure, as shown in `applied_rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedRule {
    /// The config key or entry, e.g. `earn.yen_per_point`, `tiers[Gold]`,
    /// `earn.campaigns[週末2倍]`.
    pub rule: String,
    /// What it did, in figures.
    pub detail: String,
}

fn applied(rule: impl Into<String>, detail: impl Into<String>) -> AppliedRule {
    AppliedRule {
        rule: rule.into(),
        detail: detail.into(),
    }
}

/// Points used against a spend rule; `rule` is the config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRefusal {
    pub rule: &'static str,
    pub message: String,
}

/// The store's rules for a sale.
#[derive(Debug, Clone, Default)]
pub struct SaleRules {
    pub earn: EarnConfig,
    pub spend: SpendConfig,
    pub tiers: Vec<TierConfig>,
    /// The store's register grants the points of a sale (DESIGN.md §14): pointsd earns none
    /// and records the points used only.
    pub register_grants: bool,
}

/// The rule a sale names when the register grants its points (`earned_by: "register"`).
pub const GRANTED_BY_REGISTER_RULE: &str = "earn.granted_by";

/// A sale's point figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleQuote {
    pub points_used: i64,
    pub points_earned: i64,
    /// earned − used: the one change the sale makes to the balance.
    pub net_delta: i64,
    pub applied_rules: Vec<AppliedRule>,
}

/// `n / d` for `n ≥ 0`, `d > 0`, rounded as the store rounds.
fn div_round(n: i128, d: i128, rounding: Rounding) -> i128 {
    match rounding {
        Rounding::Floor => n.div_euclid(d),
        Rounding::Ceil => (n + d - 1).div_euclid(d),
        Rounding::Round => (n + d / 2).div_euclid(d),
    }
}

/// The most points a sale of `amount` yen may use under `spend.max_share`.
pub fn max_points_for(amount: i64, spend: &SpendConfig) -> i64 {
    // A hair above the product, so 0.29 × 100 counts as the 29 yen it means.
    let yen = ((amount as f64) * spend.max_share + 1e-6).floor() as i64;
    yen.clamp(0, amount) / spend.yen_per_point.max(1)
}

/// The most points a sale of `amount` may use when the customer can spend `spendable`: the
/// spend rules' share, the balance, rounded down to the rule's unit; 0 when that falls below
/// the rule's minimum (the "use all" of a register).
pub fn usable_points_for(amount: i64, spend: &SpendConfig, spendable: i64) -> i64 {
    let unit = spend.unit.max(1);
    let max = max_points_for(amount, spend).min(spendable.max(0));
    let max = max - max % unit;
    if max < spend.min_points { 0 } else { max }
}

/// Step 1: the spend rules. Using no points needs none.
pub fn check_spend(
    amount: i64,
    points_used: i64,
    spend: &SpendConfig,
) -> Result<Vec<AppliedRule>, SpendRefusal> {
    if points_used == 0 {
        return Ok(Vec::new());
    }
    if points_used < spend.min_points {
        return Err(SpendRefusal {
            rule: "spend.min_points",
            message: format!(
                "at least {} points must be used at once (asked for {points_used})",
                spend.min_points
            ),
        });
    }
    let unit = spend.unit.max(1);
    if points_used % unit != 0 {
        return Err(SpendRefusal {
            rule: "spend.unit",
            message: format!("points are used in multiples of {unit} (asked for {points_used})"),
        });
    }
    let max = max_points_for(amount, spend);
    if points_used > max {
        return Err(SpendRefusal {
            rule: "spend.max_share",
            message: format!(
                "at most {max} points can pay for {amount} yen ({}% of the amount at {} yen per point); asked for {points_used}",
                spend.max_share * 100.0,
                spend.yen_per_point
            ),
        });
    }
    Ok(vec![applied(
        "spend.yen_per_point",
        format!(
            "{points_used} points pay {} yen ({} yen per point)",
            points_used * spend.yen_per_point,
            spend.yen_per_point
        ),
    )])
}

/// Steps 2-5: the points a sale earns, with the rules that applied.
pub fn earn_for_sale(
    amount: i64,
    points_used: i64,
    rules: &SaleRules,
    tier: Option<&TierConfig>,
    day: &StoreDay,
) -> (i64, Vec<AppliedRule>) {
    if rules.register_grants {
        return (
            0,
            vec![applied(
                GRANTED_BY_REGISTER_RULE,
                "register: the Smaregi register grants this sale's points when the sale reaches Smaregi; pointsd earns none",
            )],
        );
    }
    let earn = &rules.earn;
    let mut out = Vec::new();
    let paid_with_points = points_used * rules.spend.yen_per_point;
    let basis = match earn.basis {
        EarnBasis::AfterPoints => {
            let b = (amount - paid_with_points).max(0);
            out.push(applied(
                "earn.basis",
                format!(
                    "after_points: {b} yen earns ({amount} yen less {paid_with_points} yen paid with points)"
                ),
            ));
            b
        }
        EarnBasis::FullAmount => {
            out.push(applied(
                "earn.basis",
                format!("full_amount: {amount} yen earns"),
            ));
            amount
        }
    };
    let per = earn.yen_per_point.max(1);
    let base = div_round(basis as i128, per as i128, earn.rounding) as i64;
    out.push(applied(
        "earn.yen_per_point",
        format!(
            "1 point per {per} yen, {}: {base} points",
            rounding_name(earn.rounding)
        ),
    ));
    let mut multiplier = 1.0_f64;
    if let Some(t) = tier
        && t.earn_multiplier != 1.0
    {
        multiplier *= t.earn_multiplier;
        out.push(applied(
            format!("tiers[{}]", t.name),
            format!("earn_multiplier {}", t.earn_multiplier),
        ));
    }
    let active: Vec<&CampaignConfig> = earn.campaigns.iter().filter(|c| c.applies(day)).collect();
    for c in &active {
        if let Some(m) = c.multiplier {
            multiplier *= m;
            out.push(applied(
                format!("earn.campaigns[{}]", c.name),
                format!("multiplier {m} on {} ({:?})", day.date, day.weekday),
            ));
        }
    }
    let milli = (multiplier * 1000.0).round().max(0.0) as i128;
    let mut points = base;
    if milli != 1000 {
        points = div_round(base as i128 * milli, 1000, earn.rounding) as i64;
        out.push(applied(
            "earn.multiplier",
            format!(
                "{base} points × {}, {}: {points} points",
                milli as f64 / 1000.0,
                rounding_name(earn.rounding)
            ),
        ));
    }
    for c in &active {
        if let Some(b) = c.bonus_points {
            points += b;
            out.push(applied(
                format!("earn.campaigns[{}]", c.name),
                format!("bonus_points {b} on {} ({:?})", day.date, day.weekday),
            ));
        }
    }
    (points.max(0), out)
}

fn rounding_name(r: Rounding) -> &'static str {
    match r {
        Rounding::Floor => "floor",
        Rounding::Round => "round",
        Rounding::Ceil => "ceil",
    }
}

/// A sale's figures under the store's rules (the balance checks are the caller's: they
/// depend on online state and the cache).
pub fn quote_sale(
    amount: i64,
    points_used: i64,
    rules: &SaleRules,
    tier: Option<&TierConfig>,
    day: &StoreDay,
) -> Result<SaleQuote, SpendRefusal> {
    let mut applied_rules = check_spend(amount, points_used, &rules.spend)?;
    let (points_earned, earn_rules) = earn_for_sale(amount, points_used, rules, tier, day);
    applied_rules.extend(earn_rules);
    Ok(SaleQuote {
        points_used,
        points_earned,
        net_delta: points_earned - points_used,
        applied_rules,
    })
}

/// What a return is due to take back and give back, before the balance is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnSplit {
    /// Earned points due back (part of them may end up as shortfall).
    pub take_due: i64,
    /// Used points given back to the customer.
    pub give_back: i64,
}

/// The cumulative rule: a return of `amount` yen of a sale of `sale_amount` that earned
/// `earned` and used `used` points, after `returned_before` yen were already returned.
/// The caller ensures `returned_before + amount ≤ sale_amount`.
pub fn return_split(
    sale_amount: i64,
    earned: i64,
    used: i64,
    returned_before: i64,
    amount: i64,
) -> ReturnSplit {
    let a = sale_amount.max(1) as i128;
    let (r0, r1) = (returned_before as i128, (returned_before + amount) as i128);
    let cum = |x: i64, r: i128| (x as i128 * r).div_euclid(a) as i64;
    ReturnSplit {
        take_due: cum(earned, r1) - cum(earned, r0),
        give_back: cum(used, r1) - cum(used, r0),
    }
}

/// How much of `take_due` is taken back from a customer with `available` points when the
/// return also gives back `give_back`: all of it when negative balances are allowed, else at
/// most what leaves the balance at zero. Returns (taken back, shortfall).
pub fn settle_take_back(
    take_due: i64,
    give_back: i64,
    available: i64,
    allow_negative_balance: bool,
) -> (i64, i64) {
    if allow_negative_balance {
        return (take_due, 0);
    }
    let room = (available + give_back).max(0);
    let taken = take_due.min(room);
    (taken, take_due - taken)
}

#[cfg(test)]
#[path = "sales_tests.rs"]
mod tests;
