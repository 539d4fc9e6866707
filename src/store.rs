//! The store: the source of truth for jobs and their history, subscriptions, and
//! the outbox of deliveries. Two traits, so that the SQLite store of a single node
//! and the PostgreSQL store shared by several nodes are interchangeable.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use postgres::{PostgresStore, check_schema_name};
pub use sqlite::SqliteStore;

use crate::config::StoreConfig;
use crate::delivery::{Attempt, Delivery, DeliveryFilter, DeliveryKind, Subscription};
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

/// Opens the store `config` names: PostgreSQL when it has a `url`, else the SQLite
/// file at `path`. Both traits are served by the one database.
///
/// # Errors
///
/// When the database cannot be opened or migrated.
pub async fn open_store(
    config: &StoreConfig,
) -> Result<(Arc<dyn Store>, Arc<dyn Outbox>), StoreError> {
    match &config.url {
        Some(url) => {
            let store = Arc::new(PostgresStore::open(url, config.schema.as_deref()).await?);
            Ok((Arc::clone(&store) as Arc<dyn Store>, store))
        }
        None => {
            let store = Arc::new(SqliteStore::open(&config.path).await?);
            Ok((Arc::clone(&store) as Arc<dyn Store>, store))
        }
    }
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

    /// Takes the oldest due queued job of an event type and marks it started,
    /// reserved for `lease` (an attempt's timeout and some margin). A store shared by
    /// several nodes also takes started jobs whose lease ran out: their node died.
    async fn claim(
        &self,
        app_id: &str,
        event_type: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Job>, StoreError>;

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
    /// so that it runs again. Returns how many there were. A store shared by several
    /// nodes does nothing and returns 0: a running job may be another node's, and
    /// the jobs of a node that stopped are claimed again when their lease runs out.
    async fn requeue_interrupted(&self) -> Result<u64, StoreError>;

    /// Jobs that ended since `since` and have a channel, oldest first.
    async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Job>, StoreError>;
}

/// What a subscription's latest delivery changed about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing worth telling.
    Unchanged,
    /// It had been succeeding and now failed.
    Failing,
    /// It was disabled: failing for too long, or the receiver answered 410 Gone.
    Disabled,
    /// It had been failing and now succeeded.
    Recovered,
}

/// What came of an attempt, for the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered.
    Succeeded,
    /// Failed; try again then.
    RetryAt(DateTime<Utc>),
    /// Failed for the last time.
    Dead,
}

/// Changes to a subscription; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPatch {
    /// A new callback URL.
    pub callback_url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// Enable or disable; enabling clears the failure record.
    pub enabled: Option<bool>,
}

/// Durable storage of subscriptions and the outbox of deliveries.
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Creates a subscription, or returns the one that exists for the same event
    /// type and URL as `Err`.
    async fn create_subscription(
        &self,
        app_id: &str,
        event_type: &str,
        callback_url: &str,
        description: Option<&str>,
        secret: &str,
    ) -> Result<Result<Subscription, Subscription>, StoreError>;

    /// One subscription of an app.
    async fn subscription(
        &self,
        app_id: &str,
        id: Uuid,
    ) -> Result<Option<Subscription>, StoreError>;

    /// An app's subscriptions, oldest first, optionally of one event type.
    async fn subscriptions(
        &self,
        app_id: &str,
        event_type: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// The enabled subscriptions that receive results of `event_type`.
    async fn matching(
        &self,
        app_id: &str,
        event_type: &str,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// Changes a subscription.
    async fn update_subscription(
        &self,
        app_id: &str,
        id: Uuid,
        patch: &SubscriptionPatch,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Deletes a subscription; its undelivered deliveries die with it.
    async fn delete_subscription(&self, app_id: &str, id: Uuid) -> Result<bool, StoreError>;

    /// Replaces the secret, keeping the old one signing until `previous_until`.
    async fn rotate_secret(
        &self,
        app_id: &str,
        id: Uuid,
        secret: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Writes a delivery to the outbox, due now.
    async fn enqueue(
        &self,
        app_id: &str,
        kind: DeliveryKind,
        url: &str,
        body: &str,
        job_id: Option<Uuid>,
        subscription_id: Option<Uuid>,
    ) -> Result<Delivery, StoreError>;

    /// Takes up to `limit` due deliveries, first attempts before retries, none to a
    /// target in `busy`, and reserves them until `lease_until`.
    async fn claim(
        &self,
        busy: &[String],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Gives back a claimed delivery without an attempt.
    async fn release(&self, id: &str) -> Result<(), StoreError>;

    /// Records an attempt and what comes next.
    async fn record_attempt(
        &self,
        id: &str,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError>;

    /// Updates a subscription's health after a delivery to it.
    async fn record_health(
        &self,
        subscription_id: Uuid,
        delivered: bool,
        gone: bool,
        disable_after: std::time::Duration,
    ) -> Result<(Health, Option<Subscription>), StoreError>;

    /// An app's deliveries, newest first, with their attempts.
    async fn deliveries(
        &self,
        app_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError>;

    /// One delivery of an app.
    async fn delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError>;

    /// Makes a failed or dead delivery due again, with a fresh schedule.
    async fn retry_delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError>;

    /// Forgets every lease: at start-up of a single node, nothing else holds one.
    /// A store shared by several nodes does nothing: the leases may be other nodes'.
    async fn clear_leases(&self) -> Result<(), StoreError>;
}
