//! `alerts:`: rules the gateway evaluates from its usage rollups, and the webhooks they
//! notify.

use super::text::{text_serde, word_enum, HumanDuration};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// How often the rules are evaluated (default 15s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AlertRuleSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub name: String,
    /// `http://` or `https://` (`${VAR}` allowed: chat tools put their token in the URL).
    pub url: super::text::Secret,
    /// The body's shape (default `json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<WebhookFormat>,
}

word_enum! {
    /// A webhook body's shape.
    #[derive(Default)]
    pub enum WebhookFormat {
        /// `{"alert","state","value","threshold","summary","at","rule":{…}}`.
        #[default]
        Json = "json",
        /// Slack-compatible incoming webhooks: `{"text"}`.
        Slack = "slack",
        /// DingTalk robots: `{"msgtype":"text","text":{"content"}}`.
        DingTalk = "dingtalk",
        /// Feishu/Lark bots: `{"msg_type":"text","content":{"text"}}`.
        Feishu = "feishu",
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(WebhookFormat);

word_enum! {
    /// What an alert rule watches.
    pub enum AlertKind {
        /// Input + output tokens in `window` above `threshold`.
        Tokens = "tokens",
        /// Tokens in `window` above `threshold` times their average over the trailing
        /// `baseline` (per window of the same length).
        Spike = "spike",
        /// Errored requests in `window` as a fraction of all, above `threshold` (0 to 1).
        ErrorRate = "error_rate",
        /// A provider (`filter.provider`, or any) with keys but none in rotation.
        KeysDown = "keys_down",
        /// A consumer's quota balance (`filter.consumer`, or every consumer the quota
        /// charges) below `threshold` tokens.
        Quota = "quota",
        /// A money budget (`filter.budget`, or every budget) spent to `threshold` percent
        /// (default 80) of its allowance this period, for any of its subjects.
        Budget = "budget",
    }
}

impl std::str::FromStr for AlertKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(AlertKind);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSection {
    pub name: String,
    pub kind: AlertKind,
    /// The range looked at, in whole minutes (default 5m; `1m` is the current minute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<HumanDuration>,
    /// Tokens (`tokens`, `quota`), a ratio (`spike`), a fraction (`error_rate`); unused by
    /// `keys_down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `spike`: the trailing range the window is compared with (default 1h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<HumanDuration>,
    /// Only these series: `route`, `provider`, `model`, `consumer` → value (`quota`:
    /// `consumer` only).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub filter: IndexMap<String, String>,
    /// How long the condition must hold before the rule fires (default 0s).
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub pending_for: Option<HumanDuration>,
    /// Least time between two notifications of the rule firing (default 1h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<HumanDuration>,
    /// Webhooks notified (default: every webhook).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
}
