//! `GET {prefix}/models` and `GET {prefix}/models/{id}`, answered by the gateway.
//!
//! A route lists the models a caller can actually use through it: for each rule, the exact
//! name it serves and the names its providers declare (`models`, exact `model_mapping` keys)
//! that the rule would route, when the rule has a target whose provider has at least one
//! configured key. `list_unconfigured: true` (on a provider, or on a route for all of its
//! providers) lists them without a key too. Each route's list is built once at config load;
//! a request merges the lists of the routes that serve its host and path and that its caller
//! may use (a model claimed by an earlier route's rule is that route's, as for requests).

use super::Route;
use bytes::Bytes;
use std::collections::BTreeMap;

/// One route's answer to `/models`, rendered at config load.
#[derive(Debug, Default)]
pub struct ModelList {
    /// Model id → owning provider, sorted by id.
    entries: BTreeMap<String, String>,
    /// For each rule of the route: the first target provider that may be listed (has a key,
    /// or `list_unconfigured`), which owns models the rule serves by pattern.
    rule_owner: Vec<Option<String>>,
    /// The whole `{"object":"list","data":[…]}` body of this route alone.
    body: Bytes,
}

impl ModelList {
    /// The list for `route`; `listed(provider name)` says whether a provider may be listed
    /// (at least one configured key, or `list_unconfigured`).
    pub fn build(route: &Route, listed: &dyn Fn(&str, usize) -> bool) -> Self {
        let mut entries = BTreeMap::new();
        let mut rule_owner = Vec::with_capacity(route.rules.len());
        for (j, rule) in route.rules.iter().enumerate() {
            let usable: Vec<&crate::route::Target> = rule
                .targets
                .iter()
                .filter(|t| listed(&t.provider.name, t.provider.keys.len()))
                .collect();
            rule_owner.push(usable.first().map(|t| t.provider.name.clone()));
            let Some(first) = usable.first() else {
                continue;
            };
            // A name is this rule's only when no earlier rule of the route takes it.
            let mine = |name: &str| route.rule_index(name) == Some(j);
            if let crate::pattern::Pattern::Exact(name) = &rule.pattern {
                entries
                    .entry(name.clone())
                    .or_insert_with(|| first.provider.name.clone());
            }
            for target in &usable {
                let p = &target.provider;
                let names = p.models.iter().map(String::as_str);
                for name in names.chain(p.model_map.exact_names()) {
                    if mine(name) {
                        entries
                            .entry(name.to_string())
                            .or_insert_with(|| p.name.clone());
                    }
                }
            }
        }
        let body = render(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ModelList {
            entries,
            rule_owner,
            body,
        }
    }

    /// The rendered list of this route alone.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }
}

/// The `/models` body for a caller who may use `allowed` among `routes` (every route serving
/// the request's host and path, in config order). A model an earlier route has a rule for
/// is that route's (as for requests): listed only if the caller may use that route.
pub fn merged(routes: &[&Route], allowed: &[bool]) -> Bytes {
    if let ([only], [true]) = (routes, allowed) {
        return only.models.body();
    }
    let mut out: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, (route, ok)) in routes.iter().zip(allowed).enumerate() {
        if !ok {
            continue;
        }
        for (id, owner) in &route.models.entries {
            if !routes[..i].iter().any(|r| r.rule_for(id).is_some()) {
                out.entry(id).or_insert(owner);
            }
        }
    }
    render(out.into_iter())
}

/// `GET /models/{id}` for a caller who may use `allowed` among `routes` (every route serving
/// the host and path, in config order): the model object, or `None` (404). A model is
/// known when it is listed, or when the first route with a rule for it is allowed and that
/// rule has a provider that may be listed.
pub fn retrieve(routes: &[&Route], allowed: &[bool], id: &str) -> Option<Bytes> {
    for (route, ok) in routes.iter().zip(allowed) {
        let Some(j) = route.rule_index(id) else {
            continue;
        };
        if !ok {
            return None;
        }
        let owner = match route.models.entries.get(id) {
            Some(owner) => owner.as_str(),
            None => route.models.rule_owner.get(j)?.as_deref()?,
        };
        return Some(object(id, owner));
    }
    None
}

fn object(id: &str, owner: &str) -> Bytes {
    serde_json::to_vec(&entry(id, owner))
        .unwrap_or_default()
        .into()
}

fn entry(id: &str, owner: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

fn render<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Bytes {
    let data: Vec<serde_json::Value> = entries.map(|(id, owner)| entry(id, owner)).collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data}))
        .unwrap_or_default()
        .into()
}

/// The model id in `/models/{id}`: percent-decoded; `None` if it is not UTF-8 once decoded.
pub fn decode_id(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h)? << 4) | hex(l)?) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(decode_id("gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(
            decode_id("meta%2Fllama%203").as_deref(),
            Some("meta/llama 3")
        );
        assert_eq!(decode_id("a%2").as_deref(), Some("a%2"));
        assert_eq!(decode_id("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode_id("%ff"), None);
    }
}
