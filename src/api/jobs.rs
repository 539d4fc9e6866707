//! The jobs API: `POST /jobs` (JSON or multipart with a file), `GET /jobs`,
//! `GET /jobs/{id}`, `POST /jobs/{id}/cancel`, and `GET /files/{sha256}` for
//! uploaded files.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::io::{ReaderStream, StreamReader};
use uuid::Uuid;

use super::ApiError;
use super::events::parse_json;
use crate::apps::App;
use crate::config::{EventTypeConfig, HandlerKind};
use crate::jobs::files::FileError;
use crate::jobs::{Job, JobFilter, JobStatus, NewJob, render_channel};
use crate::protocol::ChannelName;
use crate::state::Shared;
use crate::store::{Cancelled, Inserted, StoreError};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The body of `POST /jobs`: the seed design's `WebhookEvent`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookEvent {
    event_type: String,
    #[serde(default = "empty_object")]
    payload: Value,
    #[serde(default = "empty_object")]
    metadata: Value,
    channel: Option<String>,
    callback_url: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(error = %error, "store failed during a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the job store is not answering; try again shortly",
        )
    }
}

/// `POST /apps/{app_id}/jobs`.
pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    request: Request,
) -> Result<Response, ApiError> {
    accept(&shared, &app, request).await
}

