//! `routes[].pii` (PII masking, its restore, or refusal) and `routes[].deny` (keyword and
//! regex deny lists on the text a provider receives and the text a client receives).

use super::text::{is_false, text_serde, word_enum};
use serde::{Deserialize, Serialize};

/// A route's PII policy (off when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiSection {
    /// `mask` (default: placeholders upstream, values restored in the answer), `mask_only`
    /// (no restore) or `block` (400 `content_policy_violation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PiiMode>,
    /// Built-in detectors (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<Vec<PiiDetector>>,
    /// Operator regexes, each a detector of its own kind (`name`, upper-cased in the
    /// placeholder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomDetectorSection>,
}

/// An operator's detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorSection {
    /// Letters, digits and `_`: the placeholder is `[PII_<NAME>_<n>]`.
    pub name: String,
    pub regex: String,
}

word_enum! {
    /// What a route does with detected values.
    #[derive(Default)]
    pub enum PiiMode {
        #[default]
        Mask = "mask",
        MaskOnly = "mask_only",
        Block = "block",
    }
}

impl std::str::FromStr for PiiMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(PiiMode);

word_enum! {
    /// The built-in detectors.
    pub enum PiiDetector {
        Email = "email",
        Phone = "phone",
        CnId = "cn_id",
        BankCard = "bank_card",
        Ip = "ip",
        ApiKey = "api_key",
    }
}

impl std::str::FromStr for PiiDetector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(PiiDetector);

/// A route's deny rules (off when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenySection {
    /// Checked on the request's text before anything goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<DenyListSection>,
    /// Checked on the answer's text, streams included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<DenyListSection>,
    /// Characters of a stream's text held back so a match split across events is caught
    /// before any of it reaches the client (default 64, at most 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdback: Option<usize>,
}

/// Keywords and regexes; any match is a violation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyListSection {
    /// Plain substrings (no word boundaries: also inside words and in Chinese text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// Keywords match in any case (Unicode simple case folding; default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
}
