//! The store: the source of truth for jobs and their history. One trait, so that
//! the SQLite store of a single node and a PostgreSQL store for several nodes are
//! interchangeable; SQLite is the one built so far.

mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use sqlite::SqliteStore;

use crate::jobs::{Job, JobFilter, JobStatus, NewJob, Progress, Step, WebhookResult};

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied at start-up.
    #[error("database migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be read back.
    #[error("stored job {id} is unreadable: {reason}")]
    Corrupt {
        /// The job.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What inserting a job did.
#[derive(Debug)]
pub enum Inserted {
    /// The job is new.
    New(Job),
    /// A job with the same idempotency key exists; here it is, with the digest of the
    /// request that created it.
    Existing(Job, Option<String>),
}

/// What cancelling a job did.
#[derive(Debug)]
pub enum Cancelled {
    /// It was queued or running and is now cancelled.
    Now(Job),
    /// It had already ended.
    AlreadyFinal(Job),
    /// No such job.
    NotFound,
}

/// Durable storage of jobs.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Inserts a queued job, unless its idempotency key is taken.
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, StoreError>;

    /// One job of an app.
    async fn job(&self, app_id: &str, id: Uuid) -> Result<Option<Job>, StoreError>;

    /// An app's jobs, newest first, filtered and paged.
    async fn jobs(&self, app_id: &str, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;

    /// A job's recorded steps, oldest first.
    async fn steps(&self, id: Uuid) -> Result<Vec<Step>, StoreError>;

    /// Takes the oldest due queued job of an event type and marks it started.
    async fn claim(&self, app_id: &str, event_type: &str) -> Result<Option<Job>, StoreError>;

    /// Records a progress report of a running job.
    async fn record_progress(&self, id: Uuid, progress: &Progress) -> Result<(), StoreError>;

    /// Puts a running job back in the queue, to run again at `run_at`. False when
    /// it is no longer running (it was cancelled).
    async fn retry_at(
        &self,
        id: Uuid,
        error: &str,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Ends a running job with its outcome. `None` when it is no longer running.
    async fn finish(
        &self,
        id: Uuid,
        status: JobStatus,
        result: &WebhookResult,
        error: Option<&str>,
    ) -> Result<Option<Job>, StoreError>;

    /// Cancels a job that has not ended.
    async fn cancel(&self, app_id: &str, id: Uuid) -> Result<Cancelled, StoreError>;

    /// Puts back in the queue every job left running by a process that stopped,
    /// so that it runs again. Returns how many there were.
    async fn requeue_interrupted(&self) -> Result<u64, StoreError>;

    /// Jobs that ended since `since` and have a channel, oldest first.
    async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Job>, StoreError>;
}
