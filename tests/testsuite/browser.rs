//! The cashier page in a real browser: Debian's Chromium, driven through its chromedriver with
//! `fantoccini`, against a daemon wired to the simulator. One browser session walks through
//! what a cashier does (sign in, scan, earn, lose the link, redeem offline, get it back,
//! mistakes) and what a manager does (the review queue); each step saves a screenshot under
//! `target/screenshots/` for a person to look at.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`; `.ci/run` does it). Without them the test prints a notice and passes,
//! except under CI (`CI` set), where it fails. `POINTSD_CHROMEDRIVER` and `POINTSD_CHROMIUM`
//! point at other binaries.

use crate::common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{MANAGER_TOKEN, REGISTER_TOKEN, TestDaemon};
use fantoccini::{Client, ClientBuilder, Locator};
use pointsd::sim::SimHandle;
use serde_json::{Value, json};

const ENTER: &str = "\u{e007}";

/// The page's HTML and assets come with the right types and the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_with_types_and_headers() {
    let sim = common::start_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start(
        common::test_config(&sim, "store-page"),
        dir.path().into(),
        false,
    )
    .await;
    for (path, ctype) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/page/config.json", "application/json"),
    ] {
        let r = d.http.get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let got = h["content-type"].to_str().unwrap();
        assert!(got.starts_with(ctype), "{path}: content-type {got}");
        assert!(h.contains_key("cache-control"), "{path}: no cache-control");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: CSP {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    let (status, cfg) = d.get_as("/page/config.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(cfg["yen_per_point"], json!(100));
    assert_eq!(cfg["rounding"], json!("floor"));
    assert_eq!(cfg["offline_allow_redeem"], json!(true));
    assert_eq!(cfg["offline_max_redeem_points"], json!(5000));
    assert_eq!(cfg["tiers"][1]["name"], json!("Gold"));
    let text = cfg.to_string();
    for secret in [REGISTER_TOKEN, MANAGER_TOKEN, "client_secret", "token"] {
        assert!(!text.contains(secret), "config.json shows {secret}: {text}");
    }
    d.stop().await;
}

#[cfg_attr(
    not(have_browser),
    ignore = "requires Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cashier_page_in_chromium() {
    let Some(bins) = browser_binaries() else {
        return;
    };
    let started = Instant::now();
    let sim = common::start_sim(40).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start(
        common::test_config(&sim, "store-web"),
        dir.path().into(),
        true,
    )
    .await;

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&bins.chromedriver);
    let client = connect(&driver, &bins.chromium, profile.path()).await;
    let mut b = Browser {
        c: client,
        shots: screenshot_dir(""),
        step: 0,
    };
    let outcome = cashier_scenario(&mut b, &d, &sim).await;
    if let Err(e) = &outcome {
        let _ = b.shot("FAILED").await;
        let page = b
            .js("return document.body ? document.body.innerText : ''")
            .await
            .unwrap_or_default();
        eprintln!(
            "page text at failure:\n{}",
            page.as_str().unwrap_or_default()
        );
        eprintln!("failed: {e:#}");
    }
    let _ = b.c.close().await;
    drop(driver);
    d.stop().await;
    if let Err(e) = outcome {
        panic!("browser scenario failed: {e:#}");
    }
    eprintln!(
        "browser scenario took {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        b.shots.display()
    );
}

/// The sale and return flows of the cashier page: a sale with points and its preview (the
/// daemon's quote as the cashier types), "use all", a refusal, a receipt scanned for a partial
/// return and then the rest, in Japanese and in English; screenshots in
/// `target/screenshots/sales/`.
#[cfg_attr(
    not(have_browser),
    ignore = "requires Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_and_returns_in_chromium() {
    let Some(bins) = browser_binaries() else {
        return;
    };
    let sim = common::start_sim(40).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&sim, "store-web-sales");
    // A minimum to use, so a spend rule can be broken on screen.
    cfg.spend.min_points = 100;
    let mut d = TestDaemon::start(cfg, dir.path().into(), true).await;

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&bins.chromedriver);
    let client = connect(&driver, &bins.chromium, profile.path()).await;
    let mut b = Browser {
        c: client,
        shots: screenshot_dir("sales"),
        step: 0,
    };
    let outcome = sales_scenario(&mut b, &d, &sim).await;
    if let Err(e) = &outcome {
        let _ = b.shot("FAILED").await;
        let page = b
            .js("return document.body ? document.body.innerText : ''")
            .await
            .unwrap_or_default();
        eprintln!(
            "page text at failure:\n{}",
            page.as_str().unwrap_or_default()
        );
        eprintln!("failed: {e:#}");
    }
    let _ = b.c.close().await;
    drop(driver);
    d.stop().await;
    if let Err(e) = outcome {
        panic!("browser sales scenario failed: {e:#}");
    }
}

/// A store whose register grants (issue 25): the sale form says so and shows no earn preview,
/// purchase earns are not offered; after the sale the point slip prints on a 58 or 80 mm
/// receipt (store, time, member code, before / earned / used / after, confirmed or queued,
/// the sale id as a Code 128 barcode).
#[cfg_attr(
    not(have_browser),
    ignore = "requires Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_grants_and_the_point_slip_in_chromium() {
    let Some(bins) = browser_binaries() else {
        return;
    };
    let sim = common::start_sim(40).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&sim, "store-web-slip");
    cfg.agent.smaregi_store_id = Some("1".into());
    let mut d = TestDaemon::start(cfg, dir.path().into(), true).await;
    d.wait_for(
        "the store read from Smaregi",
        Duration::from_secs(15),
        |s| s["granting"]["source"] == "smaregi",
    )
    .await;

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&bins.chromedriver);
    let client = connect(&driver, &bins.chromium, profile.path()).await;
    let mut b = Browser {
        c: client,
        shots: screenshot_dir("slip"),
        step: 0,
    };
    let outcome = slip_scenario(&mut b, &d, &sim).await;
    if let Err(e) = &outcome {
        let _ = b.shot("FAILED").await;
        let page = b
            .js("return document.body ? document.body.innerText : ''")
            .await
            .unwrap_or_default();
        eprintln!(
            "page text at failure:\n{}",
            page.as_str().unwrap_or_default()
        );
        eprintln!("failed: {e:#}");
    }
    let _ = b.c.close().await;
    drop(driver);
    d.stop().await;
    if let Err(e) = outcome {
        panic!("browser slip scenario failed: {e:#}");
    }
}

