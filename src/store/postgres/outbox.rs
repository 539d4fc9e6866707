//! Subscriptions and the outbox in PostgreSQL.
//!
//! Deliveries are claimed with `FOR UPDATE SKIP LOCKED`, so each goes to one node.
//! The targets in `busy` are this node's only: two nodes may each have up to
//! `max_in_flight_per_target` requests in flight to the same receiver.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{PostgresStore, count, millis, now, storable_opt};
use crate::delivery::{
    Attempt, Delivery, DeliveryFilter, DeliveryKind, DeliveryStatus, Subscription,
};
use crate::store::{AttemptOutcome, Health, Outbox, StoreError, SubscriptionPatch};

/// How often creating a subscription is tried when the one it collided with was
/// deleted before it could be read.
const CREATE_TRIES: usize = 3;

fn corrupt(id: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason: reason.into(),
    }
}

fn subscription_from_row(row: &PgRow) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        event_type: row.try_get("event_type")?,
        callback_url: row.try_get("callback_url")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: row.try_get("previous_until")?,
        failing_since: row.try_get("failing_since")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        kind: match kind.as_str() {
            "pusher" => DeliveryKind::Pusher,
            _ => DeliveryKind::Standard,
        },
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| corrupt(&id, format!("status {status}")))?,
        app_id: row.try_get("app_id")?,
        job_id: row.try_get("job_id")?,
        subscription_id: row.try_get("subscription_id")?,
        url: row.try_get("url")?,
        body: row.try_get("body")?,
        attempts: count(row, "attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        last_error: row.try_get("last_error")?,
        id,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<Attempt, StoreError> {
    let duration: i64 = row.try_get("duration_ms")?;
    let status: Option<i32> = row.try_get("status_code")?;
    Ok(Attempt {
        at: row.try_get("at")?,
        duration_ms: u64::try_from(duration).unwrap_or_default(),
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        response: row.try_get("response")?,
        error: row.try_get("error")?,
    })
}

/// A new delivery id: `msg_` and 32 hex digits, sent as `webhook-id`.
fn delivery_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// Writes one delivery per enabled subscription matching the job's event type, in
/// the caller's transaction (the one that records the job's result).
///
/// The subscriptions read are locked against change until that transaction ends,
/// so a subscription deleted or moved at the same moment on another node either
/// gets no delivery or has its new delivery killed or moved with the others.
pub(super) async fn enqueue_for_job(
    tx: &mut Transaction<'_, Postgres>,
    app_id: &str,
    event_type: &str,
    job_id: Uuid,
    body: &str,
) -> Result<(), StoreError> {
    let targets: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, callback_url FROM subscriptions WHERE app_id = $1 AND enabled \
         AND (event_type = $2 OR event_type = '*') FOR SHARE",
    )
    .bind(app_id)
    .bind(event_type)
    .fetch_all(&mut **tx)
    .await?;
    for (subscription_id, url) in targets {
        let kind = DeliveryKind::Standard;
        let ids = (Some(job_id), Some(subscription_id));
        insert_delivery(tx, app_id, kind, &url, body, ids).await?;
    }
    Ok(())
}

