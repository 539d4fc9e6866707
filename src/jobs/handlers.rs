//! The built-in handlers, chosen by the `handler` of an event type.

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::files::StoredFile;
use super::handler::{Handler, HandlerError, JobContext};
use super::{ResultStatus, WebhookResult, chat_analysis};
use crate::config::HandlerKind;

/// The handler of a kind.
pub(super) fn handler_for(kind: HandlerKind) -> &'static dyn Handler {
    match kind {
        HandlerKind::FileUpload => &FileUpload,
        HandlerKind::ChatAnalysis => &ChatAnalysis,
        HandlerKind::Relay => &Relay,
        HandlerKind::Http => &HttpWorker,
    }
}

/// `relay`: the payload is the result, for notifications and system events.
struct Relay;

#[async_trait]
impl Handler for Relay {
    async fn handle(&self, job: &JobContext) -> Result<WebhookResult, HandlerError> {
        Ok(WebhookResult::success("relayed", job.job.payload.clone()))
    }
}

/// `chat-analysis`: participants, response times, language, sentiment, top terms.
struct ChatAnalysis;

#[async_trait]
impl Handler for ChatAnalysis {
    async fn handle(&self, job: &JobContext) -> Result<WebhookResult, HandlerError> {
        let messages =
            chat_analysis::parse_messages(&job.job.payload).map_err(HandlerError::Invalid)?;
        let count = messages.len();
        job.progress(0.2, format!("read {count} messages")).await;

        // The analysis is CPU work; keep it off the threads that serve sockets.
        let analysis = tokio::task::spawn_blocking(move || chat_analysis::analyze(&messages))
            .await
            .map_err(|error| HandlerError::Failed(format!("analysis stopped: {error}")))?;
        let participants = analysis["participants"].as_array().map_or(0, Vec::len);
        let message = format!("analysed {count} messages from {participants} participants");
        Ok(WebhookResult::success(message, analysis))
    }
}

/// `file-upload`: moves the job's upload into content-addressed storage while
/// hashing it, then reports its size, SHA-256, type and image dimensions. The
/// payload may instead name a file already stored, as `{"sha256": "…"}`.
struct FileUpload;

#[async_trait]
impl Handler for FileUpload {
    async fn handle(&self, job: &JobContext) -> Result<WebhookResult, HandlerError> {
        let stored = match job.job.payload.get("sha256").and_then(Value::as_str) {
            Some(sha256) => already_stored(job, sha256).await?,
            None => ingest_upload(job).await?,
        };
        let path = job.files.find(&stored.sha256).await.ok_or_else(|| {
            HandlerError::Failed(format!("stored file {} vanished", stored.sha256))
        })?;
        let info = job.files.inspect(&path).await.map_err(|error| {
            HandlerError::Failed(format!("cannot read the stored file: {error}"))
        })?;

        let upload = job.job.payload.get("upload");
        let data = json!({
            "sha256": stored.sha256,
            "size": stored.size,
            "mimeType": info.mime_type,
            "extension": info.extension,
            "image": info.image,
            "fileName": upload.and_then(|u| u.get("fileName")).cloned().unwrap_or(Value::Null),
            "url": format!("/apps/{}/files/{}", job.job.app_id, stored.sha256),
        });
        let message = format!("stored {} bytes of {}", stored.size, info.mime_type);
        Ok(WebhookResult::success(message, data))
    }
}

async fn already_stored(job: &JobContext, sha256: &str) -> Result<StoredFile, HandlerError> {
    let app = &job.job.app_id;
    let path = job.files.find_for(app, sha256).await.ok_or_else(|| {
        HandlerError::Invalid(format!(
            "this app stored no file with the sha256 {sha256:?}"
        ))
    })?;
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|error| HandlerError::Failed(error.to_string()))?
        .len();
    Ok(StoredFile {
        sha256: sha256.to_owned(),
        size,
    })
}

