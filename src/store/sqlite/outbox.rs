//! Subscriptions and the outbox in SQLite.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{SqliteStore, millis, now_millis, time};
use crate::delivery::{
    Attempt, Delivery, DeliveryFilter, DeliveryKind, DeliveryStatus, Subscription,
};
use crate::store::{AttemptOutcome, Health, Outbox, StoreError, SubscriptionPatch};

fn corrupt(id: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason: reason.into(),
    }
}

fn uuid_column(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(&t, format!("{column}: {e}"))))
        .transpose()
}

fn subscription_from_row(row: &SqliteRow) -> Result<Subscription, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Subscription {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(&id, e.to_string()))?,
        app_id: row.try_get("app_id")?,
        event_type: row.try_get("event_type")?,
        callback_url: row.try_get("callback_url")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: time(row.try_get("previous_until")?),
        failing_since: time(row.try_get("failing_since")?),
        created_at: time(row.try_get("created_at")?).unwrap_or_default(),
        updated_at: time(row.try_get("updated_at")?).unwrap_or_default(),
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, StoreError> {
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
        job_id: uuid_column(row, "job_id")?,
        subscription_id: uuid_column(row, "subscription_id")?,
        url: row.try_get("url")?,
        body: row.try_get("body")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: time(row.try_get("next_attempt_at")?),
        created_at: time(row.try_get("created_at")?).unwrap_or_default(),
        completed_at: time(row.try_get("completed_at")?),
        last_error: row.try_get("last_error")?,
        id,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<Attempt, StoreError> {
    let duration: i64 = row.try_get("duration_ms")?;
    let status: Option<i64> = row.try_get("status_code")?;
    Ok(Attempt {
        at: time(row.try_get("at")?).unwrap_or_default(),
        duration_ms: u64::try_from(duration).unwrap_or_default(),
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        response: row.try_get("response")?,
        error: row.try_get("error")?,
    })
}

/// A new delivery id: `msg_` and 32 hex digits, sent as `webhook-id`.
pub(super) fn delivery_id() -> String {
    format!("msg_{}", Uuid::new_v4().simple())
}

/// Writes one delivery per enabled subscription matching the job's event type, in
/// the caller's transaction (the one that records the job's result).
pub(super) async fn enqueue_for_job(
    tx: &mut Transaction<'_, Sqlite>,
    app_id: &str,
    event_type: &str,
    job_id: &str,
    body: &str,
) -> Result<(), StoreError> {
    let targets: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, callback_url FROM subscriptions WHERE app_id = ? AND enabled = 1 \
         AND (event_type = ? OR event_type = '*')",
    )
    .bind(app_id)
    .bind(event_type)
    .fetch_all(&mut **tx)
    .await?;
    for (subscription_id, url) in targets {
        insert_delivery(
            tx,
            app_id,
            DeliveryKind::Standard,
            &url,
            body,
            Some(job_id),
            Some(&subscription_id),
        )
        .await?;
    }
    Ok(())
}

