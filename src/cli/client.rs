//! The CLI's client of a running daemon: it talks to the local API like a register does and
//! turns problem+json answers into readable errors.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach pointsd at {url}: {reason}. Is it running? (`pointsd status --url ...`, or check the service)"
    )]
    Unreachable { url: String, reason: String },
    #[error("{title} ({status}): {detail}{}", if errors.is_empty() { String::new() } else { format!("\n{}", errors.join("\n")) })]
    Problem {
        status: u16,
        code: String,
        title: String,
        detail: String,
        errors: Vec<String>,
    },
    #[error("unexpected answer from pointsd: {0}")]
    Unexpected(String),
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client that also trusts `root_pem` (the daemon's self-signed certificate).
    pub fn with_root(base: &str, token: &str, root_pem: Option<&[u8]>) -> anyhow::Result<Client> {
        let Some(pem) = root_pem else {
            return Ok(Client::new(base, token));
        };
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| anyhow::anyhow!("the daemon's TLS certificate cannot be read: {e}"))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: crate::http_client_builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .add_root_certificate(cert)
                .build()
                .map_err(|e| anyhow::anyhow!("cannot build the HTTPS client: {e}"))?,
        })
    }

    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: crate::http_client_builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .expect("static client config"),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let rb = self.http.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut rb = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        self.send(rb).await
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp =
            rb.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            return Ok(v);
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let errors = v
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "  - {}: {}",
                            e.get("field").and_then(Value::as_str).unwrap_or("?"),
                            e.get("message").and_then(Value::as_str).unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(ClientError::Problem {
            status: status.as_u16(),
            code: s("code"),
            title: if s("title").is_empty() {
                status.to_string()
            } else {
                s("title")
            },
            detail: if s("detail").is_empty() {
                text
            } else {
                s("detail")
            },
            errors,
        })
    }
}

