//! Deny rules: keyword and regex lists matched anywhere in a text.
//!
//! Keywords are plain substrings (Aho-Corasick), never word-bounded, so `违禁` is found
//! inside `这是违禁词` and `secret` inside `topsecret`. With `case_insensitive` both the
//! keywords and the text are lower-cased (Unicode) before matching. Regexes are compiled
//! once when the settings are loaded.

use crate::settings::{DenyListSection, DenySection};
use aho_corasick::AhoCorasick;
use regex::RegexSet;

/// The default hold-back of a stream's text, in characters.
pub const DEFAULT_HOLDBACK: usize = 64;
/// The largest hold-back accepted.
pub const MAX_HOLDBACK: usize = 4096;

/// One compiled list.
#[derive(Debug)]
pub struct DenyList {
    keywords: Option<AhoCorasick>,
    regex: Option<RegexSet>,
    case_insensitive: bool,
}

/// A route's compiled deny rules.
#[derive(Debug)]
pub struct DenyPolicy {
    pub input: Option<DenyList>,
    pub output: Option<DenyList>,
    /// Characters of a stream's text held back for the output check.
    pub holdback: usize,
}

impl DenyList {
    fn build(s: &DenyListSection) -> Result<DenyList, (String, String)> {
        if let Some(i) = s.keywords.iter().position(String::is_empty) {
            return Err((format!("keywords[{i}]"), "an empty keyword".into()));
        }
        let words: Vec<String> = s
            .keywords
            .iter()
            .map(|k| fold(k, s.case_insensitive).into_owned())
            .collect();
        let keywords = match words.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::new(&words).map_err(|e| ("keywords".to_string(), e.to_string()))?,
            ),
        };
        for (i, r) in s.regex.iter().enumerate() {
            let re = regex::Regex::new(r).map_err(|e| (format!("regex[{i}]"), e.to_string()))?;
            if re.is_match("") {
                return Err((format!("regex[{i}]"), "matches the empty string".into()));
            }
        }
        let regex = match s.regex.is_empty() {
            true => None,
            false => Some(RegexSet::new(&s.regex).map_err(|e| ("regex".into(), e.to_string()))?),
        };
        Ok(DenyList {
            keywords,
            regex,
            case_insensitive: s.case_insensitive,
        })
    }

    /// Whether `text` matches a keyword or a regex.
    pub fn matches(&self, text: &str) -> bool {
        if let Some(ac) = &self.keywords {
            let folded = fold(text, self.case_insensitive);
            if ac.is_match(folded.as_ref()) {
                return true;
            }
        }
        self.regex.as_ref().is_some_and(|set| set.is_match(text))
    }
}

fn fold(text: &str, case_insensitive: bool) -> std::borrow::Cow<'_, str> {
    match case_insensitive {
        true => text.to_lowercase().into(),
        false => text.into(),
    }
}

impl DenyPolicy {
    /// Compile a route's `deny:`; an error names the field and what is wrong.
    pub fn build(s: &DenySection) -> Result<DenyPolicy, (String, String)> {
        let list = |name: &str, l: &Option<DenyListSection>| {
            l.as_ref()
                .map(DenyList::build)
                .transpose()
                .map_err(|(f, e)| (format!("{name}.{f}"), e))
        };
        let holdback = s.holdback.unwrap_or(DEFAULT_HOLDBACK);
        if !(1..=MAX_HOLDBACK).contains(&holdback) {
            return Err(("holdback".into(), format!("must be 1 to {MAX_HOLDBACK}")));
        }
        Ok(DenyPolicy {
            input: list("input", &s.input)?,
            output: list("output", &s.output)?,
            holdback,
        })
    }
}
