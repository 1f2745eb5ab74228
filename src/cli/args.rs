//! The command tree (clap): every subcommand and its flags. Dispatch is in `cli::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::service;

#[derive(Parser)]
#[command(
    name = "pointsd",
    version,
    about = "Offline-first loyalty point agent for Smaregi stores"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon with the built-in upstream simulator and sample customers.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: SocketAddr,
        /// Where the demo keeps its database (default: your user data folder).
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Sample customers in the simulator.
        #[arg(long, default_value_t = 1000)]
        customers: u32,
        /// A Smapify merchant: the simulator runs easyPoints beside Smaregi with Smapify
        /// between them, and the agent reads both (see `pointsd reconcile --ledgers`).
        #[arg(long)]
        smapify: bool,
        /// The other granting mode: the simulated store's points are off in Smaregi, so
        /// pointsd grants points for purchases (by default the register grants them).
        #[arg(long)]
        pointsd_grants: bool,
    },
    /// Run the daemon with a config file (what the system service runs).
    Run {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check a config file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Run the upstream simulator on its own (for tests and trials).
    Sim {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        admin_listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        customers: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value = "sim-contract")]
        contract_id: String,
        #[arg(long, default_value = "sim-client")]
        client_id: String,
        #[arg(long, default_value = "sim-secret", env = "POINTSD_SIM_CLIENT_SECRET")]
        client_secret: String,
        /// Answer 429 beyond this many requests per second.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Keep the simulator's state in this JSON file.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Run easyPoints (under /api/shopify) with Smapify carrying changes between it and
        /// Smaregi; member codes become Shopify customer ids.
        #[arg(long)]
        smapify: bool,
        /// Smapify's delay carrying a change between the ledgers.
        #[arg(long, default_value_t = 2000)]
        smapify_delay_ms: u64,
        /// Smapify's start number added to member codes.
        #[arg(long, default_value_t = 0)]
        code_offset: i64,
        /// Smapify appends a check digit to member codes.
        #[arg(long)]
        check_digit: bool,
        /// easyPoints requests per second before 429 (0: no limit).
        #[arg(long, default_value_t = 5)]
        easypoints_rate_limit: u32,
    },
    /// Show the daemon's status: online, queue, cache.
    Status(ClientArgs),
    /// Show a customer's balance (by id, member code or barcode).
    Balance {
        customer: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Grant points.
    Earn {
        customer: String,
        points: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Use points.
    Redeem {
        customer: String,
        points: i64,
        #[command(flatten)]
        w: WriteArgs,
    },
    /// Record a sale: points used and earned on one receipt, sent upstream as one change.
    Sale {
        customer: String,
        /// Yen, tax included.
        amount: i64,
        /// Points the customer uses on this sale, or `all` (as many as the rules and the
        /// balance allow).
        #[arg(long = "use", value_name = "POINTS")]
        use_points: Option<String>,
        /// The sale's id, e.g. the receipt number (default: a new one, printed so a retry can
        /// reuse it; the same id is counted once).
        #[arg(long = "id", value_name = "SALE_ID")]
        sale_id: Option<String>,
        /// Show the figures (a quote) and record nothing.
        #[arg(long)]
        quote: bool,
        #[arg(long)]
        register_id: Option<String>,
        #[arg(long)]
        staff_id: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Return all (no AMOUNT) or part of a sale: its earned points are taken back and its used
    /// points given back in proportion.
    Return {
        sale_id: String,
        /// Yen returned (default: all that is still returnable).
        amount: Option<i64>,
        /// The return's id (default: a new one, printed so a retry can reuse it).
        #[arg(long = "id", value_name = "RETURN_ID")]
        return_id: Option<String>,
        #[arg(long)]
        register_id: Option<String>,
        #[arg(long)]
        staff_id: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Sales recorded by this store.
    Sales {
        #[command(subcommand)]
        cmd: SalesCmd,
    },
    /// The review queue: transactions whose exactly-once delivery could not be proven.
    Review {
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// Compare upstream balances with what this store last confirmed, and report differences
    /// (nothing is corrected upstream).
    Reconcile {
        /// Show the last report instead of running a new one.
        #[arg(long)]
        last: bool,
        /// The cross-ledger report instead (Smapify merchants): customers whose Smaregi and
        /// easyPoints balances differ beyond Smapify's settle time.
        #[arg(long)]
        ledgers: bool,
        /// Possible double counts instead: register sales close in time to a grant or a
        /// redeem through pointsd for the same customer (manager token; exit 2 when any).
        #[arg(long, conflicts_with_all = ["ledgers", "last"])]
        doubles: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Install, remove and control the system service.
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Check this installation: config, files, database, port, upstream, clock.
    Doctor {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run under the Windows Service Control Manager (what the installed service runs).
    #[command(hide = true)]
    ServiceRun {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Issue, list and revoke API tokens (kept in the data dir; a running daemon picks
    /// changes up without a restart).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Copy the database to a file, consistently and verified (safe while the daemon runs);
    /// prints where, how large and its SHA-256.
    Backup {
        /// The copy's path (default: `[backup] dir`, else `<data dir>/backups`, named by time).
        #[arg(long)]
        to: Option<PathBuf>,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Put a backup in place (stop the daemon first). At the next start every transaction
    /// that was open in it is read back from the upstream before anything is sent.
    Restore {
        /// The backup file (made by `pointsd backup` or a scheduled backup).
        file: PathBuf,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write the history (transactions, sales, returns) created between two dates, for audit
    /// before retention deletes it (safe while the daemon runs).
    Export {
        /// First day, `YYYY-MM-DD` in the store's time zone (agent.timezone).
        #[arg(long)]
        from: String,
        /// Last day, `YYYY-MM-DD`, included.
        #[arg(long)]
        to: String,
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List transactions in the outbox (sales and returns with their split).
    #[command(visible_alias = "transactions")]
    Queue {
        /// pending, sending, ambiguous, applied, rejected, needs_review, discarded
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Install (or update in place) and start the service. Needs admin rights unless --user.
    Install {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Print exactly what would be written and run, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Show the plan for another platform (with --dry-run).
        #[arg(long, value_enum)]
        platform: Option<service::Platform>,
    },
    /// Stop and remove the service. Data and config stay unless --purge.
    Uninstall {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Also delete the config, the database and the logs.
        #[arg(long)]
        purge: bool,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    Start {
        #[arg(long)]
        user: bool,
    },
    Stop {
        #[arg(long)]
        user: bool,
    },
    Restart {
        #[arg(long)]
        user: bool,
    },
    Status {
        #[arg(long)]
        user: bool,
    },
}

#[derive(Subcommand)]
pub enum SalesCmd {
    /// A sale, its returns and what is still returnable.
    Show {
        sale_id: String,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum ReviewCmd {
    /// List transactions waiting for a person's decision.
    List {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Decide a review item (needs a manager token): the audit keeps who and why.
    Resolve {
        txn_id: String,
        /// applied: the upstream has it; resend: it does not, send again; discard: drop it.
        #[arg(long = "as", value_parser = ["applied", "resend", "discard"])]
        action: String,
        #[arg(long)]
        note: String,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue a new random token and print it once (only its SHA-256 is kept).
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "register")]
        role: RoleArg,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the tokens: the config's and the issued ones, with their roles.
    List {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token (an issued one, or one from the config file) by name.
    Revoke {
        name: String,
        #[command(flatten)]
        cfg: ConfigArgs,
        #[arg(long, env = "POINTSD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Register,
    Manager,
}

impl From<RoleArg> for crate::config::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Register => crate::config::Role::Register,
            RoleArg::Manager => crate::config::Role::Manager,
        }
    }
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate a config and print every problem found.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// Config file (default: the system location, or the user one with --user).
    #[arg(long, env = "POINTSD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use the current user's folders instead of the system service's.
    #[arg(long)]
    pub user: bool,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The daemon's URL (default: from the config's api.listen).
    #[arg(long, env = "POINTSD_URL")]
    pub url: Option<String>,
    /// A register token (default: the first token in the config).
    #[arg(long, env = "POINTSD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct WriteArgs {
    /// Idempotency key (default: a new random one).
    #[arg(long)]
    pub txn_id: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long)]
    pub register_id: Option<String>,
    #[arg(long)]
    pub staff_id: Option<String>,
    #[command(flatten)]
    pub c: ClientArgs,
}
