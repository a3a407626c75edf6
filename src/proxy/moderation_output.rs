//! Output moderation at work (`routes[].moderation.output`): one request's check of its
//! answer, window by window (`crate::policy::moderation_output`), made like the input's
//! check (a loopback `/moderations` request or the hook) and recorded as
//! `moderation_output:passed|flagged|failed_open|failed_closed`.

use super::loopback::{Asked, Origin};
use crate::error::GatewayError;
use crate::policy::moderation::{self, Moderation};
use crate::policy::text::Shape;
use crate::policy::Action;
use crate::route::Endpoint;
use crate::runtime::Gateway;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One request's output moderation.
pub struct OutputCheck {
    config: Arc<Gateway>,
    route: usize,
    consumer: Option<String>,
    host: String,
    pub shape: Shape,
    pub window: usize,
    /// passed, flagged, failed_open, failed_closed.
    seen: [AtomicBool; 4],
}

const ACTIONS: [&str; 4] = ["passed", "flagged", "failed_open", "failed_closed"];

impl OutputCheck {
    /// The request's output moderation; `None` when its route has no `moderation.output`
    /// or the endpoint has no answer text.
    pub fn new(
        asked: &Asked<'_>,
        config: &Arc<Gateway>,
        route: usize,
        endpoint: Endpoint,
    ) -> Option<Self> {
        let shape = match endpoint {
            Endpoint::ChatCompletions => Shape::Chat,
            Endpoint::Completions => Shape::Completions,
            Endpoint::Messages => Shape::Messages,
            _ => return None,
        };
        let m = config.prompts.moderation.get(route)?.as_ref()?;
        let window = m.output_window?;
        Some(OutputCheck {
            config: config.clone(),
            route,
            consumer: asked.consumer.map(str::to_string),
            host: asked.origin().host.to_string(),
            shape,
            window,
            seen: Default::default(),
        })
    }

    fn moderation(&self) -> Option<&Moderation> {
        self.config.prompts.moderation.get(self.route)?.as_ref()
    }

    fn saw(&self, i: usize) {
        self.seen[i].store(true, Ordering::Relaxed);
    }

    /// Check a window's texts: `Err` is what stops the answer (flagged, or a failed check
    /// that fails closed).
    pub async fn check(&self, texts: &[String]) -> Result<(), GatewayError> {
        let (Some(m), Some(route)) = (self.moderation(), self.config.routes.get(self.route)) else {
            return Ok(());
        };
        let origin = Origin {
            config: &self.config,
            route,
            consumer: self.consumer.as_deref(),
            host: &self.host,
        };
        match super::prompts::check(&origin, m, texts).await {
            Ok(v) if v.flagged => {
                self.saw(1);
                Err(GatewayError::ContentPolicy(format!(
                    "The answer was stopped by this route's content policy (flagged: {}).",
                    super::prompts::shown(&v)
                )))
            }
            Ok(_) => {
                self.saw(0);
                Ok(())
            }
            Err(e) => {
                moderation::failed(&route.name, &e, m.fail_closed);
                if m.fail_closed {
                    self.saw(3);
                    return Err(GatewayError::ModerationUnavailable(
                        "the moderation check of the answer failed".into(),
                    ));
                }
                self.saw(2);
                Ok(())
            }
        }
    }

    /// What the checks did, for `Exchange.policies`.
    pub fn actions(&self) -> Vec<Action> {
        ACTIONS
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| seen.load(Ordering::Relaxed))
            .map(|(a, _)| Action::new("moderation_output", a))
            .collect()
    }
}
