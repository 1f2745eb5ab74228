//! The contract's data: customers, their points, the transaction list (取引), issued tokens,
//! the request counts and limits, and the JSON file it may be kept in across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::limits::{AgentCounts, Class, ContractLimits};
use super::options::{Faults, SimOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimCustomer {
    pub customer_id: String,
    pub code: String,
    pub barcode: String,
    pub last_name: String,
    pub first_name: String,
    pub point: i64,
    pub expire_date: Option<String>,
    /// The point record's `updDateTime` (`/pos/customers/point`): moves with every point change.
    pub upd_date_time: String,
    /// The directory record's `updDateTime` (`/pos/customers`): moves when the customer is
    /// created or edited (name, code…), not with points. Empty in state files written before
    /// the split; [`SimCustomer::directory_stamp`] then falls back to `upd_date_time`.
    #[serde(default)]
    pub directory_upd_date_time: String,
}

impl SimCustomer {
    /// The `updDateTime` `/pos/customers` shows and filters on.
    pub fn directory_stamp(&self) -> &str {
        if self.directory_upd_date_time.is_empty() {
            &self.upd_date_time
        } else {
            &self.directory_upd_date_time
        }
    }
}

/// One applied `point/add`, in the order the simulator applied them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedAdd {
    pub customer_id: String,
    pub delta: i64,
    pub balance_after: i64,
    /// The `User-Agent` of the request that made it (`pointsd/<version> (store <id>)`).
    #[serde(default)]
    pub agent: String,
    /// Unix ms when it was applied.
    #[serde(default)]
    pub at_ms: i64,
    /// The transaction it created in the list (division 6 or 7).
    #[serde(default)]
    pub transaction_head_id: u64,
}

/// One entry of the transaction list (取引): what `GET /pos/transactions` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTxn {
    pub transaction_head_id: u64,
    /// 1 sale/return, 6 point add, 7 point subtract, 8 point expiry.
    pub division: u8,
    pub customer_id: String,
    pub customer_code: String,
    pub store_id: u32,
    /// Unix ms of the change (the stamp shown is cut to whole seconds unless asked not to).
    pub at_ms: i64,
    pub upd_date_time: String,
    /// A register sale's points (`newPoint` earned, `spendPoint` used); 0 for other divisions.
    #[serde(default)]
    pub new_point: i64,
    #[serde(default)]
    pub spend_point: i64,
    /// `transactionDateTime`: when the register rang the sale up. An offline register uploads
    /// later, so it may be well before `updDateTime`. Empty: the same as `updDateTime`.
    #[serde(default)]
    pub transaction_date_time: String,
    /// `cancelDivision` "1": this record voids the sale `transactionHeadId` names in
    /// `voided`; `returnSales` "1": a return.
    #[serde(default)]
    pub cancel: bool,
    #[serde(default)]
    pub return_sales: bool,
}

impl SimTxn {
    /// Unix ms of `transactionDateTime` (the register's own time; the change's otherwise).
    pub fn sold_at_ms(&self) -> i64 {
        if self.transaction_date_time.is_empty() {
            self.at_ms
        } else {
            crate::clock::parse_stamp(&self.transaction_date_time).unwrap_or(self.at_ms)
        }
    }
}

/// What a register rings up for a member ([`SimHandle::register_sale`](super::SimHandle)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSale {
    /// The Smaregi store (店舗ID) whose register it is; its point conditions must be on for a
    /// sale that earns or uses points.
    pub store_id: u32,
    pub customer_id: String,
    /// Points the register granted by the store's rate (`newPoint`).
    pub new_point: i64,
    /// Points the customer used (`spendPoint`).
    pub spend_point: i64,
    /// How long before the upload the register rang it up (0: online, at once).
    pub sold_ms_ago: i64,
    pub kind: RegisterKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterKind {
    /// A sale: the balance gains `new_point` and loses `spend_point`.
    Sale,
    /// A return (`returnSales` "1"): the register takes back `new_point` and gives back
    /// `spend_point`.
    Return,
    /// A void (`cancelDivision` "1") of a sale: undone as a return is.
    Void,
}