/// Streams the spooled upload into the store, reporting progress every tenth.
async fn ingest_upload(job: &JobContext) -> Result<StoredFile, HandlerError> {
    let incoming = job
        .files
        .incoming_path(&job.job.id.to_string())
        .map_err(|error| HandlerError::Failed(error.to_string()))?;
    if !tokio::fs::try_exists(&incoming).await.unwrap_or(false) {
        let message = "this job has no uploaded file: send one as the multipart `file` part";
        return Err(HandlerError::Invalid(message.into()));
    }

    // The store calls back for every chunk; a small channel carries the tenths to
    // this task, which stores and pushes them, and drops any it cannot keep up with.
    let (tenths, mut reports) = mpsc::channel::<u64>(4);
    let mut last_tenth = 0;
    let ingest = job.files.ingest(&incoming, move |done, total| {
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > last_tenth {
            last_tenth = tenth;
            let _ = tenths.try_send(tenth);
        }
    });
    let report = async {
        let mut reported = 0;
        while let Some(tenth) = reports.recv().await {
            let message = format!("stored {}%", tenth * 10);
            job.progress(tenth as f64 / 10.0, message).await;
            reported = tenth;
        }
        reported
    };
    let (stored, reported) = tokio::join!(ingest, report);
    let stored =
        stored.map_err(|error| HandlerError::Failed(format!("storing failed: {error}")))?;
    // The last tenth may have been among those dropped; the last report says 100%.
    if reported < 10 {
        job.progress(1.0, "stored 100%").await;
    }

    // The upload is now in the store, and this app's; a repeat of this job finds it
    // by its hash.
    job.files
        .record_owner(&job.job.app_id, &stored.sha256)
        .await
        .map_err(|error| HandlerError::Failed(format!("storing failed: {error}")))?;
    let _ = tokio::fs::remove_file(&incoming).await;
    Ok(stored)
}

/// `http`: POSTs the job to the event type's worker URL; the worker's JSON answer
/// is the result.
struct HttpWorker;

#[async_trait]
impl Handler for HttpWorker {
    async fn handle(&self, job: &JobContext) -> Result<WebhookResult, HandlerError> {
        let url = job.event_type.url.as_deref().unwrap_or_default();
        let body = json!({
            "id": job.job.id,
            "eventType": job.job.event_type,
            "payload": job.job.payload,
            "metadata": job.job.metadata,
            "attempt": job.job.attempts,
        });
        let response = job
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|error| {
                HandlerError::Failed(format!("worker at {url} unreachable: {error}"))
            })?;
        let status = response.status();
        let body = read_limited(response, job.max_result_size).await?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let excerpt: String = text.chars().take(200).collect();
            return Err(HandlerError::Failed(format!(
                "worker answered {status}: {excerpt}"
            )));
        }
        // An empty 2xx answer (204 No Content) is a success with nothing to report.
        if text.trim().is_empty() {
            return Ok(WebhookResult::success("worker answered", Value::Null));
        }
        let answer: Value = serde_json::from_str(&text)
            .map_err(|error| HandlerError::Failed(format!("worker answer is not JSON: {error}")))?;
        Ok(result_from_answer(answer))
    }
}

/// The body of a worker's answer, refused past `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, HandlerError> {
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|error| HandlerError::Failed(format!("worker answer unreadable: {error}")))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            let message =
                format!("worker answer is larger than jobs.max_result_size ({limit} bytes)");
            return Err(HandlerError::Failed(message));
        }
        body.extend_from_slice(&chunk);
    }
}

/// A worker may answer with a whole `{status, message, data}` result, or with any
/// other JSON, which becomes the data of a success.
fn result_from_answer(answer: Value) -> WebhookResult {
    match serde_json::from_value::<WebhookResult>(answer.clone()) {
        Ok(result) => result,
        Err(_) => WebhookResult {
            status: ResultStatus::Success,
            message: "worker answered".into(),
            data: answer,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_answers_become_results() {
        let whole = json!({"status": "error", "message": "no", "data": {"x": 1}});
        assert_eq!(result_from_answer(whole).status, ResultStatus::Error);
        let plain = result_from_answer(json!({"width": 3}));
        assert_eq!(plain.status, ResultStatus::Success);
        assert_eq!(plain.data, json!({"width": 3}));
    }
}
