//! Model-name patterns, shared by route rules and provider model mappings.
//!
//! Syntax: `*` matches anything; `~REGEX` is a regular expression matched against the
//! whole name; `prefix*` matches names starting with `prefix`; anything else is exact.

use regex::Regex;

#[derive(Debug, Clone)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty model pattern".into());
        }
        if s == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(re) = s.strip_prefix('~') {
            return Regex::new(&format!("^(?:{re})$"))
                .map(Pattern::Regex)
                .map_err(|e| format!("invalid regex `{re}`: {e}"));
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(format!("`{s}`: `*` is allowed only at the end"));
            }
            return Ok(Pattern::Prefix(prefix.to_string()));
        }
        if s.contains('*') {
            return Err(format!("`{s}`: `*` is allowed only at the end"));
        }
        Ok(Pattern::Exact(s.to_string()))
    }

    /// The pattern as it is written in the config (`parse` gives it back).
    pub fn source(&self) -> String {
        match self {
            Pattern::Any => "*".into(),
            Pattern::Exact(e) => e.clone(),
            Pattern::Prefix(p) => format!("{p}*"),
            Pattern::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("~{inner}")
            }
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Regex(r) => r.is_match(name),
        }
    }
}

/// Requested model → upstream model, with a fixed precedence that does not depend on the
/// order of the file: exact, then the longest matching prefix, then regexes in file order,
/// then `*`. No match means the name is sent unchanged.
#[derive(Debug, Default)]
pub struct ModelMap {
    exact: std::collections::HashMap<String, String>,
    prefixes: Vec<(String, String)>,
    regexes: Vec<(Regex, String)>,
    any: Option<String>,
}

impl ModelMap {
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, String> {
        let mut map = ModelMap::default();
        for (from, to) in entries {
            if to.is_empty() {
                return Err(format!("mapping for `{from}` has an empty target"));
            }
            match Pattern::parse(from)? {
                Pattern::Any => map.any = Some(to.clone()),
                Pattern::Exact(e) => {
                    map.exact.insert(e, to.clone());
                }
                Pattern::Prefix(p) => map.prefixes.push((p, to.clone())),
                Pattern::Regex(r) => map.regexes.push((r, to.clone())),
            }
        }
        map.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(map)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.prefixes.is_empty()
            && self.regexes.is_empty()
            && self.any.is_none()
    }

    /// The upstream name for `model`, or `None` to keep it.
    pub fn map(&self, model: &str) -> Option<&str> {
        if let Some(to) = self.exact.get(model) {
            return Some(to);
        }
        if let Some((_, to)) = self
            .prefixes
            .iter()
            .find(|(p, _)| model.starts_with(p.as_str()))
        {
            return Some(to);
        }
        if let Some((_, to)) = self.regexes.iter().find(|(r, _)| r.is_match(model)) {
            return Some(to);
        }
        self.any.as_deref()
    }

    /// Exact names this map knows, for `GET /v1/models`.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*").unwrap().matches("x"));
        assert!(Pattern::parse("gpt-4o").unwrap().matches("gpt-4o"));
        assert!(!Pattern::parse("gpt-4o").unwrap().matches("gpt-4o-mini"));
        assert!(Pattern::parse("gpt-*").unwrap().matches("gpt-4o-mini"));
        assert!(Pattern::parse("~gpt-4o(-mini)?")
            .unwrap()
            .matches("gpt-4o-mini"));
        assert!(!Pattern::parse("~gpt-4o").unwrap().matches("xgpt-4o"));
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("~(").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn source_gives_back_what_was_parsed() {
        for s in ["*", "gpt-4o", "gpt-*", "~gpt-4o(-mini)?", "~a|b"] {
            assert_eq!(Pattern::parse(s).unwrap().source(), s);
        }
    }

    #[test]
    fn mapping_precedence() {
        let entries: Vec<(String, String)> = [
            ("*", "fallback"),
            ("~gpt-4.*", "regex"),
            ("gpt-*", "short-prefix"),
            ("gpt-4o*", "long-prefix"),
            ("gpt-4o", "exact"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let map = ModelMap::new(entries.iter().map(|(a, b)| (a, b))).unwrap();
        assert_eq!(map.map("gpt-4o"), Some("exact"));
        assert_eq!(map.map("gpt-4o-mini"), Some("long-prefix"));
        assert_eq!(map.map("gpt-3.5"), Some("short-prefix"));
        assert_eq!(map.map("claude"), Some("fallback"));
        let no_any = ModelMap::new(entries[1..2].iter().map(|(a, b)| (a, b))).unwrap();
        assert_eq!(no_any.map("gpt-4x"), Some("regex"));
        assert_eq!(no_any.map("claude"), None);
    }
}
