//! Helpers for the jobs tests: configurations with fast event types, the jobs API
//! through a bearer token or a signature, hand-built multipart forms, a worker that
//! the `http` handler calls on loopback, and readers of the events a job pushes.

#![allow(
    dead_code,
    reason = "each jobs test file uses a different part of the kit"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::kit::{WAIT, join_public};
use crate::support::{TestServer, Ws, data_of, recv_event};

/// The demo app's API token.
pub(crate) const TOKEN: &str = "demo-token";

/// Longest a test waits for a job to reach a status.
pub(crate) const JOB_WAIT: Duration = Duration::from_secs(10);

/// Most frames read while looking for a job's events.
const MAX_FRAMES: usize = 300;

/// How often a waiting test asks for a job's status.
const POLL: Duration = Duration::from_millis(25);

/// The shipped demo app's built-in event types, with a short back-off so that
/// retries are quick.
pub(crate) const BUILTIN_TYPES: &str = r#"
[[apps.event_types]]
name = "file-upload"
handler = "file-upload"
channel = "job-{jobId}"
timeout = "10s"
attempts = 3
backoff = "100ms"
concurrency = 2

[[apps.event_types]]
name = "chat-analysis"
handler = "chat-analysis"
channel = "job-{jobId}"
timeout = "10s"
attempts = 3
backoff = "100ms"
concurrency = 4

[[apps.event_types]]
name = "relay"
handler = "relay"
channel = "notifications"
timeout = "5s"
attempts = 1
backoff = "100ms"
concurrency = 8
"#;

/// A configuration with only the demo app, its token, `app_options` (lines of the
/// `[[apps]]` block, such as limits) and `event_types` (`[[apps.event_types]]`
/// blocks). Shutdown waits at most a second for running jobs; callbacks may reach
/// loopback receivers.
pub(crate) fn jobs_config(app_options: &str, event_types: &str) -> String {
    format!(
        "[server]\nshutdown_grace = \"1s\"\n\n\
         [webhooks]\nallow_cidrs = [\"127.0.0.0/8\"]\n\n\
         [[apps]]\nid = \"demo-app\"\nkey = \"demo-key\"\nsecret = \"demo-secret\"\n\
         api_token = \"{TOKEN}\"\n{app_options}\n{event_types}\n"
    )
}

/// An `http` event type named `name` calling `url`, 3 attempts 100 ms apart, with
/// extra `options` lines (which may override none of those keys).
pub(crate) fn http_type(name: &str, url: &str, options: &str) -> String {
    let mut block =
        format!("\n[[apps.event_types]]\nname = \"{name}\"\nhandler = \"http\"\nurl = \"{url}\"\n");
    for (key, default) in [
        ("attempts", "3"),
        ("backoff", "\"100ms\""),
        ("timeout", "\"5s\""),
    ] {
        if !options
            .lines()
            .any(|line| line.trim_start().starts_with(key))
        {
            block.push_str(&format!("{key} = {default}\n"));
        }
    }
    block.push_str(options);
    block.push('\n');
    block
}

/// A server with the built-in event types and the demo app's token.
pub(crate) async fn builtin_server() -> TestServer {
    TestServer::start_with(&jobs_config("", BUILTIN_TYPES)).await
}

/// A unique public channel name for one test.
pub(crate) fn unique_channel(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------
// The jobs API.

/// A request to `/apps/demo-app{path}` carrying the demo app's bearer token.
pub(crate) fn bearer(server: &TestServer, method: &str, path: &str) -> reqwest::RequestBuilder {
    unauthenticated(server, method, path).bearer_auth(TOKEN)
}

/// A request to `/apps/demo-app{path}` with no credentials.
pub(crate) fn unauthenticated(
    server: &TestServer,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let url = server.url(&format!("/apps/{}{path}", server.app.id));
    let client = reqwest::Client::new();
    match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        other => panic!("unsupported method {other}"),
    }
}

/// Sends a request; fails after `WAIT`.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("no HTTP answer within 5 s")
        .expect("HTTP request failed")
}

