//! The workers: one loop per event type claims due jobs from the store while it has
//! a free slot (the type's `concurrency`), runs each on its own task with the type's
//! timeout, retries failed attempts with a doubling back-off, stores the outcome and
//! pushes every step on the job's channel.
//!
//! Claiming goes through the store, so a job is never run twice at once, and a
//! new job wakes its type's loop at once. Retries that come due are found by a
//! poll every half second; that poll is the only delay a retry sees beyond its
//! back-off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dashmap::DashMap;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};
use uuid::Uuid;

use super::files::FileStore;
use super::handler::{HandlerError, JobContext, ProgressSink};
use super::handlers::handler_for;
use super::{Job, JobStatus, Progress, WebhookResult};
use crate::apps::App;
use crate::config::{Config, EventTypeConfig};
use crate::hub::{Frame, Hub};
use crate::protocol::{ChannelName, frame};
use crate::state::Shared;
use crate::store::{Outbox, Store, StoreError, open_store};

/// How often an idle worker loop looks for retries that came due.
const POLL: Duration = Duration::from_millis(500);

/// The job side of the server's state.
#[derive(Debug)]
pub struct JobRuntime {
    /// Where jobs are kept.
    pub store: Arc<dyn Store>,
    /// Where subscriptions and deliveries are kept (the same database).
    pub outbox: Arc<dyn Outbox>,
    /// Where uploads are kept.
    pub files: FileStore,
    /// Shared by handlers that call out.
    http: reqwest::Client,
    /// One waker per (app, event type), rung when a job of that type is queued.
    wakers: HashMap<(String, String), Arc<Notify>>,
    /// Attempts running now, to stop them when their job is cancelled.
    running: DashMap<Uuid, CancellationToken>,
}

