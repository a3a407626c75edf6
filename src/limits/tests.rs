use super::*;

fn who<'a>(h: &'a HeaderMap, consumer: Option<&'a str>) -> Who<'a> {
    Who {
        route: "r",
        consumer,
        ip: None,
        headers: h,
        provider_key: None,
    }
}

fn demand(prompt: u64) -> Demand {
    Demand {
        prompt,
        max_tokens: 0,
    }
}

fn rule(key: KeyBy, window: Window, limits: &[(Measure, u64)]) -> Limits {
    Limits {
        rules: vec![Rule::new("r1".into(), key, window, limits, false, vec![])],
    }
}

#[tokio::test]
async fn reserve_then_reconcile_bounds_the_overshoot() {
    let stores = Stores::default();
    let limits = rule(
        KeyBy::Consumer(vec![]),
        Window::Minute,
        &[(Measure::Tokens, 1000)],
    );
    let h = HeaderMap::new();
    let mut admitted = 0;
    for _ in 0..20 {
        if limits
            .admit(&stores, &who(&h, Some("a")), demand(100))
            .await
            .is_ok()
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "exactly the budget is reserved");
    let Err(Refusal::Limited(err)) = limits
        .admit(&stores, &who(&h, Some("a")), demand(100))
        .await
    else {
        panic!("expected a refusal")
    };
    assert_eq!(err.rule, "r1");
    assert!(err.retry_after <= Duration::from_secs(60));
    // Another consumer has its own budget; anonymous requests are not counted.
    assert!(limits
        .admit(&stores, &who(&h, Some("b")), demand(100))
        .await
        .is_ok());
    assert!(limits
        .admit(&stores, &who(&h, None), demand(5000))
        .await
        .is_ok());

    // Reconcile: the real usage was lower, so budget comes back.
    let limits = rule(
        KeyBy::Consumer(vec![]),
        Window::Minute,
        &[(Measure::Tokens, 1000), (Measure::Requests, 100)],
    );
    let (holds, headroom) = limits
        .admit(&stores, &who(&h, Some("a")), demand(900))
        .await
        .unwrap();
    assert_eq!(headroom.limit_tokens.unwrap().1, 100);
    assert_eq!(headroom.limit_requests.unwrap().1, 99);
    assert!(limits
        .admit(&stores, &who(&h, Some("a")), demand(200))
        .await
        .is_err());
    limits
        .reconcile(
            &stores,
            &holds,
            Used {
                input: 60,
                output: 40,
            },
        )
        .await;
    assert!(limits
        .admit(&stores, &who(&h, Some("a")), demand(200))
        .await
        .is_ok());
}

#[tokio::test]
async fn an_in_memory_refund_goes_only_to_the_window_it_was_reserved_in() {
    let stores = Stores::default();
    let h = HeaderMap::new();
    let used = Used {
        input: 50,
        output: 50,
    };
    for flipped in [false, true] {
        let limits = rule(
            KeyBy::Consumer(vec![]),
            Window::Minute,
            &[(Measure::Tokens, 1000)],
        );
        let (mut holds, _) = limits
            .admit(&stores, &who(&h, Some("a")), demand(900))
            .await
            .unwrap();
        assert_eq!(holds.len(), 1);
        if flipped {
            // As if the window had turned since the reservation was made.
            holds[0].start -= 60_000;
        }
        limits.reconcile(&stores, &holds, used).await;
        let next = limits
            .admit(&stores, &who(&h, Some("a")), demand(200))
            .await;
        assert_eq!(
            next.is_ok(),
            !flipped,
            "refunded only in the same window (flipped: {flipped})"
        );
    }
}

