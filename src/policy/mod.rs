//! Prompt and content policies: what a route (and a consumer) does to the text a provider
//! receives and the text a client receives back.
//!
//! The request side (decorators, templates, PII masking, input deny rules, input
//! moderation) runs as the pipeline's policy stage before budgets and the cache, so both
//! see the body that goes upstream; the response side (restoring masked values, output deny
//! rules, output moderation) runs on the answer as it is sent, streams included, with a
//! bounded hold-back.
//!
//! Every policy that acts records an [`Action`] on the request; accounting counts them
//! (`tollgate_policy_actions_total{route,policy,action}`) and lists them in the access log's
//! `policies` field. Actions never carry the text they acted on.

pub mod moderation;
pub mod moderation_output;
pub mod prompts;

/// What one policy did to one request, as recorded for metrics and the access log. Both
/// fields are fixed strings from the gateway's code, never the client's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The policy: `decorator`, `template`, `pii`, `deny_input`, `deny_output`,
    /// `moderation_input`, `moderation_output`.
    pub policy: &'static str,
    /// What it did: `applied`, `masked`, `restored`, `blocked`, `flagged`, `failed_open`,
    /// `failed_closed`, ….
    pub action: &'static str,
}

impl Action {
    pub const fn new(policy: &'static str, action: &'static str) -> Self {
        Action { policy, action }
    }

    /// `policy:action`, as the access log lists it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.policy, self.action)
    }
}

pub mod deny;
pub mod pii;
pub mod restore;
pub mod text;

#[cfg(test)]
mod tests;
