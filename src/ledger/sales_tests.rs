//! Table tests of the sale and return rules.

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
            ..EarnConfig::default()
        },
        spend: SpendConfig::default(),
        tiers: Vec::new(),
        register_grants: false,
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
fn use_all_is_the_most_the_rules_and_the_balance_allow() {
    let d = SpendConfig::default();
    let unit10 = SpendConfig {
        unit: 10,
        min_points: 100,
        ..SpendConfig::default()
    };
    let half = SpendConfig {
        max_share: 0.5,
        ..SpendConfig::default()
    };
    for (amount, spend, spendable, want) in [
        (2480, &d, 5000, 2480),    // the whole amount
        (2480, &d, 467, 467),      // the whole balance
        (2480, &d, -5, 0),         // nothing to spend
        (2480, &unit10, 467, 460), // down to the unit
        (2480, &unit10, 99, 0),    // below the minimum: none
        (2480, &half, 5000, 1240), // the share
    ] {
        let got = usable_points_for(amount, spend, spendable);
        assert_eq!(got, want, "{amount} yen, {spend:?}, {spendable} spendable");
        if got > 0 {
            assert!(
                check_spend(amount, got, spend).is_ok(),
                "{got} passes the rules"
            );
        }
    }
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
