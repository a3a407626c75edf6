//! Anthropic's token counting, `POST {prefix}/messages/count_tokens` (Claude Code calls it
//! before its requests). When the matched rule has a target speaking Anthropic's protocol,
//! the request goes to those targets only, with keys, failover and retries as for any
//! request; the answer passes through unmetered (counting tokens uses none). Otherwise the
//! gateway answers `{"input_tokens": N}` with its own estimate (`crate::usage`'s, over the
//! system prompt, the messages and the tools), marked `x-tollgate-token-count: estimate`.

use super::exchange::ExtraHeaders;
use super::pipeline::{answer_json_with, Failure};
use crate::protocol::ClientProtocol;
use crate::route::{ModelRule, Target};
use crate::usage::TokenEstimator;
use pingora_proxy::Session;
use serde_json::Value;

/// The response header of an estimated count.
pub const X_TOLLGATE_TOKEN_COUNT: &str = "x-tollgate-token-count";

/// The target counts tokens itself: its provider speaks Anthropic's protocol.
pub fn counts(target: &Target) -> bool {
    target.provider.protocol.native_client() == Some(ClientProtocol::Anthropic)
}

/// Some target of the rule counts tokens itself.
pub fn forwarded(rule: &ModelRule) -> bool {
    rule.targets.iter().any(counts)
}

/// The gateway's estimate of a count_tokens (Messages) request's input tokens: the text of
/// `system`, of every message's content (text blocks, tool results, tool calls' input) and
/// of the tool definitions.
pub fn estimate(body: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let mut e = TokenEstimator::new();
    feed(&mut e, &v["system"]);
    for m in v["messages"].as_array().into_iter().flatten() {
        feed(&mut e, &m["content"]);
    }
    for t in v["tools"].as_array().into_iter().flatten() {
        e.feed(&t.to_string());
    }
    e.tokens()
}

/// Feed the text of a content value: a string, or blocks with `text`, `content` (tool
/// results) or `input` (tool calls).
fn feed(e: &mut TokenEstimator, content: &Value) {
    match content {
        Value::String(s) => e.feed(s),
        Value::Array(blocks) => {
            for b in blocks {
                match (&b["text"], &b["content"], &b["input"]) {
                    (Value::String(t), _, _) => e.feed(t),
                    (_, c @ (Value::String(_) | Value::Array(_)), _) => feed(e, c),
                    (_, _, input @ Value::Object(_)) => e.feed(&input.to_string()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Answer with the gateway's estimate.
pub async fn answer_estimate(
    session: &mut Session,
    body: &[u8],
    request_id: &str,
    extra_headers: &ExtraHeaders,
) -> Result<u16, Failure> {
    let n = estimate(body);
    let mut headers = extra_headers.clone();
    headers.push((
        X_TOLLGATE_TOKEN_COUNT,
        http::HeaderValue::from_static("estimate"),
    ));
    let answer = serde_json::json!({ "input_tokens": n }).to_string();
    answer_json_with(session, answer.into(), request_id, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_system_messages_and_tools() {
        let only = |body: &str| estimate(body.as_bytes());
        let hello = only(r#"{"model":"m","messages":[{"role":"user","content":"Hello there"}]}"#);
        assert!(hello > 0);
        let blocks = only(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Hello there"}]}]}"#,
        );
        assert_eq!(hello, blocks, "a string and a text block are the same text");
        let more = only(
            r#"{"model":"m","system":"Be brief and kind to everyone.","messages":[{"role":"user","content":"Hello there"}],
                "tools":[{"name":"get_weather","description":"Weather of a city","input_schema":{"type":"object"}}]}"#,
        );
        assert!(more > hello + 5, "{more} vs {hello}");
        let results = only(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"It is sunny in Paris today"}]}]}"#,
        );
        assert!(results > 3, "{results}");
        assert_eq!(only("not json"), 0);
        assert_eq!(only("{}"), 0);
    }
}
