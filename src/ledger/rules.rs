//! The store's rules, free of I/O: the earn rule and its rounding, VIP tiers, the balance
//! (`available = confirmed + pending`), staleness, and the offline redeem policy. The rule
//! types are the `[earn]`, `[offline]` and `[[tiers]]` config sections; `config` embeds them.

use serde::{Deserialize, Serialize};

use super::sales::{CampaignConfig, EarnBasis};

/// The `[offline]` section: what may be accepted while the upstream is unreachable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OfflineConfig {
    pub allow_redeem: bool,
    pub max_redeem_points: i64,
    pub allow_unknown_customers: bool,
    /// Offline, the points of a customer the change feed saw move elsewhere (and who was not
    /// re-read since): `refuse` (default) lets nobody spend them — the cross-store double
    /// spend during an outage is exactly this case; earns still queue.
    pub changed_elsewhere: ChangedElsewhere,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangedElsewhere {
    #[default]
    Refuse,
    Allow,
}

/// Offline, may a customer marked changed elsewhere at `marked_at` (an upstream stamp)
/// redeem? (DESIGN.md §9.)
pub fn check_changed_elsewhere(
    marked_at: Option<&str>,
    online: bool,
    policy: &OfflineConfig,
) -> Result<(), RedeemRefusal> {
    match marked_at {
        Some(at) if !online && policy.changed_elsewhere == ChangedElsewhere::Refuse => {
            Err(RedeemRefusal::ChangedElsewhere { at: at.to_string() })
        }
        _ => Ok(()),
    }
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            allow_redeem: true,
            max_redeem_points: 5_000,
            allow_unknown_customers: false,
            changed_elsewhere: ChangedElsewhere::Refuse,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    #[default]
    Floor,
    Round,
    Ceil,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct EarnConfig {
    pub yen_per_point: i64,
    pub rounding: Rounding,
    /// Which amount of a sale earns points (an `earn` transaction with `purchase_amount` has
    /// no points used, so it earns on the whole amount either way).
    pub basis: EarnBasis,
    /// Date and weekday windows with a multiplier or a bonus, for sales (`[[earn.campaigns]]`).
    pub campaigns: Vec<CampaignConfig>,
    /// Who grants points for a purchase: the Smaregi register or pointsd (DESIGN.md §14).
    pub granted_by: GrantedBy,
    /// A register sale this close (seconds) to a pointsd grant or redeem of the same customer
    /// is listed as a possible double count.
    pub double_window_s: u64,
}

/// `[earn] granted_by`: one granter per store (DESIGN.md §14).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GrantedBy {
    /// Read the store's point conditions in Smaregi (`agent.smaregi_store_id`); without a store
    /// id pointsd grants, as before.
    #[default]
    Auto,
    /// The Smaregi register grants points for sales; pointsd never does.
    Register,
    /// pointsd grants points for sales; the store's points are off in Smaregi.
    Pointsd,
}

impl Default for EarnConfig {
    fn default() -> Self {
        EarnConfig {
            yen_per_point: 100,
            rounding: Rounding::Floor,
            basis: EarnBasis::AfterPoints,
            campaigns: Vec::new(),
            granted_by: GrantedBy::Auto,
            double_window_s: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TierConfig {
    pub name: String,
    pub min_points: i64,
    /// Points a sale earns are multiplied by this for members of the tier (1.0: no change).
    pub earn_multiplier: f64,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            name: String::new(),
            min_points: 0,
            earn_multiplier: 1.0,
        }
    }
}

/// The tier a balance falls in (the highest whose threshold it reaches), whole.
pub fn tier_config_for(available: i64, tiers: &[TierConfig]) -> Option<&TierConfig> {
    tiers
        .iter()
        .filter(|t| available >= t.min_points)
        .max_by_key(|t| t.min_points)
}

/// Points earned for a purchase under the store's rule.
pub fn points_for_purchase(amount_yen: i64, earn: &EarnConfig) -> i64 {
    let per = earn.yen_per_point.max(1);
    match earn.rounding {
        Rounding::Floor => amount_yen.div_euclid(per),
        Rounding::Ceil => (amount_yen + per - 1).div_euclid(per),
        Rounding::Round => (amount_yen + per / 2).div_euclid(per),
    }
}

/// `available = confirmed + pending` (DESIGN.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Balance {
    pub confirmed: i64,
    pub pending: i64,
    pub available: i64,
}

