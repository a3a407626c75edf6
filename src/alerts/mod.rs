//! Alerts the gateway evaluates itself (issue #18): rules in `alerts:` read the usage
//! rollups every `interval` (never the request path) and notify webhooks.
//!
//! Each rule has a state: `ok`, `pending` (the condition holds, not yet for `for`),
//! `firing`, `resolved` (it fired, and the condition no longer holds; the next evaluation
//! that finds it false again makes it `ok`). A rule notifies when it starts firing, again
//! every `repeat` while it fires, and once when it resolves; a rule that flaps (fires,
//! resolves, fires) notifies of firing at most once per `repeat`, and of resolving only
//! after a firing it notified. Windows are whole minutes of the rollups: `1m` is the
//! current minute, `5m` the current one and the four before.

pub mod notify;

use crate::analytics::{query, Analytics};
use crate::settings::{AlertKind, AlertRuleSection, AlertsSection};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_BASELINE: Duration = Duration::from_secs(3600);
const DEFAULT_REPEAT: Duration = Duration::from_secs(3600);
const FILTERS: [&str; 4] = ["route", "provider", "model", "consumer"];

/// Check `alerts:` the way a start does: names, references, filters, thresholds, URLs.
pub fn validate(a: &AlertsSection) -> Result<(), (String, String)> {
    let mut hooks = Vec::new();
    for (i, w) in a.webhooks.iter().enumerate() {
        let field = format!("alerts.webhooks[{i}] ({})", w.name);
        if hooks.contains(&w.name.as_str()) {
            return Err((field, "duplicate webhook name".into()));
        }
        let url = w.url.as_written();
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("${")) {
            return Err((
                format!("{field}.url"),
                "expected an http:// or https:// URL".into(),
            ));
        }
        hooks.push(w.name.as_str());
    }
    let mut names = Vec::new();
    for (i, r) in a.rules.iter().enumerate() {
        let field = format!("alerts.rules[{i}] ({})", r.name);
        if names.contains(&r.name.as_str()) {
            return Err((field, "duplicate rule name".into()));
        }
        names.push(r.name.as_str());
        if r.kind != AlertKind::KeysDown && !r.threshold.is_some_and(|t| t.is_finite() && t >= 0.0)
        {
            return Err((
                format!("{field}.threshold"),
                "a number >= 0 is required".into(),
            ));
        }
        if let Some(k) = r.filter.keys().find(|k| !FILTERS.contains(&k.as_str())) {
            return Err((
                format!("{field}.filter"),
                format!("`{k}`: filter by {}", FILTERS.join(", ")),
            ));
        }
        if let Some(w) = r.webhooks.iter().find(|w| !hooks.contains(&w.as_str())) {
            return Err((
                format!("{field}.webhooks"),
                format!("unknown webhook `{w}`"),
            ));
        }
        if window_minutes(r) == 0 {
            return Err((format!("{field}.window"), "at least 1m".into()));
        }
    }
    Ok(())
}

fn window_minutes(r: &AlertRuleSection) -> u64 {
    r.window.map_or(DEFAULT_WINDOW, |d| d.0).as_secs() / 60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Pending,
    Firing,
    Resolved,
}

/// A rule's state and what the last evaluation saw.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub rule: String,
    pub kind: AlertKind,
    pub state: State,
    /// The value the last evaluation compared with the threshold.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// Unix seconds of the last notification (firing or resolved).
    pub notified: Option<u64>,
    #[serde(skip)]
    condition_since: Option<u64>,
    #[serde(skip)]
    fired_notified: Option<u64>,
    /// Whether the current firing was notified (a resolve is notified only then).
    #[serde(skip)]
    told: bool,
}

/// A notification to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub rule: String,
    pub state: State,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub summary: String,
    pub webhooks: Vec<String>,
}

/// The rules' states across evaluations (and reloads: by rule name).
#[derive(Debug, Default)]
pub struct Alerts {
    states: HashMap<String, Status>,
}

