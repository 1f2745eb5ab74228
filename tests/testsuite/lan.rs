//! The store LAN (DESIGN.md §11), against the real binary: held connections, timeouts, the
//! early 413, least privilege, throttled sign-ins, strict HTTP, tokens issued and revoked
//! live, TLS, and a stop with half-sent connections open.

use crate::common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{DaemonProcess, free_port};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REGISTER: &str = "lan-register-7f3a9c2e51d04b8e96a1f0c3";
const MANAGER: &str = "lan-manager-2b8e96a1f0c37d5b2e84c6d1";

/// A daemon on loopback with the built-in simulator, its config dir and data dir.
struct Lan {
    _dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    d: DaemonProcess,
    scheme: &'static str,
}

fn config_text(port: u16, api_extra: &str, tail: &str) -> String {
    format!(
        r#"[agent]
store_id = "store-lan"
[api]
listen = "127.0.0.1:{port}"
{api_extra}
[[api.tokens]]
name = "register-1"
token = "{REGISTER}"
[[api.tokens]]
name = "manager"
token = "{MANAGER}"
role = "manager"
[upstream.sim]
customers = 20
{tail}"#
    )
}

impl Lan {
    async fn start(api_extra: &str) -> Lan {
        Lan::start_with(api_extra, "", "http", "info").await
    }

