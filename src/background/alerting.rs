//! Evaluating the alert rules (`alerts:`) every `alerts.interval` from the usage rollups,
//! and sending their notices (`crate::alerts`). Reads the running config each time, so a
//! reload or an API change applies at the next evaluation; states are kept by rule name.
//! `quota` rules read the balances here (one store read per watched consumer per
//! evaluation); rules on the rollups are skipped while analytics is off. With `redis:`
//! configured, rules read the fleet's rollups and each notice is sent by one gateway of the
//! fleet (`claimed`).

use crate::alerts::notify::{self, Hook};
use crate::alerts::{self, Alerts, Facts};
use crate::analytics::Analytics;
use crate::quota::QuotaOp;
use crate::runtime::{env::expand_key, Gateway, SharedConfig};
use crate::state::Backends;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub struct Alerting {
    pub config: SharedConfig,
    pub analytics: Arc<Analytics>,
    pub alerts: Arc<Mutex<Alerts>>,
    /// The quota balances (`quota` rules).
    pub backends: Arc<Backends>,
}

/// The webhook of `section` with its URL's variables expanded (`Err`: the variable unset).
pub fn hook(w: &crate::settings::WebhookSection) -> Result<Hook, String> {
    Ok(Hook {
        name: w.name.clone(),
        url: expand_key(w.url.as_written())?,
        format: w.format.unwrap_or_default(),
    })
}

