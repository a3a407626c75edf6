use super::state::{Budgets, Refused};
use super::*;
use crate::store::local::LocalStore;
use crate::store::Stores;
use std::time::Duration;

fn book(yaml: &str) -> BudgetBook {
    let sections: Vec<BudgetSection> = serde_yaml::from_str(yaml).unwrap();
    let teams = [("alice".to_string(), "research".to_string())].into();
    BudgetBook::build(&sections, teams, Some(7.2)).unwrap()
}

fn secs(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

const USD: i64 = PICO as i64;

fn local(dir: &tempfile::TempDir) -> Budgets {
    let store = LocalStore::open(&dir.path().join("store.db"), Duration::from_millis(5)).unwrap();
    Budgets::new(Arc::new(Stores {
        local: Some(store),
        ..Stores::default()
    }))
}

#[test]
fn who_each_budget_applies_to() {
    let b = book(
        "[{name: a, consumer: alice, amount: 1}, {name: each, consumer: '*', amount: 2},
          {name: t, team: research, amount: 3}, {name: r, route: chat, amount: 4},
          {name: k, key: 'openai/*', amount: 5}, {name: k1, key: deepseek/k1, amount: 6}]",
    );
    let names = |p: Payer<'_>| -> Vec<(String, String)> {
        b.applying(p)
            .into_iter()
            .map(|(b, s)| (b.name.clone(), s))
            .collect()
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        names(Payer {
            consumer: Some("alice"),
            route: "chat"
        }),
        [
            s("a", "alice"),
            s("each", "alice"),
            s("t", "research"),
            s("r", "chat")
        ]
    );
    assert_eq!(
        names(Payer {
            consumer: Some("bob"),
            route: "other"
        }),
        [s("each", "bob")]
    );
    let keys = |k: &str| -> Vec<String> {
        b.for_key(k)
            .into_iter()
            .map(|(b, _)| b.name.clone())
            .collect()
    };
    assert_eq!(keys("openai/k9"), ["k"]);
    assert_eq!(keys("deepseek/k1"), ["k1"]);
    assert!(keys("deepseek/k2").is_empty());
    assert_eq!(b.get("a").unwrap().limit, USD);
    assert!(b.has_key_budgets());
}

#[test]
fn bad_budgets_name_their_field() {
    let err = |yaml: &str| {
        let sections: Vec<BudgetSection> = serde_yaml::from_str(yaml).unwrap();
        BudgetBook::build(&sections, HashMap::new(), None)
            .unwrap_err()
            .0
    };
    assert_eq!(err("[{name: a, amount: 1}]"), "budgets[0] (a).consumer");
    assert_eq!(
        err("[{name: a, consumer: x, route: y, amount: 1}]"),
        "budgets[0] (a).consumer"
    );
    assert_eq!(
        err("[{name: a, consumer: x, amount: -1}]"),
        "budgets[0] (a).amount"
    );
    assert_eq!(
        err("[{name: a, key: nokey, amount: 1}]"),
        "budgets[0] (a).key"
    );
    assert_eq!(
        err("[{name: a, consumer: x, amount: 1, time_zone: Nowhere/City}]"),
        "budgets[0] (a).time_zone"
    );
    assert_eq!(
        err("[{name: a, consumer: x, amount: 1}, {name: a, consumer: y, amount: 1}]"),
        "budgets[1] (a).name"
    );
}

#[test]
fn conversion_and_reservation() {
    let b = book("[{name: cny, consumer: '*', amount: 100, currency: CNY}]");
    let usd = Cost {
        pico: 10 * USD as u64,
        currency: Currency::Usd,
    };
    assert_eq!(b.convert(usd, Currency::Cny), Some(72 * USD as u64));
    let cny = Cost {
        pico: 72 * USD as u64,
        currency: Currency::Cny,
    };
    assert_eq!(b.convert(cny, Currency::Usd), Some(10 * USD as u64));
    let none = BudgetBook::default();
    assert_eq!(none.convert(cny, Currency::Usd), None, "no rate: unpriced");
    let budget = b.get("cny").unwrap();
    assert_eq!(reservation(&b, &[usd, cny], budget), Some(72 * USD));
    assert_eq!(money(12 * USD + USD / 2), "12.50");
    assert_eq!(money(125 * USD / 1_000_000), "0.000125");
}

