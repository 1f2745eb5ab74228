//! Domain rules, free of I/O, and importing nothing from the rest of the crate (`config`
//! embeds the rule types defined here, so the dependency points one way).
//!
//! Map of the files:
//! - [`kinds`]: transaction kinds (`Kind`) and states (`State`, DESIGN.md §3).
//! - [`validate`]: ids, field errors, and request validation into a `NewTxn`.
//! - [`rules`]: the earn rule and rounding, tiers, the balance, staleness, the offline redeem
//!   policy, and their config types (`EarnConfig`, `Rounding`, `OfflineConfig`, `TierConfig`).
//! - [`sales`]: a sale's spend and earn rules (basis, tier multiplier, campaigns), the
//!   proportional return, and their config types (`SpendConfig`, `CampaignConfig`,
//!   `ReturnsConfig`); the store's day (`agent.timezone`).

mod kinds;
mod rules;
mod sales;
mod validate;

pub use kinds::{Kind, OutboxKind, State};
pub use rules::{
    Balance, ChangedElsewhere, EarnConfig, GrantedBy, OfflineConfig, RedeemRefusal, Rounding,
    TierConfig, check_changed_elsewhere, check_owner_expiry, check_redeem, is_expired,
    is_expired_at, is_stale, max_spendable, points_for_purchase, tier_config_for, tier_for,
};
pub use sales::{
    AppliedRule, CampaignConfig, EarnBasis, GRANTED_BY_REGISTER_RULE, ReturnSplit, ReturnsConfig,
    SaleQuote, SaleRules, SpendConfig, SpendRefusal, StoreDay, Weekday, check_spend, earn_for_sale,
    max_points_for, parse_timezone, quote_sale, return_split, settle_take_back, store_day,
    usable_points_for,
};
pub use validate::{
    FieldError, MAX_ID_LEN, MAX_POINTS, MAX_PURCHASE_AMOUNT, MAX_REASON_LEN, NewTxn, is_valid_id,
    validate_txn,
};
