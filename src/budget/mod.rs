//! Money budgets: what each consumer, team, route or provider key may spend per period.
//!
//! - [`BudgetBook`]: the budgets of a config snapshot (`budgets:`), built from the settings:
//!   who each one charges, its amount in picounits, its periods ([`period`]).
//! - [`state::Budgets`]: the spend, kept like quotas: reserved at admission (the request's
//!   largest possible cost: its prompt estimate and `max_tokens`, or the budget's output
//!   allowance, at the dearest price among the targets it may go to), replaced by the real
//!   cost when it ends, in the embedded store (committed before the request's end is
//!   logged) or in Redis (one script, shared by every gateway).
//!
//! A request is admitted only if every budget that applies has room for its reservation,
//! so concurrent requests cannot overspend a budget by more than what they used beyond
//! what they reserved. A provider key's budget is checked per attempt: a key over it is
//! skipped like a key out of rotation.

pub mod period;
pub mod state;

use crate::pricing::{Cost, PriceBook, Rates, PICO};
use crate::settings::{BudgetSection, Currency, Unpriced};
use crate::usage::Usage;
use period::Periods;
use std::collections::HashMap;
use std::sync::Arc;

/// Output tokens reserved for a request without `max_tokens`, unless a budget says.
pub const DEFAULT_OUTPUT_ALLOWANCE: u64 = 4096;
/// The largest amount a budget may have (picounits fit in an i64 with room for top-ups).
pub const MAX_AMOUNT: f64 = 1_000_000.0;

/// Whose spend a budget caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Consumer,
    Team,
    Route,
    Key,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Consumer => "consumer",
            Scope::Team => "team",
            Scope::Route => "route",
            Scope::Key => "key",
        }
    }
}

/// One budget of the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    pub scope: Scope,
    /// The one consumer, team, route or key it caps; `None`: each one separately. For a
    /// key: `provider/key`, or `provider/*` (each key of the provider).
    pub target: Option<String>,
    /// Picounits per period.
    pub limit: i64,
    pub currency: Currency,
    pub periods: Periods,
    pub soft: bool,
    pub unpriced: Unpriced,
    pub output_allowance: u64,
}

impl Budget {
    /// The subject this budget charges for `name` (a consumer, team, route or
    /// `provider/key`), if it applies to it.
    pub fn subject(&self, name: &str) -> Option<String> {
        match self.target.as_deref() {
            None => Some(name.to_string()),
            Some(t) if t == name => Some(name.to_string()),
            Some(t) => {
                let provider = t.strip_suffix("/*")?;
                let (p, _) = name.split_once('/')?;
                (self.scope == Scope::Key && p == provider).then(|| name.to_string())
            }
        }
    }
}

/// The budgets of a snapshot, and what pricing them needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetBook {
    pub budgets: Vec<Arc<Budget>>,
    /// Each consumer's team.
    pub teams: HashMap<String, String>,
    /// Yuan per dollar, in millionths (`pricing.cny_per_usd`).
    pub cny_per_usd_micro: Option<u64>,
}

/// Who a request is, as budgets see it.
#[derive(Debug, Clone, Copy)]
pub struct Payer<'a> {
    pub consumer: Option<&'a str>,
    pub route: &'a str,
}

fn amount(budget: &BudgetSection) -> Result<i64, (&'static str, String)> {
    if !(0.0..=MAX_AMOUNT).contains(&budget.amount) {
        return Err((
            "amount",
            format!(
                "`{}`: expected an amount from 0 to {MAX_AMOUNT}",
                budget.amount
            ),
        ));
    }
    // Exact to a millionth of the currency.
    Ok((budget.amount * 1e6).round() as i64 * (PICO as i64 / 1_000_000))
}

fn build_one(b: &BudgetSection) -> Result<Budget, (&'static str, String)> {
    let scopes = [
        (Scope::Consumer, &b.consumer),
        (Scope::Team, &b.team),
        (Scope::Route, &b.route),
        (Scope::Key, &b.key),
    ];
    let mut set = scopes.iter().filter(|(_, v)| v.is_some());
    let (scope, target) = match (set.next(), set.next()) {
        (Some((s, Some(t))), None) => (*s, t.clone()),
        _ => {
            return Err((
                "consumer",
                "a budget caps exactly one of `consumer`, `team`, `route` or `key`".into(),
            ))
        }
    };
    if scope == Scope::Key && target != "*" && !target.contains('/') {
        return Err((
            "key",
            format!("`{target}`: expected `provider/key`, `provider/*` or `*`"),
        ));
    }
    let period = b.period.unwrap_or_default();
    let periods = Periods::new(
        period,
        b.every.map(Into::into),
        b.anchor.as_deref(),
        b.time_zone.as_deref(),
    )?;
    Ok(Budget {
        name: b.name.clone(),
        scope,
        target: (target != "*").then_some(target),
        limit: amount(b)?,
        currency: b.currency.unwrap_or_default(),
        periods,
        soft: b.soft.unwrap_or(false),
        unpriced: b.unpriced.unwrap_or_default(),
        output_allowance: b.output_allowance.unwrap_or(DEFAULT_OUTPUT_ALLOWANCE),
    })
}

