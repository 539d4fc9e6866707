//! The SQLite store of a single node: one file, write-ahead logged, every commit
//! synced to disk before it returns, so that a job answered with 202 survives a crash.
//!
//! All access goes through one connection. SQLite lets one writer in at a time
//! anyway, and a single connection never meets the "database is locked" errors that
//! several connections upgrading read transactions to write ones would; every
//! statement here is short.

mod outbox;

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{Cancelled, Inserted, Store, StoreError};
use crate::jobs::{Job, JobFilter, JobStatus, NewJob, Progress, Step, WebhookResult};

/// Jobs in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at `path` and
    /// applies the schema migrations.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn now_millis() -> i64 {
    millis(Utc::now())
}

fn time(millis: Option<i64>) -> Option<DateTime<Utc>> {
    millis.and_then(DateTime::from_timestamp_millis)
}

/// Reads a job row, naming the job when a column does not hold what it should.
fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    let json = |column: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| corrupt(format!("{column}: {e}")))
    };
    let status: String = row.try_get("status")?;
    let result = json("result")?
        .map(serde_json::from_value::<WebhookResult>)
        .transpose()
        .map_err(|e| corrupt(format!("result: {e}")))?;
    let progress = json("progress")?
        .map(serde_json::from_value::<Progress>)
        .transpose()
        .map_err(|e| corrupt(format!("progress: {e}")))?;
    Ok(Job {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(format!("id: {e}")))?,
        app_id: row.try_get("app_id")?,
        event_type: row.try_get("event_type")?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status}")))?,
        channel: row.try_get("channel")?,
        callback_url: row.try_get("callback_url")?,
        payload: json("payload")?.unwrap_or(Value::Null),
        metadata: json("metadata")?.unwrap_or(Value::Null),
        result,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        progress,
        created_at: time(row.try_get("created_at")?).unwrap_or_default(),
        started_at: time(row.try_get("started_at")?),
        completed_at: time(row.try_get("completed_at")?),
    })
}

