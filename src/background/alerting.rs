//! Evaluating the alert rules (`alerts:`) every `alerts.interval` from the usage rollups,
//! and sending their notices (`crate::alerts`). Reads the running config each time, so a
//! reload or an API change applies at the next evaluation; states are kept by rule name.
//! `quota` rules read the balances here (one store read per watched consumer per
//! evaluation); rules on the rollups are skipped while analytics is off.

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
        };
        let analytics = self.analytics.clone();
        let now = alerts::now_secs();
        let seen = tokio::task::spawn_blocking(move || {
            if analytics_on {
                analytics.flush(Duration::from_secs(1));
            }
            rules
                .into_iter()
                .map(|r| {
                    let result = alerts::evaluate(&r, &analytics, now, &facts);
                    (r, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
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
        if notices.is_empty() {
            return;
        }
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
        for notice in &notices {
            notify::send(client, &hooks, notice).await;
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