impl Balance {
    pub fn new(confirmed: i64, pending: i64) -> Balance {
        Balance {
            confirmed,
            pending,
            available: confirmed + pending,
        }
    }
}

/// The highest tier whose threshold the balance reaches.
pub fn tier_for(available: i64, tiers: &[TierConfig]) -> Option<String> {
    tier_config_for(available, tiers).map(|t| t.name.clone())
}

/// A cached figure may be out of date: offline, never confirmed, or confirmed longer than
/// `stale_after_ms` ago (`sync.stale_after_s`).
pub fn is_stale(online: bool, as_of_ms: Option<i64>, now_ms: i64, stale_after_ms: i64) -> bool {
    !online || as_of_ms.is_none_or(|t| now_ms - t > stale_after_ms)
}

/// Why a redeem is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeemRefusal {
    Insufficient {
        requested: i64,
        spendable: i64,
    },
    OfflineDisabled,
    OfflineLimit {
        requested: i64,
        limit: i64,
    },
    /// Offline, and the customer's points moved in another store (or online) since the cache
    /// last read them.
    ChangedElsewhere {
        at: String,
    },
    /// The ledger that owns expiry (easyPoints, for a Smapify merchant) says the points
    /// expired `at`; only points added here since (not yet confirmed) remain.
    Expired {
        at: String,
        spendable: i64,
    },
}

/// Expiry owned by the second ledger (easyPoints, DESIGN.md §12): Smaregi does not know it and
/// will not refuse a redeem of expired points online, so pointsd refuses it itself, online and
/// offline. Points added here since (pending, not yet confirmed) remain spendable.
pub fn check_owner_expiry(
    points: i64,
    balance: Balance,
    expired_at: Option<&str>,
) -> Result<(), RedeemRefusal> {
    match expired_at {
        Some(at) => {
            let spendable = (balance.available - balance.confirmed).max(0);
            if points > spendable {
                Err(RedeemRefusal::Expired {
                    at: at.to_string(),
                    spendable,
                })
            } else {
                Ok(())
            }
        }
        None => Ok(()),
    }
}

/// Is today (`today`, `YYYY-MM-DD` in the store's time) past the upstream expiry date?
/// Upstream dates look like `2025-12-31` or `2025-12-31 00:00:00`; comparing the date part
/// as text is exact for that format.
pub fn is_expired(expires_at: Option<&str>, today: &str) -> bool {
    match expires_at {
        Some(e) if e.len() >= 10 => &e[..10] < today,
        _ => false,
    }
}

/// Has an expiry instant (unix ms; easyPoints gives one, not a date) passed at `now_ms`?
pub fn is_expired_at(expires_ms: Option<i64>, now_ms: i64) -> bool {
    expires_ms.is_some_and(|t| now_ms >= t)
}

/// Whether a redeem of `points` may be accepted now.
///
/// Online, the upstream has the last word (it expires points before it subtracts), so only the
/// local balance is checked. Offline, the `[offline]` policy applies and confirmed points past
/// their upstream expiry date are not spendable (DESIGN.md §2.8).
/// What of a balance may be spent: offline, expired points are not (DESIGN.md §2.8).
fn spendable_balance(balance: Balance, expired: bool, online: bool) -> i64 {
    if expired && !online {
        (balance.available - balance.confirmed).max(0)
    } else {
        balance.available
    }
}

/// The most points [`check_redeem`] lets one spend use: the spendable balance and, offline,
/// the store's offline policy.
pub fn max_spendable(balance: Balance, expired: bool, online: bool, policy: &OfflineConfig) -> i64 {
    let spendable = spendable_balance(balance, expired, online).max(0);
    match online {
        true => spendable,
        false if !policy.allow_redeem => 0,
        false => spendable.min(policy.max_redeem_points),
    }
}

