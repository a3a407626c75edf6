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
//!
//! Rules come from the file's `alerts:` and from the management API (`alert_rules`,
//! `alert_webhooks`), merged into the running settings; the loop reads them at every
//! evaluation and keeps each rule's state by name, so a rule changed through the API keeps
//! its state (a firing rule whose threshold is raised resolves at the next evaluation) and
//! a deleted rule's state is dropped.
//!
//! `quota` rules read the consumers' balances (the embedded store or Redis) in the loop,
//! never per request. One rule over several consumers has one state: it fires while any of
//! them is below the threshold, and its notice names them with their balances.

pub mod notify;

use crate::analytics::query;
use crate::settings::{AlertKind, AlertRuleSection, AlertsSection};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_BASELINE: Duration = Duration::from_secs(3600);
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(3600);
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
        let optional = matches!(r.kind, AlertKind::KeysDown | AlertKind::Budget);
        if !optional && !r.threshold.is_some_and(|t| t.is_finite() && t >= 0.0)
            || r.threshold.is_some_and(|t| !t.is_finite() || t < 0.0)
        {
            return Err((
                format!("{field}.threshold"),
                "a number >= 0 is required".into(),
            ));
        }
        if r.kind == AlertKind::Budget {
            if let Some(k) = r.filter.keys().find(|k| *k != "budget") {
                return Err((
                    format!("{field}.filter"),
                    format!("`{k}`: a budget rule filters by budget only"),
                ));
            }
        } else if let Some(k) = r.filter.keys().find(|k| !FILTERS.contains(&k.as_str())) {
            return Err((
                format!("{field}.filter"),
                format!("`{k}`: filter by {}", FILTERS.join(", ")),
            ));
        }
        if r.kind == AlertKind::Quota {
            if let Some(k) = r.filter.keys().find(|k| *k != "consumer") {
                return Err((
                    format!("{field}.filter"),
                    format!("`{k}`: a quota rule filters by consumer only"),
                ));
            }
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

/// Checks that need the rest of the settings: a `quota` rule needs the `quota` section.
pub fn validate_with(settings: &crate::settings::Settings) -> Result<(), (String, String)> {
    validate(&settings.alerts)?;
    if settings.quota.is_none() {
        if let Some((i, r)) =
            (settings.alerts.rules.iter().enumerate()).find(|(_, r)| r.kind == AlertKind::Quota)
        {
            return Err((
                format!("alerts.rules[{i}] ({}).kind", r.name),
                "a `quota` rule needs the `quota` section".into(),
            ));
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
    /// Only in a notice sent by the management API's webhook test.
    Test,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
            State::Test => "test",
        }
    }
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
    /// Unix seconds of the last evaluation.
    pub evaluated: u64,
    /// Unix seconds of the last notification (firing or resolved).
    pub notified: Option<u64>,
    /// What the value is made of, when a number does not say it all (`quota`: the
    /// consumers below the threshold and their balances).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub webhooks: Vec<String>,
}

/// What one evaluation of a rule saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Whether the rule's condition holds.
    pub holds: bool,
    /// The value compared with the threshold.
    pub value: Option<f64>,
    pub detail: Option<String>,
}

/// What the loop knows besides the rollups, for `keys_down` and `quota` rules.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Providers with keys, none of them in rotation.
    pub providers_down: Vec<String>,
    /// Balances of the consumers the quota charges (those the `quota` rules look at).
    pub balances: Vec<(String, i64)>,
    /// Every budget subject's spend this period: budget, subject, percent of its allowance
    /// spent, and the figures in words (when a `budget` rule exists).
    pub budgets: Vec<BudgetSpend>,
}

/// A budget subject's standing, as a `budget` rule reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpend {
    pub budget: String,
    pub subject: String,
    pub percent: f64,
    /// `3.20 of 4 USD`.
    pub figures: String,
}

/// The default threshold of a `budget` rule: percent of the allowance spent.
pub const BUDGET_PERCENT: f64 = 80.0;