#[test]
fn the_dearest_target_sets_the_reservation() {
    let section: crate::settings::PricingSection = serde_yaml::from_str(
        "{defaults: false, prices: [
           {provider: cheap, model: '*', input: 1, output: 2},
           {provider: dear, model: '*', input: 3, output: 10, reasoning: 20}]}",
    )
    .unwrap();
    let prices = PriceBook::build(&section).unwrap();
    let t = |provider| Target {
        provider,
        kind: "openai",
        model: "m",
    };
    let cost = max_cost(&prices, &[t("cheap"), t("dear")], 1_000_000, 1_000_000, 0).unwrap();
    // 3 for the prompt, and the output at the reasoning rate (the dearer one).
    assert_eq!(cost[0].pico, 23 * PICO);
    assert!(max_cost(&prices, &[t("cheap"), t("nowhere")], 1, 1, 0).is_none());
}

#[tokio::test]
async fn spend_is_reserved_then_settled_and_refused_when_spent() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = local(&dir);
    let b = book("[{name: alice-monthly, consumer: alice, amount: 10, time_zone: Asia/Shanghai}]");
    let budget = b.get("alice-monthly").unwrap().clone();
    let now = secs("2026-01-15T00:00:00Z");
    let want = |n: i64| vec![(budget.clone(), "alice".to_string(), n)];
    let h = budgets.admit(&want(4 * USD), now).await.unwrap();
    let h2 = budgets.admit(&want(6 * USD), now).await.unwrap();
    // 10 reserved: nothing more fits.
    let refused = budgets.admit(&want(1), now).await.unwrap_err();
    assert!(matches!(refused, Refused::Spent { .. }));
    budgets.settle(&h[0], USD).await;
    budgets.settle(&h2[0], 2 * USD).await;
    let s = budgets.standing(&budget, "alice", now, None).await.unwrap();
    assert_eq!((s.spend.spent, s.reserved), (3 * USD, 0));
    // 7 left: a reservation of 7 fits, then nothing does.
    let h3 = budgets.admit(&want(7 * USD), now).await.unwrap();
    let Refused::Spent { resets, spent, .. } = budgets.admit(&want(1), now).await.unwrap_err()
    else {
        panic!("refused for its spend");
    };
    assert_eq!(spent, 3 * USD);
    assert_eq!(resets.as_deref(), Some("2026-02-01T00:00:00+08:00"));
    budgets.settle(&h3[0], 7 * USD).await;
    // A top-up makes room; a reset clears the spend.
    let s = budgets
        .standing(&budget, "alice", now, Some(Some(5 * USD)))
        .await
        .unwrap();
    assert_eq!((s.spend.spent, s.spend.topup), (10 * USD, 5 * USD));
    budgets.admit(&want(5 * USD), now).await.unwrap();
    let s = budgets
        .standing(&budget, "alice", now, Some(None))
        .await
        .unwrap();
    assert_eq!((s.spend.spent, s.spend.topup), (0, 5 * USD));
}

