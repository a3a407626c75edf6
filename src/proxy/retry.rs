//! The retry loop, apart from what an attempt is: an attempt order (any iterator of
//! choices), a budget (most attempts, and a deadline after which no new attempt starts), and
//! an `Attempter` that runs one attempt and says whether it delivered, failed in a way the
//! next choice may fix, or must stop the request.
//!
//! `KeyOrder` is the gateway's order: more keys of the current target up to `per_target`
//! (by default every usable key), then the next target.

use crate::route::Target;
use std::future::Future;
use std::time::{Duration, Instant};

/// How one attempt ended.
pub enum Step<A: Attempter + ?Sized> {
    /// It answered the client: no further attempt.
    Done(A::Done),
    /// It failed before anything reached the client: the next choice may answer.
    Failed(A::Failed),
    /// The request cannot go on (the client left, a response broke half-way, a store failed
    /// closed).
    Stop(A::Stop),
}

/// Runs one attempt for a choice.
pub trait Attempter {
    type Choice;
    type Done;
    type Failed;
    type Stop;
    /// Run the attempt for `choice`; `last` is the previous attempt's failure, if any.
    fn attempt(
        &mut self,
        choice: Self::Choice,
        last: Option<&Self::Failed>,
    ) -> impl Future<Output = Step<Self>> + Send;
}

/// Most attempts, and no new attempt after `deadline` (the first always starts).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub attempts: u32,
    pub deadline: Duration,
}

/// Why no attempt delivered.
pub enum GaveUp<F, S> {
    /// Every attempt failed (none at all when the order had no choice); in order.
    Exhausted(Vec<F>),
    Stopped(S),
}

/// Try choices from `order` until one delivers, the budget is spent, or one stops the request.
pub async fn run<A, O>(
    order: O,
    budget: Budget,
    attempter: &mut A,
) -> Result<A::Done, GaveUp<A::Failed, A::Stop>>
where
    A: Attempter,
    O: IntoIterator<Item = A::Choice>,
{
    let started = Instant::now();
    let mut order = order.into_iter();
    let mut failures: Vec<A::Failed> = Vec::new();
    let mut made = 0;
    while made < budget.attempts && (made == 0 || started.elapsed() < budget.deadline) {
        let Some(choice) = order.next() else { break };
        made += 1;
        match attempter.attempt(choice, failures.last()).await {
            Step::Done(done) => return Ok(done),
            Step::Failed(failed) => failures.push(failed),
            Step::Stop(stop) => return Err(GaveUp::Stopped(stop)),
        }
    }
    Err(GaveUp::Exhausted(failures))
}

/// The gateway's attempt order over a rule's targets (already in weighted order): more keys
/// of the current target up to `per_target`, then the next target; keys out of rotation
/// only with `try_anyway`. Yields `(target, key index)`.
pub struct KeyOrder<'a> {
    targets: &'a [&'a Target],
    tried: Vec<(usize, usize)>,
    target: usize,
    per_target: u32,
    try_anyway: bool,
}

impl<'a> KeyOrder<'a> {
    pub fn new(targets: &'a [&'a Target], per_target: u32, try_anyway: bool) -> Self {
        KeyOrder {
            targets,
            tried: Vec::new(),
            target: 0,
            per_target,
            try_anyway,
        }
    }
}