/// A `budget` rule: holds when a watched subject has spent `threshold` percent or more;
/// the value is the highest percentage.
fn budget(rule: &AlertRuleSection, spends: &[BudgetSpend]) -> Seen {
    let threshold = rule.threshold.unwrap_or(BUDGET_PERCENT);
    let wanted = rule.filter.get("budget");
    let mut watched: Vec<&BudgetSpend> = spends
        .iter()
        .filter(|s| wanted.is_none_or(|w| *w == s.budget))
        .collect();
    watched.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    let high: Vec<&&BudgetSpend> = watched.iter().filter(|s| s.percent >= threshold).collect();
    let say = |s: &BudgetSpend| {
        format!(
            "budget {} ({}) has spent {}% ({})",
            s.budget, s.subject, s.percent, s.figures
        )
    };
    let mut detail: Vec<String> = high.iter().take(QUOTA_NAMED).map(|s| say(s)).collect();
    if high.len() > QUOTA_NAMED {
        detail.push(format!("and {} more", high.len() - QUOTA_NAMED));
    }
    Seen {
        holds: !high.is_empty(),
        value: watched.first().map(|s| s.percent),
        detail: (!detail.is_empty()).then(|| detail.join("; ")),
    }
}

/// The rules' states across evaluations (and reloads: by rule name).
#[derive(Debug, Default)]
pub struct Alerts {
    states: HashMap<String, Status>,
    /// The last notices of this gateway, oldest first (at most `HISTORY`).
    history: std::collections::VecDeque<Sent>,
}

/// Notices kept for `GET /alerts`.
pub const HISTORY: usize = 200;

/// A notice and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// Unix seconds.
    pub at: u64,
    pub rule: String,
    pub state: State,
    pub value: Option<f64>,
    pub summary: String,
    /// `sent` by this gateway, or `other_gateway` (another gateway of the fleet claimed it).
    pub by: &'static str,
}

impl Alerts {
    /// Note `notice`, sent by this gateway or not, at `at`.
    pub fn record(&mut self, notice: &Notice, sent: bool, at: u64) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Sent {
            at,
            rule: notice.rule.clone(),
            state: notice.state,
            value: notice.value,
            summary: notice.summary.clone(),
            by: if sent {
                "this_gateway"
            } else {
                "other_gateway"
            },
        });
    }

    /// The last notices, newest first.
    pub fn history(&self) -> Vec<Sent> {
        self.history.iter().rev().cloned().collect()
    }

    /// Every rule's status, in the order of `rules`.
    pub fn statuses(&self, rules: &[AlertRuleSection]) -> Vec<Status> {
        rules
            .iter()
            .filter_map(|r| self.states.get(&r.name).cloned())
            .collect()
    }

    /// Forget the states of rules no longer in `rules` (deleted through the API or from
    /// the file); the others keep theirs.
    pub fn retain(&mut self, rules: &[AlertRuleSection]) {
        self.states
            .retain(|name, _| rules.iter().any(|r| r.name == *name));
    }

    /// `step` with what an evaluation saw.
    pub fn observe(&mut self, rule: &AlertRuleSection, seen: Seen, now: u64) -> Option<Notice> {
        self.advance(rule, seen.holds, seen.value, seen.detail, now)
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
        self.advance(rule, holds, value, None, now)
    }

    fn advance(
        &mut self,
        rule: &AlertRuleSection,
        holds: bool,
        value: Option<f64>,
        detail: Option<String>,
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
                evaluated: now,
                notified: None,
                detail: None,
                condition_since: None,
                fired_notified: None,
                told: false,
            });
        s.value = value;
        s.evaluated = now;
        s.detail = detail;
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
    let value = s.value.map_or("-".to_string(), number);
    let threshold = rule.threshold.map_or("-".to_string(), number);
    let what = match state {
        State::Firing => "FIRING",
        State::Test => "TEST",
        _ => "RESOLVED",
    };
    let detail = s
        .detail
        .as_ref()
        .map_or(String::new(), |d| format!(": {d}"));
    Notice {
        rule: rule.name.clone(),
        state,
        value: s.value,
        threshold: rule.threshold,
        summary: format!(
            "[tollgate] {what}: {} ({}) value {value}, threshold {threshold}{detail}",
            rule.name, rule.kind
        ),
        detail: s.detail.clone(),
        webhooks: rule.webhooks.clone(),
    }
}

