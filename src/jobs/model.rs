//! What a job is: its status, the event that created it, its progress and its
//! outcome, as stored and as shown by the API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for a worker (also between attempts).
    Queued,
    /// A worker is running it.
    Started,
    /// The handler succeeded.
    Completed,
    /// Every attempt failed, or the input cannot succeed.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Started,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether the job has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Whether a handler's work succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The work was done.
    Success,
    /// The work could not be done.
    Error,
}

/// The outcome of a job, as every delivery adapter carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookResult {
    /// Success or error.
    pub status: ResultStatus,
    /// A sentence for people.
    pub message: String,
    /// The handler's findings.
    pub data: Value,
}

impl WebhookResult {
    /// A successful result.
    pub fn success(message: impl Into<String>, data: Value) -> Self {
        WebhookResult {
            status: ResultStatus::Success,
            message: message.into(),
            data,
        }
    }

    /// A failed result.
    pub fn error(message: impl Into<String>) -> Self {
        WebhookResult {
            status: ResultStatus::Error,
            message: message.into(),
            data: Value::Null,
        }
    }
}

/// A handler's report of how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0 to 1.
    pub fraction: f64,
    /// What it is doing.
    pub message: String,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job id.
    pub id: Uuid,
    /// The app it belongs to.
    pub app_id: String,
    /// Its event type.
    pub event_type: String,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The channel its events are pushed to.
    pub channel: Option<String>,
    /// The callback URL named in the request, if any.
    pub callback_url: Option<String>,
    /// The event's payload.
    pub payload: Value,
    /// Free-form metadata, kept and echoed.
    pub metadata: Value,
    /// The outcome, once there is one.
    pub result: Option<WebhookResult>,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The last progress report.
    pub progress: Option<Progress>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id it gets.
    pub id: Uuid,
    /// The app it belongs to.
    pub app_id: String,
    /// Its event type.
    pub event_type: String,
    /// The channel its events are pushed to.
    pub channel: Option<String>,
    /// The callback URL named in the request.
    pub callback_url: Option<String>,
    /// The event's payload.
    pub payload: Value,
    /// Free-form metadata.
    pub metadata: Value,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<String>,
    /// A digest of the request, to tell a retry from a different request that
    /// reuses a key.
    pub request_digest: Option<String>,
}

/// One recorded step of a job's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `queued`, `started`, `progress`, `retrying`, `completed`, `failed`,
    /// `cancelled`.
    pub kind: String,
    /// For progress: the fraction done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// What happened, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Filters and paging of `GET /jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only jobs accepted at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs accepted before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this job (newest first): its creation time and id.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Most jobs to return.
    pub limit: u32,
}
