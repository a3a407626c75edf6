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
    /// The most characters a match can span (`None`: a regex without a bound).
    longest: Option<usize>,
}

/// A route's compiled deny rules.
#[derive(Debug)]
pub struct DenyPolicy {
    pub input: Option<DenyList>,
    pub output: Option<DenyList>,
    /// Characters of a stream's text held back for the output check: `deny.holdback`, or
    /// fewer when no output match can span that many (the longest keyword or bounded
    /// regex, less one).
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
            longest: longest_match(&words, &s.regex),
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

/// The most characters a match of these keywords (as folded) or regexes can span; `None`
/// when a regex has no bound (`a+`). A regex's bound is in bytes, never fewer than its
/// characters.
fn longest_match(keywords: &[String], regexes: &[String]) -> Option<usize> {
    let words = keywords
        .iter()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut longest = words;
    for r in regexes {
        let hir = regex_syntax::Parser::new().parse(r).ok()?;
        longest = longest.max(hir.properties().maximum_len()?);
    }
    Some(longest)
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
        let output = list("output", &s.output)?;
        // Hold back no more than a match can span, less one character: a stream's text is
        // not delayed longer than the rules need.
        let needed = output
            .as_ref()
            .and_then(|o| o.longest)
            .map_or(holdback, |n| n.saturating_sub(1).max(1));
        Ok(DenyPolicy {
            input: list("input", &s.input)?,
            output,
            holdback: holdback.min(needed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keywords: &[&str], regex: &[&str], holdback: Option<usize>) -> DenyPolicy {
        let list = DenyListSection {
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            regex: regex.iter().map(|r| r.to_string()).collect(),
            case_insensitive: false,
        };
        DenyPolicy::build(&DenySection {
            input: None,
            output: Some(list),
            holdback,
        })
        .unwrap()
    }

    #[test]
    fn the_hold_back_is_what_the_longest_match_needs_at_most() {
        assert_eq!(policy(&["违禁词"], &[], None).holdback, 2);
        assert_eq!(policy(&["forbidden-word", "x"], &[], None).holdback, 13);
        assert_eq!(policy(&["forbidden-word"], &[], Some(4)).holdback, 4);
        assert_eq!(policy(&["a"], &[], None).holdback, 1);
        // A bounded regex counts by its most bytes; an unbounded one takes `holdback`.
        assert_eq!(policy(&[], &["secret plan"], None).holdback, 10);
        assert_eq!(
            policy(&[], &["secret.+plan"], None).holdback,
            DEFAULT_HOLDBACK
        );
        assert_eq!(policy(&["ab"], &["x{1,200}"], Some(100)).holdback, 100);
    }
}
