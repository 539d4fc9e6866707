//! What delivery keeps: subscriptions, deliveries in the outbox, and the attempts
//! made for each.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A callback URL subscribed to an event type (`*` for all) of one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription id.
    pub id: Uuid,
    /// The app it belongs to.
    #[serde(skip)]
    pub app_id: String,
    /// The event type, or `*`.
    pub event_type: String,
    /// Where results are POSTed.
    pub callback_url: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Disabled subscriptions get no deliveries.
    pub enabled: bool,
    /// Why it was disabled, when it was by Herald.
    pub disabled_reason: Option<String>,
    /// The signing secret, `whsec_` and base64.
    #[serde(skip)]
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    #[serde(skip)]
    pub previous_secret: Option<String>,
    /// When the previous secret stops signing.
    #[serde(skip)]
    pub previous_until: Option<DateTime<Utc>>,
    /// Since when every delivery has failed; `None` while deliveries succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What kind of request a delivery is, which decides how it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// A job result to a subscription, signed as Standard Webhooks.
    Standard,
    /// A batch of Pusher webhook events, signed as Pusher does.
    Pusher,
}

impl DeliveryKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Standard => "standard",
            DeliveryKind::Pusher => "pusher",
        }
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet attempted.
    Pending,
    /// Attempted and failed; another attempt is scheduled.
    Failed,
    /// A receiver answered 2xx.
    Succeeded,
    /// Every attempt failed, or its subscription went away; `retry` sends it again.
    Dead,
}

impl DeliveryStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Failed,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Dead,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// One message in the outbox: the same bytes on every attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `msg_…`, sent as `webhook-id`, the same on every attempt.
    pub id: String,
    /// The app it belongs to.
    #[serde(skip)]
    pub app_id: String,
    /// How it is signed.
    pub kind: DeliveryKind,
    /// The job whose result it carries.
    pub job_id: Option<Uuid>,
    /// The subscription it goes to (none for Pusher webhooks).
    pub subscription_id: Option<Uuid>,
    /// Where it goes.
    pub url: String,
    /// The body, serialized once.
    #[serde(skip)]
    pub body: String,
    /// Where it is in its life.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it succeeded or died.
    pub completed_at: Option<DateTime<Utc>>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When it started.
    pub at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// The first 4 KiB of the answer.
    pub response: Option<String>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
}

/// Filters of `GET /deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this job's.
    pub job_id: Option<Uuid>,
    /// Only this subscription's.
    pub subscription_id: Option<Uuid>,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
    /// Most to return.
    pub limit: u32,
}
