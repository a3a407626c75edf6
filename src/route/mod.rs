//! Routing: which route a request belongs to (host and path prefix), which API endpoint it
//! calls, and which providers may serve its model, in attempt order.

pub mod models;

use crate::pattern::Pattern;
use crate::provider::Provider;
use std::sync::Arc;

pub use crate::protocol::{Endpoint, QuotaCall};

#[derive(Debug, Clone)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: any subdomain (stored as `.example.com`).
    Suffix(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Self {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(rest) => HostPattern::Suffix(rest.to_string()),
            None => HostPattern::Exact(s),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

#[derive(Debug)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub weight: u32,
    /// Model to ask this target for, overriding the provider's mapping.
    pub model: Option<String>,
}

impl Target {
    /// The model name to send upstream for a request that asked for `requested`, or
    /// `None` to send it unchanged.
    pub fn upstream_model<'a>(&'a self, requested: &str) -> Option<&'a str> {
        self.model
            .as_deref()
            .or_else(|| self.provider.model_map.map(requested))
    }
}

#[derive(Debug)]
pub struct ModelRule {
    pub pattern: Pattern,
    pub targets: Vec<Target>,
    total_weight: u64,
    /// The rule's pattern as written in the config: the `model` label of its metrics (never
    /// the client's model name, which would let clients create series at will).
    pub label: String,
    /// Most attempts for one request: the route's `retry.attempts`, or by default enough
    /// for every key of the two targets with the most keys (see `default_attempts`).
    pub attempts: u32,
}

/// The fewest attempts a rule gets by default (the old fixed default).
pub const MIN_DEFAULT_ATTEMPTS: u32 = 3;
/// The most attempts a rule gets by default, however many keys its targets have.
pub const MAX_DEFAULT_ATTEMPTS: u32 = 10;

/// Default `retry.attempts` for a rule: every configured key of its first two targets
/// (whichever two come first, so the two with the most keys), at least
/// `MIN_DEFAULT_ATTEMPTS`, at most `MAX_DEFAULT_ATTEMPTS`.
pub fn default_attempts(targets: &[Target]) -> u32 {
    let mut counts: Vec<usize> = targets.iter().map(|t| t.provider.keys.len()).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let two: usize = counts.iter().take(2).sum();
    u32::try_from(two)
        .unwrap_or(u32::MAX)
        .clamp(MIN_DEFAULT_ATTEMPTS, MAX_DEFAULT_ATTEMPTS)
}

impl ModelRule {
    /// A rule with `attempts` (explicit `retry.attempts`), or the default for its targets.
    pub fn new(pattern: Pattern, targets: Vec<Target>, attempts: Option<u32>) -> Self {
        let total_weight = targets.iter().map(|t| u64::from(t.weight)).sum();
        ModelRule {
            label: pattern.source(),
            attempts: attempts.unwrap_or_else(|| default_attempts(&targets)),
            pattern,
            targets,
            total_weight,
        }
    }

    /// Targets in attempt order: the first chosen at random by weight, the others after it
    /// in configured order (the fallbacks).
    pub fn attempt_order(&self) -> Vec<&Target> {
        let first = self.pick_weighted(fastrand::u64(..self.total_weight.max(1)));
        let mut order = Vec::with_capacity(self.targets.len());
        order.extend(self.targets.get(first));
        order.extend(
            self.targets
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, t)| t),
        );
        order
    }

    fn pick_weighted(&self, mut point: u64) -> usize {
        for (i, t) in self.targets.iter().enumerate() {
            let w = u64::from(t.weight);
            if point < w {
                return i;
            }
            point -= w;
        }
        0
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
    pub rules: Vec<ModelRule>,
    pub retry: RetryPolicy,
    pub auth: RouteAuth,
    /// Which client headers go to the provider.
    pub forward: crate::forward::ForwardHeaders,
    /// What `GET {prefix}/models` lists through this route (built at load).
    pub models: crate::route::models::ModelList,
    /// The response cache for its chat completions (`None`: off).
    pub cache: Option<crate::cache::RouteCache>,
    /// Its cache's counters, resolved once (`None`: no cache).
    pub cache_counters: Option<crate::cache::Counters>,
    /// PII masking (`None`: off).
    pub pii: Option<std::sync::Arc<crate::policy::pii::PiiPolicy>>,
    /// Deny rules (`None`: off).
    pub deny: Option<std::sync::Arc<crate::policy::deny::DenyPolicy>>,
}

/// Who may use a route.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub required: bool,
    /// Allowed consumer names; empty = any consumer.
    pub allow: Vec<String>,
}

/// What a route does when no key of any target is usable (`all_keys_down`).
pub use crate::settings::AllKeysDown;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Most attempts for one request across keys and targets, when set explicitly; by
    /// default each rule computes its own (`ModelRule::attempts`).
    pub attempts: Option<u32>,
    /// Most keys tried on one target before falling back to the next (default: every
    /// usable key, `u32::MAX`).
    pub per_target: u32,
    /// No new attempt starts after this long.
    pub deadline: std::time::Duration,
    pub all_keys_down: AllKeysDown,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: None,
            per_target: u32::MAX,
            deadline: std::time::Duration::from_secs(60),
            all_keys_down: AllKeysDown::FailFast,
        }
    }
}

