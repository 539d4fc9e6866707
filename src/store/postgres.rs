//! The PostgreSQL store, shared by several Herald nodes: each node has its own pool,
//! and the database decides which node runs which job and sends which delivery.
//!
//! A claim locks the row it takes with `FOR UPDATE SKIP LOCKED`, so two nodes never
//! take the same one and neither waits for the other. A claimed job is leased for
//! its attempt's timeout and `jobs.lease_margin`; a node that dies leaves its jobs
//! `started`, and once their lease has passed any node claims them again. So nothing
//! is put back in the queue at start-up: the jobs left running may belong to live
//! nodes.
//!
//! Times come from the node's own clock, as in SQLite, so the nodes' clocks must
//! agree (NTP) to well within the lease margin. Everything SQLite writes in one
//! transaction is written in one here too.
//!
//! PostgreSQL text cannot hold the NUL character. Free text written here (errors,
//! step messages, descriptions, receivers' answers) has it replaced by U+FFFD, so
//! that a receiver answering with a NUL byte cannot keep its attempt from being
//! recorded. JSON is stored as text, where NUL is always escaped.

mod outbox;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Executor, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{Cancelled, Inserted, Store, StoreError};
use crate::jobs::{Job, JobFilter, JobStatus, NewJob, Progress, Step, WebhookResult};

/// Connections each node keeps to the database at most.
const POOL_SIZE: u32 = 8;

/// Jobs, subscriptions and deliveries in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`), creates `schema` if one is
    /// named and missing, keeps every table there (the migrations' own included), and
    /// applies the schema migrations. Without a schema the tables go where the
    /// connection's default `search_path` puts them.
    ///
    /// # Errors
    ///
    /// When the URL or the schema name is not valid, or the database cannot be
    /// reached or migrated.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("herald");
        let search_path = match schema {
            Some(name) => {
                check_schema_name(name).map_err(|problem| {
                    StoreError::Database(sqlx::Error::Configuration(problem.into()))
                })?;
                Some(format!("SET search_path TO \"{name}\""))
            }
            None => None,
        };

        // Every connection, the migrator's included, works in the schema.
        let setup = search_path.clone();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .after_connect(move |connection, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    if let Some(statement) = setup {
                        // The name was checked to be letters, digits and `_`.
                        connection.execute(AssertSqlSafe(statement)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;

        if let Some(name) = schema {
            create_schema(&pool, name).await?;
        }
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

/// Whether `name` is a schema name Herald will use: lower-case letters, digits and
/// `_`, not starting with a digit nor with `pg_`, at most 63 bytes. Such a name needs
/// no quoting rules beyond the double quotes it is written in.
///
/// # Errors
///
/// What is wrong with the name.
pub fn check_schema_name(name: &str) -> Result<(), &'static str> {
    let well_formed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if !well_formed || name.len() > 63 {
        return Err(
            "must be 1 to 63 lower-case letters, digits and '_', not starting with a digit",
        );
    }
    if name.starts_with("pg_") {
        return Err("must not start with pg_, which PostgreSQL keeps for itself");
    }
    Ok(())
}

/// Creates the schema unless it exists. Nodes starting together may race to create
/// it; the loser's duplicate error means it is there.
async fn create_schema(pool: &PgPool, name: &str) -> Result<(), StoreError> {
    let statement = format!("CREATE SCHEMA IF NOT EXISTS \"{name}\"");
    let created = pool.execute(AssertSqlSafe(statement)).await;
    match created {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error))
            if matches!(error.code().as_deref(), Some("23505" | "42P06")) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// `time` to the millisecond, as every time is stored.
fn millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or(time)
}

fn now() -> DateTime<Utc> {
    millis(Utc::now())
}

/// `text` without NUL characters, which PostgreSQL text cannot hold.
fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn storable_opt(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(storable)
}

/// A count stored as `integer`.
fn count(row: &PgRow, column: &str) -> Result<u32, StoreError> {
    let value: i32 = row.try_get(column)?;
    Ok(u32::try_from(value).unwrap_or_default())
}

/// Reads a job row, naming the job when a column does not hold what it should.
fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    let id: Uuid = row.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.to_string(),
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
        id,
        app_id: row.try_get("app_id")?,
        event_type: row.try_get("event_type")?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status}")))?,
        channel: row.try_get("channel")?,
        callback_url: row.try_get("callback_url")?,
        payload: json("payload")?.unwrap_or(Value::Null),
        metadata: json("metadata")?.unwrap_or(Value::Null),
        result,
        error: row.try_get("error")?,
        attempts: count(row, "attempts")?,
        max_attempts: count(row, "max_attempts")?,
        progress,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