fn num(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = match cur.get(p) {
            Some(c) => c,
            None => return "-".into(),
        };
    }
    match cur {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => group_thousands(n.as_i64().unwrap_or(0)),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// 12345 → "12,345", as cashiers read numbers.
pub fn group_thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn render_status(v: &Value) -> String {
    let online = v.get("online").and_then(Value::as_bool).unwrap_or(false);
    let mut s = format!(
        "store {}  {}  (upstream {}, last ok {})\n",
        num(v, &["store_id"]),
        if online { "ONLINE" } else { "OFFLINE" },
        num(v, &["upstream", "kind"]),
        num(v, &["upstream", "last_ok_at"]),
    );
    if v.pointer("/storage/ok") == Some(&Value::Bool(false)) {
        s.push_str(&format!(
            "STORAGE FAILING — writes are refused: {}\n",
            num(v, &["storage", "last_error"])
        ));
    }
    if let Some(e) = v.pointer("/upstream/last_error").and_then(Value::as_str) {
        s.push_str(&format!("last upstream error: {e}\n"));
    }
    s.push_str(&format!(
        "queue: {} pending, {} sending, {} ambiguous, {} needs review, {} rejected (oldest pending {} s)\n",
        num(v, &["queue", "pending"]),
        num(v, &["queue", "sending"]),
        num(v, &["queue", "ambiguous"]),
        num(v, &["queue", "needs_review"]),
        num(v, &["queue", "rejected"]),
        num(v, &["queue", "oldest_pending_age_s"]),
    ));
    if v.get("granting").is_some_and(Value::is_object) {
        let by = num(v, &["granting", "granted_by"]);
        s.push_str(&format!(
            "granting: {} ({}) grants points for purchases (from {}, read {})\n",
            if by == "register" {
                "the Smaregi register"
            } else {
                "pointsd"
            },
            by,
            num(v, &["granting", "source"]),
            num(v, &["granting", "read_at"]),
        ));
        if let Some(w) = v.pointer("/granting/warning").and_then(Value::as_str) {
            s.push_str(&format!("GRANTING WARNING: {w}\n"));
        }
    }
    if let Some(n) = v
        .get("possible_double_counts")
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
    {
        s.push_str(&format!(
            "POSSIBLE DOUBLE COUNTS: {n} (a register sale close to a grant or redeem here; `pointsd reconcile --doubles`)\n"
        ));
    }
    if v.get("sales").is_some_and(Value::is_object) {
        s.push_str(&format!(
            "sales: {} (points used {}, earned {}); returns: {} (taken back {}, given back {}, shortfall {} points on {} returns)\n",
            num(v, &["sales", "sales"]),
            num(v, &["sales", "points_used"]),
            num(v, &["sales", "points_earned"]),
            num(v, &["sales", "returns"]),
            num(v, &["sales", "points_taken_back"]),
            num(v, &["sales", "points_given_back"]),
            num(v, &["sales", "shortfall_points"]),
            num(v, &["sales", "returns_with_shortfall"]),
        ));
    }
    s.push_str(&format!(
        "cache: {} customers, last full refresh {}\n",
        num(v, &["cache", "customers"]),
        num(v, &["cache", "last_full_refresh_at"]),
    ));
    if v.pointer("/telemetry/enabled") == Some(&Value::Bool(true)) {
        s.push_str(&format!(
            "telemetry: last push {}, {} samples buffered, {} dropped",
            num(v, &["telemetry", "last_success_at"]),
            num(v, &["telemetry", "buffered_samples"]),
            num(v, &["telemetry", "dropped_samples"]),
        ));
        // Only an error since the last success is news (both RFC 3339 in UTC, so they sort).
        let stamp = |k: &str| {
            v.pointer(&format!("/telemetry/{k}"))
                .and_then(Value::as_str)
        };
        if let Some(e) = v.pointer("/telemetry/last_error").and_then(Value::as_str)
            && stamp("last_error_at") > stamp("last_success_at")
        {
            s.push_str(&format!("; failing: {e}"));
        }
        s.push('\n');
    }
    if v.get("tls").is_some_and(|t| !t.is_null()) {
        s.push_str(&format!(
            "tls: certificate SHA-256 fingerprint {} (valid until {})\n",
            num(v, &["tls", "fingerprint_sha256"]),
            num(v, &["tls", "not_after"]),
        ));
    }
    s
}

pub fn render_customer(v: &Value) -> String {
    let stale = v.get("stale").and_then(Value::as_bool).unwrap_or(true);
    format!(
        "{} ({}, code {})\navailable {} points = confirmed {} + pending {}\nas of {}{}; expires {}; tier {}\n",
        num(v, &["name"]),
        num(v, &["customer_id"]),
        num(v, &["code"]),
        num(v, &["balance", "available"]),
        num(v, &["balance", "confirmed"]),
        num(v, &["balance", "pending"]),
        num(v, &["as_of"]),
        if stale { " (may be out of date)" } else { "" },
        num(v, &["expires_at"]),
        num(v, &["tier"]),
    )
}

pub fn render_write(v: &Value) -> String {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("?");
    format!(
        "{} {} {} points for customer {}: {}\navailable now {} points\n",
        num(v, &["txn_id"]),
        num(v, &["kind"]),
        num(v, &["delta"]),
        num(v, &["customer_id"]),
        if status == "confirmed" {
            "confirmed by the upstream"
        } else {
            "saved — will sync"
        },
        num(v, &["balance", "available"]),
    )
}

fn sync_state(v: &Value) -> String {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("?");
    let how = if status == "confirmed" {
        "confirmed by the upstream"
    } else {
        "saved — will sync"
    };
    format!("{how} (state {})", num(v, &["state"]))
}

fn rules_lines(v: &Value) -> String {
    let mut s = String::new();
    if let Some(rules) = v.get("applied_rules").and_then(Value::as_array) {
        if !rules.is_empty() {
            s.push_str("rules applied:\n");
        }
        for r in rules {
            s.push_str(&format!(
                "  {}: {}\n",
                num(r, &["rule"]),
                num(r, &["detail"])
            ));
        }
    }
    s
}

/// A signed figure, as a change to a balance reads: +21, -279, 0.
fn delta(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(c) => cur = c,
            None => return "-".into(),
        }
    }
    match cur.as_i64() {
        Some(n) if n > 0 => format!("+{}", group_thousands(n)),
        Some(n) => group_thousands(n),
        None => "-".into(),
    }
}