impl<'a> Iterator for KeyOrder<'a> {
    type Item = (&'a Target, usize);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(&target) = self.targets.get(self.target) {
            let t = self.target;
            let used: Vec<usize> = self
                .tried
                .iter()
                .filter(|(ti, _)| *ti == t)
                .map(|(_, k)| *k)
                .collect();
            if (used.len() as u32) < self.per_target {
                let keys = &target.provider.keys;
                let pick = keys
                    .pick(&used)
                    .or_else(|| self.try_anyway.then(|| keys.pick_any(&used)).flatten());
                if let Some(k) = pick {
                    self.tried.push((t, k));
                    return Some((target, k));
                }
            }
            self.target += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails the choices in `fail`, stops on `stop`, delivers anything else; records calls.
    struct Script {
        fail: Vec<u32>,
        stop: Option<u32>,
        calls: Vec<(u32, Option<u32>)>,
    }

    impl Attempter for Script {
        type Choice = u32;
        type Done = u32;
        type Failed = u32;
        type Stop = &'static str;
        async fn attempt(&mut self, choice: u32, last: Option<&u32>) -> Step<Self> {
            self.calls.push((choice, last.copied()));
            if self.stop == Some(choice) {
                Step::Stop("stopped")
            } else if self.fail.contains(&choice) {
                Step::Failed(choice)
            } else {
                Step::Done(choice)
            }
        }
    }

    fn script(fail: &[u32], stop: Option<u32>) -> Script {
        Script {
            fail: fail.to_vec(),
            stop,
            calls: Vec::new(),
        }
    }

    fn budget(attempts: u32) -> Budget {
        Budget {
            attempts,
            deadline: Duration::from_secs(60),
        }
    }

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_first_choice_that_delivers_ends_the_loop() {
        let mut s = script(&[1, 2], None);
        let r = block(run([1, 2, 3, 4], budget(10), &mut s));
        assert!(matches!(r, Ok(3)));
        assert_eq!(s.calls, [(1, None), (2, Some(1)), (3, Some(2))]);
    }

    #[test]
    fn the_budget_bounds_attempts_and_failures_come_back_in_order() {
        let mut s = script(&[1, 2, 3, 4], None);
        match block(run([1, 2, 3, 4], budget(3), &mut s)) {
            Err(GaveUp::Exhausted(f)) => assert_eq!(f, [1, 2, 3]),
            _ => panic!("expected exhausted"),
        }
        // An empty order gives up at once with no failure.
        let mut s = script(&[], None);
        assert!(matches!(
            block(run(Vec::<u32>::new(), budget(3), &mut s)),
            Err(GaveUp::Exhausted(f)) if f.is_empty()
        ));
    }

    #[test]
    fn a_stop_ends_the_loop_at_once() {
        let mut s = script(&[1], Some(2));
        assert!(matches!(
            block(run([1, 2, 3], budget(10), &mut s)),
            Err(GaveUp::Stopped("stopped"))
        ));
        assert_eq!(s.calls.len(), 2);
    }

    #[test]
    fn no_new_attempt_starts_after_the_deadline_but_the_first_always_does() {
        let mut s = script(&[1, 2], None);
        let zero = Budget {
            attempts: 10,
            deadline: Duration::ZERO,
        };
        assert!(matches!(
            block(run([1, 2, 3], zero, &mut s)),
            Err(GaveUp::Exhausted(f)) if f == [1]
        ));
    }

    const TWO_TARGETS: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
providers:
  - {name: a, type: openai-compatible, base_url: "http://127.0.0.1:1/v1", api_keys: ["a0", "a1", "a2"]}
  - {name: b, type: openai-compatible, base_url: "http://127.0.0.1:2/v1", api_keys: ["b0"]}
routes:
  - name: r
    models:
      - model: "*"
        targets: [{provider: a}, {provider: b, weight: 0}]
"#;

    fn names(order: KeyOrder<'_>) -> Vec<String> {
        order
            .map(|(t, k)| t.provider.keys.get(k).unwrap().name.clone())
            .collect()
    }

    #[test]
    fn key_order_tries_each_target_up_to_per_target_then_falls_back() {
        let gw = crate::runtime::parse(TWO_TARGETS, "t.yaml", None).unwrap();
        let rule = &gw.routes[0].rules[0];
        let targets = rule.attempt_order();
        let mut all = names(KeyOrder::new(&targets, u32::MAX, false));
        all[..3].sort();
        assert_eq!(all, ["a#0", "a#1", "a#2", "b#0"]);
        let one_each = names(KeyOrder::new(&targets, 1, false));
        assert_eq!(one_each.len(), 2);
        assert!(one_each[0].starts_with("a#") && one_each[1] == "b#0");
        // Keys out of rotation are skipped, unless `try_anyway`.
        let a = &gw.provider("a").unwrap();
        for key in a.keys.iter() {
            for _ in 0..a.health.policy.failure_threshold {
                key.report(crate::keys::KeyOutcome::Failure, &a.health.policy);
            }
        }
        assert_eq!(names(KeyOrder::new(&targets, u32::MAX, false)), ["b#0"]);
        assert_eq!(names(KeyOrder::new(&targets, u32::MAX, true)).len(), 4);
    }
}