/// A whole number without decimals, a fraction with three.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The notice the management API's webhook test sends.
pub fn test_notice(webhook: &str) -> Notice {
    Notice {
        rule: "tollgate-test".into(),
        state: State::Test,
        value: None,
        threshold: None,
        summary: format!(
            "[tollgate] TEST: a test notification to webhook `{webhook}`; alerts will arrive like this"
        ),
        detail: None,
        webhooks: vec![webhook.to_string()],
    }
}

/// How many consumers a `quota` notice names (the lowest balances).
const QUOTA_NAMED: usize = 10;

/// A `quota` rule against the balances: holds when a watched consumer is below the
/// threshold; the value is the lowest watched balance.
fn quota(rule: &AlertRuleSection, balances: &[(String, i64)]) -> Seen {
    let threshold = rule.threshold.unwrap_or(0.0);
    let wanted = rule.filter.get("consumer");
    let mut watched: Vec<&(String, i64)> = balances
        .iter()
        .filter(|(c, _)| wanted.is_none_or(|w| w == c))
        .collect();
    watched.sort_by_key(|(c, b)| (*b, c.clone()));
    let low: Vec<&&(String, i64)> = watched
        .iter()
        .filter(|(_, b)| (*b as f64) < threshold)
        .collect();
    let say = |(c, b): &(String, i64)| format!("consumer {c} has {b} tokens left");
    let detail = if low.is_empty() {
        (watched.len() == 1).then(|| say(watched[0]))
    } else {
        let mut d: Vec<String> = low.iter().take(QUOTA_NAMED).map(|x| say(x)).collect();
        if low.len() > QUOTA_NAMED {
            d.push(format!("and {} more", low.len() - QUOTA_NAMED));
        }
        Some(d.join("; "))
    };
    Seen {
        holds: !low.is_empty(),
        value: watched.first().map(|(_, b)| *b as f64),
        detail,
    }
}

/// The consumers `rules`' `quota` rules look at: `None` for none, `Some(None)` for every
/// consumer the quota charges, else those named.
pub fn quota_consumers(rules: &[AlertRuleSection]) -> Option<Option<Vec<String>>> {
    let mut named = Vec::new();
    let mut any = false;
    for r in rules.iter().filter(|r| r.kind == AlertKind::Quota) {
        any = true;
        match r.filter.get("consumer") {
            Some(c) => named.push(c.clone()),
            None => return Some(None),
        }
    }
    any.then_some(Some(named))
}