impl Route {
    /// The endpoint if this route serves `host` and `path`.
    pub fn match_request(&self, host: &str, path: &str) -> Option<Endpoint> {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(host)) {
            return None;
        }
        let rest = path.strip_prefix(self.path_prefix.as_str())?;
        Endpoint::from_suffix(rest)
    }

    /// The first rule whose pattern matches `model`.
    pub fn rule_for(&self, model: &str) -> Option<&ModelRule> {
        self.rules.iter().find(|r| r.pattern.matches(model))
    }

    /// The index in `rules` of the first rule whose pattern matches `model`.
    pub fn rule_index(&self, model: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.pattern.matches(model))
    }
}

/// Host of a request without its port.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map(|h| &h[1..]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> Arc<Provider> {
        provider_with_keys(name, 0)
    }

    fn provider_with_keys(name: &str, n: usize) -> Arc<Provider> {
        let keys = (0..n)
            .map(|i| crate::keys::ApiKey::new(format!("{name}#{i}"), format!("sk-{name}-{i}")))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let upstream = crate::provider::Upstream::parse("http://127.0.0.1:1/v1", None).unwrap();
        Arc::new(Provider::new(crate::provider::ProviderSpec {
            http2: false,
            name: name.into(),
            kind: "openai-compatible".into(),
            protocol: crate::protocol::OPENAI,
            upstream,
            keys: crate::keys::KeyPool::new(keys, vec![]),
            model_map: Default::default(),
            models: vec![],
            timeouts: Default::default(),
            ca: None,
            health: Default::default(),
            api_version: None,
            connect_to: None,
            responses_api: false,
        }))
    }

    #[test]
    fn weights_choose_the_first_attempt_and_the_rest_follow_in_order() {
        let rule = ModelRule::new(
            Pattern::Any,
            vec![
                Target {
                    provider: provider("a"),
                    weight: 3,
                    model: None,
                },
                Target {
                    provider: provider("b"),
                    weight: 0,
                    model: None,
                },
                Target {
                    provider: provider("c"),
                    weight: 1,
                    model: None,
                },
            ],
            None,
        );
        assert_eq!(rule.pick_weighted(0), 0);
        assert_eq!(rule.pick_weighted(2), 0);
        assert_eq!(rule.pick_weighted(3), 2);
        let mut firsts = std::collections::HashMap::new();
        for _ in 0..4000 {
            let order: Vec<&str> = rule
                .attempt_order()
                .iter()
                .map(|t| t.provider.name.as_str())
                .collect();
            assert_eq!(order.len(), 3);
            *firsts.entry(order[0].to_string()).or_insert(0) += 1;
            if order[0] == "a" {
                assert_eq!(order, ["a", "b", "c"]);
            } else {
                assert_eq!(order, ["c", "a", "b"]);
            }
        }
        assert!(!firsts.contains_key("b"), "weight 0 is never first");
        let a = firsts["a"] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&a), "weight 3:1 gave {a}");
    }

    #[test]
    fn default_attempts_cover_every_key_of_two_targets() {
        let targets = |counts: &[usize]| -> Vec<Target> {
            counts
                .iter()
                .enumerate()
                .map(|(i, n)| Target {
                    provider: provider_with_keys(&format!("p{i}"), *n),
                    weight: 1,
                    model: None,
                })
                .collect()
        };
        assert_eq!(default_attempts(&targets(&[1])), MIN_DEFAULT_ATTEMPTS);
        assert_eq!(default_attempts(&targets(&[1, 1, 1])), 3);
        assert_eq!(default_attempts(&targets(&[3, 2])), 5);
        assert_eq!(default_attempts(&targets(&[1, 4, 3])), 7, "the two largest");
        assert_eq!(default_attempts(&targets(&[8, 9])), MAX_DEFAULT_ATTEMPTS);
        let rule = ModelRule::new(Pattern::Any, targets(&[3, 3]), None);
        assert_eq!(rule.attempts, 6);
        let rule = ModelRule::new(Pattern::Any, targets(&[3, 3]), Some(2));
        assert_eq!(rule.attempts, 2, "an explicit setting wins");
        assert_eq!(RetryPolicy::default().per_target, u32::MAX);
    }

    #[test]
    fn endpoints_and_hosts() {
        assert_eq!(
            Endpoint::from_suffix("/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(Endpoint::from_suffix("/chat"), None);
        assert_eq!(Endpoint::from_suffix("/models/"), Some(Endpoint::Models));
        assert_eq!(
            Endpoint::from_suffix("/models/gpt-4o"),
            Some(Endpoint::Model)
        );
        assert_eq!(Endpoint::from_suffix("/models/a/b"), Some(Endpoint::Model));
        assert!(HostPattern::parse("*.example.com").matches("api.EXAMPLE.com"));
        assert!(!HostPattern::parse("*.example.com").matches("example.com"));
        assert!(HostPattern::parse("Api.x").matches("api.x"));
        assert_eq!(host_without_port("a.b:8080"), "a.b");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("a.b"), "a.b");
    }
}