/// Inserts a pending delivery; `ids` are its job's and its subscription's.
async fn insert_delivery(
    tx: &mut Transaction<'_, Postgres>,
    app_id: &str,
    kind: DeliveryKind,
    url: &str,
    body: &str,
    (job_id, subscription_id): (Option<Uuid>, Option<Uuid>),
) -> Result<Delivery, StoreError> {
    // Concurrency is bounded per target: the subscription, or for Pusher webhooks
    // the URL.
    let target = subscription_id.map_or_else(|| format!("url:{url}"), |id| id.to_string());
    let now = now();
    let row = sqlx::query(
        "INSERT INTO deliveries (id, app_id, kind, job_id, subscription_id, target, url, body, \
         status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9) RETURNING *",
    )
    .bind(delivery_id())
    .bind(app_id)
    .bind(kind.as_str())
    .bind(job_id)
    .bind(subscription_id)
    .bind(target)
    .bind(url)
    .bind(body)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    delivery_from_row(&row)
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn create_subscription(
        &self,
        app_id: &str,
        event_type: &str,
        callback_url: &str,
        description: Option<&str>,
        secret: &str,
    ) -> Result<Result<Subscription, Subscription>, StoreError> {
        // Insert, and read the existing one only on a conflict: a concurrent create
        // of the same subscription waits for this one and then finds it.
        for _ in 0..CREATE_TRIES {
            let now = now();
            let created = sqlx::query(
                "INSERT INTO subscriptions (id, app_id, event_type, callback_url, description, \
                 secret, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (app_id, event_type, callback_url) DO NOTHING RETURNING *",
            )
            .bind(Uuid::new_v4())
            .bind(app_id)
            .bind(event_type)
            .bind(callback_url)
            .bind(storable_opt(description))
            .bind(secret)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = created {
                return Ok(Ok(subscription_from_row(&row)?));
            }
            let existing = sqlx::query(
                "SELECT * FROM subscriptions \
                 WHERE app_id = $1 AND event_type = $2 AND callback_url = $3",
            )
            .bind(app_id)
            .bind(event_type)
            .bind(callback_url)
            .fetch_optional(&self.pool)
            .await?;
            // None: it was deleted in between, and the insert can be tried again.
            if let Some(row) = existing {
                return Ok(Err(subscription_from_row(&row)?));
            }
        }
        Err(StoreError::Database(sqlx::Error::RowNotFound))
    }

    async fn subscription(
        &self,
        app_id: &str,
        id: Uuid,
    ) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn subscriptions(
        &self,
        app_id: &str,
        event_type: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM subscriptions WHERE app_id = $1 \
             AND ($2::text IS NULL OR event_type = $2) ORDER BY created_at, id",
        )
        .bind(app_id)
        .bind(event_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn matching(
        &self,
        app_id: &str,
        event_type: &str,
    ) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM subscriptions WHERE app_id = $1 AND enabled \
             AND (event_type = $2 OR event_type = '*') ORDER BY created_at, id",
        )
        .bind(app_id)
        .bind(event_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn update_subscription(
        &self,
        app_id: &str,
        id: Uuid,
        patch: &SubscriptionPatch,
    ) -> Result<Option<Subscription>, StoreError> {
        // Enabling clears the failure record, so the subscription starts afresh.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE subscriptions SET \
             callback_url = COALESCE($1, callback_url), \
             description = COALESCE($2, description), \
             enabled = COALESCE($3, enabled), \
             disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, \
             failing_since = CASE WHEN $3 THEN NULL ELSE failing_since END, \
             updated_at = $4 \
             WHERE app_id = $5 AND id = $6 RETURNING *",
        )
        .bind(&patch.callback_url)
        .bind(storable_opt(patch.description.as_deref()))
        .bind(patch.enabled)
        .bind(now())
        .bind(app_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;

        // Undelivered deliveries follow the subscription to its new URL.
        if let (Some(url), Some(_)) = (&patch.callback_url, &row) {
            sqlx::query(
                "UPDATE deliveries SET url = $1 WHERE subscription_id = $2 \
                 AND status IN ('pending', 'failed')",
            )
            .bind(url)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn delete_subscription(&self, app_id: &str, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM subscriptions WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', completed_at = $1, \
             last_error = 'subscription deleted' \
             WHERE subscription_id = $2 AND status IN ('pending', 'failed')",
        )
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn rotate_secret(
        &self,
        app_id: &str,
        id: Uuid,
        secret: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query(
            "UPDATE subscriptions SET previous_secret = secret, previous_until = $1, \
             secret = $2, updated_at = $3 WHERE app_id = $4 AND id = $5 RETURNING *",
        )
        .bind(millis(previous_until))
        .bind(secret)
        .bind(now())
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn enqueue(
        &self,
        app_id: &str,
        kind: DeliveryKind,
        url: &str,
        body: &str,
        job_id: Option<Uuid>,
        subscription_id: Option<Uuid>,
    ) -> Result<Delivery, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids = (job_id, subscription_id);
        let delivery = insert_delivery(&mut tx, app_id, kind, url, body, ids).await?;
        tx.commit().await?;
        Ok(delivery)
    }

    async fn claim(
        &self,
        busy: &[String],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError> {
        // First attempts go before retries, so a backlog of retries to a broken
        // receiver never holds up fresh results. ARRAY(…) runs the locking select
        // once, before the update; rows another node is claiming are skipped.
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = $1 WHERE id = ANY(ARRAY( \
                 SELECT id FROM deliveries WHERE status IN ('pending', 'failed') \
                 AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until < $2) \
                 AND target <> ALL($3) \
                 ORDER BY attempts = 0 DESC, next_attempt_at LIMIT $4 \
                 FOR UPDATE SKIP LOCKED)) \
             RETURNING *",
        )
        .bind(millis(lease_until))
        .bind(now())
        .bind(busy)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn release(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        id: &str,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, at, duration_ms, status_code, \
             response, error) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(millis(attempt.at))
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(attempt.status_code.map(i32::from))
        .bind(storable_opt(attempt.response.as_deref()))
        .bind(storable_opt(attempt.error.as_deref()))
        .execute(&mut *tx)
        .await?;
        let (status, next, completed) = match outcome {
            AttemptOutcome::Succeeded => ("succeeded", None, Some(now())),
            AttemptOutcome::RetryAt(at) => ("failed", Some(millis(at)), None),
            AttemptOutcome::Dead => ("dead", None, Some(now())),
        };
        sqlx::query(
            "UPDATE deliveries SET status = $1, attempts = attempts + 1, \
             next_attempt_at = $2, completed_at = $3, last_error = $4, lease_until = NULL \
             WHERE id = $5",
        )
        .bind(status)
        .bind(next)
        .bind(completed)
        .bind(storable_opt(attempt.error.as_deref()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_health(
        &self,
        subscription_id: Uuid,
        delivered: bool,
        gone: bool,
        disable_after: Duration,
    ) -> Result<(Health, Option<Subscription>), StoreError> {
        // The row stays locked until the update, so that two nodes recording at once
        // see each other's change and only one of them reports a transition.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE")
            .bind(subscription_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok((Health::Unchanged, None));
        };
        let before = subscription_from_row(&row)?;
        let now = now();
        let (health, failing_since, disable) =
            health_after(&before, now, delivered, gone, disable_after);
        let row = sqlx::query(
            "UPDATE subscriptions SET failing_since = $1, \
             enabled = CASE WHEN $2::text IS NULL THEN enabled ELSE false END, \
             disabled_reason = COALESCE($2, disabled_reason), updated_at = $3 \
             WHERE id = $4 RETURNING *",
        )
        .bind(failing_since)
        .bind(disable)
        .bind(now)
        .bind(subscription_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((health, Some(subscription_from_row(&row)?)))
    }

    async fn deliveries(
        &self,
        app_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM deliveries WHERE app_id = $1 \
             AND ($2::uuid IS NULL OR job_id = $2) \
             AND ($3::uuid IS NULL OR subscription_id = $3) \
             AND ($4::text IS NULL OR status = $4) ORDER BY created_at DESC, id LIMIT $5",
        )
        .bind(app_id)
        .bind(filter.job_id)
        .bind(filter.subscription_id)
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        let deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;

        // Every listed delivery's attempts in one query, oldest first.
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let rows =
            sqlx::query("SELECT * FROM delivery_attempts WHERE delivery_id = ANY($1) ORDER BY seq")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        let mut attempts: HashMap<String, Vec<Attempt>> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get("delivery_id")?;
            attempts.entry(id).or_default().push(attempt_from_row(row)?);
        }
        Ok(deliveries
            .into_iter()
            .map(|delivery| {
                let made = attempts.remove(&delivery.id).unwrap_or_default();
                (delivery, made)
            })
            .collect())
    }

    async fn delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query("SELECT * FROM deliveries WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn retry_delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             completed_at = NULL, lease_until = NULL \
             WHERE app_id = $2 AND id = $3 AND status IN ('failed', 'dead') RETURNING *",
        )
        .bind(now())
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    /// Nothing to do: the leases may be other nodes'. A lease held by a node that
    /// stopped runs out by itself.
    async fn clear_leases(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What a delivery's outcome makes of a subscription's health: the transition to
/// report, the new `failing_since`, and the reason to disable it, if it must be.
fn health_after(
    before: &Subscription,
    now: DateTime<Utc>,
    delivered: bool,
    gone: bool,
    disable_after: Duration,
) -> (Health, Option<DateTime<Utc>>, Option<&'static str>) {
    let limit = chrono::Duration::from_std(disable_after).unwrap_or(chrono::Duration::MAX);
    let failing_for = before.failing_since.map(|since| now - since);
    let (health, failing_since, disable) = match (delivered, gone, failing_for) {
        (true, _, Some(_)) => (Health::Recovered, None, None),
        (true, _, None) => (Health::Unchanged, None, None),
        (false, true, _) => (
            Health::Disabled,
            Some(now),
            Some("the receiver answered 410 Gone"),
        ),
        (false, false, Some(age)) if age >= limit => (
            Health::Disabled,
            before.failing_since,
            Some("every delivery failed for too long"),
        ),
        (false, false, Some(_)) => (Health::Unchanged, before.failing_since, None),
        (false, false, None) => (Health::Failing, Some(now), None),
    };
    // A subscription already disabled is not disabled again.
    let health = if disable.is_some() && !before.enabled {
        Health::Unchanged
    } else {
        health
    };
    (health, failing_since, disable)
}