/// Why the job side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store would not open.
    #[error("cannot open the store at {path}")]
    Store {
        /// The SQLite file, or the PostgreSQL URL without its password.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The file directory would not open.
    #[error("cannot open the file directory {path}")]
    Files {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl JobRuntime {
    /// Opens the store and the file directory, and puts back in the queue the jobs a
    /// previous process left running.
    ///
    /// # Errors
    ///
    /// When the store or the directory cannot be opened.
    pub async fn open(config: &Config) -> Result<JobRuntime, StartError> {
        let store_error = |source| StartError::Store {
            path: config.store.location(),
            source,
        };
        let (store, outbox) = open_store(&config.store).await.map_err(store_error)?;
        let requeued = store.requeue_interrupted().await.map_err(store_error)?;
        if requeued > 0 {
            tracing::info!(requeued, "jobs interrupted by the last stop will run again");
        }
        let files =
            FileStore::open(&config.files.dir)
                .await
                .map_err(|source| StartError::Files {
                    path: config.files.dir.display().to_string(),
                    source,
                })?;
        let wakers = config
            .apps
            .iter()
            .flat_map(|app| {
                app.event_types
                    .iter()
                    .map(|t| (app.id.clone(), t.name.clone()))
            })
            .map(|key| (key, Arc::new(Notify::new())))
            .collect();
        Ok(JobRuntime {
            outbox,
            store,
            files,
            http: worker_client(),
            wakers,
            running: DashMap::new(),
        })
    }

    /// Wakes the worker loop of a job's type, after the job was queued.
    pub fn job_queued(&self, app_id: &str, event_type: &str) {
        let key = (app_id.to_owned(), event_type.to_owned());
        if let Some(waker) = self.wakers.get(&key) {
            waker.notify_one();
        }
    }

    /// Stops every running attempt and puts its job back in the queue, for a
    /// shutdown whose grace period ran out: the jobs run again at the next start.
    pub async fn hand_back(&self) {
        let running: Vec<Uuid> = self.running.iter().map(|entry| *entry.key()).collect();
        let now = Utc::now();
        let why = "the server stopped during this attempt; it runs again";
        let mut handed_back = 0;
        for id in running {
            self.stop_attempt(id);
            // Queued again at once, so another node (or the next start) takes it
            // without waiting for its lease to run out.
            match self.store.retry_at(id, why, now).await {
                Ok(true) => handed_back += 1,
                Ok(false) => {}
                Err(error) => warn!(%error, "cannot queue a running job again; its lease frees it"),
            }
        }
        if handed_back > 0 {
            tracing::info!(handed_back, "running jobs queued again");
        }
    }

    /// Stops the running attempt of a job, if there is one.
    pub fn stop_attempt(&self, id: Uuid) {
        if let Some((_, token)) = self.running.remove(&id) {
            token.cancel();
        }
    }
}

/// The client of `http` handlers: redirects are not followed and no proxy is used,
/// so a job reaches exactly the worker its event type names.
fn worker_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Starts one worker loop per event type of every app, and replays to the hub the
/// outcomes of jobs that ended within `jobs.retain_results`, so that late
/// subscribers get them after a restart too.
pub async fn spawn_workers(shared: &Arc<Shared>) {
    replay_recent_outcomes(shared).await;
    for app in shared
        .config
        .apps
        .iter()
        .filter_map(|a| shared.apps.by_id(&a.id))
    {
        for event_type in &app.config.event_types {
            let key = (app.config.id.clone(), event_type.name.clone());
            let Some(waker) = shared.jobs.wakers.get(&key).cloned() else {
                continue;
            };
            let span = debug_span!("worker", app_id = %app.id, event_type = %event_type.name);
            let worker = work(
                Arc::clone(shared),
                Arc::clone(app),
                event_type.clone(),
                waker,
            );
            shared.tracker.spawn(worker.instrument(span));
        }
    }
}

async fn replay_recent_outcomes(shared: &Shared) {
    let window = shared.config.jobs.retain_results;
    let since = Utc::now() - chrono::Duration::from_std(window).unwrap_or_default();
    match shared.jobs.store.finished_since(since).await {
        Ok(jobs) => {
            for job in jobs {
                let age = (Utc::now() - job.completed_at.unwrap_or_default()).to_std();
                let left = window.saturating_sub(age.unwrap_or_default());
                // Kept for later subscribers only: those who were listening when the
                // job ended had the event then, on this node or another.
                if let Some((channel, frame)) = outcome_frame(&job) {
                    shared
                        .hub
                        .keep(&job.app_id.as_str().into(), &channel, &frame, left);
                }
            }
        }
        Err(error) => warn!(%error, "cannot read recent job outcomes to replay"),
    }
}

/// One event type's loop: claim while a slot is free, sleep when nothing is due.
async fn work(shared: Arc<Shared>, app: Arc<App>, event_type: EventTypeConfig, waker: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(event_type.concurrency));
    let shutdown = shared.shutdown.clone();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = shutdown.cancelled() => break,
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = slot else { break };

        match shared
            .jobs
            .store
            .claim(
                &app.config.id,
                &event_type.name,
                event_type.timeout + shared.config.jobs.lease_margin,
            )
            .await
        {
            Ok(Some(job)) => {
                let span = debug_span!("job", id = %job.id, attempt = job.attempts);
                let attempt = run_attempt(Arc::clone(&shared), event_type.clone(), job);
                shared.tracker.spawn(
                    async move {
                        attempt.await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    () = waker.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            Err(error) => {
                warn!(%error, "cannot claim jobs; trying again shortly");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Runs one attempt of a claimed job and records what came of it.
async fn run_attempt(shared: Arc<Shared>, event_type: EventTypeConfig, job: Job) {
    let stop = CancellationToken::new();
    shared.jobs.running.insert(job.id, stop.clone());
    publish(&shared.hub, &job, "job.started", None);

    let context = JobContext {
        job: job.clone(),
        event_type: event_type.clone(),
        files: shared.jobs.files.clone(),
        http: shared.jobs.http.clone(),
        max_result_size: shared.config.jobs.max_result_size,
        progress: Arc::new(Reporter(Arc::clone(&shared))),
    };
    let handler = handler_for(event_type.handler);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(event_type.timeout, handler.handle(&context)) => outcome,
        // Cancelled: the cancel request has already stored and pushed that.
        () = stop.cancelled() => return,
    };
    shared.jobs.running.remove(&job.id);

    let outcome = outcome.unwrap_or_else(|_| {
        let timeout = humantime_like(event_type.timeout);
        Err(HandlerError::Failed(format!(
            "attempt timed out after {timeout}"
        )))
    });
    if let Err(error) = settle(&shared, &event_type, &job, outcome).await {
        // The job stays `started` in the store and runs again after a restart.
        warn!(%error, "cannot record the outcome of a job attempt");
    }
}

/// Stores the outcome of an attempt: a result, a retry, or a failure.
async fn settle(
    shared: &Shared,
    event_type: &EventTypeConfig,
    job: &Job,
    outcome: Result<WebhookResult, HandlerError>,
) -> Result<(), StoreError> {
    let store = &shared.jobs.store;
    let (status, result, error) = match outcome {
        Ok(result) if result.status == super::ResultStatus::Success => {
            (JobStatus::Completed, result, None)
        }
        Ok(result) => {
            let error = result.message.clone();
            (JobStatus::Failed, result, Some(error))
        }
        Err(HandlerError::Failed(error)) if job.attempts < job.max_attempts => {
            let delay = backoff(event_type.backoff, job.attempts);
            let run_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            debug!(%error, ?delay, "attempt failed; retrying");
            if store.retry_at(job.id, &error, run_at).await? {
                let mut retrying = job.clone();
                retrying.status = JobStatus::Queued;
                retrying.error = Some(error);
                publish(&shared.hub, &retrying, "job.retrying", None);
            }
            return Ok(());
        }
        Err(HandlerError::Failed(error) | HandlerError::Invalid(error)) => (
            JobStatus::Failed,
            WebhookResult::error(error.clone()),
            Some(error),
        ),
    };

    debug!(status = status.as_str(), "job ended");
    if let Some(ended) = store
        .finish(job.id, status, &result, error.as_deref())
        .await?
    {
        retain_outcome(&shared.hub, &ended, shared.config.jobs.retain_results);
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`: `base`, doubling each time, at most an hour.
fn backoff(base: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings)
        .min(Duration::from_secs(3600))
}

fn humantime_like(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Stores a progress report and pushes it as `job.progress`.
struct Reporter(Arc<Shared>);

#[async_trait]
impl ProgressSink for Reporter {
    async fn report(&self, job: &Job, progress: Progress) {
        if let Err(error) = self.0.jobs.store.record_progress(job.id, &progress).await {
            warn!(%error, "cannot record job progress");
        }
        publish(&self.0.hub, job, "job.progress", Some(&progress));
    }
}

/// What every pushed job event carries: the job id, its event type, status,
/// metadata, attempt, and the progress or outcome there is.
pub fn job_payload(job: &Job, progress: Option<&Progress>) -> Value {
    json!({
        "jobId": job.id,
        "eventType": job.event_type,
        "status": job.status,
        "metadata": job.metadata,
        "attempt": job.attempts,
        "progress": progress.or(job.progress.as_ref()),
        "result": job.result,
        "error": job.error,
    })
}

fn job_frame(job: &Job, event: &str, progress: Option<&Progress>) -> Option<(ChannelName, Frame)> {
    let channel = ChannelName::parse(job.channel.as_deref()?).ok()?;
    let data = job_payload(job, progress).to_string();
    let text = frame::channel_event(channel.as_str(), event, &data, None);
    Some((channel, Frame::from(text)))
}

/// Pushes a job event on the job's channel.
pub(crate) fn publish(hub: &Hub, job: &Job, event: &str, progress: Option<&Progress>) {
    if let Some((channel, frame)) = job_frame(job, event, progress) {
        hub.publish(&job.app_id.as_str().into(), &channel, &frame, None);
    }
}

/// Pushes a job's outcome (`job.completed`, `job.failed` or `job.cancelled`) and keeps
/// it for `keep`, so that a client subscribing to the channel later gets it too.
pub(crate) fn retain_outcome(hub: &Hub, job: &Job, keep: Duration) {
    if let Some((channel, frame)) = outcome_frame(job) {
        hub.publish_retained(&job.app_id.as_str().into(), &channel, &frame, None, keep);
    }
}

/// The final event of an ended job, on its channel.
fn outcome_frame(job: &Job) -> Option<(ChannelName, Frame)> {
    let event = match job.status {
        JobStatus::Completed => "job.completed",
        JobStatus::Failed => "job.failed",
        JobStatus::Cancelled => "job.cancelled",
        JobStatus::Queued | JobStatus::Started => return None,
    };
    job_frame(job, event, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_an_hour() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }
}
