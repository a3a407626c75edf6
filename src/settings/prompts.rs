//! Prompt policies as written: `routes[].decorators` and `consumers[].decorators` (messages
//! added around the conversation), the top-level `templates:` (named prompts a client
//! invokes with variables) and `routes[].moderation` (an external check of the input).
//!
//! Plain data; `crate::policy::prompts` compiles it (placeholders parsed, variables typed,
//! roles checked) when the runtime is built.

use super::text::{text_serde, word_enum, HumanDuration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Messages a route or consumer adds before and after the client's conversation. Their
/// `content` may use `${consumer}`, `${route}`, `${model}` and `${date}` (UTC `YYYY-MM-DD`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecoratorsSection {
    /// Added before the client's messages, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepend: Vec<PromptMessage>,
    /// Added after the client's messages, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append: Vec<PromptMessage>,
}

/// One message of a decorator or a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptMessage {
    pub role: PromptRole,
    pub content: String,
}

word_enum! {
    /// The role of an added message (decorators take `system` or `user`).
    pub enum PromptRole {
        System = "system",
        User = "user",
        Assistant = "assistant",
    }
}

impl std::str::FromStr for PromptRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(PromptRole);

/// `templates[]`: a named prompt, invoked as `"model": "template:NAME"` (or `"template":
/// "NAME"`) with a `variables` object. Placeholders are `{{name}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    pub name: String,
    /// The model the expanded request asks for (routed as any model name).
    pub model: String,
    /// The template's messages, before any the client sends.
    pub messages: Vec<PromptMessage>,
    /// The variables its messages use, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, TemplateVariableSection>,
}

/// A template variable's type, allowed values and default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVariableSection {
    #[serde(rename = "type")]
    pub kind: VariableType,
    /// The allowed values of an `enum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Used when the client does not send the variable (else it is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

word_enum! {
    /// What a template variable holds.
    pub enum VariableType {
        Text = "string",
        Number = "number",
        Boolean = "boolean",
        Enum = "enum",
    }
}

impl std::str::FromStr for VariableType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(VariableType);

/// `routes[].moderation`: the client's input checked before it goes upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationSection {
    /// `route_model`: an OpenAI `/moderations` request through this gateway's own routes;
    /// `hook`: a POST to `url` (see the README for its JSON contract).
    pub via: ModerationVia,
    /// The moderation model (`route_model`), e.g. `omni-moderation-latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The route serving the moderation request (`route_model`; default: this route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The hook's URL (`hook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long the check may take (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// When the check fails or times out: `fail_open` (default: the request goes on) or
    /// `fail_closed` (503 `moderation_unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ModerationOnError>,
    /// Also check the answer, in windows of text, before the client receives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ModerationOutputSection>,
}

/// `routes[].moderation.output`: the answer's text checked window by window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationOutputSection {
    /// Characters per window (default 1000, 100 to 100000): a stream's text is held back
    /// until the window holding it is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
}

word_enum! {
    /// Where the moderation check is made.
    pub enum ModerationVia {
        RouteModel = "route_model",
        Hook = "hook",
    }
}

impl std::str::FromStr for ModerationVia {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(ModerationVia);

word_enum! {
    /// What a failed moderation check means for the request.
    #[derive(Default)]
    pub enum ModerationOnError {
        #[default]
        FailOpen = "fail_open",
        FailClosed = "fail_closed",
    }
}

impl std::str::FromStr for ModerationOnError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(ModerationOnError);
