//! The `pointsd` command line: the binary (`src/main.rs`) parses [`Cli`] and calls [`run`].
//!
//! Map of the files:
//! - [`args`]: the command tree and flags (clap).
//! - [`paths`]: `Paths::resolve`, the one lookup of config file, data dir and log dir.
//! - [`serve`]: `run`, `demo`, `service-run` (Windows SCM), `sim`, and the stop signals.
//! - [`remote`]: the commands that are clients of a running daemon: URL and token, requests
//!   (`status`, `balance`, `earn`, `redeem`, `sale`, `return`, `sales show`, `queue`, ...).
//! - [`client`]: the HTTP client those commands use, and how their answers are rendered.
//! - [`tokens`]: `token add|list|revoke` (the data dir's `tokens.json`).
//! - [`data`]: `backup`, `restore` and `export` (the database file itself).
//! - [`admin`]: `config check`, `doctor`, `service ...` (with `uninstall --purge`).

mod admin;
pub mod args;
pub mod client;
mod data;
pub mod paths;
mod remote;
mod serve;
mod tokens;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

pub use args::Cli;
use args::{Cmd, ConfigCmd, ReviewCmd, SalesCmd, TokenCmd};
pub use paths::Paths;

/// Runs one command to its end, on a runtime of its own.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = rt.block_on(dispatch(cli.cmd));
    // A stop does not wait for tasks the daemon gave up on (e.g. a connection a client holds
    // open past api.shutdown_grace_s): they are dropped here.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The error and its causes, skipping a cause whose text the message already carries.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Demo {
            listen,
            data_dir,
            customers,
            smapify,
            pointsd_grants,
        } => serve::demo(listen, data_dir, customers, smapify, pointsd_grants).await,
        Cmd::Run { cfg, data_dir } => serve::run(cfg, data_dir).await,
        Cmd::ServiceRun { cfg, data_dir } => serve::service_run(cfg, data_dir).await,
        Cmd::Sim {
            listen,
            admin_listen,
            customers,
            seed,
            contract_id,
            client_id,
            client_secret,
            rate_limit,
            state_file,
            smapify,
            smapify_delay_ms,
            code_offset,
            check_digit,
            easypoints_rate_limit,
        } => {
            let opts = crate::sim::SimOptions {
                customers,
                seed,
                contract_id,
                client_id,
                client_secret,
                rate_limit_per_s: rate_limit,
                state_file,
                easypoints: crate::sim::EasyPointsSimOptions {
                    rate_limit_per_s: (easypoints_rate_limit > 0).then_some(easypoints_rate_limit),
                    ..Default::default()
                },
                smapify: smapify.then_some(crate::sim::SmapifyOptions {
                    delay_ms: smapify_delay_ms,
                    code_offset,
                    check_digit,
                    ..Default::default()
                }),
                ..Default::default()
            };
            serve::sim(listen, admin_listen, opts).await
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { cfg },
        } => Ok(admin::config_check(&cfg)),
        Cmd::Doctor {
            cfg,
            data_dir,
            json,
        } => admin::doctor(cfg, data_dir, json).await,
        Cmd::Service { cmd } => admin::service_cmd(cmd),
        Cmd::Status(c) => remote::status(c).await,
        Cmd::Balance { customer, c } => remote::balance(customer, c).await,
        Cmd::Earn {
            customer,
            points,
            w,
        } => remote::write("earn", customer, points, w).await,
        Cmd::Redeem {
            customer,
            points,
            w,
        } => remote::write("redeem", customer, points, w).await,
        Cmd::Sale {
            customer,
            amount,
            use_points,
            sale_id,
            quote,
            register_id,
            staff_id,
            c,
        } => {
            let sale = remote::SaleArgs {
                customer,
                amount,
                use_points,
                sale_id,
                register_id,
                staff_id,
            };
            if quote {
                remote::quote(sale, c).await
            } else {
                remote::sale(sale, c).await
            }
        }
        Cmd::Return {
            sale_id,
            amount,
            return_id,
            register_id,
            staff_id,
            c,
        } => {
            let ret = remote::ReturnArgs {
                sale_id,
                amount,
                return_id,
                register_id,
                staff_id,
            };
            remote::sale_return(ret, c).await
        }
        Cmd::Sales {
            cmd: SalesCmd::Show { sale_id, c },
        } => remote::sale_show(sale_id, c).await,
        Cmd::Review {
            cmd: ReviewCmd::List { c },
        } => remote::review_list(c).await,
        Cmd::Review {
            cmd:
                ReviewCmd::Resolve {
                    txn_id,
                    action,
                    note,
                    c,
                },
        } => remote::review_resolve(txn_id, action, note, c).await,
        Cmd::Reconcile {
            doubles: true, c, ..
        } => remote::doubles(c).await,
        Cmd::Reconcile {
            last, ledgers, c, ..
        } => remote::reconcile(last, ledgers, c).await,
        Cmd::Queue { state, limit, c } => remote::queue(state, limit, c).await,
        Cmd::Backup { to, cfg, data_dir } => {
            tokio::task::spawn_blocking(move || data::backup(cfg, data_dir, to)).await?
        }
        Cmd::Export {
            from,
            to,
            format,
            out,
            cfg,
            data_dir,
        } => {
            tokio::task::spawn_blocking(move || {
                data::export(data::ExportArgs {
                    from,
                    to,
                    format,
                    out,
                    cfg,
                    data_dir,
                })
            })
            .await?
        }
        Cmd::Restore {
            file,
            cfg,
            data_dir,
        } => tokio::task::spawn_blocking(move || data::restore(file, cfg, data_dir)).await?,
        Cmd::Token { cmd } => match cmd {
            TokenCmd::Add {
                name,
                role,
                cfg,
                data_dir,
            } => tokens::add(name, role.into(), cfg, data_dir),
            TokenCmd::List {
                cfg,
                data_dir,
                json,
            } => tokens::list(cfg, data_dir, json),
            TokenCmd::Revoke {
                name,
                cfg,
                data_dir,
            } => tokens::revoke(name, cfg, data_dir),
        },
    }
}