/// Checks a job request, stores the job, and answers 202. The job is in the store
/// before the answer leaves.
pub(super) async fn accept(
    shared: &Arc<Shared>,
    app: &Arc<App>,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    let id = Uuid::new_v4();
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let event = if is_multipart {
        match read_multipart(shared, app, request, id).await {
            Ok(event) => event,
            Err(error) => {
                discard_upload(shared, id).await;
                return Err(error);
            }
        }
    } else {
        let limit = app.config.max_job_size;
        let body = to_bytes(request.into_body(), limit).await.map_err(|_| {
            let message =
                format!("job body is larger than this app's max_job_size ({limit} bytes)");
            ApiError::too_large("body_too_large", message)
        })?;
        parse_json::<WebhookEvent>(&body)?
    };

    let job = match checked_job(shared, app, event, id, key).await {
        Ok(job) => job,
        Err(error) => {
            discard_upload(shared, id).await;
            return Err(error);
        }
    };
    match shared.jobs.store.insert_job(&job).await? {
        Inserted::New(stored) => {
            shared.jobs.job_queued(&stored.app_id, &stored.event_type);
            Ok(accepted(shared, &stored).await?)
        }
        Inserted::Existing(first, digest) => {
            discard_upload(shared, id).await;
            if digest != job.request_digest {
                let message = "this Idempotency-Key was used for a different request; use a \
                               new key for a new job";
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    message,
                ));
            }
            Ok(accepted(shared, &first).await?)
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// A job request checked, with the subscription its `callbackUrl` asks for made
/// sure of: the same subscription serves every request naming that URL.
async fn checked_job(
    shared: &Shared,
    app: &App,
    event: WebhookEvent,
    id: Uuid,
    key: Option<String>,
) -> Result<NewJob, ApiError> {
    let job = new_job(app, event, id, key)?;
    if let Some(url) = &job.callback_url {
        let url = super::subscriptions::checked_target(shared, url).await?;
        let outbox = &shared.jobs.outbox;
        // A `*` subscription to the URL already receives this type's results.
        let matching = outbox.matching(&job.app_id, &job.event_type).await?;
        if !matching.iter().any(|s| s.callback_url == url) {
            let secret = crate::delivery::new_secret();
            let _ = outbox
                .create_subscription(&job.app_id, &job.event_type, &url, None, &secret)
                .await?;
        }
    }
    Ok(job)
}

/// The answer to an accepted job, the same on every retry of the request:
/// `callbackUrls` lists every enabled subscription that will receive the result.
async fn accepted(shared: &Shared, job: &Job) -> Result<Response, ApiError> {
    let status_url = format!("/apps/{}/jobs/{}", job.app_id, job.id);
    let subscriptions = shared
        .jobs
        .outbox
        .matching(&job.app_id, &job.event_type)
        .await?;
    let mut callback_urls: Vec<&str> = Vec::new();
    for subscription in &subscriptions {
        if !callback_urls.contains(&subscription.callback_url.as_str()) {
            callback_urls.push(&subscription.callback_url);
        }
    }
    let body = json!({
        "id": job.id,
        "eventType": job.event_type,
        "status": JobStatus::Queued,
        "statusUrl": status_url,
        "channel": job.channel,
        "callbackUrls": callback_urls,
    });
    let location = [(header::LOCATION, status_url)];
    Ok((StatusCode::ACCEPTED, location, Json(body)).into_response())
}

/// Applies the rules of the jobs API to a request.
fn new_job(
    app: &App,
    event: WebhookEvent,
    id: Uuid,
    idempotency_key: Option<String>,
) -> Result<NewJob, ApiError> {
    let event_type = app.config.event_type(&event.event_type).ok_or_else(|| {
        let known: Vec<&str> = app
            .config
            .event_types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        ApiError::bad_request(
            "unknown_event_type",
            format!(
                "eventType {:?} is not declared for this app; declared: {}",
                event.event_type,
                known.join(", ")
            ),
        )
    })?;
    let channel = job_channel(event_type, &event, id)?;
    let callback_url = event.callback_url.map(checked_callback_url).transpose()?;

    // The digest covers what the request asked for (the channel as asked, not as
    // filled in with this job's id), so a retry matches and a different request
    // under the same key does not.
    let asked = json!([
        event.event_type,
        event.payload,
        event.metadata,
        event.channel,
        callback_url
    ]);
    let request_digest = hex::encode(Sha256::digest(asked.to_string().as_bytes()));
    Ok(NewJob {
        id,
        app_id: app.config.id.clone(),
        event_type: event.event_type,
        channel: Some(channel),
        callback_url,
        payload: event.payload,
        metadata: event.metadata,
        max_attempts: event_type.attempts,
        idempotency_key,
        request_digest: Some(request_digest),
    })
}

fn job_channel(
    event_type: &EventTypeConfig,
    event: &WebhookEvent,
    id: Uuid,
) -> Result<String, ApiError> {
    let channel = match &event.channel {
        Some(channel) => channel.clone(),
        None => render_channel(
            &event_type.channel,
            &id.to_string(),
            &event_type.name,
            &event.metadata,
        )
        .map_err(|problem| ApiError::bad_request("invalid_channel", problem))?,
    };
    ChannelName::parse(&channel).map_err(|error| {
        ApiError::bad_request("invalid_channel", format!("channel {channel:?}: {error}"))
    })?;
    Ok(channel)
}

fn checked_callback_url(url: String) -> Result<String, ApiError> {
    let parsed = reqwest::Url::parse(&url).map_err(|error| {
        ApiError::bad_request(
            "invalid_callback_url",
            format!("callbackUrl {url:?}: {error}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        let message = format!("callbackUrl must be http or https, not {}", parsed.scheme());
        return Err(ApiError::bad_request("invalid_callback_url", message));
    }
    Ok(url)
}

/// Reads a multipart job: the `WebhookEvent` fields as text parts (`payload` and
/// `metadata` as JSON text) and a `file` part, spooled to disk as it arrives. The
/// payload gains `upload: {fileName, contentType, size}`.
async fn read_multipart(
    shared: &Shared,
    app: &App,
    request: Request,
    id: Uuid,
) -> Result<WebhookEvent, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_multipart", message);
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|error| bad(error.body_text()))?;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut upload: Option<Value> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if upload.is_some() {
                let message = "send one `file` part; this request has several".to_owned();
                return Err(bad(message));
            }
            upload = Some(spool(shared, app, field, id).await?);
            continue;
        }
        let limit = app.config.max_job_size;
        let bytes = read_part(field, limit).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| bad(format!("part {name:?} is not UTF-8 text")))?;
        fields.insert(name, text);
    }
    event_from_parts(app, fields, upload)
}