#[tokio::test]
async fn a_request_of_the_last_period_ending_late_leaves_the_new_one_intact() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = local(&dir);
    let b = book("[{name: m, consumer: alice, amount: 1, time_zone: Asia/Shanghai}]");
    let budget = b.get("m").unwrap().clone();
    let want = |n: i64| vec![(budget.clone(), "alice".to_string(), n)];
    let (before, after) = (secs("2026-01-31T15:59:59Z"), secs("2026-01-31T16:00:00Z"));
    let old = budgets.admit(&want(USD / 2), before).await.unwrap();
    let new = budgets.admit(&want(USD * 6 / 10), after).await.unwrap();
    // The January request ends in February.
    budgets.settle(&old[0], USD / 4).await;
    assert!(
        budgets.admit(&want(USD * 6 / 10), after).await.is_err(),
        "February's reservation is still counted"
    );
    budgets.settle(&new[0], USD / 10).await;
    let s = budgets
        .standing(&budget, "alice", after, None)
        .await
        .unwrap();
    assert_eq!((s.spend.spent, s.reserved), (USD / 10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_store_failed_to_commit_is_retried_and_counted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store.db"), Duration::from_millis(5)).unwrap();
    let budgets = Budgets::new(Arc::new(Stores {
        local: Some(store.clone()),
        ..Stores::default()
    }));
    let b = book("[{name: m, consumer: alice, amount: 1}]");
    let budget = b.get("m").unwrap().clone();
    let want = |n: i64| vec![(budget.clone(), "alice".to_string(), n)];
    let now = secs("2026-03-03T03:03:03Z");
    let h = budgets.admit(&want(USD * 6 / 10), now).await.unwrap();
    store.fail_writes(1);
    budgets.settle(&h[0], USD * 6 / 10).await;
    assert!(
        budgets.admit(&want(USD / 2), now).await.is_err(),
        "the failed charge is still counted"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let start = budget.periods.at(now).start;
    while budgets.pending("m", "alice", start) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the charge was retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = budgets.standing(&budget, "alice", now, None).await.unwrap();
    assert_eq!(s.spend.spent, USD * 6 / 10);
    assert!(budgets.admit(&want(USD * 4 / 10), now).await.is_ok());
}

#[tokio::test]
async fn a_monthly_budget_resets_at_the_anchor_in_its_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = local(&dir);
    let b = book("[{name: m, consumer: alice, amount: 1, time_zone: Asia/Shanghai}]");
    let budget = b.get("m").unwrap().clone();
    let want = vec![(budget.clone(), "alice".to_string(), USD)];
    // 23:59:59 on 31 January in Shanghai.
    let before = secs("2026-01-31T15:59:59Z");
    let h = budgets.admit(&want, before).await.unwrap();
    budgets.settle(&h[0], USD).await;
    assert!(budgets.admit(&want, before).await.is_err(), "spent");
    // One second later it is February there: a new period, nothing spent.
    let after = secs("2026-01-31T16:00:00Z");
    let h = budgets.admit(&want, after).await.unwrap();
    budgets.settle(&h[0], USD / 4).await;
    let rows = budgets.rows("m", Some("alice"), None, 10).await.unwrap();
    let periods: Vec<(i64, i64)> = rows.iter().map(|r| (r.1, r.2.spent)).collect();
    assert_eq!(
        periods,
        [
            (secs("2026-01-31T16:00:00Z"), USD / 4),
            (secs("2025-12-31T16:00:00Z"), USD)
        ]
    );
}

#[tokio::test]
async fn concurrent_requests_overspend_by_at_most_one_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = Arc::new(local(&dir));
    let b = book("[{name: b, route: chat, amount: 1}]");
    let budget = b.get("b").unwrap().clone();
    let now = secs("2026-03-03T03:03:03Z");
    let reserve = USD / 300;
    let mut tasks = Vec::new();
    for i in 0..500i64 {
        let (budgets, budget) = (budgets.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let want = vec![(budget, "chat".to_string(), reserve)];
            let Ok(h) = budgets.admit(&want, now).await else {
                return 0;
            };
            // Real costs vary below the reservation.
            let cost = reserve - i % 7;
            budgets.settle(&h[0], cost).await;
            cost
        }));
    }
    let mut charged = 0;
    for t in tasks {
        charged += t.await.unwrap();
    }
    let s = budgets.standing(&budget, "chat", now, None).await.unwrap();
    assert_eq!(
        s.spend.spent, charged,
        "the spend is the sum of the charges"
    );
    assert!(s.spend.spent <= USD + reserve, "{}", s.spend.spent);
    assert!(
        s.spend.spent > USD - reserve,
        "the budget was used: {}",
        s.spend.spent
    );
    assert_eq!(s.reserved, 0);
}

