//! Evaluating the alert rules (`alerts:`) every `alerts.interval` from the usage rollups,
//! and sending their notices (`crate::alerts`). Reads the running config each time, so a
//! reload or an API change applies at the next evaluation; states are kept by rule name.

use crate::alerts::notify::{self, Hook};
use crate::alerts::{self, Alerts};
use crate::analytics::Analytics;
use crate::runtime::{env::expand_key, SharedConfig};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub struct Alerting {
    pub config: SharedConfig,
    pub analytics: Arc<Analytics>,
    pub alerts: Arc<Mutex<Alerts>>,
}

impl Alerting {
    async fn evaluate(&self, client: &reqwest::Client) {
        let config = self.config.load_full();
        let section = &config.settings.alerts;
        if section.rules.is_empty() || !self.analytics.enabled() {
            return;
        }
        let down: Vec<String> = config
            .providers
            .iter()
            .filter(|p| !p.keys.is_empty() && !p.keys.any_usable())
            .map(|p| p.name.clone())
            .collect();
        let (analytics, rules) = (self.analytics.clone(), section.rules.clone());
        let now = alerts::now_secs();
        let seen = tokio::task::spawn_blocking(move || {
            analytics.flush(Duration::from_secs(1));
            rules
                .into_iter()
                .map(|r| {
                    let result = alerts::evaluate(&r, &analytics, now, &down);
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
                    Ok((holds, value)) => notices.extend(states.step(&rule, holds, value, now)),
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
            .filter_map(|w| match expand_key(w.url.as_written()) {
                Ok(url) => Some(Hook {
                    name: w.name.clone(),
                    url,
                    format: w.format.unwrap_or_default(),
                }),
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