/// A signed API request (see `TestServer::api`); fails after `WAIT`.
pub(crate) async fn signed(
    server: &TestServer,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> reqwest::Response {
    tokio::time::timeout(WAIT, server.api(method, path, query, body))
        .await
        .expect("no HTTP answer within 5 s")
}

/// `POST /jobs` with a JSON body and the bearer token.
pub(crate) async fn post_job(server: &TestServer, body: Value) -> reqwest::Response {
    send(bearer(server, "POST", "/jobs").json(&body)).await
}

/// Asserts a response is 202 and returns its JSON body.
pub(crate) async fn accepted(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    assert_eq!(status, 202, "POST /jobs should accept; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("202 body is not JSON ({e}): {text}"))
}

/// Creates a job with the bearer token, asserting 202; returns the 202 body.
pub(crate) async fn create_job(server: &TestServer, body: Value) -> Value {
    accepted(post_job(server, body).await).await
}

/// The id in a 202 body.
pub(crate) fn id_of(created: &Value) -> String {
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id in {created}"))
        .to_owned()
}

/// `GET /jobs/{id}` with the bearer token, asserting 200.
pub(crate) async fn get_job(server: &TestServer, id: &str) -> Value {
    let response = send(bearer(server, "GET", &format!("/jobs/{id}"))).await;
    crate::kit::api_ok(response).await
}

/// `GET /jobs?query` with the bearer token, asserting 200.
pub(crate) async fn list_jobs(server: &TestServer, query: &[(&str, &str)]) -> Value {
    let response = send(bearer(server, "GET", "/jobs").query(query)).await;
    crate::kit::api_ok(response).await
}

/// Asks for the job until its status is one of `statuses`; fails after `JOB_WAIT`
/// with the last view of the job.
pub(crate) async fn wait_for_status(server: &TestServer, id: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        let job = get_job(server, id).await;
        if statuses.iter().any(|s| job["status"] == *s) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not {statuses:?} within {JOB_WAIT:?}; last seen: {job:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for the job to end (completed, failed or cancelled) and returns it.
pub(crate) async fn wait_until_ended(server: &TestServer, id: &str) -> Value {
    wait_for_status(server, id, &["completed", "failed", "cancelled"]).await
}

/// The `kind` of each recorded step of a job view.
pub(crate) fn step_kinds(job: &Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps array in {job}"))
        .iter()
        .map(|step| step["kind"].as_str().unwrap_or("<no kind>").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// Multipart forms, built by hand (the test client has no multipart support).

/// A `multipart/form-data` body.
pub(crate) struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Form {
    /// An empty form.
    pub(crate) fn new() -> Self {
        Form {
            boundary: format!("herald-test-{}", uuid::Uuid::new_v4().simple()),
            body: Vec::new(),
        }
    }

    /// Adds a text part.
    pub(crate) fn text(mut self, name: &str, value: &str) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a file part.
    pub(crate) fn file(
        mut self,
        name: &str,
        file_name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
             Content-Type: {content_type}\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The content type and the finished body.
    pub(crate) fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

/// `POST /jobs` with a multipart form and the bearer token.
pub(crate) async fn post_form(server: &TestServer, form: Form) -> reqwest::Response {
    let (content_type, body) = form.finish();
    let request = bearer(server, "POST", "/jobs")
        .header("content-type", content_type)
        .body(body);
    send(request).await
}

/// `POST /jobs` with a multipart form, signed as the Pusher HTTP API signs
/// requests (the body's MD5 taken over its raw bytes).
pub(crate) async fn post_form_signed(server: &TestServer, form: Form) -> reqwest::Response {
    use md5::{Digest, Md5};

    let (content_type, body) = form.finish();
    let path = format!("/apps/{}/jobs", server.app.id);
    let params = [
        ("auth_key", server.app.key.clone()),
        ("auth_timestamp", crate::support::now().to_string()),
        ("auth_version", "1.0".to_owned()),
        ("body_md5", hex::encode(Md5::digest(&body))),
    ];
    let (query, _) = crate::kit::sign_params(&server.app.secret, "POST", &path, &params);
    let request = reqwest::Client::new()
        .post(format!("{}?{query}", server.url(&path)))
        .header("content-type", content_type)
        .body(body);
    send(request).await
}

/// The bytes of a file in `tests/fixtures`.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// A worker for the `http` handler, served by the test on loopback.

/// What the worker does with one request.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// Answers this status with this JSON body.
    Json(u16, Value),
    /// Waits, then answers.
    After(Duration, Box<Answer>),
    /// Never answers (holds the request for a minute).
    Hang,
}

impl Answer {
    /// 200 with `body`.
    pub(crate) fn ok(body: Value) -> Answer {
        Answer::Json(200, body)
    }

    /// 500 with a small error body.
    pub(crate) fn server_error() -> Answer {
        Answer::Json(500, json!({"error": "worker broke"}))
    }
}

type Behaviour = dyn Fn(usize) -> Answer + Send + Sync;

struct WorkerState {
    behaviour: Box<Behaviour>,
    requests: Mutex<Vec<Value>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A loopback HTTP worker that records every job POSTed to it and answers as its
/// behaviour says for the n-th request (counted from 1).
pub(crate) struct Worker {
    /// The URL to configure as the event type's `url`.
    pub(crate) url: String,
    state: Arc<WorkerState>,
}

impl Worker {
    /// Starts a worker on `127.0.0.1:0`; it runs until the test ends.
    pub(crate) async fn start(
        behaviour: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> Worker {
        let state = Arc::new(WorkerState {
            behaviour: Box::new(behaviour),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route("/work", post(work))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/work", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Worker { url, state }
    }

    /// A worker that always answers `answer`.
    pub(crate) async fn always(answer: Answer) -> Worker {
        Worker::start(move |_| answer.clone()).await
    }

    /// The JSON bodies received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most requests it has held at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until it has received `count` requests; fails after `JOB_WAIT`.
    pub(crate) async fn wait_for_requests(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "worker got {} of {count} requests within {JOB_WAIT:?}: {requests:?}",
                requests.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Lowers the in-flight count when a request ends, answered or dropped.
struct InFlight(Arc<WorkerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn work(State(state): State<Arc<WorkerState>>, Json(body): Json<Value>) -> Response {
    let number = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(body);
        requests.len()
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(Arc::clone(&state));

    let mut answer = (state.behaviour)(number);
    loop {
        match answer {
            Answer::Json(status, body) => {
                let status = StatusCode::from_u16(status).unwrap();
                return (status, Json(body)).into_response();
            }
            Answer::After(wait, then) => {
                tokio::time::sleep(wait).await;
                answer = *then;
            }
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Events pushed on a job's channel.

/// Connects to the demo app and subscribes to the public `channel`.
pub(crate) async fn listen(server: &TestServer, channel: &str) -> Ws {
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, channel).await;
    ws
}

/// A `job.*` event as `(name, decoded data)`.
pub(crate) type JobEvent = (String, Value);

/// Reads the `job.*` events of job `id` until one ends it (`job.completed`,
/// `job.failed`, `job.cancelled`); returns them all, the last included.
pub(crate) async fn events_until_end(ws: &mut Ws, id: &str) -> Vec<JobEvent> {
    let mut events = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = recv_event(ws).await;
        let name = frame["event"].as_str().unwrap_or_default().to_owned();
        if !name.starts_with("job.") {
            continue;
        }
        let data = data_of(&frame);
        if data["jobId"] != id {
            continue;
        }
        let ended = matches!(
            name.as_str(),
            "job.completed" | "job.failed" | "job.cancelled"
        );
        events.push((name, data));
        if ended {
            return events;
        }
    }
    panic!("job {id} did not end among {MAX_FRAMES} frames; its events: {events:?}");
}

/// The names of events, in order.
pub(crate) fn names(events: &[JobEvent]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// Asserts a job event's data carries every field the spec lists.
pub(crate) fn assert_event_fields(name: &str, data: &Value) {
    for field in [
        "jobId",
        "eventType",
        "status",
        "metadata",
        "attempt",
        "progress",
        "result",
        "error",
    ] {
        assert!(
            data.get(field).is_some(),
            "{name} data has no {field:?}: {data}"
        );
    }
}