async fn add_step(
    tx: &mut Transaction<'_, Sqlite>,
    id: &str,
    kind: &str,
    fraction: Option<f64>,
    message: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_steps (job_id, at, kind, fraction, message) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(now_millis())
    .bind(kind)
    .bind(fraction)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &job.idempotency_key {
            let existing =
                sqlx::query("SELECT * FROM jobs WHERE app_id = ? AND idempotency_key = ?")
                    .bind(&job.app_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = existing {
                let digest: Option<String> = row.try_get("request_digest")?;
                return Ok(Inserted::Existing(job_from_row(&row)?, digest));
            }
        }
        let now = now_millis();
        let id = job.id.to_string();
        let row = sqlx::query(
            "INSERT INTO jobs (id, app_id, event_type, status, channel, callback_url, payload, \
             metadata, max_attempts, idempotency_key, request_digest, run_at, created_at) \
             VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&id)
        .bind(&job.app_id)
        .bind(&job.event_type)
        .bind(&job.channel)
        .bind(&job.callback_url)
        .bind(job.payload.to_string())
        .bind(job.metadata.to_string())
        .bind(job.max_attempts)
        .bind(&job.idempotency_key)
        .bind(&job.request_digest)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        add_step(&mut tx, &id, "queued", None, None).await?;
        tx.commit().await?;
        Ok(Inserted::New(job_from_row(&row)?))
    }

    async fn job(&self, app_id: &str, id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE app_id = ? AND id = ?")
            .bind(app_id)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self, app_id: &str, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        // Newest first; the cursor is the (created_at, id) of the last job seen.
        let (after_time, after_id) = match filter.after {
            Some((time, id)) => (Some(millis(time)), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE app_id = ?1 \
             AND (?2 IS NULL OR event_type = ?2) \
             AND (?3 IS NULL OR status = ?3) \
             AND (?4 IS NULL OR created_at >= ?4) \
             AND (?5 IS NULL OR created_at < ?5) \
             AND (?6 IS NULL OR created_at < ?6 OR (created_at = ?6 AND id < ?7)) \
             ORDER BY created_at DESC, id DESC LIMIT ?8",
        )
        .bind(app_id)
        .bind(&filter.event_type)
        .bind(filter.status.map(JobStatus::as_str))
        .bind(filter.since.map(millis))
        .bind(filter.until.map(millis))
        .bind(after_time)
        .bind(after_id)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn steps(&self, id: Uuid) -> Result<Vec<Step>, StoreError> {
        let rows = sqlx::query("SELECT * FROM job_steps WHERE job_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Step {
                    at: time(row.try_get("at")?).unwrap_or_default(),
                    kind: row.try_get("kind")?,
                    fraction: row.try_get("fraction")?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }

    // A single node's SQLite store needs no lease: at start-up it puts back every
    // job left running (`requeue_interrupted`), since no other process holds one.
    async fn claim(
        &self,
        app_id: &str,
        event_type: &str,
        _lease: std::time::Duration,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_millis();
        let row = sqlx::query(
            "UPDATE jobs SET status = 'started', attempts = attempts + 1, \
             started_at = COALESCE(started_at, ?1) \
             WHERE id = (SELECT id FROM jobs WHERE app_id = ?2 AND event_type = ?3 \
                 AND status = 'queued' AND run_at <= ?1 ORDER BY run_at, created_at LIMIT 1) \
             RETURNING *",
        )
        .bind(now)
        .bind(app_id)
        .bind(event_type)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        let message = format!("attempt {} of {}", job.attempts, job.max_attempts);
        add_step(
            &mut tx,
            &job.id.to_string(),
            "started",
            None,
            Some(&message),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn record_progress(&self, id: Uuid, progress: &Progress) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = id.to_string();
        let text = serde_json::to_string(progress).unwrap_or_default();
        sqlx::query("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'started'")
            .bind(text)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let message = Some(progress.message.as_str());
        add_step(&mut tx, &id, "progress", Some(progress.fraction), message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retry_at(
        &self,
        id: Uuid,
        error: &str,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = id.to_string();
        let updated = sqlx::query(
            "UPDATE jobs SET status = 'queued', error = ?, run_at = ? \
             WHERE id = ? AND status = 'started'",
        )
        .bind(error)
        .bind(millis(run_at))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        add_step(&mut tx, &id, "retrying", None, Some(error)).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn finish(
        &self,
        id: Uuid,
        status: JobStatus,
        result: &WebhookResult,
        error: Option<&str>,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = id.to_string();
        let row = sqlx::query(
            "UPDATE jobs SET status = ?, result = ?, error = ?, completed_at = ? \
             WHERE id = ? AND status = 'started' RETURNING *",
        )
        .bind(status.as_str())
        .bind(serde_json::to_string(result).unwrap_or_default())
        .bind(error)
        .bind(now_millis())
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        add_step(&mut tx, &id, status.as_str(), None, Some(&result.message)).await?;

        // The outbox is written in the same transaction as the result, so a result
        // is never recorded without its deliveries, nor the other way round.
        let body = crate::jobs::job_payload(&job, None).to_string();
        outbox::enqueue_for_job(&mut tx, &job.app_id, &job.event_type, &id, &body).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn cancel(&self, app_id: &str, id: Uuid) -> Result<Cancelled, StoreError> {
        let mut tx = self.pool.begin().await?;
        let key = id.to_string();
        let row = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_at = ? \
             WHERE app_id = ? AND id = ? AND status IN ('queued', 'started') RETURNING *",
        )
        .bind(now_millis())
        .bind(app_id)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            add_step(
                &mut tx,
                &key,
                "cancelled",
                None,
                Some("cancelled on request"),
            )
            .await?;
            tx.commit().await?;
            return Ok(Cancelled::Now(job_from_row(&row)?));
        }
        drop(tx);
        Ok(match self.job(app_id, id).await? {
            Some(job) => Cancelled::AlreadyFinal(job),
            None => Cancelled::NotFound,
        })
    }

    async fn requeue_interrupted(&self) -> Result<u64, StoreError> {
        // A job interrupted on its last attempt runs once more; interrupted again
        // (it may be what stops the server), it fails instead of looping for ever.
        let spent: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'started' AND attempts > max_attempts",
        )
        .fetch_all(&self.pool)
        .await?;
        let why = "the server stopped during every attempt";
        for id in &spent {
            if let Ok(id) = Uuid::parse_str(id) {
                self.finish(id, JobStatus::Failed, &WebhookResult::error(why), Some(why))
                    .await?;
            }
        }

        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'started'")
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET status = 'queued', run_at = ? WHERE status = 'started'")
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        for id in &ids {
            let message = Some("the server stopped during this attempt; it runs again");
            add_step(&mut tx, id, "retrying", None, message).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE completed_at >= ? AND channel IS NOT NULL \
             ORDER BY completed_at",
        )
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }
}