pub fn check_redeem(
    points: i64,
    balance: Balance,
    expired: bool,
    online: bool,
    policy: &OfflineConfig,
) -> Result<(), RedeemRefusal> {
    if !online {
        if !policy.allow_redeem {
            return Err(RedeemRefusal::OfflineDisabled);
        }
        if points > policy.max_redeem_points {
            return Err(RedeemRefusal::OfflineLimit {
                requested: points,
                limit: policy.max_redeem_points,
            });
        }
    }
    let spendable = spendable_balance(balance, expired, online);
    if points > spendable {
        return Err(RedeemRefusal::Insufficient {
            requested: points,
            spendable: spendable.max(0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_spendable_is_what_check_redeem_lets_through() {
        let b = Balance::new(300, 50);
        let p = OfflineConfig {
            max_redeem_points: 100,
            ..OfflineConfig::default()
        };
        let off = OfflineConfig {
            allow_redeem: false,
            ..OfflineConfig::default()
        };
        for (expired, online, policy, want) in [
            (false, true, &p, 350),
            (true, true, &p, 350), // online, the upstream decides about expiry
            (false, false, &p, 100), // the offline limit
            (true, false, &p, 50), // offline, only the pending part of an expired balance
            (false, false, &off, 0),
        ] {
            let got = max_spendable(b, expired, online, policy);
            assert_eq!(got, want, "expired {expired}, online {online}");
            if got > 0 {
                assert!(check_redeem(got, b, expired, online, policy).is_ok());
            }
            assert!(check_redeem(got + 1, b, expired, online, policy).is_err());
        }
    }

    #[test]
    fn changed_elsewhere_points_are_not_spendable_offline_unless_allowed() {
        let refuse = OfflineConfig::default();
        let allow = OfflineConfig {
            changed_elsewhere: ChangedElsewhere::Allow,
            ..OfflineConfig::default()
        };
        let at = Some("2026-12-01T10:00:00+09:00");
        for (marked, online, policy, ok) in [
            (at, false, &refuse, false),
            (at, true, &refuse, true),
            (at, false, &allow, true),
            (None, false, &refuse, true),
        ] {
            assert_eq!(
                check_changed_elsewhere(marked, online, policy).is_ok(),
                ok,
                "{marked:?} online={online} {:?}",
                policy.changed_elsewhere
            );
        }
    }

    #[test]
    fn balance_and_tiers() {
        let b = Balance::new(100, -30);
        assert_eq!(b.available, 70);
        let tiers = vec![
            TierConfig {
                name: "Silver".into(),
                min_points: 1000,
                ..TierConfig::default()
            },
            TierConfig {
                name: "Gold".into(),
                min_points: 5000,
                ..TierConfig::default()
            },
        ];
        assert_eq!(tier_for(999, &tiers), None);
        assert_eq!(tier_for(1000, &tiers).as_deref(), Some("Silver"));
        assert_eq!(tier_for(7000, &tiers).as_deref(), Some("Gold"));
    }

    #[test]
    fn redeem_policy_online_and_offline() {
        let policy = OfflineConfig::default();
        let b = Balance::new(8000, 0);
        assert!(check_redeem(8000, b, false, true, &policy).is_ok());
        assert_eq!(
            check_redeem(8001, b, false, true, &policy),
            Err(RedeemRefusal::Insufficient {
                requested: 8001,
                spendable: 8000
            })
        );
        assert_eq!(
            check_redeem(6000, b, false, false, &policy),
            Err(RedeemRefusal::OfflineLimit {
                requested: 6000,
                limit: 5000
            })
        );
        let off = OfflineConfig {
            allow_redeem: false,
            ..policy.clone()
        };
        assert_eq!(
            check_redeem(1, b, false, false, &off),
            Err(RedeemRefusal::OfflineDisabled)
        );
        // Expired confirmed points are not spendable offline; points earned since still are.
        let b = Balance::new(500, 40);
        assert!(check_redeem(40, b, true, false, &policy).is_ok());
        assert!(check_redeem(41, b, true, false, &policy).is_err());
        assert!(is_expired(Some("2026-01-01"), "2026-01-02"));
        assert!(!is_expired(Some("2026-01-02 00:00:00"), "2026-01-02"));
        assert!(!is_expired(None, "2026-01-02"));
        for (at, now, expired) in [
            (Some(1_000), 999, false),
            (Some(1_000), 1_000, true),
            (None, 5, false),
        ] {
            assert_eq!(is_expired_at(at, now), expired, "{at:?} at {now}");
        }
    }

    #[test]
    fn staleness() {
        assert!(
            is_stale(false, Some(1_000), 1_000, 60_000),
            "offline is always stale"
        );
        assert!(is_stale(true, None, 1_000, 60_000), "never confirmed");
        assert!(!is_stale(true, Some(1_000), 61_000, 60_000));
        assert!(is_stale(true, Some(1_000), 61_001, 60_000));
    }
}
