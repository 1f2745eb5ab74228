//! The commands that are clients of a running daemon (`status`, `balance`, `earn`, `redeem`,
//! `sale`, `return`, `sales show`, `queue`, `review`, `reconcile`): where the daemon is and
//! which token to use, the request, and the answer rendered for a person or as JSON.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::config::{self, Config};

use super::args::{ClientArgs, WriteArgs};
use super::client::{self, Client};

pub(super) fn url_component(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .map(|u| u.query().unwrap_or("").trim_start_matches("v=").to_string())
        .unwrap_or_default()
}

fn print_out(c: &ClientArgs, v: &Value, human: fn(&Value) -> String) {
    if c.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", human(v));
    }
}

/// The daemon's URL for a client: `--url`, else from the config's `api.listen` (an
/// unspecified address means this machine), else the default port on loopback.
pub(super) fn daemon_url(flag: Option<&str>, cfg: Option<&Config>) -> Result<String> {
    Ok(match (flag, cfg) {
        (Some(u), _) => u.to_string(),
        (None, Some(cfg)) => {
            let listen: SocketAddr = cfg
                .api
                .listen
                .parse()
                .context("api.listen in the config is not an address")?;
            let host = if listen.ip().is_unspecified() {
                "127.0.0.1".parse()?
            } else {
                listen.ip()
            };
            let scheme = if cfg.api.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", SocketAddr::new(host, listen.port()))
        }
        (None, None) => "http://127.0.0.1:8765".to_string(),
    })
}

/// The token for a client: `--token`, else the config's first plain token (its first
/// manager token when `manager`).
pub(super) fn daemon_token(
    flag: Option<&str>,
    cfg: Option<&Config>,
    manager: bool,
) -> Result<String> {
    match (flag, cfg) {
        (Some(t), _) => Ok(t.to_string()),
        (None, Some(cfg)) => cfg
            .api
            .tokens
            .iter()
            .filter(|t| !manager || t.role == config::Role::Manager)
            .chain(cfg.api.tokens.iter())
            .find_map(|t| t.token.as_ref().map(|s| s.expose().to_string()))
            .context("the config has no plain token to use; pass --token or set POINTSD_TOKEN"),
        (None, None) => {
            bail!("no token: pass --token (the demo prints one) or --config with [[api.tokens]]")
        }
    }
}

fn client_with_role(c: &ClientArgs, manager: bool) -> Result<Client> {
    // The config is optional for client commands: --url and --token are enough.
    let env = config::env_map();
    let path = c.cfg.config_file(&env);
    let cfg = path
        .exists()
        .then(|| Config::load(&path, &env).ok())
        .flatten();
    let url = daemon_url(c.url.as_deref(), cfg.as_ref())?;
    let token = daemon_token(c.token.as_deref(), cfg.as_ref(), manager)?;
    // Over HTTPS the daemon's own certificate (from [api.tls], or the generated one in the
    // data dir) is trusted, so a self-signed one works from this PC.
    let pem = cfg.as_ref().and_then(|cfg| {
        let tls = cfg.api.tls.as_ref()?;
        let data =
            super::paths::Paths::for_command(&c.cfg, None, cfg.agent.data_dir.as_deref(), &env)
                .data;
        std::fs::read(crate::api::tls::files(tls, &data).0).ok()
    });
    Client::with_root(&url, &token, pem.as_deref())
}

fn client_for(c: &ClientArgs) -> Result<Client> {
    client_with_role(c, false)
}

/// Like `client_for`, but picks the config's manager token when no --token is given.
fn manager_client_for(c: &ClientArgs) -> Result<Client> {
    client_with_role(c, true)
}