async fn add_step(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    kind: &str,
    fraction: Option<f64>,
    message: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO job_steps (job_id, at, kind, fraction, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(now())
    .bind(kind)
    .bind(fraction)
    .bind(storable_opt(message))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_job(&self, job: &NewJob) -> Result<Inserted, StoreError> {
        // Inserting first and reading the existing job only on a conflict holds under
        // concurrent requests with one key: PostgreSQL makes the second insert wait
        // for the first to commit, then skip.
        let mut tx = self.pool.begin().await?;
        let now = now();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, app_id, event_type, status, channel, callback_url, payload, \
             metadata, max_attempts, idempotency_key, request_digest, run_at, created_at) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
             DO NOTHING RETURNING *",
        )
        .bind(job.id)
        .bind(&job.app_id)
        .bind(&job.event_type)
        .bind(&job.channel)
        .bind(&job.callback_url)
        .bind(job.payload.to_string())
        .bind(job.metadata.to_string())
        .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
        .bind(&job.idempotency_key)
        .bind(&job.request_digest)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        if let Some(row) = inserted {
            add_step(&mut tx, job.id, "queued", None, None).await?;
            tx.commit().await?;
            return Ok(Inserted::New(job_from_row(&row)?));
        }
        let row = sqlx::query("SELECT * FROM jobs WHERE app_id = $1 AND idempotency_key = $2")
            .bind(&job.app_id)
            .bind(&job.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
        let digest: Option<String> = row.try_get("request_digest")?;
        Ok(Inserted::Existing(job_from_row(&row)?, digest))
    }

    async fn job(&self, app_id: &str, id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self, app_id: &str, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        // Newest first; the cursor is the (created_at, id) of the last job seen.
        let (after_time, after_id) = match filter.after {
            Some((time, id)) => (Some(millis(time)), Some(id)),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE app_id = $1 \
             AND ($2::text IS NULL OR event_type = $2) \
             AND ($3::text IS NULL OR status = $3) \
             AND ($4::timestamptz IS NULL OR created_at >= $4) \
             AND ($5::timestamptz IS NULL OR created_at < $5) \
             AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid)) \
             ORDER BY created_at DESC, id DESC LIMIT $8",
        )
        .bind(app_id)
        .bind(&filter.event_type)
        .bind(filter.status.map(JobStatus::as_str))
        .bind(filter.since)
        .bind(filter.until)
        .bind(after_time)
        .bind(after_id)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn steps(&self, id: Uuid) -> Result<Vec<Step>, StoreError> {
        let rows = sqlx::query("SELECT * FROM job_steps WHERE job_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Step {
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    fraction: row.try_get("fraction")?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }

    async fn claim(
        &self,
        app_id: &str,
        event_type: &str,
        lease: Duration,
    ) -> Result<Option<Job>, StoreError> {
        // The oldest due job, queued or abandoned by a node whose lease ran out. Rows
        // another node is claiming right now are skipped, not waited for.
        let mut tx = self.pool.begin().await?;
        let now = now();
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let lease_until = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let row = sqlx::query(
            "WITH picked AS MATERIALIZED ( \
                 SELECT id, status AS was FROM jobs WHERE app_id = $2 AND event_type = $3 \
                 AND ((status = 'queued' AND run_at <= $1) \
                      OR (status = 'started' AND lease_until <= $1)) \
                 ORDER BY run_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET status = 'started', attempts = attempts + 1, \
                 started_at = COALESCE(started_at, $1), lease_until = $4 \
             FROM picked WHERE jobs.id = picked.id \
             RETURNING jobs.*, picked.was",
        )
        .bind(now)
        .bind(app_id)
        .bind(event_type)
        .bind(millis(lease_until))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;

        // A job taken over from a dead node is told apart in its history, as SQLite
        // tells the jobs it puts back at start-up.
        let was: String = row.try_get("was")?;
        if was == "started" {
            let message = "the node running this attempt stopped; it runs again";
            add_step(&mut tx, job.id, "retrying", None, Some(message)).await?;
        }
        let message = format!("attempt {} of {}", job.attempts, job.max_attempts);
        add_step(&mut tx, job.id, "started", None, Some(&message)).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn record_progress(&self, id: Uuid, progress: &Progress) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let text = serde_json::to_string(progress).unwrap_or_default();
        sqlx::query("UPDATE jobs SET progress = $1 WHERE id = $2 AND status = 'started'")
            .bind(text)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let message = Some(progress.message.as_str());
        add_step(&mut tx, id, "progress", Some(progress.fraction), message).await?;
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
        let updated = sqlx::query(
            "UPDATE jobs SET status = 'queued', error = $1, run_at = $2, lease_until = NULL \
             WHERE id = $3 AND status = 'started'",
        )
        .bind(storable(error))
        .bind(millis(run_at))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        add_step(&mut tx, id, "retrying", None, Some(error)).await?;
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
        let row = sqlx::query(
            "UPDATE jobs SET status = $1, result = $2, error = $3, completed_at = $4, \
             lease_until = NULL WHERE id = $5 AND status = 'started' RETURNING *",
        )
        .bind(status.as_str())
        .bind(serde_json::to_string(result).unwrap_or_default())
        .bind(storable_opt(error))
        .bind(now())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        add_step(&mut tx, id, status.as_str(), None, Some(&result.message)).await?;

        // The outbox is written in the same transaction as the result, so a result
        // is never recorded without its deliveries, nor the other way round.
        let body = crate::jobs::job_payload(&job, None).to_string();
        outbox::enqueue_for_job(&mut tx, &job.app_id, &job.event_type, id, &body).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn cancel(&self, app_id: &str, id: Uuid) -> Result<Cancelled, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', completed_at = $1, lease_until = NULL \
             WHERE app_id = $2 AND id = $3 AND status IN ('queued', 'started') RETURNING *",
        )
        .bind(now())
        .bind(app_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let message = Some("cancelled on request");
            add_step(&mut tx, id, "cancelled", None, message).await?;
            tx.commit().await?;
            return Ok(Cancelled::Now(job_from_row(&row)?));
        }
        drop(tx);
        Ok(match self.job(app_id, id).await? {
            Some(job) => Cancelled::AlreadyFinal(job),
            None => Cancelled::NotFound,
        })
    }

    /// Nothing to do: a `started` job may be running on another node. The jobs of a
    /// node that stopped are claimed again once their lease has passed.
    async fn requeue_interrupted(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn finished_since(&self, since: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE completed_at >= $1 AND channel IS NOT NULL \
             ORDER BY completed_at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }
}
