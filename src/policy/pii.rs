//! PII detectors and the per-request vault of masked values.
//!
//! Each built-in detector is a regex for candidates plus a check the regex cannot express:
//! the checksum of a Chinese ID card (ISO 7064 MOD 11-2) or a bank card (Luhn), the ranges
//! of an IP address, the digit count of a phone number, and that a candidate does not
//! continue into neighbouring digits or letters. No word-boundary assertion is used, so a
//! value inside Chinese text (`手机13812345678谢谢`) is found. Operators add their own
//! regexes (`custom`), each a kind of its own.
//!
//! A [`Vault`] belongs to one request: the same value always gets the same placeholder
//! (`[PII_EMAIL_1]`), numbered per kind in order of appearance, so the masked request (and
//! the cache key made from it) is deterministic, and the answer's placeholders can be turned
//! back into the values.

use crate::settings::{PiiDetector, PiiMode, PiiSection};
use regex::Regex;
use std::collections::HashMap;

/// One detector: its placeholder kind, candidate regex and the check of a candidate.
#[derive(Debug)]
struct Detector {
    /// `EMAIL`, `PHONE`, … or a custom detector's upper-cased name.
    kind: String,
    /// The configured name (`email`, a custom name): what a refusal names.
    name: String,
    regex: Regex,
    check: fn(&str) -> bool,
    /// Characters that may not touch a match on either side.
    joins: fn(char) -> bool,
}

/// A route's compiled PII policy.
#[derive(Debug)]
pub struct PiiPolicy {
    pub mode: PiiMode,
    detectors: Vec<Detector>,
}

fn always(_: &str) -> bool {
    true
}

fn never_joins(_: char) -> bool {
    false
}

fn joins_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn joins_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn joins_key(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn joins_ip(c: char) -> bool {
    c.is_ascii_hexdigit() || c == ':' || c == '.'
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// The Luhn checksum of a card number (separators ignored).
pub fn luhn_valid(s: &str) -> bool {
    let ds: Vec<u32> = digits(s).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, x) if x > 9 => x - 9,
            (true, x) => x,
            (false, _) => *d,
        })
        .sum();
    sum % 10 == 0
}

/// A Chinese resident ID card number: 17 digits and the ISO 7064 MOD 11-2 check character.
pub fn cn_id_valid(s: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = s.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let want = CHECK[(sum % 11) as usize];
    b[17].to_ascii_uppercase() == want
}

fn phone_valid(s: &str) -> bool {
    let n = digits(s).count();
    (8..=15).contains(&n)
}

fn ip_valid(s: &str) -> bool {
    if s.contains(':') {
        s.matches(':').count() >= 2
            && s.chars().any(|c| c.is_ascii_hexdigit())
            && s.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        s.parse::<std::net::Ipv4Addr>().is_ok()
    }
}

/// A long hex or base62 run is a secret when it mixes digits and letters (base62: both
/// cases too), so long words and numbers are not taken for keys.
fn api_key_valid(s: &str) -> bool {
    let has = |f: fn(&char) -> bool| s.chars().any(|c| f(&c));
    let prefixed = ["sk-", "AKIA", "ghp_", "gho_", "ghs_", "xox", "AIza"]
        .iter()
        .any(|p| s.starts_with(p));
    prefixed
        || (has(char::is_ascii_digit)
            && (s.chars().all(|c| c.is_ascii_hexdigit())
                || (has(char::is_ascii_uppercase) && has(char::is_ascii_lowercase))))
}

type Builtin = (
    &'static str,
    &'static str,
    fn(&str) -> bool,
    fn(char) -> bool,
);

/// The pattern, check and neighbours of a built-in detector.
fn builtin(d: PiiDetector) -> Builtin {
    match d {
        PiiDetector::Email => (
            "EMAIL",
            r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
            always,
            never_joins,
        ),
        PiiDetector::Phone => (
            "PHONE",
            r"\+[1-9]\d{0,2}(?:[ \-]?\(?\d{1,4}\)?){2,5}|(?:\+?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}",
            phone_valid,
            joins_digit,
        ),
        PiiDetector::CnId => (
            "CN_ID",
            r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]",
            cn_id_valid,
            joins_alnum,
        ),
        PiiDetector::BankCard => (
            "BANK_CARD",
            r"\d(?:[ \-]?\d){12,18}",
            luhn_valid,
            joins_digit,
        ),
        PiiDetector::Ip => (
            "IP",
            r"(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}",
            ip_valid,
            joins_ip,
        ),
        PiiDetector::ApiKey => (
            "API_KEY",
            r"sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|[0-9A-Za-z]{32,}",
            api_key_valid,
            joins_key,
        ),
    }
}

/// Detectors are tried in this order; at one position the longest match wins, then the
/// earlier detector (a Chinese ID card before a bank card).
const ORDER: [PiiDetector; 6] = [
    PiiDetector::Email,
    PiiDetector::CnId,
    PiiDetector::BankCard,
    PiiDetector::Phone,
    PiiDetector::Ip,
    PiiDetector::ApiKey,
];

