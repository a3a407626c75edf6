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
        WebhookFormat::Json => {
            let mut v = json!({
                "alert": notice.rule,
                "state": notice.state,
                "value": notice.value,
                "threshold": notice.threshold,
                "summary": notice.summary,
                "at": at,
            });
            if let Some(d) = &notice.detail {
                v["detail"] = json!(d);
            }
            v
        }
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

/// Post `notice` to `hook`: the receiver's status, or why it could not be reached (never
/// with the URL, which may hold a token).
pub async fn post(
    client: &reqwest::Client,
    hook: &Hook,
    notice: &Notice,
) -> Result<reqwest::StatusCode, String> {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let payload = body(hook.format, notice, &at);
    client
        .post(&hook.url)
        .timeout(Duration::from_secs(10))
        .json(&payload)
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| {
            let shown = crate::settings::Secret(hook.url.clone()).masked_url();
            error_text(e.without_url()).replace(&hook.url, shown.as_written())
        })
}

/// An error and its causes, on one line.
fn error_text(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Post `notice` to each of `hooks` it names (every hook when it names none).
pub async fn send(client: &reqwest::Client, hooks: &[Hook], notice: &Notice) {
    for hook in hooks {
        if !notice.webhooks.is_empty() && !notice.webhooks.contains(&hook.name) {
            continue;
        }
        let what = match notice.state {
            State::Firing => "firing",
            State::Test => "test",
            _ => "resolved",
        };
        match post(client, hook, notice).await {
            Ok(s) if s.is_success() => {
                log::info!(
                    "alert `{}` {what}: webhook `{}` notified",
                    notice.rule,
                    hook.name
                )
            }
            // The URL may hold a token: name the hook, never the URL.
            Ok(s) => log::warn!("alert webhook `{}` answered {s}", hook.name),
            Err(e) => log::warn!("alert webhook `{}` failed: {e}", hook.name),
        }
    }
}