async fn read_part(
    field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let mut field = field;
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?
    {
        if bytes.len() + chunk.len() > limit {
            let message =
                format!("a text part is larger than this app's max_job_size ({limit} bytes)");
            return Err(ApiError::too_large("body_too_large", message));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

async fn spool(
    shared: &Shared,
    app: &App,
    field: axum::extract::multipart::Field<'_>,
    id: Uuid,
) -> Result<Value, ApiError> {
    let file_name = field.file_name().map(str::to_owned);
    let content_type = field.content_type().map(str::to_owned);
    let reader = StreamReader::new(field.map_err(std::io::Error::other));
    let limit = app.config.max_upload_size;
    let size = shared
        .jobs
        .files
        .spool(&id.to_string(), reader, limit)
        .await
        .map_err(|error| match error {
            FileError::TooLarge { limit } => ApiError::too_large(
                "file_too_large",
                format!("the file is larger than this app's max_upload_size ({limit} bytes)"),
            ),
            FileError::UploadInterrupted(_) => ApiError::bad_request(
                "upload_interrupted",
                "the file part ended before it was complete; send the request again",
            ),
            other => {
                tracing::error!(error = %other, "cannot spool an upload");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the upload could not be stored; try again",
                )
            }
        })?;
    Ok(json!({"fileName": file_name, "contentType": content_type, "size": size}))
}

fn event_from_parts(
    app: &App,
    mut fields: HashMap<String, String>,
    upload: Option<Value>,
) -> Result<WebhookEvent, ApiError> {
    let json_part = |fields: &mut HashMap<String, String>, name: &str| -> Result<Value, ApiError> {
        match fields.remove(name) {
            None => Ok(empty_object()),
            Some(text) => serde_json::from_str(&text).map_err(|error| {
                ApiError::bad_request("invalid_body", format!("{name}: not JSON: {error}"))
            }),
        }
    };
    let event_type = fields.remove("eventType").ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            "eventType: the multipart form needs this part",
        )
    })?;
    let mut payload = json_part(&mut fields, "payload")?;
    let metadata = json_part(&mut fields, "metadata")?;

    if let Some(upload) = upload {
        if app.config.event_type(&event_type).is_none() {
            let message = format!("eventType {event_type:?} is not declared for this app");
            return Err(ApiError::bad_request("unknown_event_type", message));
        }
        let takes_files = app
            .config
            .event_type(&event_type)
            .is_some_and(|t| t.handler == HandlerKind::FileUpload);
        let Value::Object(object) = &mut payload else {
            return Err(ApiError::bad_request(
                "invalid_body",
                "payload: must be a JSON object when a file is sent",
            ));
        };
        if !takes_files {
            let message = format!(
                "eventType {event_type:?} does not take files; only file-upload event types do"
            );
            return Err(ApiError::bad_request("unexpected_file", message));
        }
        object.insert("upload".into(), upload);
    }
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "channel" | "callbackUrl"))
    {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("unknown part {unknown:?}"),
        ));
    }
    Ok(WebhookEvent {
        event_type,
        payload,
        metadata,
        channel: fields.remove("channel"),
        callback_url: fields.remove("callbackUrl"),
    })
}

async fn discard_upload(shared: &Shared, id: Uuid) {
    if let Ok(path) = shared.jobs.files.incoming_path(&id.to_string()) {
        let _ = tokio::fs::remove_file(path).await;
    }
}

/// The event log entry of a job, as `GET /jobs/{id}` shows it.
fn job_view(job: &Job) -> Value {
    json!({
        "id": job.id,
        "eventType": job.event_type,
        "status": job.status,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "progress": job.progress,
        "payload": job.payload,
        "metadata": job.metadata,
        "result": job.result,
        "error": job.error,
        "channel": job.channel,
        "callbackUrl": job.callback_url,
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
    })
}