/// A store of the contract and its point conditions (`GET /pos/stores/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStore {
    pub store_id: u32,
    pub name: String,
    /// `pointCondition.pointUseDivision`: true "1" (使用する: the register grants points),
    /// false "0".
    pub points_on: bool,
}

/// The store id the transaction list shows for a `point/add` (the API does not say which
/// store made it; every agent's adds land here).
pub const POINT_ADD_STORE: u32 = 1;
/// The store id of sales at "a register elsewhere" ([`Elsewhere::Sale`]).
pub const ELSEWHERE_STORE: u32 = 2;
/// The store id of changes from the online shop (Smapify's point adds, [`Elsewhere::Online`]).
pub const ONLINE_STORE: u32 = 3;

/// A change to a customer's points that no agent made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elsewhere {
    /// A sale or return at a register elsewhere (division 1); `delta` is its net point effect
    /// (earned minus spent).
    Sale { delta: i64 },
    /// A change from the online shop through Smapify (division 6 add, 7 subtract).
    Online { delta: i64 },
    /// The customer's points expire now (division 8): the balance becomes 0.
    Expiry,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElsewhereError {
    #[error("customer not found")]
    UnknownCustomer,
    #[error("point is insufficient (balance {balance}, change {delta})")]
    Insufficient { balance: i64, delta: i64 },
    #[error("the customer has no points to expire")]
    NothingToExpire,
    #[error("no store {0} in the contract")]
    UnknownStore(u32),
    #[error("store {0} does not use points (pointUseDivision 0): its register moves none")]
    PointsOff(u32),
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    customers: Vec<SimCustomer>,
    adds: Vec<AppliedAdd>,
    #[serde(default)]
    transactions: Vec<SimTxn>,
}

pub(super) struct IssuedToken {
    pub until: Instant,
    pub scopes: Vec<String>,
}

pub(super) struct SimState {
    pub opts: SimOptions,
    pub customers: BTreeMap<u64, SimCustomer>,
    pub by_id: HashMap<String, u64>,
    /// (directory `updDateTime` in whole seconds, key): the `/pos/customers` window filter.
    pub directory_index: BTreeSet<(i64, u64)>,
    pub tokens: HashMap<String, IssuedToken>,
    pub faults: Faults,
    pub adds: Vec<AppliedAdd>,
    pub transactions: Vec<SimTxn>,
    /// API requests other than token requests.
    pub requests: u64,
    pub token_requests: u64,
    pub limits: ContractLimits,
    pub agents: BTreeMap<String, AgentCounts>,
    pub dirty: bool,
    pub rng: rand::rngs::StdRng,
    /// easyPoints and Smapify (see `easypoints.rs`).
    pub ep: super::easypoints::EpState,
}

pub(super) type Shared = Arc<Mutex<SimState>>;

const FAMILY: [&str; 12] = [
    "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤", "吉田", "山田",
];
const GIVEN: [&str; 12] = [
    "陽翔",
    "蓮",
    "湊",
    "結衣",
    "陽葵",
    "凛",
    "大翔",
    "葵",
    "悠真",
    "紬",
    "さくら",
    "健",
];

pub(super) fn now_ms() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.now_ms()
}

/// `updDateTime` as Smaregi writes it: whole seconds in JST, or with milliseconds when the
/// simulator was asked for finer stamps.
fn stamp(ms: i64, subsecond: bool) -> String {
    if !subsecond {
        return crate::clock::smaregi_stamp(ms);
    }
    let off = time::UtcOffset::from_hms(9, 0, 0).expect("offset");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| t.to_offset(off))
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+09:00"
            ))
            .ok()
        })
        .unwrap_or_default()
}