impl Alerting {
    /// Every budget subject's spend this period, when a `budget` rule looks at them.
    async fn budget_spends(&self, config: &Gateway) -> Vec<alerts::BudgetSpend> {
        let rules = &config.settings.alerts.rules;
        if !rules
            .iter()
            .any(|r| r.kind == crate::settings::AlertKind::Budget)
        {
            return Vec::new();
        }
        let now = i64::try_from(alerts::now_secs()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for b in &config.budgets.budgets {
            for subject in config.budget_subjects(b) {
                let got = self
                    .backends
                    .budgets()
                    .standing(b, &subject, now, None)
                    .await;
                match got {
                    Ok(s) => {
                        let allowance = b.limit.saturating_add(s.spend.topup);
                        out.push(alerts::BudgetSpend {
                            budget: b.name.clone(),
                            subject,
                            percent: crate::budget::percent(s.spend.spent, allowance),
                            figures: format!(
                                "{} of {} {}",
                                crate::budget::money(s.spend.spent),
                                crate::budget::money(allowance),
                                b.currency
                            ),
                        });
                    }
                    Err(e) => log::warn!("alerts: the spend of budget `{}` not read: {e}", b.name),
                }
            }
        }
        out
    }

    /// The balances the `quota` rules look at.
    async fn balances(&self, config: &Gateway) -> Vec<(String, i64)> {
        let Some(wanted) = alerts::quota_consumers(&config.settings.alerts.rules) else {
            return Vec::new();
        };
        let Some(quota) = &config.quota else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in config.consumers.names() {
            if !quota.applies(name) || wanted.as_ref().is_some_and(|w| !w.contains(name)) {
                continue;
            }
            let got = self
                .backends
                .quotas()
                .apply(&config.consumers, Some(quota), name, QuotaOp::Get)
                .await;
            match got {
                Ok(balance) => out.push((name.clone(), balance)),
                Err(e) => log::warn!("alerts: the quota balance of `{name}` not read: {e}"),
            }
        }
        out
    }

    async fn evaluate(&self, client: &reqwest::Client) {
        let config = self.config.load_full();
        let section = &config.settings.alerts;
        let analytics_on = self.analytics.enabled();
        self.alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(&section.rules);
        let rules: Vec<_> = section
            .rules
            .iter()
            .filter(|r| analytics_on || !alerts::needs_rollups(r))
            .cloned()
            .collect();
        if rules.is_empty() {
            return;
        }
        let facts = Facts {
            providers_down: config
                .providers
                .iter()
                .filter(|p| !p.keys.is_empty() && !p.keys.any_usable())
                .map(|p| p.name.clone())
                .collect(),
            balances: self.balances(&config).await,
            budgets: self.budget_spends(&config).await,
        };
        let now = alerts::now_secs();
        let fleet = self.fleet_rollups(&rules, analytics_on, now).await;
        let seen = judge(
            self.analytics.clone(),
            fleet,
            analytics_on,
            rules,
            now,
            facts,
        )
        .await;
        let mut notices = Vec::new();
        {
            let mut states = self.alerts.lock().unwrap_or_else(PoisonError::into_inner);
            for (rule, result) in seen {
                match result {
                    Ok(seen) => notices.extend(states.observe(&rule, seen, now)),
                    Err(e) => log::warn!("alert `{}` not evaluated: {e}", rule.name),
                }
            }
        }
        if !notices.is_empty() {
            self.deliver(client, section, &notices, now).await;
        }
    }

    /// Send each notice this gateway claims to the webhooks, and record it.
    async fn deliver(
        &self,
        client: &reqwest::Client,
        section: &crate::settings::AlertsSection,
        notices: &[alerts::Notice],
        now: u64,
    ) {
        let hooks: Vec<Hook> = section
            .webhooks
            .iter()
            .filter_map(|w| match hook(w) {
                Ok(h) => Some(h),
                Err(var) => {
                    log::warn!("alert webhook `{}`: variable {var} is not set", w.name);
                    None
                }
            })
            .collect();
        for notice in notices {
            let mine = self.claimed(notice).await;
            if mine {
                notify::send(client, &hooks, notice).await;
            }
            self.alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(notice, mine, now);
        }
    }

    /// With a fleet's rollups in Redis: this gateway's notices are written first, then the
    /// minutes the rules read are taken from Redis (`None` without Redis, or when it does
    /// not answer: then this gateway's own rollups are used).
    async fn fleet_rollups(
        &self,
        rules: &[crate::settings::AlertRuleSection],
        analytics_on: bool,
        now: u64,
    ) -> Option<Vec<crate::analytics::fleet::Row>> {
        if !analytics_on || self.analytics.fleet().is_none() {
            return None;
        }
        let analytics = self.analytics.clone();
        let _ = tokio::task::spawn_blocking(move || analytics.flush(Duration::from_secs(1))).await;
        let minute = now / 60;
        let from = (minute + 1).saturating_sub(alerts::minutes_needed(rules));
        self.analytics
            .fleet_rows(from, minute + 1, minute, "alerts")
            .await
    }

    /// Whether this gateway sends `notice`. In a fleet sharing Redis every gateway
    /// evaluates the same rules on the same rollups: the first to claim a notice sends it,
    /// and the claim holds for the rule's `repeat` (firing) or a minute (resolved), so the
    /// fleet notifies once. Without Redis, or when it does not answer, the gateway sends.
    async fn claimed(&self, notice: &alerts::Notice) -> bool {
        let Some(redis) = self.analytics.fleet() else {
            return true;
        };
        let config = self.config.load();
        let repeat = config
            .settings
            .alerts
            .rules
            .iter()
            .find(|r| r.name == notice.rule)
            .and_then(|r| r.repeat)
            .map_or(alerts::DEFAULT_REPEAT, |d| d.0);
        let ttl = match notice.state {
            alerts::State::Firing => repeat,
            _ => Duration::from_secs(60),
        };
        let name = format!("{}:{}", notice.rule, notice.state.as_str());
        match redis.claim(&name, ttl).await {
            Ok(mine) => mine,
            Err(e) => {
                log::warn!("alerts: notice claim failed ({e}); sending");
                true
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Alerting {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = reqwest::Client::new();
        loop {
            let interval = self
                .config
                .load()
                .settings
                .alerts
                .interval
                .map_or(alerts::DEFAULT_INTERVAL, |d| d.0)
                .max(Duration::from_millis(200));
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.evaluate(&client).await;
        }
    }
}

/// Each rule's verdict at `now` from the usage rollups (the fleet's `rows` when Redis holds
/// them, else this gateway's file), off the async runtime.
async fn judge(
    analytics: Arc<Analytics>,
    fleet: Option<Vec<crate::analytics::fleet::Row>>,
    analytics_on: bool,
    rules: Vec<crate::settings::AlertRuleSection>,
    now: u64,
    facts: Facts,
) -> Vec<(
    crate::settings::AlertRuleSection,
    Result<alerts::Seen, String>,
)> {
    tokio::task::spawn_blocking(move || {
        let rollups: Result<rusqlite::Connection, String> = match (&fleet, analytics_on) {
            (Some(rows), _) => crate::analytics::fleet::table(rows).map_err(|e| e.to_string()),
            (None, true) => {
                analytics.flush(Duration::from_secs(1));
                crate::analytics::query::local(analytics.db_path()).map_err(|e| e.to_string())
            }
            (None, false) => rusqlite::Connection::open_in_memory().map_err(|e| e.to_string()),
        };
        rules
            .into_iter()
            .map(|r| {
                let result = match &rollups {
                    Ok(conn) => alerts::evaluate(&r, conn, now, &facts),
                    Err(e) => Err(format!("usage rollups: {e}")),
                };
                (r, result)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