/// A detected value: its byte range in the text and the detector's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    detector: usize,
}

impl PiiPolicy {
    /// Compile a route's `pii:`; an error names the field and what is wrong.
    pub fn build(s: &PiiSection) -> Result<PiiPolicy, (String, String)> {
        let chosen = s.detectors.clone().unwrap_or_else(|| ORDER.to_vec());
        let mut detectors = Vec::new();
        for d in ORDER.iter().filter(|d| chosen.contains(d)) {
            let (kind, pattern, check, joins) = builtin(*d);
            let regex = Regex::new(pattern).map_err(|e| ("detectors".into(), e.to_string()))?;
            detectors.push(Detector {
                kind: kind.into(),
                name: d.as_str().into(),
                regex,
                check,
                joins,
            });
        }
        for (i, c) in s.custom.iter().enumerate() {
            let field = |f: &str| format!("custom[{i}].{f}");
            let name_ok = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !name_ok {
                return Err((field("name"), "1 to 32 letters, digits or `_`".into()));
            }
            let regex = Regex::new(&c.regex).map_err(|e| (field("regex"), e.to_string()))?;
            if regex.is_match("") {
                return Err((field("regex"), "matches the empty string".into()));
            }
            detectors.push(Detector {
                kind: c.name.to_ascii_uppercase(),
                name: c.name.clone(),
                regex,
                check: always,
                joins: never_joins,
            });
        }
        Ok(PiiPolicy {
            mode: s.mode.unwrap_or_default(),
            detectors,
        })
    }

    /// Every detected value in `text`, in order, none overlapping.
    pub fn find(&self, text: &str) -> Vec<Found> {
        let mut all = Vec::new();
        for (i, d) in self.detectors.iter().enumerate() {
            for m in d.regex.find_iter(text) {
                let before = text[..m.start()].chars().next_back();
                let after = text[m.end()..].chars().next();
                let touches = before.is_some_and(d.joins) || after.is_some_and(d.joins);
                if !touches && (d.check)(m.as_str()) {
                    all.push(Found {
                        start: m.start(),
                        end: m.end(),
                        detector: i,
                    });
                }
            }
        }
        all.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.detector));
        let mut kept: Vec<Found> = Vec::with_capacity(all.len());
        for f in all {
            if kept.last().is_none_or(|k| f.start >= k.end) {
                kept.push(f);
            }
        }
        kept
    }

    /// The configured name of the detector that found `f` (for a refusal's message).
    pub fn name(&self, f: &Found) -> &str {
        self.detectors
            .get(f.detector)
            .map_or("", |d| d.name.as_str())
    }

    /// `text` with every detected value replaced by its placeholder from `vault`; whether
    /// anything was replaced.
    pub fn mask(&self, text: &mut String, vault: &mut Vault) -> bool {
        let found = self.find(text);
        if found.is_empty() {
            return false;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&text[at..f.start]);
            let kind = self.detectors.get(f.detector).map_or("PII", |d| &d.kind);
            out.push_str(vault.placeholder(kind, &text[f.start..f.end]));
            at = f.end;
        }
        out.push_str(&text[at..]);
        *text = out;
        true
    }
}

/// The values masked in one request and their placeholders, both ways.
#[derive(Debug, Default, Clone)]
pub struct Vault {
    by_value: HashMap<String, String>,
    by_placeholder: HashMap<String, String>,
    counters: HashMap<String, usize>,
    /// The longest placeholder, in bytes (all are ASCII): the most a restore holds back.
    longest: usize,
}

/// What every placeholder starts with.
pub const PLACEHOLDER_START: &str = "[PII_";

impl Vault {
    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    /// The placeholder of `value` (found by the detector of `kind`), made on first sight.
    pub fn placeholder(&mut self, kind: &str, value: &str) -> &str {
        if !self.by_value.contains_key(value) {
            let n = self.counters.entry(kind.to_string()).or_insert(0);
            *n += 1;
            let p = format!("{PLACEHOLDER_START}{kind}_{n}]");
            self.longest = self.longest.max(p.len());
            self.by_placeholder.insert(p.clone(), value.to_string());
            self.by_value.insert(value.to_string(), p);
        }
        self.by_value.get(value).map_or("", String::as_str)
    }

    /// The longest placeholder's length (bytes = characters).
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every known placeholder replaced by its value.
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(PLACEHOLDER_START) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let known = tail
                .find(']')
                .filter(|end| *end < self.longest)
                .and_then(|end| Some((end, self.by_placeholder.get(&tail[..=end])?)));
            match known {
                Some((end, value)) => {
                    out.push_str(value);
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Where an unfinished placeholder may start at the end of `text` (the byte offset of
    /// its `[`), to be held until the rest arrives; `text.len()` when none may.
    pub fn partial_start(&self, text: &str) -> usize {
        let Some(i) = text.rfind('[') else {
            return text.len();
        };
        let tail = &text[i..];
        let possible = tail.len() < self.longest
            && !tail.contains(']')
            && self.by_placeholder.keys().any(|p| p.starts_with(tail));
        if possible {
            i
        } else {
            text.len()
        }
    }
}
