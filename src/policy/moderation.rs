//! Input moderation: a route's check of the client's text before it goes upstream, by an
//! OpenAI-compatible moderation model served through the gateway's own routes
//! (`via: route_model`) or by an HTTP hook (`via: hook`).
//!
//! The hook's contract: `POST url` with `{"input":[texts…],"route":NAME,"consumer":NAME|null}`;
//! it answers 200 with `{"flagged":bool,"categories":[names…]}`. Anything else (another
//! status, another shape, no answer within `timeout`) is a failure, which `on_error` turns
//! into going on (`fail_open`) or a 503 (`fail_closed`); failures are counted
//! (`moderation_input:failed_open|failed_closed` in `tollgate_policy_actions_total`) and
//! logged at most once a minute.

use crate::body::RequestBody;
use crate::settings::{ModerationOnError, ModerationSection, ModerationVia};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `output.window`, in characters.
pub const DEFAULT_WINDOW: usize = 1000;

/// Where a route's moderation check is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `POST {prefix}/moderations` to this gateway's own listener, `model` routed by the
    /// named route (or the request's own).
    RouteModel {
        model: String,
        route: Option<String>,
    },
    Hook {
        url: String,
    },
}

/// A route's compiled `moderation:`.
#[derive(Debug, Clone)]
pub struct Moderation {
    pub via: Via,
    pub timeout: Duration,
    pub fail_closed: bool,
    /// `output.window`: the answer is checked too, in windows of this many characters.
    pub output_window: Option<usize>,
}

/// The check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub flagged: bool,
    /// The flagged categories' names.
    pub categories: Vec<String>,
}

impl Moderation {
    /// Build from settings; `Err((field, message))`, the field relative to `moderation`.
    pub fn build(s: &ModerationSection, routes: &[&str]) -> Result<Self, (String, String)> {
        let err = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        let via = match s.via {
            ModerationVia::RouteModel => {
                if s.url.is_some() {
                    return err("url", "only `via: hook` takes a url");
                }
                let Some(model) = s.model.clone().filter(|m| !m.is_empty()) else {
                    return err("model", "`via: route_model` needs the moderation model");
                };
                if let Some(r) = &s.route {
                    if !routes.contains(&r.as_str()) {
                        return Err(("route".into(), format!("no route `{r}`")));
                    }
                }
                Via::RouteModel {
                    model,
                    route: s.route.clone(),
                }
            }
            ModerationVia::Hook => {
                if s.model.is_some() {
                    return err("model", "`via: hook` takes a url, not a model");
                }
                if s.route.is_some() {
                    return err("route", "`via: hook` takes a url, not a route");
                }
                let Some(url) = s.url.clone() else {
                    return err("url", "`via: hook` needs the hook's url");
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return err("url", "must be an http:// or https:// URL");
                }
                Via::Hook { url }
            }
        };
        let timeout = s.timeout.map_or(DEFAULT_TIMEOUT, Duration::from);
        if timeout.is_zero() {
            return err("timeout", "must be longer than 0");
        }
        let output_window = match &s.output {
            None => None,
            Some(o) => {
                let n = o.window.map_or(DEFAULT_WINDOW, |w| w as usize);
                if !(100..=100_000).contains(&n) {
                    return err("output.window", "must be from 100 to 100000 characters");
                }
                Some(n)
            }
        };
        Ok(Moderation {
            via,
            timeout,
            fail_closed: s.on_error.unwrap_or_default() == ModerationOnError::FailClosed,
            output_window,
        })
    }
}

/// The texts of a request the check reads: every message's text (strings and text parts or
/// blocks), Anthropic's `system`, a completion's `prompt`.
pub fn input_texts(body: &RequestBody) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body.bytes()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect(&v["system"], &mut out);
    if let Some(messages) = v["messages"].as_array() {
        for m in messages {
            collect(&m["content"], &mut out);
        }
    }
    collect(&v["prompt"], &mut out);
    out
}

