//! `GET /v1/health`, `GET /v1/status` and `GET /metrics`: how the daemon, its queue, cache,
//! storage and upstream link are doing.

use crate::store::Meta;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::openapi::{E401, E503};
use super::{ApiError, AppRef, AppState};
use crate::clock;
use crate::metrics::{ClassLabels, Metrics};
use crate::store::StoreError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthView {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(get, path = "/v1/health", tag = "pointsd", security(()),
    responses((status = 200, body = HealthView)))]
pub(super) async fn health() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StatusView {
    online: bool,
    store_id: String,
    version: &'static str,
    upstream: UpstreamView,
    queue: QueueView,
    cache: CacheView,
    reconcile: Option<ReconcileSummary>,
    storage: StorageView,
    /// The change feed: watermark, last poll, customers marked changed elsewhere.
    feed: crate::sync::feed::FeedStatus,
    /// This agent's share of the contract's rate limit: current read/write rates and 429s.
    budget: Option<crate::upstream::budget::BudgetSnapshot>,
    /// Sales and returns recorded here, and the points returns could not take back.
    sales: SalesView,
    /// The remote-write push to HQ (`[telemetry]`): last success, last error, what is buffered.
    telemetry: crate::telemetry::TelemetryStatus,
    /// The served TLS certificate (with `[api.tls]`): its fingerprint, for pinning.
    tls: Option<super::tls::CertInfo>,
    /// A Smapify merchant's easyPoints (null without `[easypoints]`).
    easypoints: Option<EasyPointsStatus>,
    /// Who grants points for a purchase (`register` or `pointsd`), where that comes from
    /// (`smaregi`, `config`, `unchecked`) and when Smaregi was read; `warning` when the
    /// register and pointsd would both grant, or the store could not be checked.
    granting: crate::sync::granting::GrantingStatus,
    /// Possible double counts between the register and pointsd, as the last feed poll found
    /// them (listed at `GET /v1/reconcile/doubles`).
    possible_double_counts: i64,
    /// The last backup (scheduled or `pointsd backup`) and the next scheduled one.
    backup: BackupView,
    /// Deleting closed history older than `[retention] keep_days`: the last run.
    retention: RetentionView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RetentionView {
    keep_days: u32,
    last_run_at: Option<String>,
    /// Rows the last run deleted.
    deleted_txns: Option<u64>,
    deleted_sales: Option<u64>,
    deleted_returns: Option<u64>,
    last_error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct BackupView {
    /// When the last backup attempt ended, and whether it worked (null: none yet).
    last_at: Option<String>,
    last_ok: Option<bool>,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// The last good backup: its file, size and when it was taken.
    path: Option<String>,
    bytes: Option<u64>,
    last_success_at: Option<String>,
    /// The next scheduled backup (null without `[backup] dir`).
    next_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct EasyPointsStatus {
    /// Whether Smapify carries this store's changes to easyPoints; its `warning` says
    /// "changes to Smaregi are not reaching easyPoints — is Smapify's point sync on?" when not.
    smapify: Option<crate::sync::SmapifyCheck>,
    /// The last cross-ledger report: when, and how many customers differed.
    last_report_at: Option<String>,
    differences: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SalesView {
    sales: i64,
    /// Points used and earned over this store's sales.
    points_used: i64,
    points_earned: i64,
    returns: i64,
    /// Earned points taken back and used points given back over all returns.
    points_taken_back: i64,
    points_given_back: i64,
    shortfall_points: i64,
    returns_with_shortfall: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StorageView {
    /// False while the database cannot commit (e.g. the disk is full): writes answer 503.
    ok: bool,
    last_error: Option<String>,
    last_error_at: Option<String>,
    errors: u64,
    /// Free space on the data dir's file system at the last check (every second).
    free_mb: Option<u64>,
    /// `[storage] min_free_mb`; 0: no floor.
    min_free_mb: u64,
    /// True while new writes are refused (507 `insufficient_storage`) for lack of space.
    below_floor: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ReconcileSummary {
    last_run_at: String,
    discrepancies: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct UpstreamView {
    kind: &'static str,
    last_ok_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    paused_until: Option<String>,
    auth_failed: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct QueueView {
    pending: i64,
    sending: i64,
    ambiguous: i64,
    needs_review: i64,
    rejected: i64,
    applied: i64,
    oldest_pending_age_s: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CacheView {
    customers: i64,
    last_full_refresh_at: Option<String>,
}

#[utoipa::path(get, path = "/v1/status", tag = "pointsd",
    responses((status = 200, body = StatusView), E401, E503))]
pub(super) async fn status(State(st): State<AppRef>) -> Result<Json<StatusView>, ApiError> {
    let q = st.store.queue_stats().await?;
    let customers = st.store.customer_count().await?;
    let last_refresh = st
        .store
        .meta(Meta::LastFullRefreshAt)
        .await?
        .and_then(|v| v.parse::<i64>().ok());
    let reconcile = st
        .store
        .meta(Meta::LastReconcile)
        .await?
        .and_then(|j| serde_json::from_str::<Value>(&j).ok())
        .map(|v| ReconcileSummary {
            last_run_at: v["ran_at"].as_str().unwrap_or_default().to_string(),
            discrepancies: v["discrepancies"].as_u64().unwrap_or(0),
        });
    let h = st.health.snapshot();
    let now = st.clock.now_ms();
    let storage = st.store.storage_health();
    let floor = st.store.disk_floor().status();
    let feed = st.sync.feed_status().await;
    let budget = st.sync.budget_snapshot();
    let ss = st.store.sales_stats().await?;
    let easypoints = match &st.ledgers {
        Some(l) => {
            let report = l.last_report().await?;
            Some(EasyPointsStatus {
                smapify: l.last_smapify_check().await?,
                last_report_at: report.as_ref().map(|r| r.run_at.clone()),
                differences: report.map(|r| r.differences.len()),
            })
        }
        None => None,
    };
    let data_dir = st.data_dir.clone();
    let last =
        tokio::task::spawn_blocking(move || crate::store::backup::LastBackup::load(&data_dir))
            .await
            .unwrap_or_default();
    let backup = BackupView {
        last_at: last.last_at_ms.map(clock::rfc3339),
        last_ok: last.last_ok,
        last_error: last.last_error,
        path: last.path.map(|p| p.display().to_string()),
        bytes: last.bytes,
        last_success_at: last.success_at_ms.map(clock::rfc3339),
        next_at: st.backup.next_at_ms().map(clock::rfc3339),
    };
    let r = st
        .retention
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let retention = RetentionView {
        keep_days: r.keep_days,
        last_run_at: r.last_run_at_ms.map(clock::rfc3339),
        deleted_txns: r.last_run.as_ref().map(|x| x.txns),
        deleted_sales: r.last_run.as_ref().map(|x| x.sales),
        deleted_returns: r.last_run.as_ref().map(|x| x.returns),
        last_error: r.last_error,
    };
    Ok(Json(StatusView {
        granting: st.granting.status(),
        possible_double_counts: st.sync.possible_double_counts(),
        retention,
        backup,
        tls: st.tls.clone(),
        easypoints,
        sales: SalesView {
            sales: ss.sales,
            points_used: ss.points_used,
            points_earned: ss.points_earned,
            returns: ss.returns,
            points_taken_back: ss.points_taken_back,
            points_given_back: ss.points_given_back,
            shortfall_points: ss.shortfall_points,
            returns_with_shortfall: ss.returns_with_shortfall,
        },
        feed,
        budget,
        telemetry: st.telemetry.snapshot(),
        storage: StorageView {
            ok: storage.ok,
            last_error: storage.last_error,
            last_error_at: storage.last_error_at.map(clock::rfc3339),
            errors: storage.errors,
            free_mb: floor.free_mb,
            min_free_mb: floor.min_free_mb,
            below_floor: floor.below_floor,
        },
        reconcile,
        online: h.online && !h.auth_failed,
        store_id: st.settings.config.agent.store_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        upstream: UpstreamView {
            kind: st.sync.upstream().kind(),
            last_ok_at: h.last_ok_at.map(clock::rfc3339),
            last_error: h.last_error,
            last_error_at: h.last_error_at.map(clock::rfc3339),
            paused_until: h.paused_until.filter(|u| *u > now).map(clock::rfc3339),
            auth_failed: h.auth_failed,
        },
        queue: QueueView {
            pending: q.pending,
            sending: q.sending,
            ambiguous: q.ambiguous,
            needs_review: q.needs_review,
            rejected: q.rejected,
            applied: q.applied,
            oldest_pending_age_s: q
                .oldest_pending_created_at
                .map(|t| ((now - t) / 1000).max(0)),
        },
        cache: CacheView {
            customers,
            last_full_refresh_at: last_refresh.map(clock::rfc3339),
        },
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "pointsd",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        E401, E503))]
pub(super) async fn metrics(State(st): State<AppRef>) -> Result<Response, ApiError> {
    refresh_metrics(&st).await?;
    let m = &st.metrics;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}

/// Brings the gauges read at scrape time (queue, cache, storage, feed, budget) up to date.
/// `/metrics` and the remote-write push both call it, so they report the same figures.
pub(crate) async fn refresh_metrics(st: &AppState) -> Result<(), StoreError> {
    let q = st.store.queue_stats().await?;
    let m = &st.metrics;
    m.signin_throttled_addresses
        .set(st.throttle.throttled_now(std::time::Instant::now()) as i64);
    for (state, n) in [
        ("pending", q.pending),
        ("sending", q.sending),
        ("ambiguous", q.ambiguous),
        ("applied", q.applied),
        ("rejected", q.rejected),
        ("needs_review", q.needs_review),
        ("discarded", q.discarded),
    ] {
        m.queue_depth
            .get_or_create(&crate::metrics::StateLabels { state })
            .set(n);
    }
    let now = st.clock.now_ms();
    m.oldest_pending_age.set(
        q.oldest_pending_created_at
            .map_or(0, |t| ((now - t) / 1000).max(0)),
    );
    m.cache_customers.set(st.store.customer_count().await?);
    if let Some(l) = &st.ledgers
        && let Some(r) = l.last_report().await?
    {
        m.ledger_differences.set(r.differences.len() as i64);
    }
    m.possible_double_counts
        .set(st.sync.possible_double_counts());
    let ss = st.store.sales_stats().await?;
    m.sales.set(ss.sales);
    m.returns.set(ss.returns);
    m.return_shortfall_points.set(ss.shortfall_points);
    m.online.set(st.health.is_online() as i64);
    m.auth_failed.set(st.health.snapshot().auth_failed as i64);
    let storage = st.store.storage_health();
    m.storage_ok.set(storage.ok as i64);
    let floor = st.store.disk_floor().status();
    m.storage_below_floor.set(floor.below_floor as i64);
    m.storage_free_bytes.set(
        floor
            .free_bytes
            .map_or(-1, |b| b.min(i64::MAX as u64) as i64),
    );
    // The store keeps running totals; the counters catch up to them.
    Metrics::catch_up(&m.storage_errors, storage.errors);
    Metrics::catch_up(&m.db_commits, storage.commits);
    Metrics::catch_up(&m.db_write_jobs, storage.jobs);
    if let Some(b) = st.sync.budget_snapshot() {
        for (class, lane) in [("read", &b.reads), ("write", &b.writes)] {
            let l = ClassLabels { class };
            Metrics::catch_up(&m.budget_granted.get_or_create(&l), lane.granted_total);
            Metrics::catch_up(&m.budget_throttled.get_or_create(&l), lane.throttled_total);
            m.budget_rate.get_or_create(&l).set(lane.rate_per_s);
        }
    }
    let feed = st.sync.feed_status().await;
    let last_poll_ms = feed.last_poll_at.as_deref().and_then(clock::parse_stamp);
    m.feed_last_poll_age.set(match last_poll_ms {
        Some(t) => ((now - t).max(0) as f64) / 1000.0,
        None => m.started.elapsed().as_secs_f64(),
    });
    m.feed_oldest_mark_age
        .set(feed.oldest_mark_age_s.unwrap_or(0.0).max(0.0));
    m.feed_marked.set(feed.marked);
    let data_dir = st.data_dir.clone();
    let last =
        tokio::task::spawn_blocking(move || crate::store::backup::LastBackup::load(&data_dir))
            .await
            .unwrap_or_default();
    // 0 until a backup has been made: the alert's age is then "since 1970", i.e. overdue.
    m.backup_last_success
        .set(last.success_at_ms.map_or(0, |t| t / 1000));
    m.backup_interval
        .set(st.settings.config.backup.interval_s as i64);
    Ok(())
}