async fn slip_scenario(b: &mut Browser, d: &TestDaemon, sim: &SimHandle) -> anyhow::Result<()> {
    let cust = customer_with_points(sim, 500, 2_000, &[]);
    let start = cust.point;
    b.c.goto(&d.url).await?;
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await?;
    b.watch_errors().await?;
    b.type_into("token-input", &format!("{REGISTER_TOKEN}{ENTER}"))
        .await?;
    b.wait(
        "the cashier view",
        "return !document.getElementById('app').hidden",
    )
    .await?;
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.barcode))
        .await?;
    b.wait(
        "the customer card",
        &format!(
            "return document.getElementById('customer').dataset.customerId === '{}'",
            cust.customer_id
        ),
    )
    .await?;
    b.wait(
        "the sale form to say the register grants",
        "return document.getElementById('sale-form').dataset.grantedBy === 'register'",
    )
    .await?;
    let note = b.text("sale-granting").await?;
    ensure!(note.contains("スマレジのレジが付与"), "{note:?}");
    ensure!(
        b.js("return document.getElementById('earn-mode-amount').hidden && document.getElementById('earn-mode-points').checked")
            .await?
            == json!(true),
        "no earn by purchase amount where the register grants"
    );
    ensure!(
        b.text("footer-info").await?.contains("スマレジのレジ"),
        "the footer says who grants"
    );
    b.type_into("sale-amount", "2480").await?;
    b.type_into("sale-use", "100").await?;
    b.wait(
        "the sale's quote",
        "return document.getElementById('sale-form').dataset.quote === 'ready' && \
         document.getElementById('sale-pv-used').textContent === '100 pt'",
    )
    .await?;
    ensure!(
        b.js("return document.getElementById('sale-pv-earned').parentNode.hidden")
            .await?
            == json!(true),
        "no earn preview"
    );
    b.shot("register-grants-sale").await?;
    b.type_into("sale-receipt", "R-SLIP-1").await?;
    b.c.find(Locator::Id("sale-submit")).await?.click().await?;
    b.wait_for(
        "the sale to be confirmed",
        Duration::from_secs(8),
        "return document.getElementById('result').dataset.status === 'confirmed' && \
         document.getElementById('result').dataset.kind === 'sale'",
    )
    .await?;

    // The slip: printing is the browser's; the page fills the slip and asks to print.
    b.js(
        "window.__printed = 0; window.print = function () { window.__printed += 1; }; return true",
    )
    .await?;
    b.c.find(Locator::Id("slip-print")).await?.click().await?;
    ensure!(
        b.js("return window.__printed").await? == json!(1),
        "print asked once"
    );
    let slip = |id: &str| format!("return document.getElementById('{id}').textContent");
    let text = |v: Value| v.as_str().unwrap_or_default().to_string();
    ensure!(
        text(b.js(&slip("slip-member")).await?) == cust.code,
        "member code"
    );
    ensure!(
        text(b.js(&slip("slip-before")).await?) == format!("{} pt", grouped(start)),
        "points before"
    );
    ensure!(
        text(b.js(&slip("slip-used")).await?) == "100 pt",
        "points used"
    );
    ensure!(
        text(b.js(&slip("slip-earned")).await?) == "レジで付与",
        "earned by the register"
    );
    ensure!(
        text(b.js(&slip("slip-after")).await?) == format!("{} pt", grouped(start - 100)),
        "points after"
    );
    ensure!(
        text(b.js(&slip("slip-status")).await?).contains("反映済み"),
        "confirmed"
    );
    ensure!(
        text(b.js(&slip("slip-store")).await?).contains("store-web-slip"),
        "store"
    );
    // The barcode encodes the sale id: start, 8 characters and check (10 × 11 modules) and the
    // stop (13): 123 modules, 3 bars a symbol and 4 in the stop.
    let bc = b
        .js("var s = document.getElementById('slip-barcode'); \
             return [s.getAttribute('data-value'), s.getAttribute('data-modules'), s.querySelectorAll('rect').length]")
        .await?;
    ensure!(bc[0] == "R-SLIP-1" && bc[1] == "123", "barcode {bc}");
    ensure!(bc[2].as_u64().unwrap_or(0) == 34, "bars {bc}");
    // What the printer gets: only the slip, 58 mm wide (about 219 CSS px), then 80 mm.
    b.js("document.documentElement.classList.add('print-preview'); return true")
        .await?;
    let width = "return Math.round(document.getElementById('slip').getBoundingClientRect().width)";
    let w = b.js(width).await?.as_i64().unwrap_or(0);
    ensure!((215..=224).contains(&w), "58 mm slip is {w} px");
    ensure!(
        b.js("return document.getElementById('app').offsetParent === null")
            .await?
            == json!(true),
        "only the slip shows"
    );
    b.shot("slip-58mm").await?;
    b.js("document.documentElement.classList.remove('print-preview'); return true")
        .await?;
    b.js("document.getElementById('slip-width').value = '80'; return true")
        .await?;
    b.c.find(Locator::Id("slip-print")).await?.click().await?;
    b.js("document.documentElement.classList.add('print-preview'); return true")
        .await?;
    let w = b.js(width).await?.as_i64().unwrap_or(0);
    ensure!((298..=307).contains(&w), "80 mm slip is {w} px");
    b.shot("slip-80mm").await?;
    b.js("document.documentElement.classList.remove('print-preview'); return true")
        .await?;

    // The return of that sale gives back the 100 points used (the register takes back its own
    // grant), and its slip says so.
    b.type_into("return-sale-input", &format!("R-SLIP-1{ENTER}"))
        .await?;
    b.wait(
        "the sale to return",
        "return document.getElementById('returns').dataset.saleId === 'R-SLIP-1'",
    )
    .await?;
    b.c.find(Locator::Id("return-all")).await?.click().await?;
    b.wait_for(
        "the return to be confirmed",
        Duration::from_secs(8),
        "return document.getElementById('return-result').dataset.status === 'confirmed'",
    )
    .await?;
    b.c.find(Locator::Id("return-slip-print"))
        .await?
        .click()
        .await?;
    ensure!(
        b.js("return window.__printed").await? == json!(3),
        "print asked"
    );
    ensure!(
        text(b.js(&slip("slip-title")).await?).contains("返品"),
        "a return slip"
    );
    ensure!(
        text(b.js(&slip("slip-used")).await?) == "−100 pt",
        "used points given back"
    );
    ensure!(
        text(b.js(&slip("slip-earned")).await?) == "0 pt",
        "nothing taken back"
    );
    ensure!(
        text(b.js(&slip("slip-after")).await?) == format!("{} pt", grouped(start)),
        "points after the return"
    );
    let rid = b.attr_js("return-result", "returnId").await?;
    ensure!(
        b.js("return document.getElementById('slip-barcode').getAttribute('data-value')")
            .await?
            == json!(rid),
        "the return's id as the barcode"
    );
    b.js("document.documentElement.classList.add('print-preview'); return true")
        .await?;
    b.shot("slip-return").await?;
    b.js("document.documentElement.classList.remove('print-preview'); return true")
        .await?;
    b.check_no_errors().await?;
    Ok(())
}

