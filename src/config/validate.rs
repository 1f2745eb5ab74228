//! Validation: every rule of a parsed config checked at once, into typed `Settings`.

use std::net::SocketAddr;

use super::load::Problem;
use super::sections::{Config, TlsConfig, UpstreamKind};
use super::settings::{ApiToken, Settings, sha256};
use super::strength::token_weakness;

/// Tokens starting with this (as in config/pointsd.example.toml) are never accepted.
pub const PLACEHOLDER: &str = "change-me";

impl Config {
    /// Checks every rule and returns typed settings, or every problem found.
    pub fn validate(self) -> Result<Settings, Vec<Problem>> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(Problem {
                key: key.to_string(),
                message,
            })
        };

        if self.agent.store_id.trim().is_empty() {
            bad(
                "agent.store_id",
                "required; set it to this store's id, e.g. store_id = \"store-001\"".into(),
            );
        } else if !crate::ledger::is_valid_id(&self.agent.store_id) {
            bad(
                "agent.store_id",
                "must be 1-64 printable ASCII characters without spaces".into(),
            );
        }

        if let Some(id) = &self.agent.smaregi_store_id
            && !(1..=10).contains(&id.len())
        {
            bad(
                "agent.smaregi_store_id",
                "must be the store's numeric id in Smaregi (店舗ID), e.g. smaregi_store_id = \"1\""
                    .into(),
            );
        } else if let Some(id) = &self.agent.smaregi_store_id
            && !id.bytes().all(|b| b.is_ascii_digit())
        {
            bad(
                "agent.smaregi_store_id",
                format!("{id:?} is not a Smaregi store id: digits only (店舗ID), e.g. \"1\""),
            );
        }

        let listen = match self.api.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                bad(
                    "api.listen",
                    format!(
                        "{:?} is not an address:port; use e.g. \"127.0.0.1:8765\" (or \"0.0.0.0:8765\" for the store LAN)",
                        self.api.listen
                    ),
                );
                None
            }
        };

        let mut tokens = Vec::new();
        let mut placeholders = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}]");
            if t.name.trim().is_empty() {
                bad(
                    &format!("{key}.name"),
                    "required; name the register, e.g. \"register-1\"".into(),
                );
            } else if !names.insert(t.name.clone()) {
                bad(
                    &format!("{key}.name"),
                    format!("duplicate token name {:?}; names must be unique", t.name),
                );
            }
            match (&t.token, &t.token_sha256) {
                (Some(_), Some(_)) => {
                    bad(&key, "set either token or token_sha256, not both".into())
                }
                (None, None) => bad(
                    &key,
                    "set token = \"...\" or token_sha256 = \"<hex>\"".into(),
                ),
                (Some(tok), None) => {
                    if tok.expose().starts_with(PLACEHOLDER) {
                        // The example's placeholder would otherwise be a working, published
                        // token on every fresh install: keep it switched off.
                        placeholders.push(Problem {
                            key: format!("{key}.token"),
                            message: format!(
                                "is the example placeholder and is switched off; set a random token (e.g. `openssl rand -hex 16`) for {:?}",
                                t.name
                            ),
                        });
                    } else if let Some(why) = token_weakness(tok.expose()) {
                        bad(&format!("{key}.token"), why);
                    } else {
                        tokens.push((
                            i,
                            ApiToken {
                                name: t.name.clone(),
                                sha256: sha256(tok.expose().as_bytes()),
                                role: t.role,
                            },
                        ));
                    }
                }
                (None, Some(hexed)) => match hex::decode(hexed.trim()) {
                    Ok(b) if b.len() == 32 => {
                        let mut h = [0u8; 32];
                        h.copy_from_slice(&b);
                        tokens.push((
                            i,
                            ApiToken {
                                name: t.name.clone(),
                                sha256: h,
                                role: t.role,
                            },
                        ));
                    }
                    _ => bad(
                        &format!("{key}.token_sha256"),
                        "must be 64 hex characters (sha256sum of the token)".into(),
                    ),
                },
            }
        }
        // The same token under two names would sign in as whichever comes first.
        for (n, (i, t)) in tokens.iter().enumerate() {
            if let Some((j, first)) = tokens[..n].iter().find(|(_, u)| u.sha256 == t.sha256) {
                bad(
                    &format!("api.tokens[{i}]"),
                    format!(
                        "the same token as api.tokens[{j}] ({:?}); give every register its own token",
                        first.name
                    ),
                );
            }
        }
        let tokens: Vec<ApiToken> = tokens.into_iter().map(|(_, t)| t).collect();
        if self.api.tokens.is_empty() {
            bad(
                "api.tokens",
                "no register token configured; add [[api.tokens]] with name and token".into(),
            );
        }

        let u = &self.upstream;
        if u.connect_timeout_ms == 0 || u.connect_timeout_ms > 60_000 {
            bad("upstream.connect_timeout_ms", "must be 1..=60000".into());
        }
        if u.request_timeout_ms == 0 || u.request_timeout_ms > 300_000 {
            bad("upstream.request_timeout_ms", "must be 1..=300000".into());
        }
        if let Some(proxy) = &u.proxy
            && reqwest::Url::parse(proxy).is_err()
        {
            bad(
                "upstream.proxy",
                format!("{proxy:?} is not a URL; use e.g. \"http://proxy.local:3128\""),
            );
        }
        match (u.kind, &u.smaregi) {
            (UpstreamKind::Smaregi, None) => bad(
                "upstream.smaregi",
                "required when upstream.kind = \"smaregi\"; add contract_id, client_id, client_secret".into(),
            ),
            (_, Some(s)) => {
                for (k, v) in [("contract_id", &s.contract_id), ("client_id", &s.client_id)] {
                    if v.trim().is_empty() && u.kind == UpstreamKind::Smaregi {
                        bad(&format!("upstream.smaregi.{k}"), "required; find it in the Smaregi developers console".into());
                    }
                }
                if s.client_secret.is_empty() && u.kind == UpstreamKind::Smaregi {
                    bad("upstream.smaregi.client_secret", "required; or set POINTSD_UPSTREAM__SMAREGI__CLIENT_SECRET".into());
                }
                for (k, v) in [("id_base", &s.id_base), ("api_base", &s.api_base)] {
                    match reqwest::Url::parse(v) {
                        Ok(url) if cleartext_beyond_loopback(&url) && !s.allow_insecure_http => bad(
                            &format!("upstream.smaregi.{k}"),
                            format!("{v:?} is plain http to a host beyond this PC: the client secret and access tokens would cross the network in clear text; use https, or set upstream.smaregi.allow_insecure_http = true to accept the risk"),
                        ),
                        Ok(url) if url.scheme() == "https" || url.scheme() == "http" => {}
                        _ => bad(&format!("upstream.smaregi.{k}"), format!("{v:?} is not an http(s) URL")),
                    }
                }
            }
            (UpstreamKind::Sim, None) => {}
        }
        if u.sim.customers > 1_000_000 {
            bad("upstream.sim.customers", "must be at most 1000000".into());
        }

        let s = &self.sync;
        if s.pull_interval_s < 10 {
            bad("sync.pull_interval_s", "must be at least 10 seconds".into());
        }
        if s.probe_interval_s == 0 || s.probe_interval_s > 3600 {
            bad("sync.probe_interval_s", "must be 1..=3600".into());
        }
        if s.online_budget_ms > 30_000 {
            bad(
                "sync.online_budget_ms",
                "must be at most 30000 (registers should not wait longer)".into(),
            );
        }
        let b = &self.backup;
        if b.interval_s == 0 || b.interval_s > 7 * 24 * 3600 {
            bad(
                "backup.interval_s",
                "must be 1..=604800 (up to a week; 3600 is the default)".into(),
            );
        }
        let k = self.retention.keep_days;
        if k != 0 && k < 30 {
            bad(
                "retention.keep_days",
                "must be 0 (keep everything) or at least 30: history must outlive the return period and the upstream's 31-day transaction list".into(),
            );
        }
        if b.keep == 0 {
            bad("backup.keep", "must be at least 1".into());
        }
        if s.concurrency == 0 || s.concurrency > 64 {
            bad("sync.concurrency", "must be 1..=64".into());
        }
        if s.backoff_initial_ms == 0 {
            bad("sync.backoff_initial_ms", "must be positive".into());
        }
        if s.backoff_max_ms < s.backoff_initial_ms {
            bad(
                "sync.backoff_max_ms",
                "must be at least sync.backoff_initial_ms".into(),
            );
        }
        if !(s.backoff_multiplier >= 1.0 && s.backoff_multiplier <= 10.0) {
            bad(
                "sync.backoff_multiplier",
                "must be between 1.0 and 10.0".into(),
            );
        }

        for (key, v) in [
            ("sync.max_reads_per_second", s.max_reads_per_second),
            ("sync.max_writes_per_second", s.max_writes_per_second),
        ] {
            if v.is_some_and(|n| n == 0 || n > 10_000) {
                bad(key, "must be 1..=10000".into());
            }
        }
        if !(0.01..=100.0).contains(&s.reread_per_second) {
            bad(
                "sync.reread_per_second",
                "must be 0.01..=100 (background re-reads per second; default 0.2)".into(),
            );
        }
        if s.full_refresh_interval_s < 60 {
            bad(
                "sync.full_refresh_interval_s",
                "must be at least 60 seconds (default 86400: once a day)".into(),
            );
        }
        if s.max_requests_per_second == 0 || s.max_requests_per_second > 10_000 {
            bad("sync.max_requests_per_second", "must be 1..=10000".into());
        }
        if self.api.shutdown_grace_s > 300 {
            bad(
                "api.shutdown_grace_s",
                "must be at most 300 (service managers kill a stop that takes longer)".into(),
            );
        }
        let a = &self.api;
        for (key, v, range) in [
            ("api.header_timeout_s", a.header_timeout_s, 1..=300),
            ("api.idle_timeout_s", a.idle_timeout_s, 1..=3600),
            ("api.body_timeout_s", a.body_timeout_s, 1..=600),
            (
                "api.max_requests_per_token",
                u64::from(a.max_requests_per_token),
                1..=65_536,
            ),
            (
                "api.max_requests_per_address",
                u64::from(a.max_requests_per_address),
                1..=65_536,
            ),
            (
                "api.max_connections",
                u64::from(a.max_connections),
                8..=65_536,
            ),
            (
                "api.max_header_bytes",
                u64::from(a.max_header_bytes),
                1_024..=1_048_576,
            ),
        ] {
            if !range.contains(&v) {
                bad(key, format!("must be {}..={}", range.start(), range.end()));
            }
        }
        if !(1..=crate::ledger::MAX_POINTS).contains(&a.register_max_earn_points) {
            bad(
                "api.register_max_earn_points",
                format!("must be 1..={}", crate::ledger::MAX_POINTS),
            );
        }
        if !(1..=crate::ledger::MAX_PURCHASE_AMOUNT).contains(&a.register_max_sale_amount) {
            bad(
                "api.register_max_sale_amount",
                format!("must be 1..={}", crate::ledger::MAX_PURCHASE_AMOUNT),
            );
        }
        if let Some(tls) = &a.tls {
            check_tls(tls, &mut bad);
        }
        if let Some(l) = listen
            && !l.ip().is_loopback()
            && a.tls.is_none()
            && !a.allow_plain_http
        {
            bad(
                "api.listen",
                format!(
                    "{l} is reachable from the network, where tokens would cross in clear text; add [api.tls] (generate = true with names = [\"<this PC's name or IP>\"], or cert_file and key_file), or set api.allow_plain_http = true to accept the risk"
                ),
            );
        }
        for (i, h) in a.signin_throttle_exempt.iter().enumerate() {
            if h.parse::<std::net::IpAddr>().is_err() {
                bad(
                    &format!("api.signin_throttle_exempt[{i}]"),
                    format!("{h:?} is not an IP address; write e.g. \"127.0.0.1\" or \"::1\""),
                );
            }
        }
        for (i, h) in a.allowed_hosts.iter().enumerate() {
            if h.trim().is_empty() || h.contains(['/', ' ', '@']) {
                bad(
                    &format!("api.allowed_hosts[{i}]"),
                    format!(
                        "{h:?} is not a host name; write e.g. \"store-pc.local\" (no scheme or path)"
                    ),
                );
            }
        }
        if self.log.max_total_mb == 0 {
            bad("log.max_total_mb", "must be at least 1".into());
        }
        if self.api.lookup_refresh_budget_ms > 5_000 {
            bad(
                "api.lookup_refresh_budget_ms",
                "must be at most 5000 (a cashier is waiting)".into(),
            );
        }

        if self.offline.max_redeem_points < 0 {
            bad("offline.max_redeem_points", "must not be negative".into());
        }
        if self.earn.yen_per_point <= 0 {
            bad(
                "earn.yen_per_point",
                "must be a positive number of yen".into(),
            );
        }
        if !(1..=86_400).contains(&self.earn.double_window_s) {
            bad(
                "earn.double_window_s",
                "must be 1..=86400 seconds (default 600)".into(),
            );
        }
        if crate::ledger::parse_timezone(&self.agent.timezone).is_none() {
            bad(
                "agent.timezone",
                format!(
                    "{:?} is not a known time zone; use \"Asia/Tokyo\", \"UTC\" or a fixed offset such as \"+09:00\"",
                    self.agent.timezone
                ),
            );
        }
        let is_date = |s: &str| {
            time::Date::parse(
                s,
                &time::macros::format_description!("[year]-[month]-[day]"),
            )
            .is_ok()
        };
        for (i, c) in self.earn.campaigns.iter().enumerate() {
            let key = format!("earn.campaigns[{i}]");
            if c.name.trim().is_empty() {
                bad(
                    &format!("{key}.name"),
                    "required; it is shown in applied_rules".into(),
                );
            }
            for (k, v) in [("from", &c.from), ("to", &c.to)] {
                if let Some(d) = v
                    && !is_date(d)
                {
                    bad(
                        &format!("{key}.{k}"),
                        format!("{d:?} is not a date; write YYYY-MM-DD, e.g. \"2026-12-01\""),
                    );
                }
            }
            if let (Some(f), Some(t)) = (&c.from, &c.to)
                && f > t
            {
                bad(&format!("{key}.to"), "must not be before from".into());
            }
            match (c.multiplier, c.bonus_points) {
                (None, None) => bad(
                    &key,
                    "set multiplier (e.g. 2.0) or bonus_points (e.g. 50), or both".into(),
                ),
                (m, b) => {
                    if m.is_some_and(|m| !(m > 0.0 && m <= 100.0)) {
                        bad(
                            &format!("{key}.multiplier"),
                            "must be above 0 and at most 100".into(),
                        );
                    }
                    if b.is_some_and(|b| !(0..=crate::ledger::MAX_POINTS).contains(&b)) {
                        bad(
                            &format!("{key}.bonus_points"),
                            format!("must be 0..={}", crate::ledger::MAX_POINTS),
                        );
                    }
                }
            }
        }
        let sp = &self.spend;
        if sp.min_points < 1 {
            bad("spend.min_points", "must be at least 1".into());
        }
        if sp.unit < 1 {
            bad("spend.unit", "must be at least 1".into());
        }
        if !(sp.max_share >= 0.0 && sp.max_share <= 1.0) {
            bad(
                "spend.max_share",
                "must be between 0.0 and 1.0 (1.0: points may pay the whole amount)".into(),
            );
        }
        if sp.yen_per_point < 1 {
            bad(
                "spend.yen_per_point",
                "must be a positive number of yen".into(),
            );
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.name.trim().is_empty() {
                bad(&format!("tiers[{i}].name"), "required".into());
            }
            if !(t.earn_multiplier > 0.0 && t.earn_multiplier <= 100.0) {
                bad(
                    &format!("tiers[{i}].earn_multiplier"),
                    "must be above 0 and at most 100 (1.0: no change)".into(),
                );
            }
            if t.min_points < 0 {
                bad(
                    &format!("tiers[{i}].min_points"),
                    "must not be negative".into(),
                );
            }
        }
        for (key, message) in self.telemetry.problems() {
            bad(&key, message);
        }
        if let Some(ep) = &self.easypoints {
            if ep.public_key.trim().is_empty() {
                bad(
                    "easypoints.public_key",
                    "required; find it in the easyPoints app's settings (API credentials)".into(),
                );
            }
            if ep.secret_key.is_empty() {
                bad(
                    "easypoints.secret_key",
                    "required; set secret_key_file, or POINTSD_EASYPOINTS__SECRET_KEY".into(),
                );
            }
            match reqwest::Url::parse(&ep.api_base) {
                Ok(url) if url.scheme() == "https" || url.scheme() == "http" => {}
                _ => bad(
                    "easypoints.api_base",
                    format!(
                        "{:?} is not an http(s) URL; the default is \"https://loyalty.slrs.io/api/shopify\"",
                        ep.api_base
                    ),
                ),
            }
            if !(0..=1_000_000_000_000_000).contains(&ep.code_offset) {
                bad(
                    "easypoints.code_offset",
                    "must be 0 or a positive start number (as set in Smapify)".into(),
                );
            }
            if ep.max_requests_per_second == 0 || ep.max_requests_per_second > 100 {
                bad(
                    "easypoints.max_requests_per_second",
                    "must be 1..=100".into(),
                );
            }
            if ep.settle_s > 86_400 {
                bad(
                    "easypoints.settle_s",
                    "must be at most 86400 (Smapify carries a change within minutes)".into(),
                );
            }
            if ep.report_window_days == 0 || ep.report_window_days > 365 {
                bad("easypoints.report_window_days", "must be 1..=365".into());
            }
            if ep.report_interval_s != 0 && ep.report_interval_s < 60 {
                bad(
                    "easypoints.report_interval_s",
                    "must be 0 (off) or at least 60 seconds".into(),
                );
            }
        }
        if self.log.retention_files == 0 {
            bad("log.retention_files", "must be at least 1".into());
        }
        // A bare word is a target, not a level, to the filter: "inof" would switch every log
        // line off. Bare words must be levels here.
        let levels = ["off", "error", "warn", "info", "debug", "trace"];
        let bare_non_level =
            self.log.level.split(',').any(|d| {
                !d.contains('=') && !levels.contains(&d.trim().to_ascii_lowercase().as_str())
            });
        if bare_non_level
            || self
                .log
                .level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            bad(
                "log.level",
                format!(
                    "{:?} is not a log filter; use e.g. \"info\" or \"pointsd=debug,info\"",
                    self.log.level
                ),
            );
        }

        match listen {
            // An unparsable address is one of the problems, so `listen` is set when none is.
            Some(listen) if p.is_empty() => {
                let mut settings = Settings::typed(self, listen, tokens);
                settings.warnings = placeholders;
                Ok(settings)
            }
            _ => Err(p),
        }
    }

    /// True when the file holds something that must stay owner-readable.
    pub fn holds_secret(&self) -> bool {
        self.api.tokens.iter().any(|t| t.token.is_some())
            || self
                .upstream
                .smaregi
                .as_ref()
                .is_some_and(|s| !s.client_secret.is_empty())
            || self.telemetry.holds_secret()
            || self
                .easypoints
                .as_ref()
                .is_some_and(|e| !e.secret_key.is_empty() && e.secret_key_file.is_none())
    }
}

