//! The sender: claims due deliveries from the outbox and POSTs them.
//!
//! Each claim reserves its deliveries for `webhooks.lease`, so deliveries claimed by
//! a sender that died are claimed again once the lease runs out. Concurrency is
//! bounded twice: `max_in_flight` in all, and `max_in_flight_per_target` to one
//! subscription (or Pusher webhook URL), which is left out of claims while it is at
//! its bound; so a receiver that never answers holds only its own slots, never the
//! others'. Claims take first attempts before retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tracing::{Instrument, debug, debug_span, warn};

use super::model::{Attempt, Delivery, DeliveryKind, Subscription};
use super::schedule::{RetrySchedule, retry_after};
use super::signing::{pusher_signature, standard_signatures};
use super::target::TargetPolicy;
use crate::config::WebhooksConfig;
use crate::hub::Frame;
use crate::protocol::{ChannelName, frame};
use crate::state::Shared;
use crate::store::{AttemptOutcome, Health, Outbox, StoreError};

/// How often an idle sender looks for deliveries that came due.
const POLL: Duration = Duration::from_millis(250);

/// Most bytes of a receiver's answer that are kept.
const RESPONSE_EXCERPT: usize = 4096;

/// The sending side of delivery, shared by the sender loop and the API.
#[derive(Debug)]
pub struct Sender {
    outbox: Arc<dyn Outbox>,
    client: reqwest::Client,
    policy: TargetPolicy,
    schedule: RetrySchedule,
    config: WebhooksConfig,
    /// Deliveries in flight, in all.
    slots: Arc<Semaphore>,
    /// Deliveries in flight per target.
    per_target: Mutex<HashMap<String, usize>>,
    /// Rung when a delivery is written, so it goes out without waiting for a poll.
    wake: Notify,
}

impl Sender {
    /// A sender over `outbox`, configured by `[webhooks]`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(outbox: Arc<dyn Outbox>, config: &WebhooksConfig) -> Result<Sender, reqwest::Error> {
        let policy = TargetPolicy::new(config.allow_cidrs.clone());
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the callback's host itself, past the policy.
            .no_proxy()
            .dns_resolver(policy.resolver())
            .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            outbox,
            client,
            policy,
            schedule: RetrySchedule::new(config),
            config: config.clone(),
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            per_target: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    /// Where callbacks may go.
    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// Tells the sender that deliveries were written.
    pub fn deliveries_written(&self) {
        self.wake.notify_one();
    }

    fn targets(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Never held across an await or code that can panic.
        self.per_target
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Targets at their in-flight bound, to leave out of the next claim.
    fn busy(&self) -> Vec<String> {
        let limit = self.config.max_in_flight_per_target;
        let targets = self.targets();
        targets
            .iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Takes a slot of the delivery's target, if it has one free.
    fn enter(&self, target: &str) -> bool {
        let mut targets = self.targets();
        let count = targets.entry(target.to_owned()).or_default();
        if *count >= self.config.max_in_flight_per_target {
            return false;
        }
        *count += 1;
        true
    }

    fn leave(&self, target: &str) {
        let mut targets = self.targets();
        if let Some(count) = targets.get_mut(target) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                targets.remove(target);
            }
        }
    }
}

/// The concurrency key of a delivery; the same rule as the store's `target` column.
fn target_of(delivery: &Delivery) -> String {
    delivery
        .subscription_id
        .map_or_else(|| format!("url:{}", delivery.url), |id| id.to_string())
}

/// Starts the sender loop: leases from a previous process are forgotten first (a
/// single node holds no other), then due deliveries are claimed until shutdown.
pub async fn spawn_sender(shared: &Arc<Shared>) {
    if let Err(error) = shared.delivery.outbox.clear_leases().await {
        warn!(%error, "cannot clear old delivery leases; they expire on their own");
    }
    let span = debug_span!("sender");
    shared
        .tracker
        .spawn(work(Arc::clone(shared)).instrument(span));
}

