//! Where the text of a request and of an answer is, per API shape: the strings the
//! content policies read and rewrite.

use serde_json::Value;

/// The API a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// OpenAI chat completions: `messages[].content` (a string or parts with `text`).
    Chat,
    /// OpenAI legacy completions: `prompt` (a string or strings).
    Completions,
    /// Anthropic Messages: `system` and `messages[].content` (a string or `text` blocks).
    Messages,
}

/// A string, or the `text` of each part (object) of an array.
fn content_texts(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::String(s) => f(s),
                    Value::Object(o) => {
                        if let Some(Value::String(s)) = o.get_mut("text") {
                            f(s)
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Call `f` on every text of a request body the provider reads.
pub fn request_texts(body: &mut Value, shape: Shape, f: &mut impl FnMut(&mut String)) {
    match shape {
        Shape::Chat | Shape::Messages => {
            if shape == Shape::Messages {
                if let Some(system) = body.get_mut("system") {
                    content_texts(system, f);
                }
            }
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for m in messages {
                    if let Some(c) = m.get_mut("content") {
                        content_texts(c, f);
                    }
                }
            }
        }
        Shape::Completions => {
            if let Some(prompt) = body.get_mut("prompt") {
                content_texts(prompt, f);
            }
        }
    }
}

/// Call `f` on every text of a whole (non-streamed) answer, with its choice's index (the
/// content block's for Anthropic).
pub fn answer_texts(body: &mut Value, shape: Shape, f: &mut impl FnMut(&mut String)) {
    match shape {
        Shape::Messages => {
            if let Some(Value::Array(blocks)) = body.get_mut("content") {
                for b in blocks {
                    if let Some(Value::String(s)) = b.get_mut("text") {
                        f(s)
                    }
                }
            }
        }
        Shape::Chat | Shape::Completions => {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for c in choices {
                    let text = match shape {
                        Shape::Chat => c.get_mut("message").and_then(|m| m.get_mut("content")),
                        _ => c.get_mut("text"),
                    };
                    if let Some(Value::String(s)) = text {
                        f(s)
                    }
                }
            }
        }
    }
}

/// Withhold a whole answer's content as a content filter does: OpenAI's choices get
/// `finish_reason: "content_filter"` and `content: null` (`text: ""` for completions);
/// an Anthropic message gets no content blocks and `stop_reason: "refusal"`.
pub fn withhold(body: &mut Value, shape: Shape) {
    match shape {
        Shape::Messages => {
            set(body, "content", Value::Array(Vec::new()));
            set(body, "stop_reason", Value::String("refusal".into()));
        }
        Shape::Chat | Shape::Completions => {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for c in choices {
                    match shape {
                        Shape::Chat => {
                            if let Some(m) = c.get_mut("message").and_then(Value::as_object_mut) {
                                m.insert("content".into(), Value::Null);
                            }
                        }
                        _ => set(c, "text", Value::String(String::new())),
                    }
                    set(c, "finish_reason", Value::String("content_filter".into()));
                }
            }
        }
    }
}

/// Set `key` of an object (nothing for another value).
pub fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.into(), value);
    }
}