/// Text of a string, or of the `text` of each part of an array (strings in an array too).
fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => out.push(s.clone()),
        serde_json::Value::Array(parts) => {
            for p in parts {
                match p {
                    serde_json::Value::String(s) if !s.is_empty() => out.push(s.clone()),
                    _ => {
                        if let Some(t) = p["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(t.to_string());
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The hook's request body.
pub fn hook_request(texts: &[String], route: &str, consumer: Option<&str>) -> serde_json::Value {
    serde_json::json!({"input": texts, "route": route, "consumer": consumer})
}

/// The hook's answer read: `{"flagged":bool,"categories":[…]}`.
pub fn hook_verdict(v: &serde_json::Value) -> Result<Verdict, String> {
    let flagged = v["flagged"]
        .as_bool()
        .ok_or("the hook's answer has no boolean `flagged`")?;
    let categories = v["categories"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Verdict {
        flagged,
        categories,
    })
}

/// An OpenAI `/moderations` answer read: flagged when any result is; the categories true
/// in a flagged result.
pub fn openai_verdict(v: &serde_json::Value) -> Result<Verdict, String> {
    let results = v["results"]
        .as_array()
        .ok_or("the moderation answer has no `results`")?;
    let mut verdict = Verdict {
        flagged: false,
        categories: Vec::new(),
    };
    for r in results {
        if !r["flagged"]
            .as_bool()
            .ok_or("a result has no boolean `flagged`")?
        {
            continue;
        }
        verdict.flagged = true;
        if let Some(c) = r["categories"].as_object() {
            for (name, on) in c {
                if on.as_bool() == Some(true) && !verdict.categories.contains(name) {
                    verdict.categories.push(name.clone());
                }
            }
        }
    }
    Ok(verdict)
}

/// Log a failed check, at most once a minute (every failure is counted by its action).
pub fn failed(route: &str, e: &str, closed: bool) {
    static WARNED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last = WARNED.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 60_000)
        && WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let then = if closed {
            "refused (fail_closed)"
        } else {
            "let through (fail_open)"
        };
        log::warn!("moderation on route `{route}` failed, the request {then}: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    #[test]
    fn texts_of_every_shape() {
        let b = RequestBody::parse(Bytes::from_static(
            br#"{"model":"m","system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        ))
        .unwrap();
        assert_eq!(input_texts(&b), ["sys", "a", "b"]);
        let b =
            RequestBody::parse(Bytes::from_static(br#"{"model":"m","prompt":["p","q"]}"#)).unwrap();
        assert_eq!(input_texts(&b), ["p", "q"]);
    }

    #[test]
    fn verdicts() {
        let v = serde_json::json!({"results":[{"flagged":false,"categories":{"violence":false}},{"flagged":true,"categories":{"violence":true,"hate":false}}]});
        assert_eq!(
            openai_verdict(&v).unwrap(),
            Verdict {
                flagged: true,
                categories: vec!["violence".into()]
            }
        );
        assert!(openai_verdict(&serde_json::json!({})).is_err());
        let v = serde_json::json!({"flagged":true,"categories":["x"]});
        assert_eq!(hook_verdict(&v).unwrap().categories, ["x"]);
        assert!(hook_verdict(&serde_json::json!({"flagged":"yes"})).is_err());
    }

    #[test]
    fn settings_checked() {
        let s: ModerationSection = serde_yaml::from_str("{via: hook}").unwrap();
        assert_eq!(Moderation::build(&s, &[]).unwrap_err().0, "url");
        let s: ModerationSection =
            serde_yaml::from_str("{via: route_model, model: m, route: nope}").unwrap();
        assert_eq!(Moderation::build(&s, &["a"]).unwrap_err().0, "route");
        let s: ModerationSection = serde_yaml::from_str(
            "{via: hook, url: 'http://h/x', timeout: 500ms, on_error: fail_closed}",
        )
        .unwrap();
        let m = Moderation::build(&s, &[]).unwrap();
        assert!(m.fail_closed);
        assert_eq!(m.timeout, Duration::from_millis(500));
        assert_eq!(m.output_window, None);
        let s: ModerationSection =
            serde_yaml::from_str("{via: hook, url: 'http://h/x', output: {}}").unwrap();
        assert_eq!(
            Moderation::build(&s, &[]).unwrap().output_window,
            Some(1000)
        );
        let s: ModerationSection =
            serde_yaml::from_str("{via: hook, url: 'http://h/x', output: {window: 99}}").unwrap();
        assert_eq!(Moderation::build(&s, &[]).unwrap_err().0, "output.window");
        assert!(serde_yaml::from_str::<ModerationSection>(
            "{via: hook, url: 'http://h/x', output: {size: 500}}"
        )
        .is_err());
    }
}