async fn work(shared: Arc<Shared>) {
    let sender = &shared.delivery;
    let shutdown = shared.shutdown.clone();
    loop {
        // Wait for a free slot before claiming, so claims never outrun sending.
        let first = tokio::select! {
            slot = Arc::clone(&sender.slots).acquire_owned() => slot,
            () = shutdown.cancelled() => return,
        };
        let Ok(first) = first else { return };
        let limit = u32::try_from(sender.slots.available_permits() + 1).unwrap_or(1);
        let lease_until =
            Utc::now() + chrono::Duration::from_std(sender.config.lease).unwrap_or_default();

        let claimed = match sender
            .outbox
            .claim(&sender.busy(), limit, lease_until)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%error, "cannot claim deliveries; trying again shortly");
                drop(first);
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if claimed.is_empty() {
            drop(first);
            tokio::select! {
                () = sender.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        }

        let mut first = Some(first);
        for delivery in claimed {
            let slot = first
                .take()
                .or_else(|| Arc::clone(&sender.slots).try_acquire_owned().ok());
            let target = target_of(&delivery);
            let (Some(slot), true) = (slot, sender.enter(&target)) else {
                let _ = sender.outbox.release(&delivery.id).await;
                continue;
            };
            let span = debug_span!("delivery", id = %delivery.id, attempt = delivery.attempts + 1);
            let task_shared = Arc::clone(&shared);
            let task = async move {
                if let Err(error) = send(&task_shared, &delivery).await {
                    // The lease runs out and the delivery is claimed again.
                    warn!(%error, "cannot record a delivery attempt");
                }
                task_shared.delivery.leave(&target);
                drop(slot);
                task_shared.delivery.wake.notify_one();
            };
            shared.tracker.spawn(task.instrument(span));
        }
    }
}

/// What one attempt came to.
struct Sent {
    attempt: Attempt,
    delivered: bool,
    gone: bool,
    retry_after: Option<Duration>,
}

/// Makes one attempt and records it.
async fn send(shared: &Shared, delivery: &Delivery) -> Result<(), StoreError> {
    let sender = &shared.delivery;
    let subscription = match delivery.subscription_id {
        Some(id) => match sender.outbox.subscription(&delivery.app_id, id).await? {
            Some(subscription) if subscription.enabled => Some(subscription),
            other => {
                let why = if other.is_some() {
                    "subscription disabled"
                } else {
                    "subscription deleted"
                };
                return give_up(sender, delivery, why).await;
            }
        },
        None => None,
    };

    let sent = attempt(shared, delivery, subscription.as_ref()).await;
    let outcome = if sent.delivered {
        AttemptOutcome::Succeeded
    } else if sent.gone {
        AttemptOutcome::Dead
    } else {
        match sender
            .schedule
            .wait_after(delivery.attempts + 1, sent.retry_after)
        {
            Some(wait) => AttemptOutcome::RetryAt(
                Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            ),
            None => AttemptOutcome::Dead,
        }
    };
    let (status, error) = (sent.attempt.status_code, &sent.attempt.error);
    debug!(?status, ?error, ?outcome, "attempt made");
    if outcome == AttemptOutcome::Dead && !sent.delivered {
        warn!(url = %delivery.url, error = ?sent.attempt.error, "delivery gave up");
    }
    sender
        .outbox
        .record_attempt(&delivery.id, &sent.attempt, outcome)
        .await?;

    if let Some(subscription) = subscription {
        let disable_after = sender.config.disable_after;
        let (health, now) = sender
            .outbox
            .record_health(subscription.id, sent.delivered, sent.gone, disable_after)
            .await?;
        announce(shared, &subscription, health, now.as_ref());
    }
    Ok(())
}

/// Marks a delivery dead without an attempt.
async fn give_up(sender: &Sender, delivery: &Delivery, why: &str) -> Result<(), StoreError> {
    let attempt = Attempt {
        at: Utc::now(),
        duration_ms: 0,
        status_code: None,
        response: None,
        error: Some(why.to_owned()),
    };
    sender
        .outbox
        .record_attempt(&delivery.id, &attempt, AttemptOutcome::Dead)
        .await
}