impl Alerts {
    /// Every rule's status, in the order of `rules`.
    pub fn statuses(&self, rules: &[AlertRuleSection]) -> Vec<Status> {
        rules
            .iter()
            .filter_map(|r| self.states.get(&r.name).cloned())
            .collect()
    }

    /// Advance `rule` given whether its condition holds now (`value`) at `now` (unix s);
    /// the notification to send, if any.
    pub fn step(
        &mut self,
        rule: &AlertRuleSection,
        holds: bool,
        value: Option<f64>,
        now: u64,
    ) -> Option<Notice> {
        let s = self
            .states
            .entry(rule.name.clone())
            .or_insert_with(|| Status {
                rule: rule.name.clone(),
                kind: rule.kind,
                state: State::Ok,
                value: None,
                threshold: rule.threshold,
                since: now,
                notified: None,
                condition_since: None,
                fired_notified: None,
                told: false,
            });
        s.value = value;
        s.threshold = rule.threshold;
        s.kind = rule.kind;
        let pending_for = rule.pending_for.map_or(0, |d| d.0.as_secs());
        let repeat = rule.repeat.map_or(DEFAULT_REPEAT, |d| d.0).as_secs();
        let may_tell = |s: &Status| s.fired_notified.is_none_or(|t| now >= t + repeat);
        if holds {
            let since = *s.condition_since.get_or_insert(now);
            let next = if now >= since + pending_for {
                State::Firing
            } else {
                State::Pending
            };
            if next != s.state {
                s.state = next;
                s.since = now;
            }
            // Newly firing, or firing on past `repeat`: tell, unless told within `repeat`.
            if s.state == State::Firing && may_tell(s) {
                s.fired_notified = Some(now);
                s.notified = Some(now);
                s.told = true;
                return Some(notice(rule, s, State::Firing));
            }
            return None;
        }
        s.condition_since = None;
        let next = match s.state {
            State::Firing => State::Resolved,
            _ => State::Ok,
        };
        if next != s.state {
            s.state = next;
            s.since = now;
        }
        if next == State::Resolved && std::mem::take(&mut s.told) {
            s.notified = Some(now);
            return Some(notice(rule, s, State::Resolved));
        }
        None
    }
}