/// `[api.tls]`: a certificate and key, or `generate = true` with the names to make one for.
fn check_tls(tls: &TlsConfig, bad: &mut impl FnMut(&str, String)) {
    match (&tls.cert_file, &tls.key_file, tls.generate) {
        (Some(_), Some(_), false) => {}
        (None, None, true) => {
            if tls.names.is_empty() {
                bad(
                    "api.tls.names",
                    "required with generate = true: the names registers use to reach this PC, e.g. [\"store-pc.local\", \"192.168.1.10\"]".into(),
                );
            }
            for (i, n) in tls.names.iter().enumerate() {
                if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
                    bad(
                        &format!("api.tls.names[{i}]"),
                        format!("{n:?} is not a DNS name or IP address"),
                    );
                }
            }
        }
        (_, _, true) => bad(
            "api.tls.generate",
            "set either generate = true (with names) or cert_file and key_file, not both".into(),
        ),
        (None, _, false) => bad(
            "api.tls.cert_file",
            "required: the PEM certificate (or set generate = true with names)".into(),
        ),
        (_, None, false) => bad(
            "api.tls.key_file",
            "required: the PEM private key of cert_file".into(),
        ),
    }
}

/// `http://` to a host other than this PC (loopback addresses and `localhost`): what crosses
/// it can be read on the way.
pub(crate) fn cleartext_beyond_loopback(url: &reqwest::Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return true;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return !ip.is_loopback();
    }
    let d = host.trim_end_matches('.').to_ascii_lowercase();
    d != "localhost" && !d.ends_with(".localhost")
}