/// POSTs the delivery once, signed for its kind.
async fn attempt(
    shared: &Shared,
    delivery: &Delivery,
    subscription: Option<&Subscription>,
) -> Sent {
    let sender = &shared.delivery;
    let at = Utc::now();
    let started = Instant::now();
    let failed = |error: String| Sent {
        attempt: Attempt {
            at,
            duration_ms: 0,
            status_code: None,
            response: None,
            error: Some(error),
        },
        delivered: false,
        gone: false,
        retry_after: None,
    };

    // The URL is checked again at send time: reqwest does not resolve IP literals
    // through the policy's resolver, and the allow-list may have changed since.
    // A subscription's deliveries follow it when its URL changes.
    let target = subscription.map_or(delivery.url.as_str(), |s| s.callback_url.as_str());
    let url = match sender.policy.check_url(target) {
        Ok(url) => url,
        Err(error) => return failed(format!("target refused: {error}")),
    };
    let request = match signed(shared, sender.client.post(url), delivery, subscription) {
        Some(request) => request,
        None => return failed("the delivery's app is no longer configured".into()),
    };

    let response = match request.body(delivery.body.clone()).send().await {
        Ok(response) => response,
        Err(error) => {
            let mut sent = failed(describe(&error));
            sent.attempt.duration_ms = elapsed_ms(started);
            return sent;
        }
    };
    let status = response.status();
    let hint = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, Utc::now()))
        .filter(|_| matches!(status.as_u16(), 429 | 503));
    let excerpt = excerpt(response).await;
    let delivered = status.is_success();
    Sent {
        attempt: Attempt {
            at,
            duration_ms: elapsed_ms(started),
            status_code: Some(status.as_u16()),
            response: Some(excerpt),
            error: (!delivered).then(|| format!("receiver answered {status}")),
        },
        delivered,
        gone: status == reqwest::StatusCode::GONE,
        retry_after: hint,
    }
}

/// Adds the headers of the delivery's kind. `None` when its app is gone.
fn signed(
    shared: &Shared,
    request: reqwest::RequestBuilder,
    delivery: &Delivery,
    subscription: Option<&Subscription>,
) -> Option<reqwest::RequestBuilder> {
    let request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
    match (delivery.kind, subscription) {
        (DeliveryKind::Standard, Some(subscription)) => {
            let timestamp = Utc::now().timestamp();
            let mut secrets = vec![subscription.secret.as_str()];
            let grace = subscription
                .previous_until
                .is_some_and(|until| until > Utc::now());
            if let (true, Some(previous)) = (grace, &subscription.previous_secret) {
                secrets.push(previous);
            }
            let signature = standard_signatures(&secrets, &delivery.id, timestamp, &delivery.body);
            Some(
                request
                    .header("webhook-id", &delivery.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature),
            )
        }
        (DeliveryKind::Pusher, _) => {
            let app = shared.apps.by_id(&delivery.app_id)?;
            let signature = pusher_signature(&app.config.secret, &delivery.body);
            Some(
                request
                    .header("X-Pusher-Key", &app.config.key)
                    .header("X-Pusher-Signature", signature),
            )
        }
        (DeliveryKind::Standard, None) => None,
    }
}

/// The first 4 KiB of an answer, read without waiting for more.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(RESPONSE_EXCERPT);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A transport error in words, with its cause: a refused target says which address.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Pushes a subscription's change of health on its app's operations channel.
fn announce(
    shared: &Shared,
    subscription: &Subscription,
    health: Health,
    now: Option<&Subscription>,
) {
    let event = match health {
        Health::Unchanged => return,
        Health::Failing => "subscription.failing",
        Health::Disabled => "subscription.disabled",
        Health::Recovered => "subscription.recovered",
    };
    let Ok(channel) = ChannelName::parse(&shared.config.webhooks.operations_channel) else {
        return;
    };
    let data = json!({
        "subscriptionId": subscription.id,
        "eventType": subscription.event_type,
        "callbackUrl": subscription.callback_url,
        "reason": now.and_then(|s| s.disabled_reason.clone()),
        "failingSince": now.and_then(|s| s.failing_since),
        "at": Utc::now(),
    });
    let text = frame::channel_event(channel.as_str(), event, &data.to_string(), None);
    let app: Arc<str> = subscription.app_id.as_str().into();
    shared.hub.publish(&app, &channel, &Frame::from(text), None);
}