/// The API's standing never loses a charge between its release and its commit: spent plus
/// reserved covers every admitted request, and nothing reserved means everything is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_taken_while_requests_settle_misses_no_charge() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = Arc::new(local(&dir));
    let b = book("[{name: b, consumer: alice, amount: 100}]");
    let budget = b.get("b").unwrap().clone();
    let now = secs("2026-03-03T03:03:03Z");
    let (reserve, cost, n) = (USD, USD / 2, 20);
    let want = vec![(budget.clone(), "alice".to_string(), reserve)];
    let mut holds = Vec::new();
    for _ in 0..n {
        holds.extend(budgets.admit(&want, now).await.unwrap());
    }
    let settling: Vec<_> = holds
        .into_iter()
        .map(|h| {
            let budgets = budgets.clone();
            tokio::spawn(async move { budgets.settle(&h, cost).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = budgets.standing(&budget, "alice", now, None).await.unwrap();
        assert!(
            s.spend.spent + s.reserved >= n * cost,
            "spent {} + reserved {} lost a charge",
            s.spend.spent,
            s.reserved
        );
        if s.reserved == 0 {
            assert_eq!(s.spend.spent, n * cost);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never settled");
    }
    for t in settling {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn spend_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let b = book("[{name: life, consumer: alice, amount: 1, period: lifetime}]");
    let budget = b.get("life").unwrap().clone();
    let want = vec![(budget.clone(), "alice".to_string(), USD / 2)];
    {
        let budgets = local(&dir);
        let h = budgets.admit(&want, 1).await.unwrap();
        budgets.settle(&h[0], USD / 2).await;
    }
    let budgets = local(&dir);
    let s = budgets.standing(&budget, "alice", 99, None).await.unwrap();
    assert_eq!(s.spend.spent, USD / 2);
    assert_eq!(s.end, None);
}

#[tokio::test]
async fn soft_budgets_only_count() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = local(&dir);
    let b = book("[{name: s, consumer: alice, amount: 1, soft: true}]");
    let budget = b.get("s").unwrap().clone();
    let want = vec![(budget.clone(), "alice".to_string(), 5 * USD)];
    let h = budgets.admit(&want, 0).await.unwrap();
    assert_eq!(h[0].reserved, 0);
    budgets.settle(&h[0], 3 * USD).await;
    budgets.admit(&want, 0).await.unwrap();
    let s = budgets.standing(&budget, "alice", 0, None).await.unwrap();
    assert_eq!(s.spend.spent, 3 * USD);
}

#[tokio::test]
async fn a_failing_shared_store_never_refuses_for_a_soft_budget() {
    // Nothing listens on port 1: every call to the store fails at once.
    let redis = crate::store::redis::RedisStore::start(crate::store::redis::RedisSettings {
        url: "redis://127.0.0.1:1".into(),
        prefix: "tg".into(),
        timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let stores = Stores {
        local: None,
        redis: Some(redis),
        on_error: crate::store::OnError::Closed,
    };
    let budgets = Budgets::new(std::sync::Arc::new(stores));
    let b = book(
        "[{name: watch, consumer: alice, amount: 10, soft: true},
          {name: cap, consumer: alice, amount: 10}]",
    );
    let now = secs("2026-01-15T00:00:00Z");
    let want = |name: &str| (b.get(name).unwrap().clone(), "alice".to_string(), USD);
    let held = budgets.admit(&[want("watch")], now).await.unwrap();
    assert_eq!(held.len(), 1, "a soft budget only watches");
    let refused = budgets.admit(&[want("watch"), want("cap")], now).await;
    assert!(
        matches!(refused, Err(Refused::Store)),
        "a hard one fails closed"
    );
}
