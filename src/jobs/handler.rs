//! The contract between the runner and a handler.

use std::sync::Arc;

use async_trait::async_trait;

use super::files::FileStore;
use super::{Job, Progress, WebhookResult};
use crate::config::EventTypeConfig;

/// Why an attempt did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The input can never succeed (a malformed payload): the job fails at once.
    #[error("{0}")]
    Invalid(String),
    /// This attempt failed but another may succeed (a worker down, a timeout).
    #[error("{0}")]
    Failed(String),
}

/// Receives a running job's progress reports: stores each and pushes it.
#[async_trait]
pub(crate) trait ProgressSink: Send + Sync {
    /// Records and announces one report.
    async fn report(&self, job: &Job, progress: Progress);
}

/// What a handler sees of the job it runs.
pub struct JobContext {
    /// The job, as claimed: payload, metadata, attempt number.
    pub job: Job,
    /// The event type's configuration.
    pub event_type: EventTypeConfig,
    /// Uploaded files.
    pub files: FileStore,
    /// An HTTP client for handlers that call out.
    pub http: reqwest::Client,
    /// Largest answer a worker may give, in bytes.
    pub max_result_size: usize,
    /// Where progress reports go.
    pub(super) progress: Arc<dyn ProgressSink>,
}

impl JobContext {
    /// Reports how far the job got: `fraction` from 0 to 1 (clamped) and a message.
    /// The report is stored and pushed on the job's channel as `job.progress`.
    pub async fn progress(&self, fraction: f64, message: impl Into<String>) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let progress = Progress {
            fraction,
            message: message.into(),
        };
        self.progress.report(&self.job, progress).await;
    }
}

/// Does the work of one event type. Handlers must be safe to run again on the same
/// job: a job whose process died mid-attempt is run again after a restart.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Runs one attempt.
    async fn handle(&self, job: &JobContext) -> Result<WebhookResult, HandlerError>;
}