pub(super) fn jst_today() -> String {
    use crate::clock::Clock;
    crate::clock::jst_date(crate::clock::SystemClock.now_ms())
}

/// EAN-13 check digit, so sample barcodes scan like real member cards.
fn ean13(first12: &str) -> String {
    let sum: u32 = first12
        .bytes()
        .enumerate()
        .map(|(i, b)| (b - b'0') as u32 * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{first12}{}", (10 - sum % 10) % 10)
}

/// How long before the simulator's start the sample customers were created.
const SIGNED_UP_AGO_MS: i64 = 60 * 24 * 3600 * 1000;

fn directory_secs(c: &SimCustomer) -> i64 {
    crate::clock::parse_stamp(c.directory_stamp()).unwrap_or(0) / 1000
}

pub fn sample_customers(n: u32, seed: u64) -> Vec<SimCustomer> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let today = time::OffsetDateTime::now_utc().date();
    // Members signed up long ago: their directory records fall in no recent window.
    let created = crate::clock::smaregi_stamp(now_ms() - SIGNED_UP_AGO_MS);
    let points_at = crate::clock::smaregi_stamp(now_ms());
    (1..=n)
        .map(|i| {
            let point = match rng.random_range(0..10) {
                0 => 0,
                1..=6 => rng.random_range(1..3_000),
                _ => rng.random_range(3_000..20_000),
            };
            let expire = (point > 0)
                .then(|| (today + time::Duration::days(rng.random_range(30..730))).to_string());
            SimCustomer {
                customer_id: i.to_string(),
                code: format!("M{i:06}"),
                barcode: ean13(&format!("20{i:010}")),
                last_name: FAMILY[rng.random_range(0..FAMILY.len())].into(),
                first_name: GIVEN[rng.random_range(0..GIVEN.len())].into(),
                point,
                expire_date: expire,
                upd_date_time: points_at.clone(),
                directory_upd_date_time: created.clone(),
            }
        })
        .collect()
}

