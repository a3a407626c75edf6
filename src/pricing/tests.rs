use super::*;

fn book(yaml: &str, defaults: bool) -> PriceBook {
    let mut section: PricingSection = serde_yaml::from_str(yaml).unwrap();
    section.defaults = Some(defaults);
    PriceBook::build(&section).unwrap()
}

fn usage(input: u64, cached: u64, written: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_write_tokens: written,
        output_tokens: output,
        reasoning_tokens: reasoning,
        estimated: false,
        units: crate::usage::Units::NONE,
    }
}

/// Seconds of 2026-12-02 (a Wednesday) at `hh:mm` UTC.
fn wed(hh: u64, mm: u64) -> u64 {
    1_796_169_600 + hh * 3600 + mm * 60
}

const BOOK: &str = r#"
prices:
  # OpenAI family: cached input at its own rate, reasoning billed as output.
  - {provider_type: openai, model: "gpt-4o*", input: 2.50, cached_input: 1.25, output: 10}
  # Anthropic: cache reads and cache writes each at their own rate.
  - {provider_type: anthropic, model: "claude-sonnet-*", input: 3, cached_input: 0.30, cache_write: 3.75, output: 15}
  # Gemini: thinking tokens billed as output.
  - {provider_type: gemini, model: "gemini-2.5-flash", input: 0.30, cached_input: 0.075, output: 2.50}
  # DeepSeek: peak hours on weekdays cost twice the rest (two tiers), and a price change.
  - {provider_type: deepseek, model: deepseek-flash, input: 0.15, cached_input: 0.003, output: 0.60}
  - {provider_type: deepseek, model: deepseek-flash, input: 0.30, cached_input: 0.006, output: 1.20, hours: "01:00-04:00,06:00-10:00", weekdays: mon-fri}
  - {provider_type: deepseek, model: deepseek-flash, input: 0.20, cached_input: 0.004, output: 0.80, from: "2026-12-03T00:00:00Z"}
  # CNY, per request on top, one provider by name.
  - {provider: qwen-cn, model: "qwen-plus", currency: CNY, input: 0.8, output: 2, request: 0.001}
"#;

#[test]
fn costs_by_token_class_tier_and_date() {
    let b = book(BOOK, false);
    let cases: &[(&str, &str, &str, Usage, u64, &str, Currency)] = &[
        // 1000 input of which 400 cached, 200 output: 600×2.50 + 400×1.25 + 200×10 per 1M.
        (
            "oai",
            "openai",
            "gpt-4o-mini",
            usage(1000, 400, 0, 200, 0),
            wed(12, 0),
            "0.004",
            Currency::Usd,
        ),
        // Reasoning at the output rate (none given).
        (
            "oai",
            "openai",
            "gpt-4o",
            usage(0, 0, 0, 100, 60),
            wed(12, 0),
            "0.001",
            Currency::Usd,
        ),
        // Anthropic: 100 fresh + 1000 read + 2000 written input, 50 output.
        (
            "claude",
            "anthropic",
            "claude-sonnet-4-5",
            usage(3100, 1000, 2000, 50, 0),
            wed(12, 0),
            "0.00885",
            Currency::Usd,
        ),
        // Gemini with thinking: 500 input (100 cached), 300 output of which 200 thinking.
        (
            "g",
            "gemini",
            "gemini-2.5-flash",
            usage(500, 100, 0, 300, 200),
            wed(12, 0),
            "0.0008775",
            Currency::Usd,
        ),
        // DeepSeek off-peak (Wednesday 12:00) and peak (Wednesday 02:00, 09:59).
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 1_000_000, 0),
            wed(12, 0),
            "0.75",
            Currency::Usd,
        ),
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 1_000_000, 0),
            wed(2, 0),
            "1.5",
            Currency::Usd,
        ),
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 0, 0),
            wed(9, 59),
            "0.3",
            Currency::Usd,
        ),
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 0, 0),
            wed(10, 0),
            "0.15",
            Currency::Usd,
        ),
        // Saturday at 02:00: no peak on weekends.
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 0, 0),
            wed(2, 0) + 3 * 86_400,
            "0.2",
            Currency::Usd,
        ),
        // From 2026-12-03 the new all-day price wins over the older entries (latest `from`).
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 0, 0),
            wed(12, 0) + 86_400,
            "0.2",
            Currency::Usd,
        ),
        // The day before, the old prices still apply: past costs are not rewritten.
        (
            "ds",
            "deepseek",
            "deepseek-flash",
            usage(1_000_000, 0, 0, 0, 0),
            wed(23, 59),
            "0.15",
            Currency::Usd,
        ),
        // CNY, with a per-request price.
        (
            "qwen-cn",
            "qwen",
            "qwen-plus",
            usage(1000, 0, 0, 1000, 0),
            wed(12, 0),
            "0.0038",
            Currency::Cny,
        ),
    ];
    for (provider, kind, model, u, at, want, currency) in cases {
        let cost = b
            .cost(provider, kind, model, u, *at)
            .unwrap_or_else(|| panic!("{model} unpriced"));
        assert_eq!(
            (cost.decimal().as_str(), cost.currency),
            (*want, *currency),
            "{provider} {model} {u:?} at {at}"
        );
    }
    // Unpriced: another provider of the named one, an unknown model.
    assert!(b
        .cost(
            "qwen-intl",
            "qwen",
            "qwen-plus",
            &usage(1, 0, 0, 1, 0),
            wed(12, 0)
        )
        .is_none());
    assert!(b
        .cost("oai", "openai", "o3", &usage(1, 0, 0, 1, 0), wed(12, 0))
        .is_none());
}