/// A Smapify merchant's customer: the card says when easyPoints expires the points, warns
/// within 30 days, and says that activity moves the date (JA and EN).
#[cfg_attr(
    not(have_browser),
    ignore = "requires Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn easypoints_expiry_in_chromium() {
    let Some(bins) = browser_binaries() else {
        return;
    };
    let sim = SimHandle::start(
        common::loopback(),
        common::loopback(),
        pointsd::sim::SimOptions {
            customers: 10,
            smapify: Some(pointsd::sim::SmapifyOptions::default()),
            ..pointsd::sim::SimOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&sim, "store-web-ep");
    cfg.api.lookup_refresh_after_s = 0;
    cfg.api.lookup_refresh_budget_ms = 2_000;
    cfg.easypoints = Some(pointsd::config::EasyPointsConfig {
        public_key: "sim-ep-public".into(),
        secret_key: pointsd::config::Secret::new("sim-ep-secret"),
        api_base: sim.easypoints_url(),
        ..Default::default()
    });
    let mut d = TestDaemon::start(cfg, dir.path().into(), true).await;
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&bins.chromedriver);
    let client = connect(&driver, &bins.chromium, profile.path()).await;
    let mut b = Browser {
        c: client,
        shots: screenshot_dir("easypoints"),
        step: 0,
    };
    let outcome = easypoints_scenario(&mut b, &d, &sim).await;
    if let Err(e) = &outcome {
        let _ = b.shot("FAILED").await;
        eprintln!("failed: {e:#}");
    }
    let _ = b.c.close().await;
    drop(driver);
    d.stop().await;
    if let Err(e) = outcome {
        panic!("browser easyPoints scenario failed: {e:#}");
    }
}

async fn easypoints_scenario(
    b: &mut Browser,
    d: &TestDaemon,
    sim: &SimHandle,
) -> anyhow::Result<()> {
    let cust = customer_with_points(sim, 1, 1_000_000, &[]);
    let shopify = sim
        .shopify_id(&cust.customer_id)
        .expect("synced with easyPoints");
    // easyPoints expires the balance in ten days and a bit, for inactivity.
    sim.ep_expire_in(&shopify, 10 * 86_400 - 3_600);
    b.c.goto(&d.url).await?;
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await?;
    b.type_into("token-input", &format!("{REGISTER_TOKEN}{ENTER}"))
        .await?;
    b.wait(
        "the cashier view",
        "return !document.getElementById('app').hidden",
    )
    .await?;
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.customer_id))
        .await?;
    b.wait(
        "the expiry sentence",
        "return !document.getElementById('cust-expiry').hidden",
    )
    .await?;
    let ja = b.text("cust-expiry").await?;
    ensure!(
        ja.contains("に失効します") && ja.contains("あと 10 日") && ja.contains("約 12 か月後"),
        "Japanese expiry warning: {ja:?}"
    );
    ensure!(
        b.attr_js("cust-expiry", "days").await? == "10",
        "ten days left"
    );
    ensure!(
        b.js("return document.getElementById('cust-expiry').className")
            .await?
            == json!("hint warn"),
        "within 30 days it is a warning"
    );
    b.shot("easypoints-expiry-ja").await?;
    b.c.find(Locator::Id("lang-toggle")).await?.click().await?;
    let en = b.text("cust-expiry").await?;
    ensure!(
        en.starts_with("Points expire on ")
            && en.contains("(in 10 days)")
            && en.contains("about 12 months"),
        "English expiry warning: {en:?}"
    );
    // Far off: said plainly, no warning.
    sim.ep_expire_in(&shopify, 100 * 86_400);
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.customer_id))
        .await?;
    b.wait(
        "the expiry without a warning",
        "return document.getElementById('cust-expiry').dataset.days === '100'",
    )
    .await?;
    ensure!(
        b.js("return document.getElementById('cust-expiry').className")
            .await?
            == json!("hint"),
        "no warning 100 days out"
    );
    Ok(())
}

