//! Subscriptions (`/subscriptions`), the outbox as seen from outside
//! (`/deliveries`), and replays (`/deliveries/{id}/retry`, `/jobs/{id}/redeliver`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiError;
use super::events::parse_json;
use crate::apps::App;
use crate::delivery::{
    Attempt, Delivery, DeliveryFilter, DeliveryKind, DeliveryStatus, Subscription, new_secret,
};
use crate::jobs::job_payload;
use crate::state::Shared;
use crate::store::SubscriptionPatch;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSubscription {
    event_type: String,
    callback_url: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Patch {
    callback_url: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// A subscription as the API shows it; `with_secret` adds its signing secret.
fn view(subscription: &Subscription, with_secret: bool) -> Value {
    let mut view = json!(subscription);
    if with_secret {
        view["secret"] = json!(subscription.secret);
        view["previousSecretUntil"] = json!(subscription.previous_until);
    }
    view
}

fn not_found(what: &str, id: &str) -> ApiError {
    let code = if what == "subscription" {
        "subscription_not_found"
    } else {
        "delivery_not_found"
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        code,
        format!("this app has no {what} {id:?}"),
    )
}

fn subscription_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| not_found("subscription", text))
}

/// Longest callback URL and description kept.
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 1024;

fn check_lengths(url: Option<&str>, description: Option<&str>) -> Result<(), ApiError> {
    if url.is_some_and(|u| u.len() > MAX_URL_LEN) {
        let message = format!("callbackUrl: at most {MAX_URL_LEN} bytes");
        return Err(ApiError::bad_request("invalid_body", message));
    }
    if description.is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN) {
        let message = format!("description: at most {MAX_DESCRIPTION_LEN} bytes");
        return Err(ApiError::bad_request("invalid_body", message));
    }
    Ok(())
}

/// Checks that `event_type` is declared for the app, or is `*`.
fn known_event_type(app: &App, event_type: &str) -> Result<(), ApiError> {
    if event_type == "*" || app.config.event_type(event_type).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = app
        .config
        .event_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    Err(ApiError::bad_request(
        "unknown_event_type",
        format!(
            "eventType {event_type:?} is not declared for this app; declared: {}, or *",
            known.join(", ")
        ),
    ))
}

/// Checks a callback URL where it will be sent: its form, and every address its
/// host resolves to.
pub(super) async fn checked_target(shared: &Shared, url: &str) -> Result<String, ApiError> {
    let policy = shared.delivery.policy();
    let refused = |error: crate::delivery::target::TargetError| {
        // The URL is not repeated: it may carry a password.
        ApiError::bad_request(error.code(), format!("callbackUrl: {error}"))
    };
    let parsed = policy.check_url(url).map_err(refused)?;
    policy.check_resolved(&parsed).await.map_err(refused)?;
    Ok(url.to_owned())
}

/// `POST /apps/{app_id}/subscriptions`: 201 with the subscription and its secret.
pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let asked: NewSubscription = parse_json(&body)?;
    known_event_type(&app, &asked.event_type)?;
    check_lengths(Some(&asked.callback_url), asked.description.as_deref())?;
    let url = checked_target(&shared, &asked.callback_url).await?;
    let outbox = &shared.jobs.outbox;
    let created = outbox
        .create_subscription(
            &app.config.id,
            &asked.event_type,
            &url,
            asked.description.as_deref(),
            &new_secret(),
        )
        .await?;
    match created {
        Ok(subscription) => {
            Ok((StatusCode::CREATED, Json(view(&subscription, true))).into_response())
        }
        Err(existing) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "subscription_exists",
            format!(
                "subscription {} already sends {} results to this URL",
                existing.id, existing.event_type
            ),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    event_type: Option<String>,
}

/// `GET /apps/{app_id}/subscriptions?eventType=…`.
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = shared
        .jobs
        .outbox
        .subscriptions(&app.config.id, query.event_type.as_deref())
        .await?;
    let views: Vec<Value> = all.iter().map(|s| view(s, false)).collect();
    Ok(Json(json!({ "subscriptions": views })))
}

/// `GET /apps/{app_id}/subscriptions/{id}`, with its secret.
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let uuid = subscription_id(&id)?;
    let found = shared
        .jobs
        .outbox
        .subscription(&app.config.id, uuid)
        .await?;
    let subscription = found.ok_or_else(|| not_found("subscription", &id))?;
    Ok(Json(view(&subscription, true)))
}

/// `PATCH /apps/{app_id}/subscriptions/{id}` `{callbackUrl?, description?, enabled?}`.
pub(super) async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let uuid = subscription_id(&id)?;
    let asked: Patch = parse_json(&body)?;
    check_lengths(asked.callback_url.as_deref(), asked.description.as_deref())?;
    let outbox = &shared.jobs.outbox;
    let current = outbox.subscription(&app.config.id, uuid).await?;
    let current = current.ok_or_else(|| not_found("subscription", &id))?;
    let callback_url = match asked.callback_url {
        Some(url) => Some(checked_target(&shared, &url).await?),
        None => None,
    };
    // One subscription per event type and URL, as on creation.
    if let Some(url) = &callback_url {
        let same = outbox
            .subscriptions(&app.config.id, Some(&current.event_type))
            .await?;
        if let Some(other) = same.iter().find(|s| s.id != uuid && &s.callback_url == url) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "subscription_exists",
                format!(
                    "subscription {} already sends {} results to this URL",
                    other.id, other.event_type
                ),
            ));
        }
    }
    let patch = SubscriptionPatch {
        callback_url,
        description: asked.description,
        enabled: asked.enabled,
    };
    let updated = shared
        .jobs
        .outbox
        .update_subscription(&app.config.id, uuid, &patch)
        .await?;
    let subscription = updated.ok_or_else(|| not_found("subscription", &id))?;
    Ok(Json(view(&subscription, false)))
}

