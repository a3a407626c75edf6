//! The budgets API's run-time side (the budgets themselves are a collection of the
//! management API): spend and remaining per subject in the current period, top-ups,
//! resets, and each subject's history per period.

use super::api::query;
use super::{json_response, read_json, Admin};
use crate::budget::state::Standing;
use crate::budget::Budget;
use crate::error::GatewayError;
use crate::pricing::PICO;
use crate::runtime::Gateway;
use crate::store::budget_sql::Spend;
use http::{Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

/// At most this many subjects or periods in one answer.
const MAX_ROWS: usize = 1000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An amount in picounits as an exact decimal (negative allowed).
fn amount(pico: i64) -> String {
    let text = crate::pricing::decimal(pico.unsigned_abs());
    if pico < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// A decimal amount of money from JSON (a number or a string) in picounits.
fn parse_amount(v: &Value) -> Result<i64, GatewayError> {
    let bad = || {
        GatewayError::BadQuery(
            "`amount` must be a number of the budget's currency, e.g. 25 or \"12.50\"".into(),
        )
    };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(bad()),
    };
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 12
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{frac:0<12}").parse().map_err(|_| bad())?;
    let pico = whole
        .checked_mul(PICO as i64)
        .and_then(|w| w.checked_add(frac))
        .filter(|p| *p <= 1_000_000 * PICO as i64)
        .ok_or_else(bad)?;
    Ok(if neg { -pico } else { pico })
}

fn standing_json(b: &Budget, s: &Standing) -> Value {
    let allowance = b.limit.saturating_add(s.spend.topup);
    json!({
        "subject": s.subject,
        "period_start": b.periods.local(s.start),
        "resets_at": s.end.map(|e| b.periods.local(e)),
        "amount": amount(b.limit),
        "topup": amount(s.spend.topup),
        "spent": amount(s.spend.spent),
        "reserved": amount(s.reserved),
        "remaining": amount(allowance.saturating_sub(s.spend.spent)),
        "currency": b.currency.as_str(),
        "percent_used": crate::budget::percent(s.spend.spent, allowance),
    })
}

fn not_found(name: &str) -> GatewayError {
    GatewayError::AdminObjectNotFound {
        kind: "budget",
        name: name.to_string(),
    }
}

impl Admin {
    fn budget(&self, name: &str) -> Result<(Arc<Gateway>, Arc<Budget>), GatewayError> {
        let config = self.config.load_full();
        let b = config
            .budgets
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        Ok((config, b))
    }

    /// `GET /budgets/{name}/spend`: the current period of `?subject=`, or of every subject.
    pub(super) async fn budget_spend(
        &self,
        session: &ServerSession,
        name: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let (config, b) = self.budget(name)?;
        let wanted = match query(session, "subject") {
            Some(s) if b.subject(&s).is_none() => {
                return Err(GatewayError::BadQuery(format!(
                    "budget `{name}` does not apply to `{s}`"
                )))
            }
            Some(s) => vec![s],
            None => config.budget_subjects(&b),
        };
        let store = GatewayError::StoreUnavailable("budgets");
        let mut items = Vec::with_capacity(wanted.len());
        for subject in wanted {
            let s = self
                .backends
                .budgets()
                .standing(&b, &subject, now(), None)
                .await
                .map_err(|_| store.clone())?;
            items.push(standing_json(&b, &s));
        }
        Ok(json_response(
            StatusCode::OK,
            json!({"budget": name, "scope": b.scope.as_str(), "period": b.periods.kind(),
                   "soft": b.soft, "items": items}),
        ))
    }

    /// `GET /budgets/{name}/history`: spend per period, newest first.
    pub(super) async fn budget_history(
        &self,
        session: &ServerSession,
        name: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let (_, b) = self.budget(name)?;
        let subject = query(session, "subject");
        let limit = query(session, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100)
            .min(MAX_ROWS);
        let rows = self
            .backends
            .budgets()
            .rows(name, subject.as_deref(), None, limit)
            .await
            .map_err(|_| GatewayError::StoreUnavailable("budgets"))?;
        let items: Vec<Value> = rows
            .iter()
            .map(|(subject, start, Spend { spent, topup })| {
                json!({"subject": subject, "period_start": b.periods.local(*start),
                       "spent": amount(*spent), "topup": amount(*topup),
                       "currency": b.currency.as_str()})
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            json!({"budget": name, "items": items}),
        ))
    }

    /// `POST /budgets/{name}/top_up` `{subject, amount}` and `POST /budgets/{name}/reset`
    /// `{subject}`: change the current period; the standing after.
    pub(super) async fn budget_change(
        &self,
        session: &mut ServerSession,
        who: &str,
        name: &str,
        action: &str,
    ) -> Result<Response<Vec<u8>>, GatewayError> {
        let (_, b) = self.budget(name)?;
        let body = read_json(session).await?;
        let subject = match (body.get("subject").and_then(Value::as_str), &b.target) {
            (Some(s), _) => s.to_string(),
            (None, Some(t)) if !t.ends_with("/*") => t.clone(),
            (None, _) => {
                return Err(GatewayError::BadQuery(format!(
                    "budget `{name}` caps each {} separately: name one as `subject`",
                    b.scope.as_str()
                )))
            }
        };
        if b.subject(&subject).is_none() {
            return Err(GatewayError::BadQuery(format!(
                "budget `{name}` does not apply to `{subject}`"
            )));
        }
        let change = match action {
            "top_up" => Some(parse_amount(body.get("amount").unwrap_or(&Value::Null))?),
            _ => None,
        };
        let s = self
            .backends
            .budgets()
            .standing(&b, &subject, now(), Some(change))
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Overflow => {
                    GatewayError::BadQuery("the resulting top-up is out of range".into())
                }
                _ => GatewayError::StoreUnavailable("budgets"),
            })?;
        let what = format!("{name} ({subject})");
        self.reloader.record(who, action, "budget", &what).await;
        Ok(json_response(StatusCode::OK, standing_json(&b, &s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly() {
        let p = |v: Value| parse_amount(&v);
        assert_eq!(p(json!(25)).unwrap(), 25 * PICO as i64);
        assert_eq!(p(json!("12.50")).unwrap(), 12_500_000_000_000);
        assert_eq!(p(json!("-0.000001")).unwrap(), -1_000_000);
        assert_eq!(p(json!(0.1)).unwrap(), PICO as i64 / 10);
        for bad in [
            json!("1e3"),
            json!("abc"),
            json!(null),
            json!("1.0000000000001"),
            json!(2e6),
        ] {
            assert!(p(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(amount(-1_500_000_000_000), "-1.5");
        assert_eq!(crate::budget::percent(80, 100), 80.0);
        assert_eq!(crate::budget::percent(1, 0), 100.0);
    }
}
