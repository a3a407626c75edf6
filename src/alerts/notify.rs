//! Sending alert notices to webhooks, in the shape each chat tool expects. Off the request
//! path (the alerts service's task), each call bounded by a 10 s deadline; a failure is
//! logged and counted, never retried beyond the next notice.

use super::{Notice, State};
use crate::settings::WebhookFormat;
use serde_json::{json, Value};
use std::time::Duration;

/// The body `format` gives `notice`.
pub fn body(format: WebhookFormat, notice: &Notice, at: &str) -> Value {
    match format {
        WebhookFormat::Json => json!({
            "alert": notice.rule,
            "state": notice.state,
            "value": notice.value,
            "threshold": notice.threshold,
            "summary": notice.summary,
            "at": at,
        }),
        WebhookFormat::Slack => json!({"text": notice.summary}),
        WebhookFormat::DingTalk => json!({"msgtype": "text", "text": {"content": notice.summary}}),
        WebhookFormat::Feishu => json!({"msg_type": "text", "content": {"text": notice.summary}}),
    }
}

/// A webhook with its URL's variables expanded.
#[derive(Debug, Clone)]
pub struct Hook {
    pub name: String,
    pub url: String,
    pub format: WebhookFormat,
}

/// Post `notice` to each of `hooks` it names (every hook when it names none).
pub async fn send(client: &reqwest::Client, hooks: &[Hook], notice: &Notice) {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    for hook in hooks {
        if !notice.webhooks.is_empty() && !notice.webhooks.contains(&hook.name) {
            continue;
        }
        let payload = body(hook.format, notice, &at);
        let sent = client
            .post(&hook.url)
            .timeout(Duration::from_secs(10))
            .json(&payload)
            .send()
            .await;
        let what = match notice.state {
            State::Firing => "firing",
            _ => "resolved",
        };
        match sent {
            Ok(r) if r.status().is_success() => {
                log::info!(
                    "alert `{}` {what}: webhook `{}` notified",
                    notice.rule,
                    hook.name
                )
            }
            // The URL may hold a token: name the hook, never the URL.
            Ok(r) => log::warn!("alert webhook `{}` answered {}", hook.name, r.status()),
            Err(e) => log::warn!("alert webhook `{}` failed: {}", hook.name, e.without_url()),
        }
    }
}