pub fn render_quote(v: &Value) -> String {
    format!(
        "quote for customer {}: {} yen\n  points used   {}\n  points earned {}\n  net change    {}\navailable after the sale {} points (at most {} points could be used)\n{}(nothing was recorded)\n",
        num(v, &["customer_id"]),
        num(v, &["amount"]),
        num(v, &["points_used"]),
        num(v, &["points_earned"]),
        delta(v, &["net_delta"]),
        num(v, &["balance_after", "available"]),
        num(v, &["max_points_used"]),
        rules_lines(v),
    )
}

pub fn render_sale(v: &Value) -> String {
    format!(
        "sale {} for customer {}: {} yen\n  points used   {}\n  points earned {}\n  net change    {}\n{}\navailable now {} points\n{}",
        num(v, &["sale_id"]),
        num(v, &["customer_id"]),
        num(v, &["amount"]),
        num(v, &["points_used"]),
        num(v, &["points_earned"]),
        delta(v, &["net_delta"]),
        sync_state(v),
        num(v, &["balance", "available"]),
        rules_lines(v),
    )
}

pub fn render_return(v: &Value) -> String {
    let mut s = format!(
        "return {} of sale {} (customer {}): {} yen\n  earned points taken back {}\n  used points given back   {}\n  net change               {}\n",
        num(v, &["return_id"]),
        num(v, &["sale_id"]),
        num(v, &["customer_id"]),
        num(v, &["amount"]),
        num(v, &["points_taken_back"]),
        num(v, &["points_given_back"]),
        delta(v, &["net_delta"]),
    );
    if v.get("shortfall").and_then(Value::as_i64).unwrap_or(0) > 0 {
        s.push_str(&format!(
            "  shortfall                {} (points due back the customer no longer had; not taken)\n",
            num(v, &["shortfall"])
        ));
    }
    s.push_str(&format!(
        "{}\navailable now {} points\n",
        sync_state(v),
        num(v, &["balance", "available"])
    ));
    s
}

pub fn render_sale_detail(v: &Value) -> String {
    let mut s = render_sale(v);
    if v.get("external").and_then(Value::as_bool) == Some(true) {
        s.push_str("(recorded from a receipt for a return: a sale this store never recorded)\n");
    }
    let returns = v
        .get("returns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if returns.is_empty() {
        s.push_str("no returns\n");
    } else {
        s.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10} {:>9} {:<13}\n",
            "RETURN", "YEN", "TAKEN", "GIVEN", "SHORT", "STATE"
        ));
        for r in &returns {
            s.push_str(&format!(
                "{:<24} {:>10} {:>10} {:>10} {:>9} {:<13}\n",
                num(r, &["return_id"]),
                num(r, &["amount"]),
                num(r, &["points_taken_back"]),
                num(r, &["points_given_back"]),
                num(r, &["shortfall"]),
                num(r, &["state"]),
            ));
        }
    }
    s.push_str(&format!(
        "returned {} yen, still returnable {} yen; taken back {}, given back {}, shortfall {}\n",
        num(v, &["returned_amount"]),
        num(v, &["returnable_amount"]),
        num(v, &["points_taken_back"]),
        num(v, &["points_given_back"]),
        num(v, &["shortfall"]),
    ));
    s
}