#[test]
fn the_operators_prices_win_over_the_shipped_ones() {
    let mine = r#"prices: [{provider_type: openai, model: "gpt-4o", input: 1, output: 1}]"#;
    let b = book(mine, true);
    let c = b.cost(
        "oai",
        "openai",
        "gpt-4o",
        &usage(1_000_000, 0, 0, 0, 0),
        wed(12, 0),
    );
    assert_eq!(c.map(|c| c.decimal()), Some("1".to_string()));
    // Every shipped entry parses and names a provider type the gateway has.
    for (i, p) in shipped().iter().enumerate() {
        entry(p, true).unwrap_or_else(|e| panic!("shipped [{i}]: {e:?}"));
        let kind = p.provider_type.as_deref().unwrap_or_default();
        assert!(
            crate::settings::ProviderType::from_word(kind).is_some(),
            "shipped [{i}]: type `{kind}`"
        );
    }
}

#[test]
fn bad_prices_name_the_field() {
    for (yaml, field) in [
        (
            r#"prices: [{model: "x", input: -1}]"#,
            "pricing.prices[0].input",
        ),
        (r#"prices: [{model: "x"}]"#, "pricing.prices[0].input"),
        (
            r#"prices: [{model: "x", input: 1, hours: "25:00-26:00"}]"#,
            "pricing.prices[0].hours",
        ),
        (
            r#"prices: [{model: "x", input: 1, weekdays: "fri-mon"}]"#,
            "pricing.prices[0].weekdays",
        ),
        (
            r#"prices: [{model: "x", input: 1, from: "soon"}]"#,
            "pricing.prices[0].from",
        ),
        (
            r#"prices: [{model: "~(", input: 1}]"#,
            "pricing.prices[0].model",
        ),
    ] {
        let section: PricingSection = serde_yaml::from_str(yaml).unwrap();
        let (f, _) = PriceBook::build(&section).unwrap_err();
        assert_eq!(f, field, "{yaml}");
    }
}

#[test]
fn exact_decimals() {
    assert_eq!(decimal(0), "0");
    assert_eq!(decimal(PICO), "1");
    assert_eq!(decimal(1), "0.000000000001");
    assert_eq!(decimal(PICO + PICO / 4), "1.25");
}

#[test]
fn what_the_client_is_told() {
    let b = book(BOOK, false);
    let at = wed(12, 0);
    // Nothing used: nothing to price (no header, no `cost` in the access log).
    let none = usage(0, 0, 0, 0, 0);
    assert_eq!(b.priced("x", "openai", "gpt-4o", &none, at), None);
    // Used tokens without a price: unpriced, never 0.
    let used = usage(1000, 0, 0, 100, 0);
    let unpriced = b.priced("x", "openai", "unknown-model", &used, at);
    assert_eq!(unpriced, Some(None));
    assert_eq!(shown(None), "unpriced");
    let cost = b
        .priced("x", "openai", "gpt-4o", &used, at)
        .flatten()
        .unwrap();
    // 1000 × 2.50/M + 100 × 10/M = 0.0035.
    assert_eq!(shown(Some(cost)), "0.0035 USD");
    let cny = b
        .priced("qwen-cn", "qwen", "qwen-plus", &used, at)
        .flatten()
        .unwrap();
    // 1000 × 0.8/M + 100 × 2/M + 0.001 per request.
    assert_eq!(shown(Some(cny)), "0.002 CNY");
    let settings: PricingSection = serde_yaml::from_str("prices: []").unwrap();
    assert!(!settings.cost_header(), "off unless asked");
}

/// Media answers are priced per unit: images, audio by the millisecond at a per-minute price,
/// characters per million, search units per thousand; tokens a media answer reports are
/// priced as tokens on top.
#[test]
fn media_units_are_priced_exactly() {
    let b = book(
        r#"
prices:
  - {provider_type: openai, model: dall-e-3, image: 0.04}
  - {provider_type: openai, model: whisper-1, audio_minute: 0.006}
  - {provider_type: openai, model: tts-1, characters: 15}
  - {provider_type: openai, model: "rerank-*", search_units: 2, input: 0.1}
"#,
        false,
    );
    let cost = |model: &str, units: crate::usage::Units, input: u64| {
        let u = Usage {
            input_tokens: input,
            units,
            ..usage(0, 0, 0, 0, 0)
        };
        b.priced("p", "openai", model, &u, wed(12, 0))
            .flatten()
            .map(|c| c.decimal())
    };
    use crate::usage::Units;
    let n = |f: fn(&mut Units)| {
        let mut u = Units::NONE;
        f(&mut u);
        u
    };
    assert_eq!(
        cost("dall-e-3", n(|u| u.images = 3), 0).as_deref(),
        Some("0.12")
    );
    // 197 s at $0.006 a minute; 1 ms is 1e-7 USD.
    assert_eq!(
        cost("whisper-1", n(|u| u.audio_ms = 197_000), 0).as_deref(),
        Some("0.0197")
    );
    assert_eq!(
        cost("whisper-1", n(|u| u.audio_ms = 1), 0).as_deref(),
        Some("0.0000001")
    );
    assert_eq!(
        cost("tts-1", n(|u| u.characters = 18), 0).as_deref(),
        Some("0.00027")
    );
    assert_eq!(
        cost("rerank-v3.5", n(|u| u.search_units = 1), 1_000_000).as_deref(),
        Some("0.102")
    );
    // Nothing used: nothing to price; a unit without a price: unpriced.
    let none = usage(0, 0, 0, 0, 0);
    assert_eq!(b.priced("p", "openai", "dall-e-3", &none, wed(12, 0)), None);
    let images = Usage {
        units: n(|u| u.images = 1),
        ..none
    };
    assert_eq!(
        b.priced("p", "openai", "dall-e-9", &images, wed(12, 0)),
        Some(None)
    );
    // A unit price alone makes an entry; a negative one is refused, naming the field.
    let mut section: PricingSection =
        serde_yaml::from_str("prices: [{model: x, audio_minute: -1}]").unwrap();
    section.defaults = Some(false);
    let err = PriceBook::build(&section).unwrap_err();
    assert_eq!(err.0, "pricing.prices[0].audio_minute");
}
