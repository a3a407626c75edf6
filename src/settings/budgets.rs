//! `budgets:`: money budgets. Each caps what one consumer, team, route or provider key may
//! spend (at the price book's prices) per day, week, month, custom period or lifetime.

use super::text::{text_serde, word_enum, HumanDuration};
use super::Currency;
use serde::{Deserialize, Serialize};

/// One budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub name: String,
    /// Whose spend: exactly one of `consumer`, `team`, `route` or `key`. A name, or `*` for
    /// each one separately (every consumer its own budget of this size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// A team (`consumers[].team`), or `*` for each team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// A route's name, or `*` for each route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// A provider key, `provider/key-name` (`provider/*` or `*`: each key separately). A key
    /// over its budget is skipped like a key out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The amount per period, in `currency`.
    pub amount: f64,
    /// Default USD. A request priced in another currency counts only with a fixed rate
    /// (`pricing.cny_per_usd`); otherwise it is unpriced for this budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// `day`, `week`, `month`, `custom` (with `every`) or `lifetime` (default `month`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<BudgetPeriod>,
    /// A custom period's length (`period: custom`), e.g. `14d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// When periods begin, as local time in `time_zone`: `YYYY-MM-DDTHH:MM[:SS]`. A day
    /// uses its time of day, a week its weekday and time, a month its day of the month
    /// (the last day in shorter months) and time, a custom period the instant. Default:
    /// midnight, Monday, the 1st; a custom period needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// An IANA time zone (`Asia/Shanghai`, `Europe/Berlin`); default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Only watch (alert rules of kind `budget`), never refuse (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<bool>,
    /// A request whose model has no price: `refuse` (default) or `admit` (it adds nothing to
    /// the spend and is logged with `price_missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced: Option<Unpriced>,
    /// Output tokens reserved for a request without `max_tokens` (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_allowance: Option<u64>,
}

word_enum! {
    /// How long a budget's period is.
    #[derive(Default)]
    pub enum BudgetPeriod {
        Day = "day",
        Week = "week",
        #[default]
        Month = "month",
        Custom = "custom",
        Lifetime = "lifetime",
    }
}

impl std::str::FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(BudgetPeriod);

word_enum! {
    /// What a budget does with a request it cannot price.
    #[derive(Default)]
    pub enum Unpriced {
        #[default]
        Refuse = "refuse",
        Admit = "admit",
    }
}

impl std::str::FromStr for Unpriced {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_word(s).ok_or_else(|| format!("`{s}`: expected {}", Self::words()))
    }
}

text_serde!(Unpriced);