async fn sales_scenario(b: &mut Browser, d: &TestDaemon, sim: &SimHandle) -> anyhow::Result<()> {
    let cust = customer_with_points(sim, 500, 2_000, &[]);
    let id = cust.customer_id.clone();
    let start = cust.point;

    b.c.goto(&d.url).await?;
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await?;
    b.watch_errors().await?;
    b.type_into("token-input", &format!("{REGISTER_TOKEN}{ENTER}"))
        .await?;
    b.wait(
        "the cashier view",
        "return !document.getElementById('app').hidden",
    )
    .await?;
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.barcode))
        .await?;
    b.wait(
        "the customer card",
        &format!("return document.getElementById('customer').dataset.customerId === '{id}'"),
    )
    .await?;

    // --- a sale: the preview is the daemon's quote, updated as the cashier types -------------
    b.type_into("sale-amount", "2480").await?;
    b.type_into("sale-use", "300").await?;
    let quoted = |used: i64| {
        format!(
            "return document.getElementById('sale-form').dataset.quote === 'ready' && \
             document.getElementById('sale-pv-used').textContent === '{} pt'",
            grouped(used)
        )
    };
    b.wait("the sale's quote", &quoted(300)).await?;
    // 2480 yen less the 300 yen paid with points earns on 2180 yen: 21 points; net −279.
    ensure!(b.text("sale-pv-earned").await? == "21 pt", "earned 21");
    ensure!(b.text("sale-pv-net").await? == "−279 pt", "net −279");
    ensure!(
        b.text("sale-pv-after").await? == format!("{} pt", grouped(start - 279)),
        "balance after the sale"
    );
    let hint = b.text("sale-use-hint").await?;
    ensure!(
        hint.contains(&grouped(start)),
        "the hint says how many points may be used: {hint:?}"
    );
    ensure!(
        b.text("sale-submit").await?.contains("2,480"),
        "the button names the amount"
    );
    b.shot("sale-preview").await?;

    // More points than the customer has: refused while typing, in words.
    b.type_into("sale-use", "2400").await?;
    b.wait(
        "the refusal",
        "return !document.getElementById('sale-error').hidden",
    )
    .await?;
    let err = b.text("sale-error").await?;
    ensure!(
        err.contains("ポイントが足りません") && err.contains(&grouped(start)),
        "insufficient points in Japanese: {err:?}"
    );
    ensure_sentence(&err)?;
    ensure!(
        b.hidden("sale-preview").await?,
        "no figures for a refused sale"
    );
    b.scroll_to("sale-error").await?;
    b.shot("sale-refused").await?;

    // "Use all" takes what the rules and the balance allow; then back to 300.
    b.c.find(Locator::Id("sale-use-all")).await?.click().await?;
    b.wait("the quote using all points", &quoted(start)).await?;
    ensure!(
        b.js("return document.getElementById('sale-use').value")
            .await?
            == json!(start.to_string()),
        "use all fills in the balance"
    );
    b.shot("sale-use-all").await?;
    b.type_into("sale-use", "300").await?;
    b.wait("the quote for 300 points", &quoted(300)).await?;
    b.type_into("sale-receipt", "R-WEB-1").await?;
    b.c.find(Locator::Id("sale-submit")).await?.click().await?;
    b.wait_for(
        "the sale to be confirmed",
        Duration::from_secs(8),
        "return document.getElementById('result').dataset.status === 'confirmed' && \
         document.getElementById('result').dataset.kind === 'sale'",
    )
    .await?;
    let detail = b.text("result-detail").await?;
    ensure!(
        detail.contains("300 pt 利用")
            && detail.contains("21 pt 獲得")
            && detail.contains(&grouped(start - 279))
            && detail.contains("R-WEB-1"),
        "sale result {detail:?}"
    );
    ensure!(
        b.text("cust-available").await? == grouped(start - 279),
        "the customer card shows the new balance"
    );
    b.wait(
        "the sale in the recent list with its split",
        "return Array.prototype.some.call(document.querySelectorAll('#recent-body tr'), \
           function (tr) { return tr.textContent.indexOf('会計 (利用 300 / 獲得 21)') >= 0; })",
    )
    .await?;
    b.scroll_to("result").await?;
    b.shot("sale-confirmed").await?;

    // --- a return: the receipt's barcode is scanned (the id, then Enter) -----------------------
    b.type_into("return-sale-input", &format!("R-WEB-1{ENTER}"))
        .await?;
    b.wait(
        "the sale to return",
        "return document.getElementById('returns').dataset.saleId === 'R-WEB-1'",
    )
    .await?;
    ensure!(
        b.text("rs-returnable").await? == "2,480 円",
        "all is returnable"
    );
    ensure!(
        b.focused_id().await? == "return-amount",
        "the amount field has the focus"
    );
    b.type_into("return-amount", "1240").await?;
    let preview = b.text("return-preview").await?;
    ensure!(
        preview.contains("10 pt") && preview.contains("150 pt"),
        "return preview {preview:?}"
    );
    b.scroll_to("return-sale").await?;
    b.shot("return-found").await?;
    b.type_into("return-amount", ENTER).await?;
    b.wait_for(
        "the partial return",
        Duration::from_secs(8),
        "return document.getElementById('return-result').dataset.status === 'confirmed' && \
         document.getElementById('returns').dataset.returnable === '1240'",
    )
    .await?;
    let detail = b.text("return-result-detail").await?;
    ensure!(
        detail.contains("1,240 円を返品")
            && detail.contains("10 pt を取り消し")
            && detail.contains("150 pt をお返し")
            && detail.contains(&grouped(start - 279 + 140)),
        "return result {detail:?}"
    );
    ensure!(
        b.js("return document.querySelectorAll('#rs-body tr').length")
            .await?
            == json!(1),
        "one return listed"
    );
    b.scroll_to("return-result").await?;
    b.shot("return-partial").await?;

    // --- English: the rest comes back --------------------------------------------------------
    b.c.find(Locator::Id("lang-toggle")).await?.click().await?;
    ensure!(
        b.text("return-result-title").await? == "Confirmed",
        "re-rendered in English"
    );
    ensure!(
        b.text("return-all").await? == "Return all that is left (¥1,240)",
        "the return-all button names what is left"
    );
    b.c.find(Locator::Id("return-all")).await?.click().await?;
    b.wait_for(
        "the rest returned",
        Duration::from_secs(8),
        "return document.getElementById('returns').dataset.returnable === '0' && \
         document.getElementById('return-result-detail').textContent.indexOf('¥1,240') >= 0",
    )
    .await?;
    let detail = b.text("return-result-detail").await?;
    ensure!(
        detail.contains("took back 11 earned points")
            && detail.contains("gave back 150 used points")
            && detail.contains(&format!("Balance: {} points", grouped(start))),
        "full return restores the balance: {detail:?}"
    );
    ensure!(
        b.text("return-preview").await? == "Everything on this sale has been returned.",
        "nothing is left"
    );
    ensure!(
        b.js("return document.getElementById('return-all').disabled")
            .await?
            == json!(true),
        "return all is off"
    );
    b.wait(
        "the customer card back at the starting balance",
        &format!(
            "return document.getElementById('cust-available').textContent === '{}'",
            grouped(start)
        ),
    )
    .await?;
    b.scroll_to("return-result").await?;
    b.shot("return-rest-en").await?;

    // A spend rule broken, and an unknown receipt, in English.
    b.type_into("sale-amount", "1000").await?;
    b.type_into("sale-use", "50").await?;
    b.wait(
        "the spend rule refusal",
        "return !document.getElementById('sale-error').hidden",
    )
    .await?;
    let err = b.text("sale-error").await?;
    ensure!(
        err == "At least 100 points must be used at once.",
        "spend.min_points in English: {err:?}"
    );
    b.type_into("return-sale-input", &format!("NO-SUCH-SALE{ENTER}"))
        .await?;
    b.wait(
        "the unknown sale",
        "return !document.getElementById('return-lookup-error').hidden",
    )
    .await?;
    let err = b.text("return-lookup-error").await?;
    ensure!(
        err.starts_with("This store has no sale with that number"),
        "unknown sale in English: {err:?}"
    );
    ensure!(b.hidden("return-sale").await?, "no sale shown");
    b.scroll_to("return-lookup-error").await?;
    b.shot("refusals-en").await?;
    b.check_no_errors().await?;

    // The upstream saw the sale once and each return once.
    ensure!(
        common::adds_for(sim, &id) == vec![-279, 140, 139],
        "upstream adds {:?}",
        common::adds_for(sim, &id)
    );
    Ok(())
}