impl BudgetBook {
    /// The budgets of `sections`; an error names the field (`budgets[0].period`).
    pub fn build(
        sections: &[BudgetSection],
        teams: HashMap<String, String>,
        cny_per_usd: Option<f64>,
    ) -> Result<BudgetBook, (String, String)> {
        let mut budgets: Vec<Arc<Budget>> = Vec::new();
        for (i, b) in sections.iter().enumerate() {
            let at = |f: &str| format!("budgets[{i}] ({}).{f}", b.name);
            if b.name.is_empty() || budgets.iter().any(|o| o.name == b.name) {
                return Err((
                    at("name"),
                    "budget names must be unique and not empty".into(),
                ));
            }
            budgets.push(Arc::new(build_one(b).map_err(|(f, m)| (at(f), m))?));
        }
        let cny_per_usd_micro = match cny_per_usd {
            None => None,
            Some(r) if r > 0.0 && r < 1e6 => Some((r * 1e6).round() as u64),
            Some(r) => {
                return Err((
                    "pricing.cny_per_usd".into(),
                    format!("`{r}`: expected a rate above 0"),
                ))
            }
        };
        Ok(BudgetBook {
            budgets,
            teams,
            cny_per_usd_micro,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Budget>> {
        self.budgets.iter().find(|b| b.name == name)
    }

    /// Whether any budget caps provider keys (checked per attempt).
    pub fn has_key_budgets(&self) -> bool {
        self.budgets.iter().any(|b| b.scope == Scope::Key)
    }

    /// The request-level budgets that apply to `payer`, with their subjects.
    pub fn applying(&self, payer: Payer<'_>) -> Vec<(Arc<Budget>, String)> {
        let team = payer.consumer.and_then(|c| self.teams.get(c));
        self.budgets
            .iter()
            .filter_map(|b| {
                let name = match b.scope {
                    Scope::Consumer => payer.consumer?,
                    Scope::Team => team?.as_str(),
                    Scope::Route => payer.route,
                    Scope::Key => return None,
                };
                Some((b.clone(), b.subject(name)?))
            })
            .collect()
    }

    /// The key budgets that apply to `provider/key`.
    pub fn for_key(&self, key: &str) -> Vec<(Arc<Budget>, String)> {
        self.budgets
            .iter()
            .filter(|b| b.scope == Scope::Key)
            .filter_map(|b| Some((b.clone(), b.subject(key)?)))
            .collect()
    }

    /// `cost` in `to`, through the fixed rate if the currencies differ; `None` without one.
    pub fn convert(&self, cost: Cost, to: Currency) -> Option<u64> {
        if cost.currency == to {
            return Some(cost.pico);
        }
        let rate = u128::from(self.cny_per_usd_micro?);
        let pico = u128::from(cost.pico);
        let out = match to {
            Currency::Cny => pico * rate / 1_000_000,
            Currency::Usd => (pico * 1_000_000).div_ceil(rate),
        };
        u64::try_from(out).ok()
    }
}

/// One place a request may be served: a provider (name and type) and the model asked of it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub provider: &'a str,
    pub kind: &'a str,
    pub model: &'a str,
}

/// The most a request can cost at `targets`: its prompt estimate and its output (the larger
/// of the output and reasoning rates) at the dearest target, per currency; `None` when some
/// target has no price.
pub fn max_cost(
    prices: &PriceBook,
    targets: &[Target<'_>],
    prompt: u64,
    output: u64,
    now: u64,
) -> Option<Vec<Cost>> {
    let mut out: Vec<Cost> = Vec::new();
    for t in targets {
        let (rates, currency) = prices.rates(t.provider, t.kind, t.model, now)?;
        let pico = most(&rates, prompt, output);
        match out.iter_mut().find(|c| c.currency == currency) {
            Some(c) => c.pico = c.pico.max(pico),
            None => out.push(Cost { pico, currency }),
        }
    }
    Some(out)
}

fn most(r: &Rates, prompt: u64, output: u64) -> u64 {
    let usage = Usage {
        input_tokens: prompt,
        output_tokens: output,
        ..Usage::default()
    };
    let reasoning = Usage {
        reasoning_tokens: output,
        ..usage
    };
    crate::pricing::charge(r, &usage).max(crate::pricing::charge(r, &reasoning))
}

/// The reservation for `budget` out of `costs` (one per currency): the largest, converted.
pub fn reservation(book: &BudgetBook, costs: &[Cost], budget: &Budget) -> Option<i64> {
    let mut most = 0u64;
    for c in costs {
        most = most.max(book.convert(*c, budget.currency)?);
    }
    Some(i64::try_from(most).unwrap_or(i64::MAX / 4))
}

/// Spent as a percentage of the allowance (one decimal).
pub fn percent(spent: i64, allowance: i64) -> f64 {
    if allowance <= 0 {
        return if spent > 0 { 100.0 } else { 0.0 };
    }
    (spent as f64 * 1000.0 / allowance as f64).round() / 10.0
}

/// `pico` as an amount with two to six decimals, for messages (`12.50`, `0.000125`).
pub fn money(pico: i64) -> String {
    let micro = pico / (PICO as i64 / 1_000_000);
    let (sign, micro) = if micro < 0 {
        ("-", -micro)
    } else {
        ("", micro)
    };
    let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
    let mut frac = format!("{frac:06}");
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{whole}.{frac}")
}

#[cfg(test)]
mod tests;
