//! What a request costs in money: the price book (`pricing:` over the shipped defaults,
//! `defaults.yaml`) and the arithmetic.
//!
//! Prices are per million tokens of each class: input not read from a cache, cached input
//! (read), cache writes (Anthropic's cache creation), output, reasoning; per request; and,
//! for media answers that report no tokens, per image, per minute of audio, per million
//! characters spoken and per thousand rerank search units (`usage::Units`).
//! They are kept as integer picounits (10⁻¹² of the currency) per token and costs are sums
//! of integers, so a cost is exact and totals add up to the cent and below. A price applies
//! from its `from` instant (an older entry keeps applying before it: past costs are never
//! rewritten) and, with `hours`/`weekdays`, only in those UTC hours and days (off-peak tiers).
//! An entry of the operator's `pricing.prices` wins over the shipped book; within each, the
//! entry with the latest `from` that has begun wins, then one limited to hours or days (a
//! tier) over an all-day one, then the first written.
//!
//! A request whose provider and model no entry covers has no cost: it is reported as such
//! (`price_missing` in the access log, `tollgate_unpriced_requests_total`), never as 0.

use crate::pattern::Pattern;
use crate::settings::{Currency, PriceSection, PricingSection};
use crate::usage::Usage;

/// Picounits per unit of currency.
pub const PICO: u64 = 1_000_000_000_000;

/// The shipped price book (see its header for the sources and dates).
const DEFAULTS: &str = include_str!("defaults.yaml");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    pub request: u64,
    /// Per image.
    pub image: u64,
    /// Per millisecond of audio.
    pub audio_ms: u64,
    /// Per character spoken.
    pub character: u64,
    /// Per search unit.
    pub search_unit: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    provider: Option<String>,
    provider_type: Option<String>,
    model: Pattern,
    currency: Currency,
    rates: Rates,
    /// Unix seconds.
    from: u64,
    /// Minutes of the UTC day `[start, end)`; empty: all day.
    hours: Vec<(u32, u32)>,
    /// Bit `d` for weekday `d` (0 = Monday).
    weekdays: u8,
    shipped: bool,
}

impl Entry {
    /// Limited to some hours or days (a tier wins over an all-day price of the same date).
    fn specific(&self) -> bool {
        !self.hours.is_empty() || self.weekdays != 0x7f
    }
}

/// A request's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub pico: u64,
    pub currency: Currency,
}

impl Cost {
    /// The amount as an exact decimal (`0.00004125`).
    pub fn decimal(&self) -> String {
        decimal(self.pico)
    }
}

/// A priced request as the client is told it (`x-tollgate-cost`, and the comment ending a
/// stream): the exact decimal and the currency (`0.00004125 USD`), or `unpriced`.
pub fn shown(cost: Option<Cost>) -> String {
    match cost {
        Some(c) => format!("{} {}", c.decimal(), c.currency.as_str()),
        None => "unpriced".to_string(),
    }
}

/// Now, in unix seconds (the instant a request is priced at).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `pico` picounits as an exact decimal, without trailing zeros.
pub fn decimal(pico: u64) -> String {
    let (whole, frac) = (pico / PICO, pico % PICO);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:012}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    entries: Vec<Entry>,
}

/// A price per million tokens (or per request, `per` = 1) as picounits per unit.
fn pico(field: &str, price: Option<f64>, per: f64) -> Result<Option<u64>, String> {
    match price {
        None => Ok(None),
        Some(p) if (0.0..1e9).contains(&p) => Ok(Some((p * PICO as f64 / per).round() as u64)),
        Some(p) => Err(format!("{field}: `{p}` is not a price (a number >= 0)")),
    }
}

fn minutes(t: &str) -> Option<u32> {
    let (h, m) = t.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

fn parse_hours(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for range in text.split(',') {
        let bad = || format!("`{range}`: expected HH:MM-HH:MM");
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (a, b) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if a < b {
            out.push((a, b));
        } else {
            // Across midnight.
            out.push((a, 1440));
            out.push((0, b));
        }
    }
    Ok(out)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_weekdays(text: &str) -> Result<u8, String> {
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| *x == d.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("`{d}`: expected a day such as mon, tue, … sun"))
    };
    let mut mask = 0u8;
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!("`{part}`: the first day comes after the last"));
                }
                for d in a..=b {
                    mask |= 1 << d;
                }
            }
            None => mask |= 1 << day(part)?,
        }
    }
    Ok(mask)
}