/// The cashier page over HTTPS with a generated certificate, Chromium pinning its key (as an
/// iPad that was given the certificate would trust it): sign in, look up, earn.
#[cfg_attr(
    not(have_browser),
    ignore = "requires Chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cashier_page_over_https_with_a_pinned_generated_certificate() {
    let Some(bins) = browser_binaries() else {
        return;
    };
    let sim = common::start_sim(20).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(&sim, "store-tls");
    cfg.api.tls = Some(pointsd::config::TlsConfig {
        generate: true,
        names: vec!["localhost".into()],
        ..Default::default()
    });
    let mut d = TestDaemon::start(cfg, dir.path().into(), false).await;
    let url = d.url.replace("http://127.0.0.1", "https://localhost");
    // The generated certificate, trusted by this test's client to read the status.
    let pem_path = dir.path().join("tls/cert.pem");
    let start = Instant::now();
    let pem = loop {
        match std::fs::read(&pem_path) {
            Ok(b) if !b.is_empty() => break b,
            _ if start.elapsed() > Duration::from_secs(20) => panic!("no generated certificate"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let https = pointsd::http_client_builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let status: Value = loop {
        if let Ok(r) = https
            .get(format!("{url}/v1/status"))
            .bearer_auth(REGISTER_TOKEN)
            .send()
            .await
            && r.status().is_success()
        {
            let v: Value = r.json().await.unwrap();
            if v["cache"]["last_full_refresh_at"].is_string() {
                break v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the daemon is not up over HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let spki = status["tls"]["spki_sha256_base64"]
        .as_str()
        .unwrap()
        .to_string();

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&bins.chromedriver);
    let client = connect_with(
        &driver,
        &bins.chromium,
        profile.path(),
        &[format!("--ignore-certificate-errors-spki-list={spki}")],
    )
    .await;
    let shots = tempfile::tempdir().unwrap();
    let mut b = Browser {
        c: client,
        shots: shots.path().into(),
        step: 0,
    };
    let outcome: anyhow::Result<()> = async {
        b.c.goto(&url).await?;
        b.wait(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
        )
        .await?;
        ensure!(
            b.js("return location.protocol").await? == json!("https:"),
            "served over HTTPS"
        );
        b.type_into("token-input", &format!("{REGISTER_TOKEN}{ENTER}"))
            .await?;
        b.wait(
            "the cashier view",
            "return !document.getElementById('app').hidden",
        )
        .await?;
        b.wait(
            "the online indicator",
            "return document.getElementById('conn').dataset.state === 'online'",
        )
        .await?;
        b.type_into("lookup-input", &format!("1{ENTER}")).await?;
        b.wait(
            "the customer card",
            "return document.getElementById('customer').dataset.customerId === '1'",
        )
        .await?;
        b.shot("https-looked-up").await?;
        Ok(())
    }
    .await;
    let _ = b.c.close().await;
    drop(driver);
    d.stop().await;
    if let Err(e) = outcome {
        panic!("HTTPS browser scenario failed: {e:#}");
    }
}

/// Picks a customer the simulator gave a balance in a useful range (and no expired points).
fn customer_with_points(
    sim: &SimHandle,
    min: i64,
    max: i64,
    not: &[&str],
) -> pointsd::sim::SimCustomer {
    (1..=40)
        .filter_map(|i| sim.customer(&i.to_string()))
        .find(|c| c.point >= min && c.point <= max && !not.contains(&c.customer_id.as_str()))
        .expect("a sample customer with points")
}

async fn cashier_scenario(b: &mut Browser, d: &TestDaemon, sim: &SimHandle) -> anyhow::Result<()> {
    let cust = customer_with_points(sim, 500, 2_900, &[]);
    let id = cust.customer_id.clone();
    let start_points = cust.point;

    // --- a bad token shows a sign-in error, in Japanese by default -------------------------
    b.c.goto(&d.url).await?;
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await?;
    b.watch_errors().await?;
    ensure!(
        b.js("return document.documentElement.lang").await? == json!("ja"),
        "Japanese by default"
    );
    ensure!(
        b.focused_id().await? == "token-input",
        "the token field has the focus"
    );
    b.shot("sign-in").await?;
    b.type_into("token-input", &format!("wrong-token{ENTER}"))
        .await?;
    b.wait(
        "the sign-in error",
        "return !document.getElementById('signin-error').hidden",
    )
    .await?;
    let err = b.text("signin-error").await?;
    ensure!(
        err.contains("トークン"),
        "sign-in error in Japanese: {err:?}"
    );
    ensure_sentence(&err)?;
    ensure!(
        b.local("pointsd.token").await?.is_null(),
        "a refused token is not kept"
    );
    b.shot("bad-token").await?;

    // --- sign in -----------------------------------------------------------------------------
    b.type_into("token-input", &format!("{REGISTER_TOKEN}{ENTER}"))
        .await?;
    b.wait(
        "the cashier view",
        "return !document.getElementById('app').hidden",
    )
    .await?;
    ensure!(
        b.local("pointsd.token").await? == json!(REGISTER_TOKEN),
        "token kept on the device"
    );
    ensure!(
        b.focused_id().await? == "lookup-input",
        "the look-up field has the focus"
    );
    let url = b.c.current_url().await?;
    ensure!(
        !url.as_str().contains(REGISTER_TOKEN),
        "token in the URL: {url}"
    );
    b.wait(
        "the online indicator",
        "return document.getElementById('conn').dataset.state === 'online'",
    )
    .await?;
    b.shot("signed-in").await?;

    // --- look up by a scanned barcode: digits then Enter ---------------------------------------
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.barcode))
        .await?;
    b.wait(
        "the customer card",
        &format!("return document.getElementById('customer').dataset.customerId === '{id}'"),
    )
    .await?;
    let name = b.text("cust-name").await?;
    ensure!(
        name.contains(&cust.last_name),
        "name {name:?} shows {}",
        cust.last_name
    );
    ensure!(
        b.text("cust-available").await? == grouped(start_points),
        "available shown with separators"
    );
    ensure!(b.text("cust-pending").await? == "0", "nothing pending");
    ensure!(
        b.hidden("review").await?,
        "a register token sees no review queue"
    );
    b.shot("looked-up-by-barcode").await?;

    // --- earn by purchase amount: the points are shown before confirming ------------------------
    b.type_into("earn-value", "2480").await?;
    let preview = b.text("earn-preview").await?;
    ensure!(
        preview.contains("2,480") && preview.contains("24"),
        "earn preview {preview:?}"
    );
    ensure!(
        b.text("earn-submit").await?.contains("24"),
        "the button says how many points"
    );
    b.shot("earn-preview").await?;
    b.type_into("earn-value", ENTER).await?;
    // Online, the daemon answers "confirmed" when Smaregi applied it within its budget; on a
    // slow machine it may answer "queued" first, and the result turns confirmed on its own.
    b.wait_for(
        "the earn to be confirmed",
        Duration::from_secs(8),
        "return document.getElementById('result').dataset.status === 'confirmed'",
    )
    .await?;
    ensure!(
        b.text("result-title").await? == "確定しました",
        "confirmed, in Japanese"
    );
    let after_earn = start_points + 24;
    ensure!(
        b.text("cust-available").await? == grouped(after_earn),
        "balance went up by 24"
    );
    ensure!(sim.balance(&id) == Some(after_earn), "the simulator has it");
    b.wait(
        "the earn in the recent list",
        "var r = document.querySelector('#recent-body tr'); return !!r && r.dataset.state === 'applied'",
    )
    .await?;
    b.shot("earned").await?;

    // --- the link drops: the banner appears within a few seconds --------------------------------
    common::set_faults(sim, |f| f.refuse = true);
    let dropped = Instant::now();
    b.wait_for(
        "the offline banner",
        Duration::from_secs(8),
        "return document.getElementById('offline-banner').dataset.state === 'offline'",
    )
    .await?;
    let banner_after = dropped.elapsed();
    let banner = b.text("offline-banner").await?;
    ensure!(
        banner.contains("オフライン"),
        "offline banner in Japanese: {banner:?}"
    );
    ensure!(
        has_hh_mm(&banner),
        "banner names the time of the balances: {banner:?}"
    );
    ensure!(banner.contains("0 件"), "nothing waiting yet: {banner:?}");
    b.shot("offline-banner").await?;

    // --- redeem while offline: saved, will sync ------------------------------------------------
    let hint = b.text("redeem-hint").await?;
    ensure!(
        hint.contains("5,000"),
        "the offline limit is explained: {hint:?}"
    );
    b.type_into("redeem-points", &format!("100{ENTER}")).await?;
    b.wait(
        "the offline redeem result",
        "var r = document.getElementById('result'); return r.dataset.status !== 'none' && r.dataset.status !== undefined && document.getElementById('redeem-submit').disabled === false",
    )
    .await?;
    ensure!(
        b.attr_js("result", "status").await? == "queued",
        "offline redeem is queued"
    );
    ensure!(
        b.text("result-title").await? == "保存しました — 同期待ち",
        "saved — will sync, in Japanese"
    );
    let after_redeem = after_earn - 100;
    ensure!(
        b.text("cust-available").await? == grouped(after_redeem),
        "available includes the pending redeem"
    );
    ensure!(
        b.text("cust-pending").await? == "−100",
        "the pending part is shown"
    );
    b.wait(
        "the banner to count the waiting transaction",
        "return document.getElementById('offline-banner').dataset.waiting === '1'",
    )
    .await?;
    ensure!(
        b.text("offline-banner").await?.contains("1 件"),
        "one waiting"
    );
    b.wait(
        "the redeem in the recent list",
        "var r = document.querySelector('#recent-body tr'); return !!r && r.dataset.state === 'pending'",
    )
    .await?;
    b.shot("offline-redeem-saved").await?;

    // --- English: what is on screen is re-rendered --------------------------------------------
    b.c.find(Locator::Id("lang-toggle")).await?.click().await?;
    ensure!(
        b.js("return document.documentElement.lang").await? == json!("en"),
        "switched to English"
    );
    ensure!(
        b.text("result-title").await? == "Saved — will sync",
        "result re-rendered in English"
    );
    let banner = b.text("offline-banner").await?;
    ensure!(
        banner.starts_with("Offline — balances as of")
            && banner.contains("1 transaction waiting to sync"),
        "English banner: {banner:?}"
    );
    ensure!(
        !b.hidden("cust-stale").await?,
        "offline balances say they may be out of date"
    );
    b.shot("offline-english").await?;

    // --- a redeem above the offline limit is explained before anything is sent ----------------
    b.type_into("redeem-points", &format!("6000{ENTER}"))
        .await?;
    b.wait(
        "the offline limit sentence",
        "return !document.getElementById('redeem-error').hidden",
    )
    .await?;
    let e = b.text("redeem-error").await?;
    ensure!(
        e.contains("offline") && e.contains("5,000"),
        "offline limit sentence: {e:?}"
    );
    ensure_sentence(&e)?;
    b.shot("offline-limit").await?;
    b.clear("redeem-points").await?;

    // --- the link is back: the banner goes, the balance is confirmed ---------------------------
    common::set_faults(sim, |f| f.refuse = false);
    let restored = Instant::now();
    b.wait_for(
        "the banner to go",
        Duration::from_secs(15),
        "return document.getElementById('offline-banner').hidden",
    )
    .await?;
    let banner_gone_after = restored.elapsed();
    b.wait_for(
        "the balance to be confirmed",
        Duration::from_secs(10),
        "var c = document.getElementById('customer').dataset; return c.pending === '0' && c.stale === 'false'",
    )
    .await?;
    ensure!(
        b.text("cust-confirmed").await? == grouped(after_redeem),
        "confirmed balance"
    );
    ensure!(
        b.text("cust-available").await? == grouped(after_redeem),
        "available balance"
    );
    ensure!(
        sim.balance(&id) == Some(after_redeem),
        "the simulator got the redeem"
    );
    b.wait(
        "the saved redeem to say it is confirmed",
        "return document.getElementById('result').dataset.status === 'confirmed'",
    )
    .await?;
    ensure!(
        b.text("result-title").await? == "Confirmed",
        "result follows the transaction"
    );
    ensure!(
        b.hidden("redeem-error").await?,
        "the offline refusal is gone once online"
    );
    b.wait(
        "the redeem confirmed in the recent list",
        "var r = document.querySelector('#recent-body tr'); return !!r && r.dataset.state === 'applied'",
    )
    .await?;
    b.js("window.scrollTo(0, 0); return true").await?;
    b.shot("back-online-confirmed").await?;

    // --- a reload keeps the sign-in and the language -------------------------------------------
    b.check_no_errors().await?;
    b.c.refresh().await?;
    b.wait(
        "the cashier view after a reload",
        "return !document.getElementById('app').hidden",
    )
    .await?;
    b.watch_errors().await?;
    ensure!(
        b.js("return document.documentElement.lang").await? == json!("en"),
        "English remembered"
    );
    ensure!(
        b.focused_id().await? == "lookup-input",
        "look-up focused after a reload"
    );
    // Look up by member code this time.
    b.type_into("lookup-input", &format!("{}{ENTER}", cust.code))
        .await?;
    b.wait(
        "the customer by member code",
        &format!("return document.getElementById('customer').dataset.customerId === '{id}'"),
    )
    .await?;

    // --- redeeming more than the balance: a sentence, never JSON ------------------------------
    b.type_into("redeem-points", &format!("{}{ENTER}", after_redeem + 1))
        .await?;
    b.wait(
        "the not-enough sentence",
        "return !document.getElementById('redeem-error').hidden",
    )
    .await?;
    let e = b.text("redeem-error").await?;
    ensure!(
        e.starts_with("Not enough points"),
        "insufficient sentence: {e:?}"
    );
    ensure_sentence(&e)?;
    b.clear("redeem-points").await?;
    // The balance changes behind the page's back (another register): the page's figure is now
    // too high, so the daemon refuses, and its problem+json becomes the same sentence.
    let (s, v) = d.redeem("other-register-1", &id, after_redeem - 10).await;
    ensure!(s == 201, "{v}");
    b.type_into("redeem-points", &format!("50{ENTER}")).await?;
    b.wait(
        "the refused redeem",
        "return !document.getElementById('redeem-error').hidden",
    )
    .await?;
    let e = b.text("redeem-error").await?;
    ensure!(
        e.starts_with("Not enough points"),
        "insufficient sentence: {e:?}"
    );
    ensure_sentence(&e)?;
    b.wait(
        "the refreshed balance",
        "return document.getElementById('customer').dataset.available === '10'",
    )
    .await?;
    ensure!(sim.balance(&id) == Some(10), "nothing more was spent");
    b.shot("not-enough-points").await?;
    b.clear("redeem-points").await?;

    // An unknown code: the daemon's 404 as a sentence.
    b.type_into("lookup-input", &format!("NO-SUCH-CARD{ENTER}"))
        .await?;
    b.wait(
        "the not-found sentence",
        "return !document.getElementById('lookup-error').hidden",
    )
    .await?;
    let e = b.text("lookup-error").await?;
    ensure!(
        e.starts_with("No customer matches"),
        "not found sentence: {e:?}"
    );
    ensure_sentence(&e)?;
    b.shot("not-found").await?;

    // --- an iPad-sized window -----------------------------------------------------------------
    b.c.set_window_size(820, 1180).await?;
    b.type_into("lookup-input", &format!("{id}{ENTER}")).await?;
    b.wait(
        "the customer again",
        "return document.getElementById('lookup-error').hidden",
    )
    .await?;
    b.shot("ipad-portrait").await?;
    b.c.set_window_size(1280, 900).await?;

    // --- sign out clears the token ---------------------------------------------------------------
    b.c.find(Locator::Id("signout")).await?.click().await?;
    b.wait(
        "the sign-in form again",
        "return !document.getElementById('signin').hidden",
    )
    .await?;
    ensure!(
        b.local("pointsd.token").await?.is_null(),
        "sign-out forgets the token"
    );
    ensure!(b.hidden("customer").await?, "no customer left on screen");

    // --- a manager resolves a review item --------------------------------------------------------
    let other = customer_with_points(sim, 1, 20_000, &[&id]);
    make_review_item(d, sim, &other.customer_id).await?;
    b.type_into("token-input", &format!("{MANAGER_TOKEN}{ENTER}"))
        .await?;
    b.wait(
        "the review queue",
        "return !document.getElementById('review').hidden",
    )
    .await?;
    b.wait(
        "the review item",
        "return !!document.querySelector('#review-list li[data-txn-id=\"review-me\"]')",
    )
    .await?;
    b.shot("manager-review-queue").await?;
    b.c.find(Locator::Css(
        "#review-list li[data-txn-id=\"review-me\"] button[data-action=\"applied\"]",
    ))
    .await?
    .click()
    .await?;
    b.wait(
        "the note is required",
        "return !document.getElementById('review-message').hidden",
    )
    .await?;
    ensure!(
        b.text("review-message").await?.contains("reason"),
        "asks for a reason"
    );
    b.c.find(Locator::Css(
        "#review-list li[data-txn-id=\"review-me\"] input",
    ))
    .await?
    .send_keys("checked in Smaregi: the 5 points are there")
    .await?;
    b.c.find(Locator::Css(
        "#review-list li[data-txn-id=\"review-me\"] button[data-action=\"applied\"]",
    ))
    .await?
    .click()
    .await?;
    b.wait(
        "the item to leave the queue",
        "return !document.querySelector('#review-list li[data-txn-id=\"review-me\"]')",
    )
    .await?;
    ensure!(
        b.text("review-message").await?.contains("review-me"),
        "says what was resolved"
    );
    let (_, t) = d.get("/v1/transactions/review-me").await;
    ensure!(
        t["state"] == json!("applied"),
        "resolved upstream state: {t}"
    );
    ensure!(t["resolved_by"] == json!("manager"), "audited: {t}");
    b.shot("manager-resolved").await?;

    b.check_no_errors().await?;
    eprintln!(
        "offline banner after {:.1} s; gone {:.1} s after the link was back",
        banner_after.as_secs_f64(),
        banner_gone_after.as_secs_f64()
    );
    Ok(())
}

/// A send whose answer is lost, while the balance also moves elsewhere: read-back cannot
/// prove anything, so the transaction lands in the review queue.
async fn make_review_item(d: &TestDaemon, sim: &SimHandle, customer: &str) -> anyhow::Result<()> {
    common::set_faults(sim, |f| f.drop_after_apply_rate = 1.0);
    let http = d.http.clone();
    let url = format!("{}/v1/transactions", d.url);
    let body = json!({"txn_id": "review-me", "customer_id": customer, "kind": "earn", "points": 5, "register_id": "reg-2"});
    let send = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(REGISTER_TOKEN)
            .json(&body)
            .send()
            .await
    });
    d.wait_for(
        "the send to become ambiguous",
        Duration::from_secs(10),
        |s| s["queue"]["ambiguous"].as_i64().unwrap_or(0) > 0,
    )
    .await;
    sim.add_elsewhere(customer, 7);
    common::set_faults(sim, |f| f.drop_after_apply_rate = 0.0);
    d.wait_for("a review item", Duration::from_secs(10), |s| {
        s["queue"]["needs_review"] == json!(1)
    })
    .await;
    let r = send.await?.context("the earn request")?;
    ensure!(r.status().is_success(), "earn answered {}", r.status());
    Ok(())
}