    async fn start_with(api_extra: &str, tail: &str, scheme: &'static str, log: &str) -> Lan {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("pointsd.toml");
        std::fs::write(&config, config_text(port, api_extra, tail)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let data = dir.path().join("data");
        let d = DaemonProcess::start(&config, &data, port, log);
        let lan = Lan {
            _dir: dir,
            config,
            data,
            port,
            d,
            scheme,
        };
        if scheme == "http" {
            lan.d.wait_healthy(Duration::from_secs(20)).await;
        }
        lan
    }

    fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client whose connections come from `from` (any 127/8 address is loopback).
    fn client_from(from: u8) -> reqwest::Client {
        pointsd::http_client_builder()
            .no_proxy()
            .local_address(IpAddr::from([127, 0, 0, from]))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    async fn send(rb: reqwest::RequestBuilder) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = rb.send().await.expect("daemon answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn post(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let c = Lan::client_from(1);
        let (s, v, _) = Lan::send(c.post(self.url(path)).bearer_auth(token).json(body)).await;
        (s, v)
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let c = Lan::client_from(1);
        let (s, v, _) = Lan::send(c.get(self.url(path)).bearer_auth(token)).await;
        (s, v)
    }

    /// The daemon's log files, concatenated.
    fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.data.join("logs")) {
            for e in rd.flatten() {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    async fn wait_customers(&self) {
        let start = Instant::now();
        loop {
            let (s, _) = self.get(REGISTER, "/v1/customers/1").await;
            if s == 200 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "customer 1 never cached"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads whatever arrives on `s` until EOF or `limit`; `None` on timeout.
async fn read_until_eof(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&buf).into_owned())
}

/// Sends a raw request head (and body) and reads the answer until the server closes.
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_until_eof(&mut s, Duration::from_secs(10))
        .await
        .expect("the server answers and closes")
}

fn earn(txn: &str, points: i64) -> Value {
    json!({"txn_id": txn, "customer_id": "1", "kind": "earn", "points": points})
}

// ---------------------------------------------------------------------------------------------
// Connection defences

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_cap_in_held_connections_does_not_lock_out_a_register() {
    let lan = Lan::start("max_connections = 16\nheader_timeout_s = 2\nidle_timeout_s = 3\n").await;
    lan.wait_customers().await;
    let mut held = Vec::new();
    for i in 0..32 {
        let mut s = TcpStream::connect(lan.addr()).await.unwrap();
        if i % 2 == 0 {
            // Half-sent: a head that never ends.
            s.write_all(b"POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // A register on a fresh connection is served while they are held.
    let (s, v) = lan
        .post(REGISTER, "/v1/transactions", &earn("held-1", 10))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lan.get(REGISTER, "/v1/customers/1").await;
    assert_eq!(s, 200, "{v}");
    // Every held connection is closed: shed at the cap, or by its header or idle timeout.
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            read_until_eof(s, Duration::from_secs(20)).await.is_some(),
            "held connection {i} is still open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_and_an_idle_connection_are_closed_by_their_timeouts() {
    let lan = Lan::start("header_timeout_s = 1\nidle_timeout_s = 2\n").await;
    let mut half = TcpStream::connect(lan.addr()).await.unwrap();
    half.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // A keep-alive connection after one answer, then quiet.
    let mut idle = TcpStream::connect(lan.addr()).await.unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        read_until_eof(&mut half, Duration::from_secs(20))
            .await
            .is_some()
    );
    assert!(
        read_until_eof(&mut idle, Duration::from_secs(20))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_gigabyte_content_length_gets_413_before_any_body() {
    let lan = Lan::start("").await;
    let mut s = TcpStream::connect(lan.addr()).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {REGISTER}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // No body is sent: the answer must come from the head alone.
    let text = read_until_eof(&mut s, Duration::from_secs(10))
        .await
        .expect("answered and closed without the body");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("too_large"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_nothing_is_written() {
    let lan = Lan::start("body_timeout_s = 1\n").await;
    let mut s = TcpStream::connect(lan.addr()).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {REGISTER}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"txn_id\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = read_until_eof(&mut s, Duration::from_secs(20))
        .await
        .expect("answered and closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    let (_, v) = lan.get(MANAGER, "/v1/transactions").await;
    assert_eq!(v["transactions"], json!([]), "{v}");
}

/// A connection from `from` (127.0.0.`from`) that sends a POST head with a valid `token` and
/// a 60,000-byte `Content-Length` and the first byte of the body.
async fn trickle(addr: &str, from: u8, token: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::new(127, 0, 0, from), 0).into())
        .unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// Keeps trickling on `s` until the server closes it; returns what it answered.
async fn keep_trickling(mut s: TcpStream, every: Duration) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            () = tokio::time::sleep(every) => {
                if s.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_at_twice_the_cap_do_not_lock_out_a_register() {
    let lan = Lan::start("max_connections = 16\nbody_timeout_s = 60\n").await;
    lan.wait_customers().await;
    // The attacker holds a valid token (a stolen iPad's).
    let (s, v) = lan
        .post(MANAGER, "/v1/tokens", &json!({"name": "stolen"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let stolen = v["token"].as_str().unwrap().to_string();
    let every = Duration::from_secs(1);
    let mut held = Vec::new();
    for _ in 0..32 {
        let s = trickle(&lan.addr(), 2, &stolen).await;
        held.push(tokio::spawn(keep_trickling(s, every)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While they trickle, a register on fresh connections earns, each within seconds.
    for i in 0..5 {
        let t0 = Instant::now();
        let (s, v) = lan
            .post(
                REGISTER,
                "/v1/transactions",
                &earn(&format!("door-{i}"), 10),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing the trickling requests sent was written.
    let (_, v) = lan.get(MANAGER, "/v1/transactions").await;
    assert_eq!(v["transactions"].as_array().unwrap().len(), 5, "{v}");
    for h in held {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_meets_its_deadline_and_requests_in_progress_are_capped() {
    let lan = Lan::start(
        "body_timeout_s = 2\nmax_requests_per_token = 2\nmax_requests_per_address = 3\n",
    )
    .await;
    lan.wait_customers().await;
    // One byte every 300 ms would keep a per-byte timer alive for ever: the whole body has
    // 2 s from the end of its head.
    let t0 = Instant::now();
    let s = trickle(&lan.addr(), 2, REGISTER).await;
    let text = keep_trickling(s, Duration::from_millis(300)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());

    // Two requests in progress with one token: a third with it is refused at once, another
    // token is not.
    let slow = Duration::from_millis(500);
    let a = tokio::spawn(keep_trickling(
        trickle(&lan.addr(), 3, REGISTER).await,
        slow,
    ));
    let b = tokio::spawn(keep_trickling(
        trickle(&lan.addr(), 4, REGISTER).await,
        slow,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = Lan::client_from(5);
    let (s, v, _) = Lan::send(c.get(lan.url("/v1/whoami")).bearer_auth(REGISTER)).await;
    assert_eq!(
        (s, v["code"].clone()),
        (429, json!("too_many_requests_in_progress")),
        "{v}"
    );
    let (s, _, _) = Lan::send(c.get(lan.url("/v1/whoami")).bearer_auth(MANAGER)).await;
    assert_eq!(s, 200);
    // Three in progress from one address: a fourth from it is refused, whatever its token.
    let m = Duration::from_millis(500);
    let d = tokio::spawn(keep_trickling(trickle(&lan.addr(), 3, MANAGER).await, m));
    let d2 = tokio::spawn(keep_trickling(trickle(&lan.addr(), 3, MANAGER).await, m));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((std::net::Ipv4Addr::new(127, 0, 0, 3), 0).into())
        .unwrap();
    let mut e = sock.connect(lan.addr().parse().unwrap()).await.unwrap();
    e.write_all(format!("GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MANAGER}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let text = read_until_eof(&mut e, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("too_many_requests_in_progress"), "{text}");
    for h in [a, b, d, d2] {
        let text = h.await.unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_half_sent_connections_open_ends_within_the_grace() {
    let mut lan = Lan::start("shutdown_grace_s = 2\nheader_timeout_s = 60\n").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(lan.addr()).await.unwrap();
        s.write_all(
            b"POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        held.push(s);
    }
    lan.d.terminate();
    let st = lan.d.wait_exit(Duration::from_secs(20)).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "the daemon did not stop cleanly: {st:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Least privilege

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_token_is_refused_on_every_manager_operation() {
    let lan = Lan::start("").await;
    lan.wait_customers().await;
    let ops: Vec<(&str, Value)> = vec![
        (
            "/v1/transactions",
            json!({"txn_id": "adj-1", "customer_id": "1", "kind": "adjust", "points": 10_000_000}),
        ),
        ("/v1/transactions", earn("big-1", 10_001)),
        (
            "/v1/returns",
            json!({"return_id": "ret-1", "customer_id": "1", "amount": 1000, "points_earned": 10, "points_used": 0}),
        ),
        (
            "/v1/transactions/adj-1/resolve",
            json!({"as": "discard", "note": "x"}),
        ),
        ("/v1/reconcile", json!({})),
        ("/v1/tokens", json!({"name": "sneaky"})),
    ];
    for (path, body) in &ops {
        let (s, v) = lan.post(REGISTER, path, body).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(v["code"], json!("forbidden_for_role"), "{path}: {v}");
        assert_eq!(v["role"], json!("manager"), "{path}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("manager"), "{v}");
    }
    for (method, path) in [("GET", "/v1/tokens"), ("DELETE", "/v1/tokens/manager")] {
        let c = Lan::client_from(1);
        let rb = if method == "GET" {
            c.get(lan.url(path))
        } else {
            c.delete(lan.url(path))
        };
        let (s, v, _) = Lan::send(rb.bearer_auth(REGISTER)).await;
        assert_eq!(
            (s, v["code"].clone()),
            (403, json!("forbidden_for_role")),
            "{method} {path}: {v}"
        );
    }
    // Nothing was written.
    let (s, v) = lan.get(MANAGER, "/v1/tokens").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let (s, v) = lan.get(MANAGER, "/v1/transactions").await;
    assert_eq!(s, 200);
    assert_eq!(v["transactions"], json!([]), "{v}");
    // Within the limit a register earns; a manager may adjust.
    let (s, v) = lan
        .post(REGISTER, "/v1/transactions", &earn("ok-1", 10_000))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lan
        .post(
            MANAGER,
            "/v1/transactions",
            &json!({"txn_id": "adj-2", "customer_id": "1", "kind": "adjust", "points": 5}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grant_a_register_causes_is_bounded_and_a_managers_larger_one_is_logged() {
    // 1 point per 100 yen (the default rule): 60,000 yen earns 600 points, past a cap of 500.
    let lan =
        Lan::start("register_max_earn_points = 500\nregister_max_sale_amount = 100000\n").await;
    lan.wait_customers().await;
    let by_amount = |txn: &str, amount: i64| json!({"txn_id": txn, "customer_id": "1", "kind": "earn", "purchase_amount": amount});
    let sale = |id: &str, amount: i64| json!({"sale_id": id, "customer_id": "1", "amount": amount, "points_used": 0});
    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/transactions",
            by_amount("amt-1", 60_000),
            "api.register_max_earn_points",
        ),
        (
            "/v1/transactions",
            by_amount("amt-2", 10_000_000),
            "api.register_max_sale_amount",
        ),
        (
            "/v1/transactions",
            by_amount("amt-3", 100_001),
            "api.register_max_sale_amount",
        ),
        (
            "/v1/transactions",
            earn("pts-1", 501),
            "api.register_max_earn_points",
        ),
        (
            "/v1/sales",
            sale("R-1", 60_000),
            "api.register_max_earn_points",
        ),
        (
            "/v1/sales",
            sale("R-2", 10_000_000),
            "api.register_max_sale_amount",
        ),
        (
            "/v1/sales/quote",
            json!({"customer_id": "1", "amount": 100_001}),
            "api.register_max_sale_amount",
        ),
    ];
    for (path, body, key) in &refused {
        let (s, v) = lan.post(REGISTER, path, body).await;
        assert_eq!(s, 403, "{path} {body}: {v}");
        assert_eq!(v["code"], json!("forbidden_for_role"), "{v}");
        assert_eq!(v["rule"], json!(key), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(key), "{v}");
    }
    // Nothing was written.
    let (s, v) = lan.get(MANAGER, "/v1/transactions").await;
    assert_eq!(s, 200);
    assert_eq!(v["transactions"], json!([]), "{v}");
    for id in ["R-1", "R-2"] {
        let (s, v) = lan.get(MANAGER, &format!("/v1/sales/{id}")).await;
        assert_eq!(s, 404, "{v}");
    }
    // Within both caps a register earns and sells.
    let (s, v) = lan
        .post(REGISTER, "/v1/transactions", &by_amount("amt-ok", 50_000))
        .await;
    assert_eq!((s, v["delta"].clone()), (201, json!(500)), "{v}");
    let (s, v) = lan.post(REGISTER, "/v1/sales", &sale("R-ok", 50_000)).await;
    assert_eq!(s, 201, "{v}");
    // A manager may grant more, within the bound every delta keeps; it is logged with its name.
    let (s, v) = lan
        .post(MANAGER, "/v1/transactions", &by_amount("mgr-1", 60_000))
        .await;
    assert_eq!((s, v["delta"].clone()), (201, json!(600)), "{v}");
    let (s, v) = lan.post(MANAGER, "/v1/sales", &sale("R-mgr", 60_000)).await;
    assert_eq!((s, v["points_earned"].clone()), (201, json!(600)), "{v}");
    for (path, body, field) in [
        (
            "/v1/transactions",
            by_amount("mgr-big", 10_000_000_000),
            "purchase_amount",
        ),
        ("/v1/sales", sale("R-big", 10_000_000_000), "amount"),
    ] {
        let (s, v) = lan.post(MANAGER, path, &body).await;
        assert_eq!(s, 422, "{path}: {v}");
        assert_eq!(v["errors"][0]["field"], json!(field), "{v}");
    }
    let logs = lan.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("a manager token granted more points than a register may"))
        .collect();
    assert_eq!(warned.len(), 2, "{logs}");
    assert!(
        warned
            .iter()
            .all(|l| l.contains("WARN") && l.contains("manager")),
        "{warned:#?}"
    );
    // `sale:` and `return:` name the transactions of sales and returns: refused as txn_ids.
    for id in ["sale:R-9", "return:RT-9"] {
        let (s, v) = lan.post(MANAGER, "/v1/transactions", &earn(id, 1)).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["errors"][0]["field"], json!("txn_id"), "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Failed sign-ins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_per_address_and_logged_sampled() {
    let lan = Lan::start("").await;
    let attacker = Lan::client_from(2);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..40 {
        let (s, _, h) = Lan::send(
            attacker
                .get(lan.url("/v1/status"))
                .bearer_auth(format!("guess-{i:04}-0123456789abcdef")),
        )
        .await;
        statuses.push(s);
        if s == 429 {
            retry_after = h
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even the right token is refused from that address for now...
    let (s, _, _) = Lan::send(attacker.get(lan.url("/v1/status")).bearer_auth(REGISTER)).await;
    assert_eq!(s, 429);
    // ...while a register at another address is unaffected.
    let register = Lan::client_from(3);
    let (s, v, _) = Lan::send(register.get(lan.url("/v1/status")).bearer_auth(REGISTER)).await;
    assert_eq!(s, 200, "{v}");
    // One line names the address; the flood does not fill the log.
    let logs = lan.logs();
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].contains("127.0.0.2"), "{}", refused[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throttle_has_no_holes_loopback_mapped_and_ipv6_alike() {
    // A dual-stack listener: IPv4 clients arrive as IPv4-mapped IPv6 addresses. It needs IPv6
    // loopback, which some containers lack.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::skip_or_fail("the_throttle_has_no_holes", "no IPv6 loopback (::1) here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pointsd.toml");
    std::fs::write(
        &config,
        config_text(port, "allow_plain_http = true", "")
            .replace("listen = \"127.0.0.1:", "listen = \"[::]:"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let data = dir.path().join("data");
    let d = DaemonProcess::start(&config, &data, port, "info");
    d.wait_healthy(Duration::from_secs(20)).await;
    let lan = Lan {
        _dir: dir,
        config,
        data,
        port,
        d,
        scheme: "http",
    };
    let client = |from: IpAddr| {
        pointsd::http_client_builder()
            .no_proxy()
            .local_address(from)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let v4 = |last: u8| IpAddr::from([127, 0, 0, last]);
    let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    let url = |from: IpAddr| match from {
        IpAddr::V4(_) => format!("http://127.0.0.1:{port}/v1/whoami"),
        IpAddr::V6(_) => format!("http://[::1]:{port}/v1/whoami"),
    };
    // The store PC itself (127.0.0.1, arriving as ::ffff:127.0.0.1) and ::1 are throttled like
    // any other address: ten wrong tokens, then 429 even with the right one.
    for from in [v4(1), v6] {
        let c = client(from);
        let mut statuses = Vec::new();
        for i in 0..11 {
            let (s, _, _) = Lan::send(
                c.get(url(from))
                    .bearer_auth(format!("guess-{i:04}-0123456789abcdef")),
            )
            .await;
            statuses.push(s);
        }
        assert!(
            statuses[..10].iter().all(|s| *s == 401),
            "{from}: {statuses:?}"
        );
        assert_eq!(statuses[10], 429, "{from}: {statuses:?}");
        let (s, _, _) = Lan::send(c.get(url(from)).bearer_auth(REGISTER)).await;
        assert_eq!(s, 429, "{from}: the right token too");
    }
    // Others are unaffected: another IPv4 address (mapped as well).
    let (s, v, _) = Lan::send(client(v4(2)).get(url(v4(2))).bearer_auth(REGISTER)).await;
    assert_eq!(s, 200, "{v}");
    // Each throttled address is in the log at WARN, and counted.
    let logs = lan.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("client address throttled"))
        .collect();
    assert_eq!(warned.len(), 2, "{logs}");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("127.0.0.1") && !l.contains("::ffff")),
        "{warned:#?}"
    );
    assert!(warned.iter().any(|l| l.contains("::1")), "{warned:#?}");
    let c = client(v4(3));
    let r = c
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(MANAGER)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(
        common::metric(&text, "pointsd_api_signin_throttled_addresses", None),
        Some(2.0),
        "{text}"
    );
    let refused = common::metric(&text, "pointsd_api_signin_refused_total", None).unwrap();
    assert!(refused >= 24.0, "{refused}");
}

// ---------------------------------------------------------------------------------------------
// Strict HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_http_refuses_what_is_ambiguous_and_answers_problems() {
    // At debug level, so that a logged query string would show.
    let lan = Lan::start_with("", "", "http", "debug").await;
    lan.wait_customers().await;
    let c = Lan::client_from(1);
    let problem = |s: u16, v: &Value, h: &reqwest::header::HeaderMap, status: u16, code: &str| {
        assert_eq!(s, status, "{v}");
        assert_eq!(v["code"], json!(code), "{v}");
        let ct = h.get("content-type").unwrap().to_str().unwrap();
        assert!(ct.starts_with("application/problem+json"), "{ct}");
    };

    // Duplicate keys: refused, nothing applied.
    let (s, v, h) = Lan::send(
        c.post(lan.url("/v1/transactions"))
            .bearer_auth(REGISTER)
            .header("content-type", "application/json")
            .body(r#"{"txn_id":"dup-1","customer_id":"1","kind":"earn","points":1,"points":5000}"#),
    )
    .await;
    problem(s, &v, &h, 400, "bad_json");
    // Not JSON by its content type.
    let (s, v, h) = Lan::send(
        c.post(lan.url("/v1/transactions"))
            .bearer_auth(REGISTER)
            .header("content-type", "text/plain")
            .body(earn("ct-1", 1).to_string()),
    )
    .await;
    problem(s, &v, &h, 415, "unsupported_media_type");
    let (_, v) = lan.get(MANAGER, "/v1/transactions").await;
    assert_eq!(v["transactions"], json!([]), "{v}");

    // The scheme is case-insensitive; API answers are not cached.
    let (s, v, h) = Lan::send(
        c.get(lan.url("/v1/status"))
            .header("authorization", format!("BEARER {REGISTER}")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.get("cache-control").unwrap(), "no-store");

    // A path that is not UTF-8, a huge target, huge headers, a foreign Host.
    let (s, v, h) = Lan::send(c.get(lan.url("/v1/customers/%FF%FE")).bearer_auth(REGISTER)).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        h.get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    let long = "x".repeat(9000);
    let (s, v, h) = Lan::send(
        c.get(lan.url(&format!("/v1/customers/{long}")))
            .bearer_auth(REGISTER),
    )
    .await;
    problem(s, &v, &h, 414, "uri_too_long");
    let (s, v, h) = Lan::send(
        c.get(lan.url("/v1/status"))
            .bearer_auth(REGISTER)
            .header("x-big", "y".repeat(20_000)),
    )
    .await;
    problem(s, &v, &h, 431, "headers_too_large");
    let text = raw(
        &lan.addr(),
        format!("GET /v1/status HTTP/1.1\r\nHost: rebound.example:8765\r\nAuthorization: Bearer {REGISTER}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 421"), "{text}");
    assert!(text.contains("host_not_allowed"), "{text}");

    // A note with a line break cannot forge a log line; a query string is never logged.
    let (s, v, _) = Lan::send(
        c.get(lan.url("/v1/customers?code=QUERY-SECRET-77"))
            .bearer_auth(REGISTER),
    )
    .await;
    assert!(s == 200 || s == 404, "{s} {v}");
    let (s, v) = lan
        .post(
            MANAGER,
            "/v1/transactions/none-such/resolve",
            &json!({"as": "discard", "note": "ok\nERROR forged line"}),
        )
        .await;
    assert!(s >= 400, "{v}");
    let logs = lan.logs();
    assert!(
        !logs.contains("QUERY-SECRET-77"),
        "a query string was logged"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line reached the log"
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens issued and revoked live

fn pointsd(args: &[&str], config: &Path, data: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("POINTSD_DATA_DIR")
        .env_remove("POINTSD_CONFIG")
        .output()
        .expect("pointsd runs")
}

async fn wait_status(lan: &Lan, token: &str, want: u16) {
    let start = Instant::now();
    let mut from = 100u8;
    loop {
        // Each poll from its own address: the 401s before a change is picked up must not
        // trip the per-address throttle.
        from = from.wrapping_add(1).max(100);
        let c = Lan::client_from(from);
        let (s, _, _) = Lan::send(c.get(lan.url("/v1/whoami")).bearer_auth(token)).await;
        if s == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still {s}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_issued_and_revoked_without_a_restart() {
    let lan = Lan::start("").await;
    let out = pointsd(
        &["token", "add", "ipad-7", "--role", "manager"],
        &lan.config,
        &lan.data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 43, "{token}");
    let stored = std::fs::read_to_string(lan.data.join("tokens.json")).unwrap();
    assert!(!stored.contains(&token), "only the digest is stored");

    wait_status(&lan, &token, 200).await;
    let (_, v) = lan.get(&token, "/v1/whoami").await;
    assert_eq!(v, json!({"name": "ipad-7", "role": "manager"}));

    let out = pointsd(&["token", "list", "--json"], &lan.config, &lan.data);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["register-1", "manager", "ipad-7"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(REGISTER));

    // The same name twice is refused.
    let out = pointsd(&["token", "add", "ipad-7"], &lan.config, &lan.data);
    assert!(!out.status.success());

    // Revoking an issued token and a config token takes effect live.
    for (name, tok) in [("ipad-7", token.as_str()), ("register-1", REGISTER)] {
        let out = pointsd(&["token", "revoke", name], &lan.config, &lan.data);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_status(&lan, tok, 401).await;
    }
    wait_status(&lan, MANAGER, 200).await;
    assert!(
        lan.logs().contains("tokens reloaded"),
        "the reload is logged"
    );

    // A manager issues and revokes a token through the API; it works at once.
    let (s, v) = lan
        .post(MANAGER, "/v1/tokens", &json!({"name": "ipad-9"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let t = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["role"], json!("register"));
    let (s, v) = lan.get(&t, "/v1/whoami").await;
    assert_eq!((s, v["name"].clone()), (200, json!("ipad-9")));
    let (s, v) = lan
        .post(MANAGER, "/v1/tokens", &json!({"name": "ipad-9"}))
        .await;
    assert_eq!((s, v["code"].clone()), (409, json!("token_exists")));
    let c = Lan::client_from(1);
    let (s, _, _) = Lan::send(c.delete(lan.url("/v1/tokens/ipad-9")).bearer_auth(MANAGER)).await;
    assert_eq!(s, 204);
    let (s, _) = lan.get(&t, "/v1/whoami").await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_token_changes_are_certain_every_201_works_every_204_is_refused() {
    let lan = Lan::start("").await;
    // A kept-alive client: a revoke must reach connections already open, not only new ones.
    let keep = Lan::client_from(4);
    let whoami = lan.url("/v1/whoami");
    let mut doomed = Vec::new();
    for i in 0..8 {
        let name = format!("old-{i}");
        let (s, v) = lan
            .post(MANAGER, "/v1/tokens", &json!({"name": name}))
            .await;
        assert_eq!(s, 201, "{v}");
        let t = v["token"].as_str().unwrap().to_string();
        let (s, _, _) = Lan::send(keep.get(&whoami).bearer_auth(&t)).await;
        assert_eq!(s, 200);
        doomed.push((name, t));
    }
    // 20 issues and 8 revokes through the API, and 3 issues by the CLI, all at once.
    let mut issues = Vec::new();
    for i in 0..20 {
        let (c, url) = (Lan::client_from(1), lan.url("/v1/tokens"));
        issues.push(tokio::spawn(async move {
            let name = format!("new-{i}");
            let (s, v, _) = Lan::send(
                c.post(url)
                    .bearer_auth(MANAGER)
                    .json(&json!({"name": name, "role": "register"})),
            )
            .await;
            (name, s, v)
        }));
    }
    let mut revokes = Vec::new();
    for (name, _) in &doomed {
        let (c, url) = (Lan::client_from(1), lan.url(&format!("/v1/tokens/{name}")));
        revokes.push(tokio::spawn(async move {
            let (s, v, _) = Lan::send(c.delete(url).bearer_auth(MANAGER)).await;
            (s, v)
        }));
    }
    let mut cli = Vec::new();
    for i in 0..3 {
        let (config, data) = (lan.config.clone(), lan.data.clone());
        cli.push(tokio::task::spawn_blocking(move || {
            pointsd(&["token", "add", &format!("cli-{i}")], &config, &data)
        }));
    }
    let mut issued = Vec::new();
    for h in issues {
        let (name, s, v) = h.await.unwrap();
        assert_eq!(s, 201, "{name}: {v}");
        issued.push((name, v["token"].as_str().unwrap().to_string()));
    }
    for h in revokes {
        let (s, v) = h.await.unwrap();
        assert_eq!(s, 204, "{v}");
    }
    let mut cli_tokens = Vec::new();
    for (i, h) in cli.into_iter().enumerate() {
        let out = h.await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli_tokens.push((
            format!("cli-{i}"),
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
        ));
    }
    // At once, on the kept-alive connections: every 201 signs in, every 204 is refused.
    let check = |c: reqwest::Client,
                 url: String,
                 issued: Vec<(String, String)>,
                 doomed: Vec<(String, String)>| async move {
        for (name, t) in &issued {
            let (s, v, _) = Lan::send(c.get(&url).bearer_auth(t)).await;
            assert_eq!((s, v["name"].clone()), (200, json!(name)), "{name}: {v}");
        }
        for (name, t) in &doomed {
            let (s, _, _) = Lan::send(c.get(&url).bearer_auth(t)).await;
            assert_eq!(s, 401, "{name} was revoked (204) but still signs in");
        }
    };
    check(keep.clone(), whoami.clone(), issued.clone(), doomed.clone()).await;
    // The CLI's issues reach the daemon through the watcher; nothing the API did is lost.
    for (_, t) in &cli_tokens {
        wait_status(&lan, t, 200).await;
    }
    // After the watcher has looked again (2 s), still so: no reload brings a revoked token
    // back or loses an issued one (from another address: the 401s above count against 4).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut all = issued.clone();
    all.extend(cli_tokens.iter().cloned());
    check(Lan::client_from(5), whoami.clone(), all, doomed.clone()).await;
    let file: Value =
        serde_json::from_slice(&std::fs::read(lan.data.join("tokens.json")).unwrap()).unwrap();
    assert_eq!(file["tokens"].as_array().unwrap().len(), 23, "{file}");
    let leftovers: Vec<String> = std::fs::read_dir(&lan.data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!lan.logs().contains("ERROR"), "no 500 and no failed reload");

    // 409: a manager's own token, and a config name (even revoked) issued again.
    let c = Lan::client_from(1);
    let (s, v, _) = Lan::send(c.delete(lan.url("/v1/tokens/manager")).bearer_auth(MANAGER)).await;
    assert_eq!((s, v["code"].clone()), (409, json!("own_token")), "{v}");
    let (s, _, _) = Lan::send(
        c.delete(lan.url("/v1/tokens/register-1"))
            .bearer_auth(MANAGER),
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = lan
        .post(MANAGER, "/v1/tokens", &json!({"name": "register-1"}))
        .await;
    assert_eq!((s, v["code"].clone()), (409, json!("token_exists")), "{v}");
    let (s, _) = lan.get(MANAGER, "/v1/whoami").await;
    assert_eq!(s, 200, "the manager still signs in");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_its_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let lan = Lan::start("").await;
    lan.wait_customers().await;
    let (s, v) = lan
        .post(REGISTER, "/v1/transactions", &earn("perm-1", 5))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = lan
        .post(MANAGER, "/v1/tokens", &json!({"name": "perm-ipad"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The test's own umask (usually 022) would give 0755 and 0644.
    assert_eq!(mode(&lan.data), 0o700, "data dir");
    assert_eq!(mode(&lan.data.join("logs")), 0o700, "logs dir");
    for f in [
        "pointsd.db",
        "pointsd.db-wal",
        "pointsd.lock",
        "tokens.json",
    ] {
        let p = lan.data.join(f);
        assert!(p.exists(), "{f}");
        assert_eq!(mode(&p), 0o600, "{f}");
    }
}

#[test]
fn token_list_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pointsd.toml");
    std::fs::write(&config, config_text(free_port(), "", "")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["token", "list", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("POINTSD_DATA_DIR")
        .env_remove("POINTSD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the list is written (`pointsd token list | head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
}

// ---------------------------------------------------------------------------------------------
// TLS

/// The certificate the server at `addr` presents (trusting `root_pem`), as DER.
async fn served_certificate(addr: &str, root_pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the daemon's certificate trusted");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn https_client(root_pem: &[u8]) -> reqwest::Client {
    pointsd::http_client_builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_file(p: &Path) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Ok(b) = std::fs::read(p)
            && !b.is_empty()
        {
            return b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            p.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn https_status(lan: &Lan, pem: &[u8]) -> Value {
    let c = https_client(pem);
    let start = Instant::now();
    loop {
        if let Ok(r) = c
            .get(lan.url("/v1/status"))
            .bearer_auth(REGISTER)
            .send()
            .await
            && r.status().is_success()
        {
            return r.json().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no HTTPS answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(pointsd::config::sha256(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_certificate_is_served_and_its_fingerprint_is_in_status() {
    let lan = Lan::start_with(
        "[api.tls]\ngenerate = true\nnames = [\"store-pc.local\", \"192.168.1.10\"]\n",
        "",
        "https",
        "info",
    )
    .await;
    let pem = wait_file(&lan.data.join("tls/cert.pem")).await;
    let status = https_status(&lan, &pem).await;
    let served = served_certificate(&lan.addr(), &pem).await;
    let fp = status["tls"]["fingerprint_sha256"]
        .as_str()
        .expect("tls in status");
    assert_eq!(fp, sha256_hex(&served), "{status:#}");
    // HQ's expiry alert has its series: the certificate's notAfter, in unix seconds.
    let metrics = https_client(&pem)
        .get(lan.url("/metrics"))
        .bearer_auth(REGISTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let not_after = time::OffsetDateTime::parse(
        status["tls"]["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        metrics.contains(&format!(
            "pointsd_tls_certificate_expiry_timestamp_seconds{{certificate=\"api\"}} {not_after}"
        )),
        "{metrics}"
    );
    // Plain HTTP is not served on the HTTPS port.
    let plain = Lan::client_from(1)
        .get(format!("http://127.0.0.1:{}/v1/health", lan.port))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // The CLI on this PC trusts the daemon's own certificate and shows the fingerprint (it
    // finds the data dir through the config).
    let text = std::fs::read_to_string(&lan.config).unwrap().replace(
        "[agent]\n",
        &format!("[agent]\ndata_dir = {:?}\n", lan.data.display().to_string()),
    );
    std::fs::write(&lan.config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
        .args(["status", "--config"])
        .arg(&lan.config)
        .env_remove("POINTSD_URL")
        .env_remove("POINTSD_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(fp), "{text}");
    // So do doctor and the start-up log.
    let out = pointsd(&["doctor"], &lan.config, &lan.data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(fp), "{text}");
    assert!(text.contains("in use by a running pointsd"), "{text}");
    assert!(
        lan.logs().contains(fp),
        "the fingerprint is in the start-up log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_certificate_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let lan = Lan::start_with(
        &format!(
            "[api.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
        "",
        "https",
        "info",
    )
    .await;
    let pem = cert.pem().into_bytes();
    let status = https_status(&lan, &pem).await;
    let served = served_certificate(&lan.addr(), &pem).await;
    assert_eq!(served, cert.der().to_vec());
    assert_eq!(
        status["tls"]["fingerprint_sha256"],
        json!(sha256_hex(cert.der()))
    );
}

#[test]
fn config_check_refuses_plain_http_beyond_loopback_and_weak_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            config_text(8765, "", "").replace("127.0.0.1:8765", "0.0.0.0:8765"),
            Some("api.listen"),
        ),
        (
            config_text(8765, "allow_plain_http = true\n", "")
                .replace("127.0.0.1:8765", "0.0.0.0:8765"),
            None,
        ),
        (
            config_text(
                8765,
                "[api.tls]\ngenerate = true\nnames = [\"pc.local\"]\n",
                "",
            )
            .replace("127.0.0.1:8765", "0.0.0.0:8765"),
            None,
        ),
        (
            config_text(8765, "", "").replace(REGISTER, "passwordpassword"),
            Some("api.tokens[0].token"),
        ),
        (
            config_text(8765, "", "").replace(MANAGER, REGISTER),
            Some("api.tokens[1]"),
        ),
        // Plain http to an upstream or a telemetry receiver beyond this PC: the secrets would
        // cross the network in clear text, unless the key says so.
        (
            config_text(
                8765,
                "",
                "[upstream.smaregi]\napi_base = \"http://api.smaregi.example\"\n",
            ),
            Some("upstream.smaregi.api_base"),
        ),
        (
            config_text(
                8765,
                "",
                "[upstream.smaregi]\napi_base = \"http://api.smaregi.example\"\nallow_insecure_http = true\n",
            ),
            None,
        ),
        (
            config_text(
                8765,
                "",
                "[upstream.smaregi]\napi_base = \"http://127.0.0.1:9\"\nid_base = \"http://localhost:9\"\n",
            ),
            None,
        ),
        (
            config_text(
                8765,
                "",
                "[telemetry]\nremote_write_url = \"http://hq.example/api/v1/write\"\n",
            ),
            Some("telemetry.remote_write_url"),
        ),
        (
            config_text(
                8765,
                "",
                "[telemetry]\nremote_write_url = \"http://hq.example/api/v1/write\"\nallow_insecure_http = true\n",
            ),
            None,
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&p, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pointsd"))
            .args(["config", "check", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match key {
            None => assert!(out.status.success(), "case {i}: {err}"),
            Some(k) => {
                assert!(!out.status.success(), "case {i} passed");
                assert!(err.contains(&format!("{k}:")), "case {i}: {err}");
                assert!(
                    !err.contains("passwordpassword") && !err.contains(REGISTER),
                    "a token was printed: {err}"
                );
            }
        }
    }
}