fn transactions(v: &Value) -> Vec<Value> {
    v.get("transactions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn render_queue(v: &Value) -> String {
    let rows = transactions(v);
    if rows.is_empty() {
        return "no transactions\n".into();
    }
    let mut s = format!(
        "{:<24} {:<10} {:<8} {:>10} {:<13} {:>4}  {}\n",
        "TXN", "CUSTOMER", "KIND", "DELTA", "STATE", "TRY", "SPLIT / LAST ERROR"
    );
    for r in rows {
        let mut detail = split_text(&r);
        if let Some(e) = r.get("last_error").and_then(Value::as_str) {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(e);
        }
        s.push_str(&format!(
            "{:<24} {:<10} {:<8} {:>10} {:<13} {:>4}  {}\n",
            num(&r, &["txn_id"]),
            num(&r, &["customer_id"]),
            num(&r, &["kind"]),
            num(&r, &["delta"]),
            num(&r, &["state"]),
            num(&r, &["attempts"]),
            detail,
        ));
    }
    s
}

/// A sale's or a return's split, as one phrase ("" for other rows).
fn split_text(r: &Value) -> String {
    let Some(sp) = r.get("split").filter(|v| v.is_object()) else {
        return String::new();
    };
    if sp.get("return_id").is_some_and(|v| v.is_string()) {
        let mut s = format!(
            "return {} of sale {}: {} yen, taken back {}, given back {}",
            num(sp, &["return_id"]),
            num(sp, &["sale_id"]),
            num(sp, &["amount"]),
            num(sp, &["points_taken_back"]),
            num(sp, &["points_given_back"]),
        );
        if sp.get("shortfall").and_then(Value::as_i64).unwrap_or(0) > 0 {
            s.push_str(&format!(", shortfall {}", num(sp, &["shortfall"])));
        }
        s
    } else {
        format!(
            "sale {}: {} yen, used {}, earned {}",
            num(sp, &["sale_id"]),
            num(sp, &["amount"]),
            num(sp, &["points_used"]),
            num(sp, &["points_earned"]),
        )
    }
}

pub fn render_review(v: &Value) -> String {
    let rows = transactions(v);
    if rows.is_empty() {
        return "the review queue is empty\n".into();
    }
    let mut s = format!("{} transaction(s) need a decision:\n", rows.len());
    for r in rows {
        s.push_str(&format!(
            "\n{}  customer {}  {} {}  (created {})\n  why: {}\n  evidence: {}\n",
            num(&r, &["txn_id"]),
            num(&r, &["customer_id"]),
            num(&r, &["kind"]),
            num(&r, &["delta"]),
            num(&r, &["created_at"]),
            num(&r, &["last_error"]),
            r.get("upstream_result")
                .map(|e| e.to_string())
                .unwrap_or_default(),
        ));
    }
    s.push_str(
        "\ndecide with: pointsd review resolve TXN --as applied|resend|discard --note \"why\"\n",
    );
    s
}

pub fn render_reconcile(v: &Value) -> String {
    let mut s = format!(
        "reconciled at {}: {} balances checked, {} differ from what this store last confirmed\n",
        num(v, &["ran_at"]),
        num(v, &["checked"]),
        num(v, &["discrepancies"]),
    );
    if let Some(items) = v.get("items").and_then(Value::as_array) {
        for it in items.iter().take(50) {
            s.push_str(&format!(
                "  customer {}: cached {} → upstream {} ({})\n",
                num(it, &["customer_id"]),
                num(it, &["cached_confirmed"]),
                num(it, &["upstream"]),
                num(it, &["difference"]),
            ));
        }
    }
    s
}

/// The cross-ledger report as a table (a merchant sends it to support).
pub fn render_doubles(v: &Value) -> String {
    let list = v["doubles"].as_array().cloned().unwrap_or_default();
    let mut s = format!(
        "{} possible double count(s) (register sale within {} s of a pointsd grant or redeem of the same customer; nothing was corrected)\n",
        list.len(),
        num(v, &["window_s"]),
    );
    for d in &list {
        s.push_str(&format!(
            "customer {}  {}: register sale {} (store {}, {} points, {})  /  pointsd {} ({} points, {})\n",
            num(d, &["customer_id"]),
            num(d, &["kind"]),
            num(d, &["register", "transaction_head_id"]),
            num(d, &["register", "store_id"]),
            num(d, &["register", "points"]),
            num(d, &["register", "at"]),
            num(d, &["pointsd", "id"]),
            num(d, &["pointsd", "points"]),
            num(d, &["pointsd", "at"]),
        ));
    }
    if !list.is_empty() {
        s.push_str("a manager settles each with an adjust (POST /v1/transactions, kind \"adjust\", manager token) once the receipts show which one was extra\n");
    }
    s
}

pub fn render_ledger_report(v: &Value) -> String {
    let diffs = v
        .get("differences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut s = format!(
        "cross-ledger report at {}: {} customers compared, {} differ (Smaregi vs easyPoints, settle {} s)\n\
         skipped: {} in flight, {} settling, {} not compared\n",
        num(v, &["run_at"]),
        num(v, &["compared"]),
        diffs.len(),
        num(v, &["settle_s"]),
        num(v, &["in_flight"]),
        num(v, &["settling"]),
        num(v, &["not_compared"]),
    );
    if diffs.is_empty() {
        return s;
    }
    s.push_str(&format!(
        "{:<16} {:<16} {:>10} {:>10} {:>10}  {:<25} {}\n",
        "CUSTOMER", "SHOPIFY ID", "SMAREGI", "EASYPOINTS", "DIFF", "FIRST SEEN", "RECENT DELTAS"
    ));
    for d in &diffs {
        let deltas: Vec<String> = d
            .get("recent_deltas")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|t| {
                        format!(
                            "{:+} {}",
                            t["delta"].as_i64().unwrap_or(0),
                            num(t, &["state"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "{:<16} {:<16} {:>10} {:>10} {:>10}  {:<25} {}\n",
            num(d, &["customer_id"]),
            num(d, &["shopify_customer_id"]),
            num(d, &["smaregi"]),
            num(d, &["easypoints"]),
            num(d, &["difference"]),
            num(d, &["first_seen_at"]),
            if deltas.is_empty() {
                "-".to_string()
            } else {
                deltas.join(", ")
            },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(-1234567), "-1,234,567");
    }

    #[test]
    fn renders_a_sale_and_its_split_in_the_queue() {
        let sale = serde_json::json!({"sale_id":"S1","customer_id":"7","amount":2480,"points_used":300,
            "points_earned":21,"net_delta":-279,"state":"pending","status":"queued",
            "balance":{"available":1221},"applied_rules":[{"rule":"earn.basis","detail":"after points: 2180 yen"}]});
        let s = render_sale(&sale);
        for want in [
            "sale S1",
            "2,480 yen",
            "used   300",
            "earned 21",
            "-279",
            "saved — will sync",
            "1,221",
            "earn.basis",
        ] {
            assert!(s.contains(want), "{want:?} in {s}");
        }
        let q = serde_json::json!({"transactions":[
            {"txn_id":"sale:S1","customer_id":"7","kind":"sale","delta":-279,"state":"applied","attempts":1,
             "split":{"sale_id":"S1","amount":2480,"points_used":300,"points_earned":21,"net_delta":-279}},
            {"txn_id":"return:R1","customer_id":"7","kind":"return","delta":140,"state":"pending","attempts":0,
             "split":{"sale_id":"S1","return_id":"R1","amount":1240,"points_taken_back":10,"points_given_back":150,"shortfall":0,"net_delta":140}}]});
        let s = render_queue(&q);
        assert!(s.contains("sale S1: 2,480 yen, used 300, earned 21"), "{s}");
        assert!(
            s.contains("return R1 of sale S1: 1,240 yen, taken back 10, given back 150"),
            "{s}"
        );
        assert!(!s.contains("shortfall"), "no shortfall to show: {s}");
    }

    #[test]
    fn renders_a_return_with_its_shortfall() {
        let v = serde_json::json!({"return_id":"R1","sale_id":"S1","customer_id":"7","amount":1000,
            "points_taken_back":4,"points_given_back":0,"net_delta":-4,"shortfall":6,"state":"applied",
            "status":"confirmed","balance":{"available":0}});
        let s = render_return(&v);
        assert!(
            s.contains("taken back 4") && s.contains("shortfall                6"),
            "{s}"
        );
        assert!(s.contains("confirmed by the upstream"), "{s}");
    }

    #[test]
    fn status_shows_a_failing_push_only_until_it_recovers() {
        let failing = serde_json::json!({"telemetry": {"enabled": true,
            "last_success_at": "2026-12-01T10:00:00.000Z", "last_error_at": "2026-12-01T10:05:00.000Z",
            "last_error": "cannot reach the remote-write receiver", "buffered_samples": 300, "dropped_samples": 0}});
        let s = render_status(&failing);
        assert!(
            s.contains("300 samples buffered") && s.contains("failing: cannot reach"),
            "{s}"
        );
        let mut recovered = failing.clone();
        recovered["telemetry"]["last_success_at"] = "2026-12-01T10:06:00.000Z".into();
        assert!(!render_status(&recovered).contains("failing"));
        assert!(
            !render_status(&serde_json::json!({"telemetry": {"enabled": false}}))
                .contains("telemetry")
        );
    }

    #[test]
    fn renders_a_queued_write() {
        let v = serde_json::json!({"txn_id":"t1","kind":"earn","delta":5,"customer_id":"7","status":"queued","balance":{"available":12005}});
        let s = render_write(&v);
        assert!(
            s.contains("saved — will sync") && s.contains("12,005"),
            "{s}"
        );
    }
}