fn grouped(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("−{out}") } else { out }
}

fn has_hh_mm(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(5).any(|w| {
        w[0].is_ascii_digit()
            && w[1].is_ascii_digit()
            && w[2] == b':'
            && w[3].is_ascii_digit()
            && w[4].is_ascii_digit()
    })
}

/// A message a cashier reads: words, not the API's JSON or its codes.
fn ensure_sentence(s: &str) -> anyhow::Result<()> {
    ensure!(!s.trim().is_empty(), "empty message");
    for raw in ["{", "}", "\"code\"", "problem", "_points", "urn:"] {
        ensure!(!s.contains(raw), "message shows {raw:?}: {s:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------- browser plumbing

struct Binaries {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

fn browser_binaries() -> Option<Binaries> {
    let pick = |var: &str, candidates: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(var) {
            return Some(PathBuf::from(p)).filter(|p| p.is_file());
        }
        candidates.iter().map(PathBuf::from).find(|p| p.is_file())
    };
    let chromedriver = pick("POINTSD_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    let chromium = pick(
        "POINTSD_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    match (chromedriver, chromium) {
        (Some(chromedriver), Some(chromium)) => Some(Binaries {
            chromedriver,
            chromium,
        }),
        _ => {
            let why = "Chromium and chromedriver are not installed (/usr/bin/chromium, /usr/bin/chromedriver, \
                 or POINTSD_CHROMIUM / POINTSD_CHROMEDRIVER); install them with \
                 `apt-get install chromium chromium-driver` (.ci/run does)";
            if common::under_ci() {
                panic!("{why}: the browser tests cannot run");
            }
            eprintln!("SKIPPED the browser tests: {why}");
            None
        }
    }
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    fn start(bin: &Path) -> Driver {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let child = Command::new(bin)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let d = Driver { child, addr };
        let start = Instant::now();
        while TcpStream::connect_timeout(&d.addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "chromedriver did not listen on {}",
                d.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    connect_with(driver, chromium, profile, &[]).await
}

/// `connect`, with more Chromium arguments (e.g. a pinned certificate key).
async fn connect_with(
    driver: &Driver,
    chromium: &Path,
    profile: &Path,
    extra: &[String],
) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let mut caps = caps;
    if let Some(args) = caps
        .pointer_mut("/goog:chromeOptions/args")
        .and_then(Value::as_array_mut)
    {
        args.extend(extra.iter().map(|a| json!(a)));
    }
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&format!("http://{}", driver.addr))
        .await
        .expect("a Chromium session through chromedriver")
}

/// `target/screenshots/` (or a folder in it, for a scenario running beside another), emptied
/// of the last run's pictures.
fn screenshot_dir(sub: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots").join(sub);
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "png") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    dir
}

struct Browser {
    c: Client,
    shots: PathBuf,
    step: u32,
}

impl Browser {
    async fn shot(&mut self, name: &str) -> anyhow::Result<()> {
        self.step += 1;
        let png = self.c.screenshot().await?;
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png)?;
        Ok(())
    }

    async fn js(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.c.execute(script, vec![]).await?)
    }

    async fn wait(&self, what: &str, predicate: &str) -> anyhow::Result<Value> {
        self.wait_for(what, Duration::from_secs(5), predicate).await
    }

    /// Polls a JavaScript predicate until it returns something truthy.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        predicate: &str,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let v = self.js(predicate).await?;
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return Ok(v);
            }
            if start.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, id: &str) -> anyhow::Result<String> {
        let v = self
            .c
            .execute(
                "return document.getElementById(arguments[0]).textContent",
                vec![json!(id)],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().trim().to_string())
    }

    async fn hidden(&self, id: &str) -> anyhow::Result<bool> {
        let v = self
            .c
            .execute(
                "return document.getElementById(arguments[0]).hidden",
                vec![json!(id)],
            )
            .await?;
        Ok(v == json!(true))
    }

    async fn attr_js(&self, id: &str, data: &str) -> anyhow::Result<String> {
        let v = self
            .c
            .execute(
                "return document.getElementById(arguments[0]).dataset[arguments[1]] || ''",
                vec![json!(id), json!(data)],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Brings an element to the middle of the window, for the next screenshot.
    async fn scroll_to(&self, id: &str) -> anyhow::Result<()> {
        self.c
            .execute(
                "document.getElementById(arguments[0]).scrollIntoView({block: 'center'}); return true",
                vec![json!(id)],
            )
            .await?;
        Ok(())
    }

    async fn focused_id(&self) -> anyhow::Result<String> {
        let v = self
            .js("return document.activeElement ? document.activeElement.id : ''")
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    async fn local(&self, key: &str) -> anyhow::Result<Value> {
        Ok(self
            .c
            .execute(
                "return window.localStorage.getItem(arguments[0])",
                vec![json!(key)],
            )
            .await?)
    }

    async fn clear(&self, id: &str) -> anyhow::Result<()> {
        self.c.find(Locator::Id(id)).await?.clear().await?;
        Ok(())
    }

    /// Types into a field as a person (or a barcode scanner) would, after clearing it.
    async fn type_into(&self, id: &str, keys: &str) -> anyhow::Result<()> {
        let el = self.c.find(Locator::Id(id)).await?;
        if keys != ENTER {
            el.clear().await?;
        }
        el.send_keys(keys).await?;
        Ok(())
    }

    /// Records script errors and Content-Security-Policy violations from now on.
    async fn watch_errors(&self) -> anyhow::Result<()> {
        self.js(
            "window.__pageErrors = [];
             window.addEventListener('error', function (e) { window.__pageErrors.push('error: ' + e.message); });
             window.addEventListener('unhandledrejection', function (e) { window.__pageErrors.push('rejection: ' + e.reason); });
             document.addEventListener('securitypolicyviolation', function (e) { window.__pageErrors.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI); });
             return true;",
        )
        .await?;
        Ok(())
    }

    async fn check_no_errors(&self) -> anyhow::Result<()> {
        let v = self.js("return window.__pageErrors || []").await?;
        ensure!(v == json!([]), "the page reported errors: {v}");
        Ok(())
    }
}