fn entry(p: &PriceSection, shipped: bool) -> Result<Entry, (String, String)> {
    let err = |f: &str, m: String| (f.to_string(), m);
    let model = Pattern::parse(&p.model).map_err(|e| err("model", e))?;
    let million = 1e6;
    let input = pico("input", p.input, million).map_err(|e| err("input", e))?;
    let output = pico("output", p.output, million).map_err(|e| err("output", e))?;
    let request = pico("request", p.request, 1.0)
        .map_err(|e| err("request", e))?
        .unwrap_or(0);
    let unit = |field: &str, price: Option<f64>, per: f64| {
        pico(field, price, per)
            .map(Option::unwrap_or_default)
            .map_err(|e| err(field, e))
    };
    let image = unit("image", p.image, 1.0)?;
    let audio_ms = unit("audio_minute", p.audio_minute, 60_000.0)?;
    let character = unit("characters", p.characters, million)?;
    let search_unit = unit("search_units", p.search_units, 1000.0)?;
    let units = [image, audio_ms, character, search_unit];
    if input.is_none() && output.is_none() && request == 0 && units.iter().all(|u| *u == 0) {
        return Err(err(
            "input",
            "a price needs `input`, `output`, `request` or a unit price (`image`, \
             `audio_minute`, `characters`, `search_units`)"
                .into(),
        ));
    }
    let input = input.unwrap_or(0);
    let output = output.unwrap_or(0);
    let rates = Rates {
        input,
        cached_input: pico("cached_input", p.cached_input, million)
            .map_err(|e| err("cached_input", e))?
            .unwrap_or(input),
        cache_write: pico("cache_write", p.cache_write, million)
            .map_err(|e| err("cache_write", e))?
            .unwrap_or(input),
        output,
        reasoning: pico("reasoning", p.reasoning, million)
            .map_err(|e| err("reasoning", e))?
            .unwrap_or(output),
        request,
        image,
        audio_ms,
        character,
        search_unit,
    };
    let from = match &p.from {
        None => 0,
        Some(t) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| err("from", format!("`{t}`: {e} (RFC 3339, UTC)")))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let hours = match &p.hours {
        None => Vec::new(),
        Some(h) => parse_hours(h).map_err(|e| err("hours", e))?,
    };
    let weekdays = match &p.weekdays {
        None => 0x7f,
        Some(w) => parse_weekdays(w).map_err(|e| err("weekdays", e))?,
    };
    Ok(Entry {
        provider: p.provider.clone(),
        provider_type: p.provider_type.clone(),
        model,
        currency: p.currency.unwrap_or_default(),
        rates,
        from,
        hours,
        weekdays,
        shipped,
    })
}

/// The shipped price book, as settings.
pub fn shipped() -> Vec<PriceSection> {
    #[derive(serde::Deserialize)]
    struct Book {
        prices: Vec<PriceSection>,
    }
    serde_yaml::from_str::<Book>(DEFAULTS)
        .map(|b| b.prices)
        .unwrap_or_default()
}

impl PriceBook {
    /// The price book of `section` (and the shipped one under it unless switched off); an
    /// error names the field (`pricing.prices[2].hours`).
    pub fn build(section: &PricingSection) -> Result<PriceBook, (String, String)> {
        let mut entries = Vec::new();
        for (i, p) in section.prices.iter().enumerate() {
            entries
                .push(entry(p, false).map_err(|(f, m)| (format!("pricing.prices[{i}].{f}"), m))?);
        }
        if section.defaults() {
            for (i, p) in shipped().iter().enumerate() {
                entries.push(
                    entry(p, true)
                        .map_err(|(f, m)| (format!("shipped price book [{i}].{f}"), m))?,
                );
            }
        }
        Ok(PriceBook { entries })
    }

    /// The rates for `model` of provider `provider` (of type `kind`) at `at` (unix seconds).
    pub fn rates(
        &self,
        provider: &str,
        kind: &str,
        model: &str,
        at: u64,
    ) -> Option<(Rates, Currency)> {
        let minute = u32::try_from(at % 86_400 / 60).unwrap_or(0);
        // 1970-01-01 was a Thursday (weekday 3, Monday = 0).
        let weekday = (at / 86_400 + 3) % 7;
        let applies = |e: &&Entry| {
            e.from <= at
                && e.provider.as_deref().is_none_or(|p| p == provider)
                && e.provider_type.as_deref().is_none_or(|t| t == kind)
                && e.model.matches(model)
                && e.weekdays & (1 << weekday) != 0
                && (e.hours.is_empty() || e.hours.iter().any(|(a, b)| (*a..*b).contains(&minute)))
        };
        let best = |shipped: bool| {
            self.entries
                .iter()
                .filter(|e| e.shipped == shipped)
                .filter(applies)
                .fold(None::<&Entry>, |best, e| match best {
                    Some(b) if (b.from, b.specific()) >= (e.from, e.specific()) => Some(b),
                    _ => Some(e),
                })
        };
        best(false)
            .or_else(|| best(true))
            .map(|e| (e.rates, e.currency))
    }

    /// What a request that used `usage` costs: `None` when it used no token and no unit
    /// (nothing to price), `Some(None)` when it used tokens no price covers. The one pricing of a
    /// finished request (the access log, metrics and rollups, and `x-tollgate-cost`).
    pub fn priced(
        &self,
        provider: &str,
        kind: &str,
        model: &str,
        usage: &Usage,
        at: u64,
    ) -> Option<Option<Cost>> {
        if usage.input_tokens == 0 && usage.output_tokens == 0 && usage.units.is_zero() {
            return None;
        }
        Some(self.cost(provider, kind, model, usage, at))
    }

    /// What `usage` costs for `model` of `provider` at `at`; `None` when unpriced.
    pub fn cost(
        &self,
        provider: &str,
        kind: &str,
        model: &str,
        usage: &Usage,
        at: u64,
    ) -> Option<Cost> {
        let (r, currency) = self.rates(provider, kind, model, at)?;
        Some(Cost {
            pico: charge(&r, usage),
            currency,
        })
    }
}

/// `usage` at rates `r`: each token class at its own rate.
pub fn charge(r: &Rates, u: &Usage) -> u64 {
    let cached = u.cached_input_tokens.min(u.input_tokens);
    let written = u.cache_write_tokens.min(u.input_tokens - cached);
    let fresh = u.input_tokens - cached - written;
    let reasoning = u.reasoning_tokens.min(u.output_tokens);
    let answer = u.output_tokens - reasoning;
    [
        (fresh, r.input),
        (cached, r.cached_input),
        (written, r.cache_write),
        (answer, r.output),
        (reasoning, r.reasoning),
        (1, r.request),
        (u.units.images, r.image),
        (u.units.audio_ms, r.audio_ms),
        (u.units.characters, r.character),
        (u.units.search_units, r.search_unit),
    ]
    .iter()
    .fold(0u64, |sum, (n, rate)| {
        sum.saturating_add(n.saturating_mul(*rate))
    })
}

#[cfg(test)]
mod tests;
