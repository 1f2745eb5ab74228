//! What a simulated contract is started with ([`SimOptions`]) and the fault switches that can be
//! flipped while it runs ([`Faults`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::easypoints::{EasyPointsSimOptions, SmapifyOptions};
use super::state::SimStore;

/// Fault switches. Probabilities are 0.0..=1.0 per API request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Close the listener and every open connection: clients see "connection refused".
    pub refuse: bool,
    /// Answer 503 instead of serving.
    pub error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_s`.
    pub throttle_rate: f64,
    pub retry_after_s: u64,
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// For `point/add`: apply the change, then drop the connection without answering.
    pub drop_after_apply_rate: f64,
    /// Answer 401 to every API request and refuse new tokens (credentials revoked).
    pub reject_tokens: bool,
    /// Answer `point/add` with this status (and a Smaregi-style error body) without applying.
    pub add_status: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimOptions {
    pub customers: u32,
    pub seed: u64,
    pub contract_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_s: u64,
    /// Optional contract-wide limit on all requests together per second (reads, writes and
    /// token requests; 429 + Retry-After beyond it). Kept from before the contract had separate
    /// read and write limits; it applies on top of them.
    pub rate_limit_per_s: Option<u32>,
    /// The contract's read limit per second: every GET and every token request, summed over
    /// every client (DESIGN.md §4: production 50, sandbox 10 *(3P)*; a token request counts).
    #[serde(default)]
    pub read_limit_per_s: Option<u32>,
    /// The contract's write limit per second: every `point/add`, summed over every client
    /// (production 20, sandbox 4 *(3P)*).
    #[serde(default)]
    pub write_limit_per_s: Option<u32>,
    /// Keep customers and the add log in this JSON file across restarts (demo).
    pub state_file: Option<PathBuf>,
    /// Stamp `updDateTime` with milliseconds. Off by default: Smaregi's specification gives
    /// `[YYYY-MM-DDThh:mm:ssTZD]`, whole seconds, so two changes in one second look alike.
    #[serde(default)]
    pub subsecond_stamps: bool,
    /// Leave `transactionHeadIds` out of the `point/add` answer, as older API versions do.
    #[serde(default)]
    pub omit_transaction_head_ids: bool,
    /// Scopes the app was granted; a token request for any other is refused (`invalid_scope`)
    /// and an endpoint needing one the token lacks answers 403. Default: all four.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The contract's stores and their point conditions (`GET /pos/stores/{id}`). Default:
    /// store 1 and 2 with points on (their registers grant), store 4 with points off.
    #[serde(default = "default_stores")]
    pub stores: Vec<SimStore>,
    /// The easyPoints side (credentials, rate limit), served under `/api/shopify`.
    #[serde(default)]
    pub easypoints: EasyPointsSimOptions,
    /// A Smapify merchant: easyPoints holds every member, and Smapify carries changes between
    /// the two ledgers. `None`: easyPoints knows no customer.
    #[serde(default)]
    pub smapify: Option<SmapifyOptions>,
}

fn default_stores() -> Vec<SimStore> {
    [(1, "本店", true), (2, "駅前店", true), (4, "催事店", false)]
        .into_iter()
        .map(|(store_id, name, points_on)| SimStore {
            store_id,
            name: name.into(),
            points_on,
        })
        .collect()
}

fn default_scopes() -> Vec<String> {
    [
        "pos.customers:read",
        "pos.customers:write",
        "pos.transactions:read",
        "pos.stores:read",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl SimOptions {
    /// The production contract's limits (DESIGN.md §4 *(3P)*): 50 reads/s, 20 writes/s.
    pub fn production_limits(mut self) -> SimOptions {
        self.read_limit_per_s = Some(50);
        self.write_limit_per_s = Some(20);
        self
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            customers: 1_000,
            seed: 42,
            contract_id: "sim-contract".into(),
            client_id: "sim-client".into(),
            client_secret: "sim-secret".into(),
            token_ttl_s: 3600,
            rate_limit_per_s: None,
            read_limit_per_s: None,
            write_limit_per_s: None,
            state_file: None,
            subsecond_stamps: false,
            omit_transaction_head_ids: false,
            scopes: default_scopes(),
            stores: default_stores(),
            easypoints: EasyPointsSimOptions::default(),
            smapify: None,
        }
    }
}
