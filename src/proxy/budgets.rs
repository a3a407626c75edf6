//! The budget stage: reserve the request's largest possible cost under every money budget
//! of its consumer, team and route (`crate::budget`), and, per attempt, under its provider
//! key's budgets; settle each with the real cost when the request ends.

use super::admission::Admitted;
use crate::budget::state::{BudgetHold, Refused, Want};
use crate::budget::{self, money, Budget, BudgetBook, Payer};
use crate::error::{BudgetSpent, GatewayError};
use crate::pricing::Cost;
use crate::route::ModelRule;
use crate::runtime::Gateway;
use crate::settings::Unpriced;
use crate::state::Backends;
use std::sync::Arc;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn refusal(r: Refused) -> GatewayError {
    match r {
        Refused::Spent {
            budget,
            subject,
            spent,
            allowance,
            currency,
            resets,
        } => GatewayError::BudgetExceeded(Box::new(BudgetSpent {
            budget,
            subject,
            spent: money(spent),
            allowance: money(allowance),
            currency,
            resets,
        })),
        Refused::Store => GatewayError::StoreUnavailable("budgets"),
    }
}

/// What each applying budget reserves: the most the request can cost at `costs` (per
/// currency; `None`: some target is unpriced), or, unpriced, nothing or a refusal.
fn wants(
    book: &BudgetBook,
    applying: Vec<(Arc<Budget>, String)>,
    costs: impl Fn(u64) -> Option<Vec<Cost>>,
    model: &str,
) -> Result<Vec<Want>, GatewayError> {
    let mut out = Vec::with_capacity(applying.len());
    for (b, subject) in applying {
        let n = costs(b.output_allowance).and_then(|c| budget::reservation(book, &c, &b));
        match (n, b.unpriced) {
            (Some(n), _) => out.push((b, subject, n)),
            (None, Unpriced::Admit) => out.push((b, subject, 0)),
            (None, Unpriced::Refuse) => {
                return Err(GatewayError::BudgetUnpriced {
                    budget: b.name.clone(),
                    model: model.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// The most the request can cost at `targets`, given a budget's output allowance (used
/// when the request sets no `max_tokens`).
fn costs<'a>(
    config: &'a Gateway,
    targets: &'a [budget::Target<'a>],
    admitted: &Admitted,
    at: u64,
) -> impl Fn(u64) -> Option<Vec<Cost>> + 'a {
    let demand = admitted.demand;
    move |allowance| {
        let output = if demand.max_tokens > 0 {
            demand.max_tokens
        } else {
            allowance
        };
        budget::max_cost(&config.prices, targets, demand.prompt, output, at)
    }
}

/// Reserve under the consumer's, its team's and the route's budgets.
pub async fn admit(
    config: &Gateway,
    backends: &Backends,
    payer: Payer<'_>,
    rule: &ModelRule,
    model: &str,
    admitted: &Admitted,
) -> Result<Vec<BudgetHold>, GatewayError> {
    let book = &config.budgets;
    if book.is_empty() {
        return Ok(Vec::new());
    }
    let applying = book.applying(payer);
    if applying.is_empty() {
        return Ok(Vec::new());
    }
    let at = now();
    // Every target the request may go to (their order does not matter here).
    let targets: Vec<budget::Target<'_>> = rule
        .targets
        .iter()
        .map(|t| budget::Target {
            provider: &t.provider.name,
            kind: t.provider.kind.as_str(),
            model: t.upstream_model(model).unwrap_or(model),
        })
        .collect();
    let wants = wants(book, applying, costs(config, &targets, admitted, at), model)?;
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    backends.budgets().admit(&wants, at).await.map_err(refusal)
}

/// Reserve under the budgets of provider key `provider/key` for an attempt asking
/// `model` of it: `Ok(Err(e))` when one has no room (try another key).
pub async fn admit_key(
    config: &Gateway,
    backends: &Backends,
    provider: &crate::provider::Provider,
    key: &str,
    model: &str,
    admitted: &Admitted,
) -> Result<Result<Vec<BudgetHold>, GatewayError>, GatewayError> {
    let book = &config.budgets;
    if !book.has_key_budgets() {
        return Ok(Ok(Vec::new()));
    }
    let applying = book.for_key(&format!("{}/{key}", provider.name));
    if applying.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let at = now();
    let target = [budget::Target {
        provider: &provider.name,
        kind: provider.kind.as_str(),
        model,
    }];
    // A key whose budget refuses the model's missing price is skipped like a spent one.
    let wants = match wants(book, applying, costs(config, &target, admitted, at), model) {
        Ok(w) => w,
        Err(e) => return Ok(Err(e)),
    };
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    match backends.budgets().admit(&wants, at).await {
        Ok(holds) => Ok(Ok(holds)),
        Err(Refused::Store) => Err(GatewayError::StoreUnavailable("budgets")),
        Err(r) => Ok(Err(refusal(r))),
    }
}

/// Settle holds with the request's cost (`None`: unpriced or nothing used: 0).
pub async fn settle(
    book: &BudgetBook,
    backends: &Backends,
    holds: &[BudgetHold],
    cost: Option<Cost>,
) {
    for h in holds {
        let amount = cost
            .and_then(|c| book.convert(c, h.budget.currency))
            .map_or(0, |p| i64::try_from(p).unwrap_or(i64::MAX / 4));
        backends.budgets().settle(h, amount).await;
    }
}