fn job_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| not_found(text))
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "job_not_found",
        format!("this app has no job {id:?}"),
    )
}

/// `GET /apps/{app_id}/jobs/{id}`: the job with every recorded step.
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let uuid = job_id(&id)?;
    let store = &shared.jobs.store;
    let job = store
        .job(&app.config.id, uuid)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let mut view = job_view(&job);
    view["steps"] = json!(store.steps(uuid).await?);
    Ok(Json(view))
}

/// Query of `GET /jobs`. Other parameters are ignored: a signed request carries its
/// `auth_*` parameters in the same query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    event_type: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /apps/{app_id}/jobs`: newest first, filtered, paged with `nextCursor`.
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = filter_of(query)?;
    let jobs = shared.jobs.store.jobs(&app.config.id, &filter).await?;
    let next_cursor = (jobs.len() == filter.limit as usize)
        .then(|| jobs.last())
        .flatten()
        .map(|job| format!("{}_{}", job.created_at.timestamp_millis(), job.id));
    let views: Vec<Value> = jobs.iter().map(job_view).collect();
    Ok(Json(json!({"jobs": views, "nextCursor": next_cursor})))
}

fn filter_of(query: ListQuery) -> Result<JobFilter, ApiError> {
    let bad = |message: String| ApiError::bad_request("invalid_query", message);
    let time = |name: &str, text: Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| {
                    bad(format!(
                        "{name} must be an RFC 3339 time like 2026-01-31T12:00:00Z"
                    ))
                })
        })
        .transpose()
    };
    let status = query
        .status
        .map(|s| {
            JobStatus::parse(&s).ok_or_else(|| {
                bad(format!(
                    "status {s:?} is not one of queued, started, completed, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let after = query
        .cursor
        .map(|c| cursor(&c).ok_or_else(|| bad("cursor is not one this API gave out".into())))
        .transpose()?;
    let limit = super::page_limit(query.limit)?;
    Ok(JobFilter {
        event_type: query.event_type,
        status,
        since: time("since", query.since)?,
        until: time("until", query.until)?,
        after,
        limit,
    })
}

fn cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (millis, id) = text.split_once('_')?;
    let time = DateTime::from_timestamp_millis(millis.parse().ok()?)?;
    Some((time, Uuid::parse_str(id).ok()?))
}

/// `POST /apps/{app_id}/jobs/{id}/cancel`: stops a job that has not ended.
pub(super) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let uuid = job_id(&id)?;
    match shared.jobs.store.cancel(&app.config.id, uuid).await? {
        Cancelled::Now(job) => {
            shared.jobs.stop_attempt(uuid);
            if let Some(bus) = shared.hub.bus() {
                bus.cancel_job(uuid);
            }
            discard_upload(&shared, uuid).await;
            let keep = shared.config.jobs.retain_results;
            crate::jobs::retain_outcome(&shared.hub, &job, keep);
            Ok(Json(job_view(&job)))
        }
        Cancelled::AlreadyFinal(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_already_ended",
            format!("job {id} has already ended as {}", job.status.as_str()),
        )),
        Cancelled::NotFound => Err(not_found(&id)),
    }
}

/// `GET /apps/{app_id}/files/{sha256}`: a stored upload, with the type detected
/// from its bytes.
pub(super) async fn file(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, sha256)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "file_not_found",
            format!("no stored file has the sha256 {sha256:?}"),
        )
    };
    let files = &shared.jobs.files;
    let path = files
        .find_for(&app.config.id, &sha256)
        .await
        .ok_or_else(missing)?;
    let info = files.inspect(&path).await.map_err(|_| missing())?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let headers = [
        (header::CONTENT_TYPE, info.mime_type),
        (header::CONTENT_LENGTH, size.to_string()),
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable".to_owned(),
        ),
    ];
    Ok((headers, Body::from_stream(ReaderStream::new(file))).into_response())
}