/// `DELETE /apps/{app_id}/subscriptions/{id}`: 204; its undelivered deliveries die.
pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let uuid = subscription_id(&id)?;
    if shared
        .jobs
        .outbox
        .delete_subscription(&app.config.id, uuid)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("subscription", &id))
    }
}

/// `POST /apps/{app_id}/subscriptions/{id}/rotate-secret`: a new secret; the old
/// one keeps signing for `webhooks.secret_grace`.
pub(super) async fn rotate_secret(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let uuid = subscription_id(&id)?;
    let grace = chrono::Duration::from_std(shared.config.webhooks.secret_grace).unwrap_or_default();
    let outbox = &shared.jobs.outbox;
    let rotated = outbox
        .rotate_secret(&app.config.id, uuid, &new_secret(), Utc::now() + grace)
        .await?;
    let subscription = rotated.ok_or_else(|| not_found("subscription", &id))?;
    Ok(Json(view(&subscription, true)))
}

/// A delivery and its attempts, as the API shows them.
fn delivery_view(delivery: &Delivery, attempts: &[Attempt]) -> Value {
    let mut view = json!(delivery);
    view["attemptLog"] = json!(attempts);
    view
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryQuery {
    job_id: Option<String>,
    subscription_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /apps/{app_id}/deliveries?jobId=&subscriptionId=&status=&limit=`: newest
/// first, each with every attempt.
pub(super) async fn deliveries(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    let uuid = |name: &str, text: Option<String>| {
        text.map(|t| Uuid::parse_str(&t).map_err(|_| bad(format!("{name} is not an id"))))
            .transpose()
    };
    let status = query
        .status
        .map(|s| {
            DeliveryStatus::parse(&s).ok_or_else(|| {
                bad(format!(
                    "status {s:?} is not one of pending, failed, succeeded, dead"
                ))
            })
        })
        .transpose()?;
    let limit = super::page_limit(query.limit)?;
    let filter = DeliveryFilter {
        job_id: uuid("jobId", query.job_id)?,
        subscription_id: uuid("subscriptionId", query.subscription_id)?,
        status,
        limit,
    };
    let found = shared
        .jobs
        .outbox
        .deliveries(&app.config.id, &filter)
        .await?;
    let views: Vec<Value> = found.iter().map(|(d, a)| delivery_view(d, a)).collect();
    Ok(Json(json!({ "deliveries": views })))
}

/// `POST /apps/{app_id}/deliveries/{id}/retry`: sends a failed or dead delivery
/// again, with a fresh schedule.
pub(super) async fn retry(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let outbox = &shared.jobs.outbox;
    // A delivery whose subscription is gone has nowhere left to go.
    let found = outbox.delivery(&app.config.id, &id).await?;
    if let Some(subscription_id) = found.as_ref().and_then(|d| d.subscription_id) {
        if outbox
            .subscription(&app.config.id, subscription_id)
            .await?
            .is_none()
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "subscription_deleted",
                format!("the subscription of delivery {id} was deleted; it is not sent again"),
            ));
        }
    }
    match outbox.retry_delivery(&app.config.id, &id).await? {
        Some(delivery) => {
            shared.delivery.deliveries_written();
            Ok((StatusCode::ACCEPTED, Json(delivery_view(&delivery, &[]))).into_response())
        }
        None => {
            let exists = outbox.delivery(&app.config.id, &id).await?.is_some();
            if exists {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "delivery_not_retryable",
                    "only a failed or dead delivery can be sent again",
                ))
            } else {
                Err(not_found("delivery", &id))
            }
        }
    }
}

/// `POST /apps/{app_id}/jobs/{id}/redeliver`: sends a finished job's result to its
/// event type's subscribers again, as new deliveries.
pub(super) async fn redeliver(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let missing = || super::jobs::not_found(&id);
    let uuid = Uuid::parse_str(&id).map_err(|_| missing())?;
    let job = shared
        .jobs
        .store
        .job(&app.config.id, uuid)
        .await?
        .ok_or_else(missing)?;
    if !matches!(
        job.status,
        crate::jobs::JobStatus::Completed | crate::jobs::JobStatus::Failed
    ) {
        let message = format!(
            "job {id} has no result to deliver yet (it is {})",
            job.status.as_str()
        );
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_not_finished",
            message,
        ));
    }
    let body = job_payload(&job, None).to_string();
    let outbox = &shared.jobs.outbox;
    let mut written = Vec::new();
    for subscription in outbox.matching(&app.config.id, &job.event_type).await? {
        let delivery = outbox
            .enqueue(
                &app.config.id,
                DeliveryKind::Standard,
                &subscription.callback_url,
                &body,
                Some(uuid),
                Some(subscription.id),
            )
            .await?;
        written.push(delivery_view(&delivery, &[]));
    }
    shared.delivery.deliveries_written();
    Ok((StatusCode::ACCEPTED, Json(json!({ "deliveries": written }))).into_response())
}