impl SimState {
    pub fn new(opts: SimOptions) -> SimState {
        let persisted = opts
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok());
        let (list, adds, transactions) = match persisted {
            Some(p) => (p.customers, p.adds, p.transactions),
            None => (
                sample_customers(opts.customers, opts.seed),
                Vec::new(),
                Vec::new(),
            ),
        };
        let mut customers = BTreeMap::new();
        let mut by_id = HashMap::new();
        let mut directory_index = BTreeSet::new();
        for (i, c) in list.into_iter().enumerate() {
            // Keep Smaregi's numeric order when ids are numbers.
            let key = c
                .customer_id
                .parse::<u64>()
                .unwrap_or(1_000_000_000 + i as u64);
            by_id.insert(c.customer_id.clone(), key);
            directory_index.insert((directory_secs(&c), key));
            customers.insert(key, c);
        }
        let seed = opts.seed;
        let limits = ContractLimits::new(
            opts.read_limit_per_s,
            opts.write_limit_per_s,
            opts.rate_limit_per_s,
        );
        let mut s = SimState {
            opts,
            customers,
            by_id,
            directory_index,
            tokens: HashMap::new(),
            faults: Faults::default(),
            adds,
            transactions,
            requests: 0,
            token_requests: 0,
            limits,
            agents: BTreeMap::new(),
            dirty: false,
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed),
            ep: Default::default(),
        };
        s.start_smapify();
        s
    }

    /// Counts a request under its `User-Agent`, then applies the contract's limits to it:
    /// `Err(retry_after_s)` when it must be answered 429.
    pub fn arrive(
        &mut self,
        agent: &str,
        class: Class,
        token: bool,
        feed: bool,
    ) -> Result<(), u64> {
        let c = self.agents.entry(agent.to_string()).or_default();
        match class {
            Class::Read => c.reads += 1,
            Class::Write => c.writes += 1,
        }
        c.tokens += token as u64;
        c.feed += feed as u64;
        let r = self.limits.admit(class, Instant::now());
        if r.is_err() {
            self.throttled(agent);
            if class == Class::Write {
                self.agents
                    .entry(agent.to_string())
                    .or_default()
                    .throttled_writes += 1;
            }
        }
        r
    }

    /// Counts a 429 answered to `agent`.
    pub fn throttled(&mut self, agent: &str) {
        self.agents.entry(agent.to_string()).or_default().throttled += 1;
    }

    /// Smaregi expires points before it answers or adds (DESIGN.md §4); an expiry is a
    /// transaction of division 8.
    pub fn expire_key(&mut self, key: u64, today: &str) {
        let Some(c) = self.customers.get_mut(&key) else {
            return;
        };
        if let Some(d) = &c.expire_date
            && d.as_str() < today
            && c.point > 0
        {
            c.point = 0;
            self.dirty = true;
            self.record_change(key, 8, POINT_ADD_STORE);
        }
    }

    /// Stamps a customer's point change and lists it as a transaction; returns its id.
    pub fn record_change(&mut self, key: u64, division: u8, store_id: u32) -> u64 {
        self.record(key, division, store_id)
            .map_or(0, |t| t.transaction_head_id)
    }

    fn record(&mut self, key: u64, division: u8, store_id: u32) -> Option<SimTxn> {
        let at = now_ms();
        let upd = stamp(at, self.opts.subsecond_stamps);
        let id = 1_000_001 + self.transactions.len() as u64;
        let c = self.customers.get_mut(&key)?;
        c.upd_date_time = upd.clone();
        let t = SimTxn {
            transaction_head_id: id,
            division,
            customer_id: c.customer_id.clone(),
            customer_code: c.code.clone(),
            store_id,
            at_ms: at,
            upd_date_time: upd,
            new_point: 0,
            spend_point: 0,
            transaction_date_time: String::new(),
            cancel: false,
            return_sales: false,
        };
        self.transactions.push(t.clone());
        self.dirty = true;
        Some(t)
    }

    /// A change no agent made: its balance effect and its entry in the transaction list.
    pub fn elsewhere(
        &mut self,
        customer_id: &str,
        kind: Elsewhere,
    ) -> Result<SimTxn, ElsewhereError> {
        let key = *self
            .by_id
            .get(customer_id)
            .ok_or(ElsewhereError::UnknownCustomer)?;
        // As for a point/add: whatever had expired goes first.
        self.expire_key(key, &jst_today());
        let c = self.customers.get_mut(&key).expect("indexed");
        let (division, store) = match kind {
            Elsewhere::Sale { delta } | Elsewhere::Online { delta } => {
                if c.point + delta < 0 {
                    return Err(ElsewhereError::Insufficient {
                        balance: c.point,
                        delta,
                    });
                }
                c.point += delta;
                match kind {
                    Elsewhere::Sale { .. } => (1, ELSEWHERE_STORE),
                    _ if delta < 0 => (7, ONLINE_STORE),
                    _ => (6, ONLINE_STORE),
                }
            }
            Elsewhere::Expiry => {
                if c.point <= 0 {
                    return Err(ElsewhereError::NothingToExpire);
                }
                c.point = 0;
                c.expire_date = None;
                (8, ELSEWHERE_STORE)
            }
        };
        if let Elsewhere::Sale { delta } = kind {
            // Smapify carries a register's point change to easyPoints.
            self.smapify_from_smaregi(customer_id, delta);
        }
        Ok(self.record(key, division, store).expect("indexed"))
    }

    /// A register's sale, return or void reaching the server (uploaded now, rung up
    /// `sold_ms_ago` earlier): its points move the balance when it arrives, and it is listed
    /// with `newPoint`/`spendPoint`, `storeId` and the register's `transactionDateTime`.
    pub fn register_sale(&mut self, r: &RegisterSale) -> Result<SimTxn, ElsewhereError> {
        let store = self
            .opts
            .stores
            .iter()
            .find(|s| s.store_id == r.store_id)
            .ok_or(ElsewhereError::UnknownStore(r.store_id))?;
        if !store.points_on && (r.new_point != 0 || r.spend_point != 0) {
            return Err(ElsewhereError::PointsOff(r.store_id));
        }
        let key = *self
            .by_id
            .get(&r.customer_id)
            .ok_or(ElsewhereError::UnknownCustomer)?;
        self.expire_key(key, &jst_today());
        let delta = match r.kind {
            RegisterKind::Sale => r.new_point - r.spend_point,
            RegisterKind::Return | RegisterKind::Void => r.spend_point - r.new_point,
        };
        let c = self.customers.get_mut(&key).expect("indexed");
        if c.point + delta < 0 {
            return Err(ElsewhereError::Insufficient {
                balance: c.point,
                delta,
            });
        }
        c.point += delta;
        self.smapify_from_smaregi(&r.customer_id, delta);
        let mut t = self.record(key, 1, r.store_id).expect("indexed");
        t.new_point = r.new_point;
        t.spend_point = r.spend_point;
        t.transaction_date_time = stamp(t.at_ms - r.sold_ms_ago.max(0), false);
        t.cancel = r.kind == RegisterKind::Void;
        t.return_sales = r.kind == RegisterKind::Return;
        *self.transactions.last_mut().expect("just recorded") = t.clone();
        Ok(t)
    }

    /// A directory edit (the last name): moves the customer's directory `updDateTime`.
    pub fn edit_customer(&mut self, customer_id: &str, last_name: &str) -> Option<SimCustomer> {
        let key = *self.by_id.get(customer_id)?;
        let upd = stamp(now_ms(), self.opts.subsecond_stamps);
        let c = self.customers.get_mut(&key)?;
        self.directory_index.remove(&(directory_secs(c), key));
        c.last_name = last_name.to_string();
        c.directory_upd_date_time = upd;
        self.directory_index.insert((directory_secs(c), key));
        self.dirty = true;
        Some(c.clone())
    }

    pub fn customer(&self, customer_id: &str) -> Option<&SimCustomer> {
        self.by_id
            .get(customer_id)
            .and_then(|k| self.customers.get(k))
    }

    pub fn persist(&mut self) {
        let Some(path) = self.opts.state_file.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let p = Persisted {
            customers: self.customers.values().cloned().collect(),
            adds: self.adds.clone(),
            transactions: self.transactions.clone(),
        };
        let tmp = path.with_extension("tmp");
        let ok = serde_json::to_vec(&p)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|_| std::fs::rename(&tmp, &path).ok());
        if ok.is_some() {
            self.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u32) -> SimState {
        SimState::new(SimOptions {
            customers: n,
            ..SimOptions::default()
        })
    }

    #[test]
    fn barcodes_have_valid_check_digits() {
        assert_eq!(ean13("400638133393"), "4006381333931");
        let c = sample_customers(3, 1);
        assert_eq!(c[0].barcode.len(), 13);
        assert_eq!(c[2].code, "M000003");
    }

    #[test]
    fn samples_are_deterministic_per_seed() {
        let a = sample_customers(20, 7);
        let b = sample_customers(20, 7);
        assert_eq!(
            a.iter().map(|c| c.point).collect::<Vec<_>>(),
            b.iter().map(|c| c.point).collect::<Vec<_>>()
        );
    }

    #[test]
    fn changes_from_elsewhere_move_points_and_list_their_division() {
        let mut s = state(20);
        let id = (1..=20)
            .map(|i| i.to_string())
            .find(|id| s.customer(id).unwrap().point >= 100)
            .unwrap();
        let before = s.customer(&id).unwrap().point;
        let dir_stamp = s.customer(&id).unwrap().directory_stamp().to_string();

        let t = s.elsewhere(&id, Elsewhere::Sale { delta: -40 }).unwrap();
        assert_eq!((t.division, t.store_id), (1, ELSEWHERE_STORE));
        assert_eq!(s.customer(&id).unwrap().point, before - 40);
        let t = s.elsewhere(&id, Elsewhere::Online { delta: 15 }).unwrap();
        assert_eq!((t.division, t.store_id), (6, ONLINE_STORE));
        let t = s.elsewhere(&id, Elsewhere::Online { delta: -5 }).unwrap();
        assert_eq!(t.division, 7);
        assert_eq!(s.customer(&id).unwrap().point, before - 30);
        // A sale cannot spend points the customer does not have.
        assert_eq!(
            s.elsewhere(&id, Elsewhere::Sale { delta: -before }),
            Err(ElsewhereError::Insufficient {
                balance: before - 30,
                delta: -before
            })
        );
        let t = s.elsewhere(&id, Elsewhere::Expiry).unwrap();
        assert_eq!(t.division, 8);
        assert_eq!(s.customer(&id).unwrap().point, 0);
        assert_eq!(
            s.elsewhere(&id, Elsewhere::Expiry),
            Err(ElsewhereError::NothingToExpire)
        );
        assert_eq!(
            s.elsewhere("nobody", Elsewhere::Online { delta: 1 }),
            Err(ElsewhereError::UnknownCustomer)
        );
        // Four transactions listed, in order, with the customer's code; the point record's
        // stamp moved, the directory's did not.
        let mine: Vec<u8> = s
            .transactions
            .iter()
            .filter(|t| t.customer_id == id)
            .map(|t| t.division)
            .collect();
        assert_eq!(mine, vec![1, 6, 7, 8]);
        assert!(
            s.transactions
                .iter()
                .all(|t| t.customer_code.starts_with('M'))
        );
        assert_eq!(s.customer(&id).unwrap().directory_stamp(), dir_stamp);
        // No agent made them: the point/add log stays empty.
        assert!(s.adds.is_empty());
    }

    #[test]
    fn a_directory_edit_moves_the_directory_stamp_only() {
        let mut s = SimState::new(SimOptions {
            customers: 3,
            subsecond_stamps: true,
            ..SimOptions::default()
        });
        let before = s.customer("2").unwrap().clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let after = s.edit_customer("2", "鈴木").unwrap();
        assert_eq!(after.last_name, "鈴木");
        assert!(after.directory_stamp() > before.directory_stamp());
        assert_eq!(after.upd_date_time, before.upd_date_time);
        assert!(s.transactions.is_empty(), "a name edit is no transaction");
        assert!(s.edit_customer("nobody", "x").is_none());
    }

    #[test]
    fn requests_are_counted_per_agent_and_throttled_per_class() {
        let mut s = SimState::new(SimOptions {
            customers: 1,
            read_limit_per_s: Some(2),
            write_limit_per_s: Some(1),
            ..SimOptions::default()
        });
        let a = "pointsd/0.1.0 (store a)";
        let b = "pointsd/0.1.0 (store b)";
        assert!(s.arrive(a, Class::Read, true, false).is_ok());
        assert!(s.arrive(b, Class::Read, false, true).is_ok());
        assert!(s.arrive(a, Class::Read, false, false).unwrap_err() >= 1);
        assert!(s.arrive(b, Class::Write, false, false).is_ok());
        assert!(s.arrive(b, Class::Write, false, false).unwrap_err() >= 1);
        assert_eq!(
            s.agents[a],
            AgentCounts {
                reads: 2,
                writes: 0,
                tokens: 1,
                feed: 0,
                throttled: 1,
                throttled_writes: 0
            }
        );
        assert_eq!(
            s.agents[b],
            AgentCounts {
                reads: 1,
                writes: 2,
                tokens: 0,
                feed: 1,
                throttled: 1,
                throttled_writes: 1
            }
        );
    }
}