pub(super) async fn status(c: ClientArgs) -> Result<ExitCode> {
    let v = client_for(&c)?.get("/v1/status").await?;
    print_out(&c, &v, client::render_status);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn balance(customer: String, c: ClientArgs) -> Result<ExitCode> {
    let path = format!("/v1/customers?q={}", url_component(&customer));
    let v = client_for(&c)?.get(&path).await?;
    print_out(&c, &v, client::render_customer);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn write(
    kind: &str,
    customer: String,
    points: i64,
    w: WriteArgs,
) -> Result<ExitCode> {
    let cl = client_for(&w.c)?;
    let txn_id = w.txn_id.clone().unwrap_or_else(new_id);
    let body = json!({
        "txn_id": txn_id,
        "customer_id": customer,
        "kind": kind,
        "points": points,
        "reason": w.reason,
        "register_id": w.register_id,
        "staff_id": w.staff_id,
    });
    let v = cl.post("/v1/transactions", &body, None).await?;
    print_out(&w.c, &v, client::render_write);
    Ok(ExitCode::SUCCESS)
}

/// A new id for a write the user gave none: random, so two commands never share one.
fn new_id() -> String {
    use rand::Rng;
    format!("cli-{:016x}", rand::rng().random::<u64>())
}

/// A write whose answer never came may or may not be recorded: say which id to retry with
/// (the daemon counts an id once). A definitive refusal (4xx) recorded nothing; no hint.
fn retry_hint(e: client::ClientError, what: &str, flag_id: &str) -> anyhow::Error {
    let unsure = match &e {
        client::ClientError::Problem { status, .. } => *status >= 500,
        _ => true,
    };
    let e = anyhow::Error::new(e);
    if unsure {
        e.context(format!(
            "the {what} may not have been recorded; to retry it, run the same command with --id {flag_id} (it is counted once)"
        ))
    } else {
        e
    }
}

/// What `sale` (and `sale --quote`) was given.
pub(super) struct SaleArgs {
    pub customer: String,
    pub amount: i64,
    /// A number of points, or `all`.
    pub use_points: Option<String>,
    pub sale_id: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
}

/// `--use`: a number, or `all` (asks the daemon for the most this sale may use).
async fn points_to_use(cl: &Client, s: &SaleArgs) -> Result<i64> {
    match s.use_points.as_deref().map(str::trim) {
        None => Ok(0),
        Some(a) if a.eq_ignore_ascii_case("all") => {
            let body = json!({"customer_id": s.customer, "amount": s.amount});
            let q = cl.post("/v1/sales/quote", &body, None).await?;
            q["max_points_used"]
                .as_i64()
                .context("the daemon's quote has no max_points_used")
        }
        Some(n) => n.parse::<i64>().ok().filter(|n| *n >= 0).with_context(|| {
            format!("--use {n:?}: give a whole number of points (0 or more) or `all`")
        }),
    }
}

pub(super) async fn quote(s: SaleArgs, c: ClientArgs) -> Result<ExitCode> {
    let cl = client_for(&c)?;
    let used = points_to_use(&cl, &s).await?;
    let body = json!({"customer_id": s.customer, "amount": s.amount, "points_used": used});
    let v = cl.post("/v1/sales/quote", &body, None).await?;
    print_out(&c, &v, client::render_quote);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn sale(s: SaleArgs, c: ClientArgs) -> Result<ExitCode> {
    let cl = client_for(&c)?;
    let used = points_to_use(&cl, &s).await?;
    let sale_id = s.sale_id.clone().unwrap_or_else(new_id);
    let body = json!({
        "sale_id": sale_id,
        "customer_id": s.customer,
        "amount": s.amount,
        "points_used": used,
        "register_id": s.register_id,
        "staff_id": s.staff_id,
    });
    let v = cl
        .post("/v1/sales", &body, None)
        .await
        .map_err(|e| retry_hint(e, "sale", &sale_id))?;
    print_out(&c, &v, client::render_sale);
    Ok(ExitCode::SUCCESS)
}

/// What `return` was given.
pub(super) struct ReturnArgs {
    pub sale_id: String,
    pub amount: Option<i64>,
    pub return_id: Option<String>,
    pub register_id: Option<String>,
    pub staff_id: Option<String>,
}

pub(super) async fn sale_return(r: ReturnArgs, c: ClientArgs) -> Result<ExitCode> {
    let cl = client_for(&c)?;
    let return_id = r.return_id.clone().unwrap_or_else(new_id);
    let mut body = json!({
        "return_id": return_id,
        "sale_id": r.sale_id,
        "register_id": r.register_id,
        "staff_id": r.staff_id,
    });
    if let Some(a) = r.amount {
        body["amount"] = json!(a);
    }
    let v = cl
        .post("/v1/returns", &body, None)
        .await
        .map_err(|e| retry_hint(e, "return", &return_id))?;
    print_out(&c, &v, client::render_return);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn sale_show(sale_id: String, c: ClientArgs) -> Result<ExitCode> {
    let path = format!("/v1/sales/{}", path_segment(&sale_id));
    let v = client_for(&c)?.get(&path).await?;
    print_out(&c, &v, client::render_sale_detail);
    Ok(ExitCode::SUCCESS)
}

/// An id as one path segment (`/` and the like escaped).
fn path_segment(s: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("static URL");
    u.path_segments_mut().expect("a base URL").push(s);
    u.path().trim_start_matches('/').to_string()
}

pub(super) async fn review_list(c: ClientArgs) -> Result<ExitCode> {
    let v = client_for(&c)?
        .get("/v1/transactions?state=needs_review&limit=1000")
        .await?;
    print_out(&c, &v, client::render_review);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn review_resolve(
    txn_id: String,
    action: String,
    note: String,
    c: ClientArgs,
) -> Result<ExitCode> {
    let cl = manager_client_for(&c)?;
    let path = format!("/v1/transactions/{}/resolve", url_component(&txn_id));
    let v = cl
        .post(&path, &json!({"as": action, "note": note}), None)
        .await?;
    print_out(&c, &v, |v| {
        format!(
            "{} is now {} (resolved by {})\n",
            v["txn_id"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            v["resolved_by"].as_str().unwrap_or("?")
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `pointsd reconcile --doubles`: exit 2 when any possible double count is listed.
pub(super) async fn doubles(c: ClientArgs) -> Result<ExitCode> {
    let v = manager_client_for(&c)?.get("/v1/reconcile/doubles").await?;
    print_out(&c, &v, client::render_doubles);
    let n = v["doubles"].as_array().map_or(0, Vec::len);
    Ok(if n > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit 2 when the report lists discrepancies.
pub(super) async fn reconcile(last: bool, ledgers: bool, c: ClientArgs) -> Result<ExitCode> {
    if ledgers {
        let v = if last {
            client_for(&c)?.get("/v1/reconcile/ledgers").await?
        } else {
            manager_client_for(&c)?
                .post("/v1/reconcile/ledgers", &json!({}), None)
                .await?
        };
        print_out(&c, &v, client::render_ledger_report);
        let diffs = v["differences"].as_array().map_or(0, Vec::len);
        return Ok(if diffs > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let v = if last {
        client_for(&c)?.get("/v1/reconcile").await?
    } else {
        manager_client_for(&c)?
            .post("/v1/reconcile", &json!({}), None)
            .await?
    };
    print_out(&c, &v, client::render_reconcile);
    let diffs = v["discrepancies"].as_u64().unwrap_or(0);
    Ok(if diffs > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) async fn queue(state: Option<String>, limit: u32, c: ClientArgs) -> Result<ExitCode> {
    let mut path = format!("/v1/transactions?limit={limit}");
    if let Some(s) = state {
        path.push_str(&format!("&state={}", url_component(&s)));
    }
    let v = client_for(&c)?.get(&path).await?;
    print_out(&c, &v, client::render_queue);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_token_come_from_the_flag_then_the_config() {
        let mut cfg = Config::default();
        cfg.api.listen = "0.0.0.0:9001".into();
        cfg.api.tokens = vec![
            config::TokenConfig {
                name: "r".into(),
                token: Some(config::Secret::new("register-token-0123")),
                ..Default::default()
            },
            config::TokenConfig {
                name: "m".into(),
                token: Some(config::Secret::new("manager-token-0123")),
                role: config::Role::Manager,
                ..Default::default()
            },
        ];
        assert_eq!(
            daemon_url(Some("http://h:1"), Some(&cfg)).unwrap(),
            "http://h:1"
        );
        assert_eq!(
            daemon_url(None, Some(&cfg)).unwrap(),
            "http://127.0.0.1:9001"
        );
        assert_eq!(daemon_url(None, None).unwrap(), "http://127.0.0.1:8765");
        assert_eq!(
            daemon_token(None, Some(&cfg), false).unwrap(),
            "register-token-0123"
        );
        assert_eq!(
            daemon_token(None, Some(&cfg), true).unwrap(),
            "manager-token-0123"
        );
        assert_eq!(daemon_token(Some("t"), Some(&cfg), true).unwrap(), "t");
        assert!(daemon_token(None, None, false).is_err());
    }
}
