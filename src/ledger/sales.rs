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
}

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
mod tests {
    use super::*;

    fn day(date: &str, weekday: Weekday) -> StoreDay {
        StoreDay {
            date: date.into(),
            weekday,
        }
    }

    fn rules(basis: EarnBasis, rounding: Rounding, campaigns: Vec<CampaignConfig>) -> SaleRules {
        SaleRules {
            earn: EarnConfig {
                yen_per_point: 100,
                rounding,
                basis,
                campaigns,
            },
            spend: SpendConfig::default(),
            tiers: Vec::new(),
        }
    }

    fn weekend_double() -> CampaignConfig {
        CampaignConfig {
            name: "週末2倍".into(),
            from: Some("2026-12-01".into()),
            to: Some("2026-12-31".into()),
            weekdays: vec![Weekday::Sat, Weekday::Sun],
            multiplier: Some(2.0),
            bonus_points: None,
        }
    }

    fn bonus50() -> CampaignConfig {
        CampaignConfig {
            name: "bonus".into(),
            bonus_points: Some(50),
            ..CampaignConfig::default()
        }
    }

    fn gold() -> TierConfig {
        TierConfig {
            name: "Gold".into(),
            min_points: 5000,
            earn_multiplier: 1.5,
        }
    }

    #[test]
    fn earn_table_campaign_tier_basis_rounding() {
        use EarnBasis::*;
        use Rounding::*;
        let sat_in = day("2026-12-05", Weekday::Sat);
        let fri_in = day("2026-12-04", Weekday::Fri);
        let sat_out = day("2027-01-02", Weekday::Sat);
        // (amount, used, basis, rounding, campaigns, tier, day, earned)
        type Case<'a> = (
            i64,
            i64,
            EarnBasis,
            Rounding,
            Vec<CampaignConfig>,
            bool,
            &'a StoreDay,
            i64,
        );
        let cases: Vec<Case> = vec![
            (1999, 0, AfterPoints, Floor, vec![], false, &fri_in, 19),
            (1999, 0, AfterPoints, Ceil, vec![], false, &fri_in, 20),
            (1949, 0, AfterPoints, Round, vec![], false, &fri_in, 19),
            (1950, 0, AfterPoints, Round, vec![], false, &fri_in, 20),
            // basis: 1000 yen with 150 points used earns on 850 (8) or on 1000 (10).
            (1000, 150, AfterPoints, Floor, vec![], false, &fri_in, 8),
            (1000, 150, FullAmount, Floor, vec![], false, &fri_in, 10),
            (1000, 150, AfterPoints, Ceil, vec![], false, &fri_in, 9),
            // Campaign: Saturday in December doubles; Friday or January does not.
            (
                1999,
                0,
                AfterPoints,
                Floor,
                vec![weekend_double()],
                false,
                &sat_in,
                38,
            ),
            (
                1999,
                0,
                AfterPoints,
                Floor,
                vec![weekend_double()],
                false,
                &fri_in,
                19,
            ),
            (
                1999,
                0,
                AfterPoints,
                Floor,
                vec![weekend_double()],
                false,
                &sat_out,
                19,
            ),
            // Tier: Gold ×1.5 of 19 = 28.5 → floor 28, round 29; ceil rounds 19.99 to 20
            // first (base points), then 30.
            (1999, 0, AfterPoints, Floor, vec![], true, &fri_in, 28),
            (1900, 0, AfterPoints, Round, vec![], true, &fri_in, 29),
            (1900, 0, AfterPoints, Ceil, vec![], true, &fri_in, 29),
            (1999, 0, AfterPoints, Ceil, vec![], true, &fri_in, 30),
            // Tier × campaign: 19 × 3 = 57.
            (
                1999,
                0,
                AfterPoints,
                Floor,
                vec![weekend_double()],
                true,
                &sat_in,
                57,
            ),
            // Bonus after the multipliers: 19 × 1.5 = 28 + 50.
            (
                1999,
                0,
                AfterPoints,
                Floor,
                vec![bonus50()],
                true,
                &fri_in,
                78,
            ),
            (
                1999,
                0,
                FullAmount,
                Floor,
                vec![weekend_double(), bonus50()],
                true,
                &sat_in,
                107,
            ),
            // The README's worked example: 2800 yen → 28 × 1.5 × 2 = 84.
            (
                3000,
                200,
                AfterPoints,
                Floor,
                vec![weekend_double()],
                true,
                &sat_in,
                84,
            ),
            // All paid with points earns nothing on after_points, but the bonus still comes.
            (
                500,
                500,
                AfterPoints,
                Floor,
                vec![bonus50()],
                false,
                &fri_in,
                50,
            ),
        ];
        for (amount, used, basis, rounding, campaigns, tier, d, want) in cases {
            let r = rules(basis, rounding, campaigns);
            let t = gold();
            let q = quote_sale(amount, used, &r, tier.then_some(&t), d).unwrap();
            assert_eq!(
                q.points_earned, want,
                "{amount} yen, {used} used, {basis:?} {rounding:?}, tier {tier}, {d:?}: {:?}",
                q.applied_rules
            );
            assert_eq!(q.net_delta, want - used);
        }
    }

    #[test]
    fn applied_rules_name_what_applied() {
        let r = rules(
            EarnBasis::AfterPoints,
            Rounding::Floor,
            vec![weekend_double()],
        );
        let q = quote_sale(
            2000,
            100,
            &r,
            Some(&gold()),
            &day("2026-12-06", Weekday::Sun),
        )
        .unwrap();
        let names: Vec<&str> = q.applied_rules.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "spend.yen_per_point",
                "earn.basis",
                "earn.yen_per_point",
                "tiers[Gold]",
                "earn.campaigns[週末2倍]",
                "earn.multiplier"
            ]
        );
        // 1900 yen → 19 points × 3 = 57.
        assert_eq!(q.points_earned, 57);
        assert_eq!(q.net_delta, -43);
    }

    #[test]
    fn spend_rules_table() {
        let spend = SpendConfig {
            min_points: 100,
            unit: 10,
            max_share: 0.5,
            yen_per_point: 1,
        };
        for (amount, used, refused) in [
            (1000, 0, None),
            (1000, 100, None),
            (1000, 500, None),
            (1000, 99, Some("spend.min_points")),
            (1000, 105, Some("spend.unit")),
            (1000, 510, Some("spend.max_share")),
            (150, 100, Some("spend.max_share")),
        ] {
            let r = check_spend(amount, used, &spend);
            assert_eq!(
                r.err().map(|e| e.rule),
                refused,
                "{amount} yen, {used} points"
            );
        }
        // 2 yen per point: 1000 yen takes at most 500 points at full share.
        let two = SpendConfig {
            yen_per_point: 2,
            ..SpendConfig::default()
        };
        assert!(check_spend(1000, 500, &two).is_ok());
        assert_eq!(
            check_spend(1000, 501, &two).unwrap_err().rule,
            "spend.max_share"
        );
        // Decimal shares mean what they say.
        let s29 = SpendConfig {
            max_share: 0.29,
            ..SpendConfig::default()
        };
        assert_eq!(max_points_for(100, &s29), 29);
    }

    #[test]
    fn campaign_windows() {
        let c = weekend_double();
        assert!(c.applies(&day("2026-12-01", Weekday::Sat)));
        assert!(c.applies(&day("2026-12-31", Weekday::Sun)));
        assert!(!c.applies(&day("2026-11-30", Weekday::Sat)));
        assert!(!c.applies(&day("2027-01-01", Weekday::Sat)));
        assert!(!c.applies(&day("2026-12-02", Weekday::Wed)));
        assert!(bonus50().applies(&day("1999-01-01", Weekday::Fri)));
    }

    #[test]
    fn store_days_and_zones() {
        assert_eq!(parse_timezone("Asia/Tokyo"), Some(32_400));
        assert_eq!(parse_timezone("UTC"), Some(0));
        assert_eq!(parse_timezone("-05:30"), Some(-19_800));
        assert_eq!(parse_timezone("Europe/Paris"), None);
        assert_eq!(parse_timezone("+9"), None);
        // 2026-12-04T15:30:00Z is Saturday 00:30 in Tokyo, still Friday in UTC.
        let ms = 1_796_398_200_000;
        assert_eq!(store_day(ms, 32_400), day("2026-12-05", Weekday::Sat));
        assert_eq!(store_day(ms, 0), day("2026-12-04", Weekday::Fri));
    }

    #[test]
    fn returns_follow_the_cumulative_rule() {
        // 1000 yen, 9 earned, 100 used; returned in three parts.
        let mut before = 0;
        let mut taken = 0;
        let mut given = 0;
        for (part, take, give) in [(333, 2, 33), (333, 3, 33), (334, 4, 34)] {
            let s = return_split(1000, 9, 100, before, part);
            assert_eq!((s.take_due, s.give_back), (take, give), "after {before}");
            before += part;
            taken += s.take_due;
            given += s.give_back;
        }
        assert_eq!((taken, given), (9, 100), "a full return reverses the sale");
        // Shortfall: the customer has 3 points left, the return gives back 0.
        assert_eq!(settle_take_back(9, 0, 3, false), (3, 6));
        assert_eq!(settle_take_back(9, 5, 3, false), (8, 1));
        assert_eq!(settle_take_back(9, 0, 3, true), (9, 0));
        assert_eq!(settle_take_back(9, 0, -4, false), (0, 9));
    }

    proptest::proptest! {
        /// For any sale and any sequence of partial returns: the cumulative rule holds after
        /// each, nothing more than earned is taken back or more than used given back, and
        /// returning everything reverses the sale exactly.
        #[test]
        fn the_cumulative_rule_holds_for_any_partial_returns(
            amount in 1i64..2_000_000,
            earned in 0i64..50_000,
            used in 0i64..50_000,
            cuts in proptest::collection::vec(1i64..1_000_000, 0..8),
        ) {
            let mut before = 0;
            let (mut taken, mut given) = (0, 0);
            let mut parts: Vec<i64> = Vec::new();
            for c in cuts {
                let left = amount - before - parts.iter().sum::<i64>();
                if left <= 1 { break; }
                parts.push(1 + c % (left - 1));
            }
            parts.push(amount - parts.iter().sum::<i64>());
            for part in parts {
                let s = return_split(amount, earned, used, before, part);
                proptest::prop_assert!(s.take_due >= 0 && s.give_back >= 0);
                before += part;
                taken += s.take_due;
                given += s.give_back;
                proptest::prop_assert_eq!(taken as i128, earned as i128 * before as i128 / amount as i128);
                proptest::prop_assert_eq!(given as i128, used as i128 * before as i128 / amount as i128);
                proptest::prop_assert!(taken <= earned && given <= used);
            }
            proptest::prop_assert_eq!((taken, given), (earned, used));
        }

        /// Unless negative balances are allowed, a return never leaves the balance below zero
        /// (when it was not already), and taken + shortfall is always what was due.
        #[test]
        fn take_backs_never_overdraw(
            due in 0i64..10_000,
            give in 0i64..10_000,
            available in 0i64..10_000,
        ) {
            let (taken, short) = settle_take_back(due, give, available, false);
            proptest::prop_assert_eq!(taken + short, due);
            proptest::prop_assert!(taken >= 0 && short >= 0);
            proptest::prop_assert!(available + give - taken >= 0);
            proptest::prop_assert_eq!(settle_take_back(due, give, available, true), (due, 0));
        }
    }
}