fn notice(rule: &AlertRuleSection, s: &Status, state: State) -> Notice {
    let value = s.value.map_or("-".to_string(), |v| format!("{v:.3}"));
    let threshold = rule.threshold.map_or("-".to_string(), |t| format!("{t}"));
    let what = match state {
        State::Firing => "FIRING",
        _ => "RESOLVED",
    };
    Notice {
        rule: rule.name.clone(),
        state,
        value: s.value,
        threshold: rule.threshold,
        summary: format!(
            "[tollgate] {what}: {} ({}) value {value}, threshold {threshold}",
            rule.name, rule.kind
        ),
        webhooks: rule.webhooks.clone(),
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `rule` holds now, and the value it compared; `keys_down` is told by the caller
/// (the providers whose keys are all out).
pub fn evaluate(
    rule: &AlertRuleSection,
    analytics: &Analytics,
    now: u64,
    providers_down: &[String],
) -> Result<(bool, Option<f64>), String> {
    let filters: Vec<(String, String)> = rule
        .filter
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let minute = now / 60;
    let window = window_minutes(rule);
    let from = (minute + 1).saturating_sub(window);
    let db = analytics.db_path();
    let threshold = rule.threshold.unwrap_or(0.0);
    let sums =
        |from: u64, to: u64| query::totals(db, from, to, &filters).map_err(|e| e.to_string());
    Ok(match rule.kind {
        AlertKind::Tokens => {
            let (_, tokens, _) = sums(from, minute + 1)?;
            (tokens as f64 > threshold, Some(tokens as f64))
        }
        AlertKind::ErrorRate => {
            let (requests, _, errors) = sums(from, minute + 1)?;
            let rate = if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            };
            (requests > 0 && rate > threshold, Some(rate))
        }
        AlertKind::Spike => {
            let (_, now_tokens, _) = sums(from, minute + 1)?;
            let baseline =
                (rule.baseline.map_or(DEFAULT_BASELINE, |d| d.0).as_secs() / 60).max(window);
            let (_, before, _) = sums(from.saturating_sub(baseline), from)?;
            let per_window = before as f64 * window as f64 / baseline as f64;
            // A first burst against an empty baseline counts against one token per window.
            let ratio = now_tokens as f64 / per_window.max(1.0);
            (ratio > threshold, Some(ratio))
        }
        AlertKind::KeysDown => {
            let wanted = rule.filter.get("provider");
            let down = providers_down
                .iter()
                .filter(|p| wanted.is_none_or(|w| *w == **p))
                .count();
            (down > 0, Some(down as f64))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> AlertRuleSection {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn states_and_notifications() {
        let r = rule("{name: r, kind: tokens, threshold: 10, for: 30s, repeat: 100s}");
        let mut a = Alerts::default();
        assert_eq!(a.step(&r, true, Some(20.0), 0), None, "pending first");
        assert_eq!(
            a.statuses(std::slice::from_ref(&r))[0].state,
            State::Pending
        );
        let fired = a.step(&r, true, Some(20.0), 30).unwrap();
        assert_eq!(fired.state, State::Firing);
        assert_eq!(
            a.step(&r, true, Some(20.0), 60),
            None,
            "not again before repeat"
        );
        assert_eq!(
            a.step(&r, true, Some(20.0), 130).unwrap().state,
            State::Firing,
            "repeat"
        );
        assert_eq!(
            a.step(&r, false, Some(0.0), 140).unwrap().state,
            State::Resolved
        );
        assert_eq!(a.step(&r, false, Some(0.0), 150), None);
        assert_eq!(a.statuses(std::slice::from_ref(&r))[0].state, State::Ok);
        // Flapping: fires again at once (no pending this time), but the last firing notice
        // was at 130: nothing until 230, and no resolve notice for an untold firing.
        let r0 = rule("{name: f, kind: tokens, threshold: 10, repeat: 100s}");
        let mut a = Alerts::default();
        assert!(a.step(&r0, true, None, 0).is_some());
        assert!(
            a.step(&r0, false, None, 10).is_some(),
            "resolved after a told firing"
        );
        assert_eq!(a.step(&r0, true, None, 20), None, "flap: within repeat");
        assert_eq!(
            a.step(&r0, false, None, 30),
            None,
            "no resolve for an untold firing"
        );
        assert_eq!(a.step(&r0, true, None, 40), None);
        assert!(
            a.step(&r0, true, None, 100).is_some(),
            "still firing after repeat: told"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let a: AlertsSection = serde_yaml::from_str(
            "{webhooks: [{name: w, url: 'ftp://x'}], rules: [{name: r, kind: tokens}]}",
        )
        .unwrap();
        assert_eq!(validate(&a).unwrap_err().0, "alerts.webhooks[0] (w).url");
        let a: AlertsSection = serde_yaml::from_str(
            "{webhooks: [{name: w, url: 'http://x'}], rules: [{name: r, kind: tokens, threshold: 1, webhooks: [v]}]}",
        )
        .unwrap();
        assert_eq!(validate(&a).unwrap_err().0, "alerts.rules[0] (r).webhooks");
        let a: AlertsSection = serde_yaml::from_str("{rules: [{name: r, kind: tokens}]}").unwrap();
        assert_eq!(validate(&a).unwrap_err().0, "alerts.rules[0] (r).threshold");
        let a: AlertsSection =
            serde_yaml::from_str("{rules: [{name: r, kind: keys_down, filter: {prompt: x}}]}")
                .unwrap();
        assert_eq!(validate(&a).unwrap_err().0, "alerts.rules[0] (r).filter");
    }
}