/// Whether `rule` reads the usage rollups (and so needs analytics on).
pub fn needs_rollups(rule: &AlertRuleSection) -> bool {
    !matches!(
        rule.kind,
        AlertKind::KeysDown | AlertKind::Quota | AlertKind::Budget
    )
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `rule` holds now, and the value it compared; `keys_down` and `quota` are told by
/// the caller (the providers whose keys are all out, the balances).
/// How many minutes back from the current one `rules` read (windows and baselines).
pub fn minutes_needed(rules: &[AlertRuleSection]) -> u64 {
    rules
        .iter()
        .map(|r| {
            let window = window_minutes(r);
            match r.kind {
                AlertKind::Spike => {
                    window
                        + (r.baseline.map_or(DEFAULT_BASELINE, |d| d.0).as_secs() / 60).max(window)
                }
                _ => window,
            }
        })
        .max()
        .unwrap_or(0)
}

pub fn evaluate(
    rule: &AlertRuleSection,
    rollups: &rusqlite::Connection,
    now: u64,
    facts: &Facts,
) -> Result<Seen, String> {
    if rule.kind == AlertKind::Quota {
        return Ok(quota(rule, &facts.balances));
    }
    if rule.kind == AlertKind::Budget {
        return Ok(budget(rule, &facts.budgets));
    }
    let seen = |(holds, value)| Seen {
        holds,
        value,
        detail: None,
    };
    let filters: Vec<(String, String)> = rule
        .filter
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let minute = now / 60;
    let window = window_minutes(rule);
    let from = (minute + 1).saturating_sub(window);
    let threshold = rule.threshold.unwrap_or(0.0);
    let sums =
        |from: u64, to: u64| query::totals(rollups, from, to, &filters).map_err(|e| e.to_string());
    Ok(seen(match rule.kind {
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
            let down = facts
                .providers_down
                .iter()
                .filter(|p| wanted.is_none_or(|w| *w == **p))
                .count();
            (down > 0, Some(down as f64))
        }
        AlertKind::Quota | AlertKind::Budget => (false, None),
    }))
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
        let a: AlertsSection = serde_yaml::from_str(
            "{rules: [{name: q, kind: quota, threshold: 5, filter: {model: x}}]}",
        )
        .unwrap();
        assert_eq!(validate(&a).unwrap_err().0, "alerts.rules[0] (q).filter");
        let s = crate::settings::from_yaml(
            "listeners: {proxy: [{address: '127.0.0.1:1'}]}\nalerts: {rules: [{name: q, kind: quota, threshold: 5}]}",
        )
        .unwrap();
        assert_eq!(validate_with(&s).unwrap_err().0, "alerts.rules[0] (q).kind");
    }

    #[test]
    fn budget_rules_fire_at_a_percentage_of_the_allowance() {
        let spend = |b: &str, s: &str, p: f64| BudgetSpend {
            budget: b.into(),
            subject: s.into(),
            percent: p,
            figures: format!("{p} of 100 USD"),
        };
        let spends = vec![
            spend("team", "research", 85.0),
            spend("each", "alice", 40.0),
            spend("each", "bob", 95.5),
        ];
        let any = rule("{name: b, kind: budget}");
        let seen = budget(&any, &spends);
        assert!(seen.holds, "80 % by default");
        assert_eq!(seen.value, Some(95.5));
        assert_eq!(
            seen.detail.as_deref(),
            Some("budget each (bob) has spent 95.5% (95.5 of 100 USD); budget team (research) has spent 85% (85 of 100 USD)")
        );
        let each = rule("{name: e, kind: budget, threshold: 96, filter: {budget: each}}");
        let seen = budget(&each, &spends);
        assert!(!seen.holds);
        assert_eq!(seen.value, Some(95.5));
        let bad = AlertsSection {
            rules: vec![rule("{name: x, kind: budget, filter: {consumer: a}}")],
            ..AlertsSection::default()
        };
        assert!(validate(&bad).is_err(), "a budget rule filters by budget");
        assert!(!needs_rollups(&any));
    }

    #[test]
    fn quota_rules_name_the_consumers_below() {
        let every = rule("{name: q, kind: quota, threshold: 100}");
        let balances = vec![
            ("alice".to_string(), 500),
            ("bob".to_string(), 40),
            ("carol".to_string(), 99),
        ];
        let seen = quota(&every, &balances);
        assert!(seen.holds);
        assert_eq!(seen.value, Some(40.0));
        assert_eq!(
            seen.detail.as_deref(),
            Some("consumer bob has 40 tokens left; consumer carol has 99 tokens left")
        );
        let alice = rule("{name: a, kind: quota, threshold: 100, filter: {consumer: alice}}");
        let seen = quota(&alice, &balances);
        assert!(!seen.holds);
        assert_eq!(seen.value, Some(500.0));
        let mut a = Alerts::default();
        let fired = a.observe(&every, quota(&every, &balances), 0).unwrap();
        assert!(
            fired
                .summary
                .contains("value 40, threshold 100: consumer bob has 40"),
            "{}",
            fired.summary
        );
        assert_eq!(
            quota_consumers(std::slice::from_ref(&alice)),
            Some(Some(vec!["alice".to_string()]))
        );
        assert_eq!(quota_consumers(&[alice, every.clone()]), Some(None));
        assert_eq!(
            quota_consumers(&[rule("{name: t, kind: tokens, threshold: 1}")]),
            None
        );
        // States follow the rules: a deleted rule's state is dropped, the others kept.
        a.step(
            &rule("{name: t, kind: tokens, threshold: 1}"),
            false,
            None,
            0,
        );
        a.retain(std::slice::from_ref(&every));
        assert_eq!(a.states.len(), 1);
        assert_eq!(a.statuses(&[every])[0].state, State::Firing);
    }
}