async fn insert_delivery(
    tx: &mut Transaction<'_, Sqlite>,
    app_id: &str,
    kind: DeliveryKind,
    url: &str,
    body: &str,
    job_id: Option<&str>,
    subscription_id: Option<&str>,
) -> Result<Delivery, StoreError> {
    // Concurrency is bounded per target: the subscription, or for Pusher webhooks
    // the URL.
    let target = subscription_id.map_or_else(|| format!("url:{url}"), str::to_owned);
    let now = now_millis();
    let row = sqlx::query(
        "INSERT INTO deliveries (id, app_id, kind, job_id, subscription_id, target, url, body, \
         status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) \
         RETURNING *",
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
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    delivery_from_row(&row)
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn create_subscription(
        &self,
        app_id: &str,
        event_type: &str,
        callback_url: &str,
        description: Option<&str>,
        secret: &str,
    ) -> Result<Result<Subscription, Subscription>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query(
            "SELECT * FROM subscriptions WHERE app_id = ? AND event_type = ? AND callback_url = ?",
        )
        .bind(app_id)
        .bind(event_type)
        .bind(callback_url)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return Ok(Err(subscription_from_row(&row)?));
        }
        let now = now_millis();
        let row = sqlx::query(
            "INSERT INTO subscriptions (id, app_id, event_type, callback_url, description, \
             secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(app_id)
        .bind(event_type)
        .bind(callback_url)
        .bind(description)
        .bind(secret)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(subscription_from_row(&row)?))
    }

    async fn subscription(
        &self,
        app_id: &str,
        id: Uuid,
    ) -> Result<Option<Subscription>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE app_id = ? AND id = ?")
            .bind(app_id)
            .bind(id.to_string())
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
            "SELECT * FROM subscriptions WHERE app_id = ?1 AND (?2 IS NULL OR event_type = ?2) \
             ORDER BY created_at, id",
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
            "SELECT * FROM subscriptions WHERE app_id = ? AND enabled = 1 \
             AND (event_type = ? OR event_type = '*') ORDER BY created_at, id",
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
        let row = sqlx::query(
            "UPDATE subscriptions SET \
             callback_url = COALESCE(?1, callback_url), \
             description = COALESCE(?2, description), \
             enabled = COALESCE(?3, enabled), \
             disabled_reason = CASE WHEN ?3 = 1 THEN NULL ELSE disabled_reason END, \
             failing_since = CASE WHEN ?3 = 1 THEN NULL ELSE failing_since END, \
             updated_at = ?4 \
             WHERE app_id = ?5 AND id = ?6 RETURNING *",
        )
        .bind(&patch.callback_url)
        .bind(&patch.description)
        .bind(patch.enabled)
        .bind(now_millis())
        .bind(app_id)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        // Undelivered deliveries follow the subscription to its new URL.
        if let (Some(url), Some(_)) = (&patch.callback_url, &row) {
            sqlx::query(
                "UPDATE deliveries SET url = ? WHERE subscription_id = ? \
                 AND status IN ('pending', 'failed')",
            )
            .bind(url)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        }
        row.as_ref().map(subscription_from_row).transpose()
    }

    async fn delete_subscription(&self, app_id: &str, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let key = id.to_string();
        let deleted = sqlx::query("DELETE FROM subscriptions WHERE app_id = ? AND id = ?")
            .bind(app_id)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'dead', completed_at = ?, \
             last_error = 'subscription deleted' \
             WHERE subscription_id = ? AND status IN ('pending', 'failed')",
        )
        .bind(now_millis())
        .bind(&key)
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
            "UPDATE subscriptions SET previous_secret = secret, previous_until = ?, secret = ?, \
             updated_at = ? WHERE app_id = ? AND id = ? RETURNING *",
        )
        .bind(millis(previous_until))
        .bind(secret)
        .bind(now_millis())
        .bind(app_id)
        .bind(id.to_string())
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
        let job_id = job_id.map(|id| id.to_string());
        let subscription_id = subscription_id.map(|id| id.to_string());
        let delivery = insert_delivery(
            &mut tx,
            app_id,
            kind,
            url,
            body,
            job_id.as_deref(),
            subscription_id.as_deref(),
        )
        .await?;
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
        // receiver never holds up fresh results.
        let now = now_millis();
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = ?1 WHERE id IN ( \
                 SELECT id FROM deliveries WHERE status IN ('pending', 'failed') \
                 AND next_attempt_at <= ?2 AND (lease_until IS NULL OR lease_until < ?2) \
                 AND target NOT IN (SELECT value FROM json_each(?3)) \
                 ORDER BY attempts = 0 DESC, next_attempt_at LIMIT ?4) \
             RETURNING *",
        )
        .bind(millis(lease_until))
        .bind(now)
        .bind(busy)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn release(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE id = ?")
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
            "INSERT INTO delivery_attempts (delivery_id, at, duration_ms, status_code, response, \
             error) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(millis(attempt.at))
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(attempt.status_code)
        .bind(&attempt.response)
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        let (status, next, completed) = match outcome {
            AttemptOutcome::Succeeded => ("succeeded", None, Some(now_millis())),
            AttemptOutcome::RetryAt(at) => ("failed", Some(millis(at)), None),
            AttemptOutcome::Dead => ("dead", None, Some(now_millis())),
        };
        sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
             completed_at = ?, last_error = ?, lease_until = NULL WHERE id = ?",
        )
        .bind(status)
        .bind(next)
        .bind(completed)
        .bind(&attempt.error)
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
        let mut tx = self.pool.begin().await?;
        let key = subscription_id.to_string();
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = ?")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok((Health::Unchanged, None));
        };
        let before = subscription_from_row(&row)?;
        let now = now_millis();
        let limit = i64::try_from(disable_after.as_millis()).unwrap_or(i64::MAX);
        let failing_for = before.failing_since.map(|since| now - millis(since));

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
                before.failing_since.map(millis),
                Some("every delivery failed for too long"),
            ),
            (false, false, Some(_)) => (Health::Unchanged, before.failing_since.map(millis), None),
            (false, false, None) => (Health::Failing, Some(now), None),
        };
        let health = if disable.is_some() && !before.enabled {
            Health::Unchanged
        } else {
            health
        };
        let row = sqlx::query(
            "UPDATE subscriptions SET failing_since = ?, \
             enabled = CASE WHEN ? IS NULL THEN enabled ELSE 0 END, \
             disabled_reason = COALESCE(?, disabled_reason), updated_at = ? \
             WHERE id = ? RETURNING *",
        )
        .bind(failing_since)
        .bind(disable)
        .bind(disable)
        .bind(now)
        .bind(&key)
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
            "SELECT * FROM deliveries WHERE app_id = ?1 \
             AND (?2 IS NULL OR job_id = ?2) AND (?3 IS NULL OR subscription_id = ?3) \
             AND (?4 IS NULL OR status = ?4) ORDER BY created_at DESC, id LIMIT ?5",
        )
        .bind(app_id)
        .bind(filter.job_id.map(|id| id.to_string()))
        .bind(filter.subscription_id.map(|id| id.to_string()))
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            let attempts =
                sqlx::query("SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY seq")
                    .bind(&delivery.id)
                    .fetch_all(&self.pool)
                    .await?;
            let attempts = attempts
                .iter()
                .map(attempt_from_row)
                .collect::<Result<_, _>>()?;
            out.push((delivery, attempts));
        }
        Ok(out)
    }

    async fn delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query("SELECT * FROM deliveries WHERE app_id = ? AND id = ?")
            .bind(app_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn retry_delivery(&self, app_id: &str, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, \
             completed_at = NULL, lease_until = NULL \
             WHERE app_id = ? AND id = ? AND status IN ('failed', 'dead') RETURNING *",
        )
        .bind(now_millis())
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn clear_leases(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