#[tokio::test]
async fn input_and_output_limits_apply_separately() {
    let stores = Stores::default();
    let limits = rule(
        KeyBy::Route,
        Window::Minute,
        &[(Measure::InputTokens, 100), (Measure::OutputTokens, 50)],
    );
    let h = HeaderMap::new();
    let (holds, _) = limits
        .admit(&stores, &who(&h, None), demand(10))
        .await
        .unwrap();
    // The output budget is spent after the fact; the next request is refused on it.
    limits
        .reconcile(
            &stores,
            &holds,
            Used {
                input: 10,
                output: 50,
            },
        )
        .await;
    match limits.admit(&stores, &who(&h, None), demand(10)).await {
        Err(Refusal::Limited(l)) => assert_eq!(l.what, "output_tokens"),
        other => panic!("expected output_tokens refusal, got {other:?}"),
    }
    // A too-large prompt is refused on input.
    let limits = rule(KeyBy::Route, Window::Minute, &[(Measure::InputTokens, 100)]);
    match limits.admit(&stores, &who(&h, None), demand(101)).await {
        Err(Refusal::Limited(l)) => assert_eq!(l.what, "input_tokens"),
        other => panic!("expected input_tokens refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn header_values_counted_separately() {
    let stores = Stores::default();
    let name = http::HeaderName::from_static("x-user");
    let limits = rule(
        KeyBy::Header(name, vec!["*".into()]),
        Window::Minute,
        &[(Measure::Requests, 2)],
    );
    let mut a = HeaderMap::new();
    a.insert("x-user", "a".parse().unwrap());
    let mut b = HeaderMap::new();
    b.insert("x-user", "b".parse().unwrap());
    assert!(limits
        .admit(&stores, &who(&a, None), demand(0))
        .await
        .is_ok());
    assert!(limits
        .admit(&stores, &who(&a, None), demand(0))
        .await
        .is_ok());
    assert!(limits
        .admit(&stores, &who(&a, None), demand(0))
        .await
        .is_err());
    assert!(limits
        .admit(&stores, &who(&b, None), demand(0))
        .await
        .is_ok());
    let none = HeaderMap::new();
    assert!(
        limits
            .admit(&stores, &who(&none, None), demand(0))
            .await
            .is_ok(),
        "rule does not apply without the header"
    );
}

#[tokio::test]
async fn ip_cidr_and_provider_key_rules() {
    let stores = Stores::default();
    let h = HeaderMap::new();
    let net: IpNet = "10.0.0.0/8".parse().unwrap();
    let at = |ip: &str| Who {
        route: "r",
        consumer: None,
        ip: Some(ip.parse().unwrap()),
        headers: &h,
        provider_key: None,
    };
    // One budget for the whole block; addresses outside it are not counted.
    let block = rule(
        KeyBy::Cidr(vec![net]),
        Window::Minute,
        &[(Measure::Requests, 2)],
    );
    assert!(block
        .admit(&stores, &at("10.1.1.1"), demand(0))
        .await
        .is_ok());
    assert!(block
        .admit(&stores, &at("10.2.2.2"), demand(0))
        .await
        .is_ok());
    assert!(block
        .admit(&stores, &at("10.3.3.3"), demand(0))
        .await
        .is_err());
    assert!(block
        .admit(&stores, &at("192.168.1.1"), demand(0))
        .await
        .is_ok());
    assert!(block
        .admit(&stores, &at("192.168.1.1"), demand(0))
        .await
        .is_ok());
    assert!(block
        .admit(&stores, &at("192.168.1.1"), demand(0))
        .await
        .is_ok());
    // Each address alone.
    let each = rule(
        KeyBy::Ip(vec![net]),
        Window::Minute,
        &[(Measure::Requests, 1)],
    );
    assert!(each
        .admit(&stores, &at("10.1.1.1"), demand(0))
        .await
        .is_ok());
    assert!(each
        .admit(&stores, &at("10.1.1.1"), demand(0))
        .await
        .is_err());
    assert!(each
        .admit(&stores, &at("10.2.2.2"), demand(0))
        .await
        .is_ok());
    // Provider-key rules apply only to per-attempt checks, and nothing else does then.
    let keys = rule(
        KeyBy::ProviderKey,
        Window::Minute,
        &[(Measure::Requests, 1)],
    );
    let attempt = |k: &'static str| Who {
        route: "r",
        consumer: Some("c"),
        ip: None,
        headers: &h,
        provider_key: Some(k),
    };
    assert!(keys
        .admit(&stores, &who(&h, None), demand(0))
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(keys
        .admit(&stores, &attempt("p/k1"), demand(0))
        .await
        .is_ok());
    assert!(keys
        .admit(&stores, &attempt("p/k1"), demand(0))
        .await
        .is_err());
    assert!(keys
        .admit(&stores, &attempt("p/k2"), demand(0))
        .await
        .is_ok());
    let consumer = rule(
        KeyBy::Consumer(vec![]),
        Window::Minute,
        &[(Measure::Requests, 1)],
    );
    assert!(consumer
        .admit(&stores, &attempt("p/k1"), demand(0))
        .await
        .unwrap()
        .0
        .is_empty());
}

#[tokio::test]
async fn a_consumer_rule_with_values_limits_only_those_consumers() {
    let stores = Stores::default();
    let limits = rule(
        KeyBy::Consumer(vec!["bob".into()]),
        Window::Minute,
        &[(Measure::Requests, 1)],
    );
    let h = HeaderMap::new();
    for _ in 0..3 {
        assert!(limits
            .admit(&stores, &who(&h, Some("alice")), demand(0))
            .await
            .is_ok());
    }
    assert!(limits
        .admit(&stores, &who(&h, Some("bob")), demand(0))
        .await
        .is_ok());
    assert!(limits
        .admit(&stores, &who(&h, Some("bob")), demand(0))
        .await
        .is_err());
}
