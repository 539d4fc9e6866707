//! Helpers for the callback delivery tests: configurations with short schedules, the
//! subscription and delivery API with the demo app's token, a recording receiver on
//! loopback that answers as each test says, a Standard Webhooks signature check
//! written here (not Herald's), the app's operations channel, and servers that run on
//! a runtime of their own so that a test can kill one outright.

#![allow(
    dead_code,
    reason = "each delivery test uses a different part of the kit"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::jobs_kit::TOKEN;
use crate::kit::WAIT;
use crate::support::{TestServer, Ws, auth_private, data_of, recv_event, subscribe};

/// The app's operations channel, as in the shipped configuration.
pub(crate) const OPERATIONS: &str = "private-herald-operations";

/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(20);

/// Most frames read while looking for one operations event.
const MAX_FRAMES: usize = 200;

/// The event types of these tests: `relay` (result = payload) and `other`, a second
/// relay type that `relay` subscriptions must not receive.
const EVENT_TYPES: &str = r#"
[[apps.event_types]]
name = "relay"
handler = "relay"
channel = "notifications"
timeout = "5s"
attempts = 1
concurrency = 8

[[apps.event_types]]
name = "other"
handler = "relay"
channel = "other-notifications"
timeout = "5s"
attempts = 1
concurrency = 8
"#;

/// The `[webhooks]` options every test starts from: loopback receivers allowed, a
/// short schedule without jitter and short timeouts.
const WEBHOOK_DEFAULTS: [(&str, &str); 6] = [
    ("allow_cidrs", r#"["127.0.0.0/8"]"#),
    ("schedule", r#"["200ms", "400ms", "800ms"]"#),
    ("jitter", "0"),
    ("connect_timeout", r#""1s""#),
    ("timeout", r#""3s""#),
    ("lease", r#""20s""#),
];

/// A configuration with only the demo app (its token, `relay` and `other`) and a
/// `[webhooks]` section of the defaults above with `overrides` laid over them
/// (values in TOML, e.g. `("schedule", r#"["1s"]"#)`).
pub(crate) fn config(overrides: &[(&str, &str)]) -> String {
    let mut webhooks: Vec<(String, String)> = WEBHOOK_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (key, value) in overrides {
        match webhooks.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = (*value).to_owned(),
            None => webhooks.push(((*key).to_owned(), (*value).to_owned())),
        }
    }
    let lines: String = webhooks
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    format!(
        "[server]\nshutdown_grace = \"1s\"\n\n[webhooks]\n{lines}\n\
         [[apps]]\nid = \"demo-app\"\nkey = \"demo-key\"\nsecret = \"demo-secret\"\n\
         api_token = \"{TOKEN}\"\n{EVENT_TYPES}"
    )
}

/// A second app for `config`'s output, with its own token and a `relay` type.
pub(crate) const SECOND_APP: &str = r#"
[[apps]]
id = "second-app"
key = "second-key"
secret = "second-secret"
api_token = "second-token"

[[apps.event_types]]
name = "relay"
handler = "relay"
"#;

/// A server with `config(overrides)`.
pub(crate) async fn server_with(overrides: &[(&str, &str)]) -> TestServer {
    TestServer::start_with(&config(overrides)).await
}

// ---------------------------------------------------------------------------------
// The API, with the demo app's bearer token.

/// `method /apps/demo-app{path}` with the token and, when given, a JSON body.
/// Returns the status and the body (JSON, or `Value::Null` when empty).
pub(crate) async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_as(server, &server.app.id, Some(TOKEN), method, path, body).await
}

/// `call` for app `app_id` with bearer `token` (none when `None`).
pub(crate) async fn call_as(
    server: &TestServer,
    app_id: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = server.url(&format!("/apps/{app_id}{path}"));
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method.clone(), &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path} answered {status} with non-JSON ({e}): {text}")
        })
    };
    (status, value)
}

/// Asserts an answer's status, and for errors its `code`; returns the body.
pub(crate) fn expect(answer: (u16, Value), status: u16, code: Option<&str>, what: &str) -> Value {
    let (got, body) = answer;
    assert_eq!(got, status, "{what}: status; body {body}");
    if let Some(code) = code {
        assert_eq!(body["code"], code, "{what}: error code; body {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: error without a message: {body}"
        );
    }
    body
}

/// `POST /subscriptions`, asserting 201; returns the subscription (with its secret).
pub(crate) async fn create_subscription(server: &TestServer, event_type: &str, url: &str) -> Value {
    let answer = call(
        server,
        "POST",
        "/subscriptions",
        Some(json!({"eventType": event_type, "callbackUrl": url})),
    )
    .await;
    expect(
        answer,
        201,
        None,
        &format!("subscribe {url} to {event_type}"),
    )
}

/// `GET /subscriptions/{id}`, asserting 200.
pub(crate) async fn get_subscription(server: &TestServer, id: &str) -> Value {
    let answer = call(server, "GET", &format!("/subscriptions/{id}"), None).await;
    expect(answer, 200, None, "GET /subscriptions/{id}")
}

/// `GET /subscriptions?eventType=…` (all when `None`), asserting 200.
pub(crate) async fn list_subscriptions(
    server: &TestServer,
    event_type: Option<&str>,
) -> Vec<Value> {
    let path = match event_type {
        Some(t) => format!("/subscriptions?eventType={}", encode(t)),
        None => "/subscriptions".to_owned(),
    };
    let body = expect(
        call(server, "GET", &path, None).await,
        200,
        None,
        "GET /subscriptions",
    );
    body["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("no subscriptions array: {body}"))
        .clone()
}

/// Percent-encodes a query value.
pub(crate) fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The id field of an API object.
pub(crate) fn id(object: &Value) -> String {
    object["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id in {object}"))
        .to_owned()
}

/// The secret field of a subscription.
pub(crate) fn secret(subscription: &Value) -> String {
    subscription["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no string secret in {subscription}"))
        .to_owned()
}

/// `POST /jobs` with `body`, asserting 202; returns the 202 body.
pub(crate) async fn post_job(server: &TestServer, body: Value) -> Value {
    let answer = call(server, "POST", "/jobs", Some(body.clone())).await;
    expect(answer, 202, None, &format!("POST /jobs {body}"))
}

/// Sends a `relay` job with `payload` and waits until it completes; returns its id.
pub(crate) async fn relay(server: &TestServer, payload: Value) -> String {
    let created = post_job(server, json!({"eventType": "relay", "payload": payload})).await;
    let job_id = id(&created);
    wait_job(server, &job_id).await;
    job_id
}

/// Waits until job `job_id` is completed; returns its view.
pub(crate) async fn wait_job(server: &TestServer, job_id: &str) -> Value {
    crate::jobs_kit::wait_for_status(server, job_id, &["completed"]).await
}

/// `GET /deliveries?query`, asserting 200.
pub(crate) async fn deliveries(server: &TestServer, query: &str) -> Vec<Value> {
    let path = format!("/deliveries?{query}");
    let body = expect(
        call(server, "GET", &path, None).await,
        200,
        None,
        "GET /deliveries",
    );
    body["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries array: {body}"))
        .clone()
}

/// The deliveries of job `job_id`.
pub(crate) async fn job_deliveries(server: &TestServer, job_id: &str) -> Vec<Value> {
    deliveries(server, &format!("jobId={job_id}")).await
}

/// Asks for job `job_id`'s deliveries until `done` holds for them; fails after
/// `within` with the last answer.
pub(crate) async fn wait_deliveries(
    server: &TestServer,
    job_id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let found = job_deliveries(server, job_id).await;
        if done(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id}: {what} not seen within {within:?}; deliveries: {found:#?}"
        );
        tokio::time::sleep(POLL * 5).await;
    }
}

/// Waits until job `job_id` has exactly one delivery and it is in `status`.
pub(crate) async fn wait_delivery_status(
    server: &TestServer,
    job_id: &str,
    status: &str,
    within: Duration,
) -> Value {
    let found = wait_deliveries(server, job_id, within, status, |d| {
        d.len() == 1 && d[0]["status"] == status
    })
    .await;
    found[0].clone()
}

/// The `attemptLog` of a delivery.
pub(crate) fn attempt_log(delivery: &Value) -> Vec<Value> {
    delivery["attemptLog"]
        .as_array()
        .unwrap_or_else(|| panic!("no attemptLog array: {delivery:#}"))
        .clone()
}

// ---------------------------------------------------------------------------------
// A receiver of callbacks on loopback.

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// This status, with the body `reply {n}` (n = the request's number).
    Status(u16),
    /// This status with these headers.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Waits, then answers.
    After(Duration, Box<Reply>),
    /// Never answers (holds the request for two minutes).
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    /// Its number, from 1.
    pub(crate) n: usize,
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names in lower case.
    pub(crate) headers: BTreeMap<String, String>,
    /// The raw body.
    pub(crate) body: Bytes,
    /// When it arrived.
    pub(crate) at: Instant,
}

impl Hit {
    /// A header's value; fails when it is missing.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| {
            panic!(
                "request {} has no {name} header: {:?}",
                self.n, self.headers
            )
        })
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("the body is UTF-8")
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("request {} body is not JSON ({e}): {}", self.n, self.text())
        })
    }

    /// `webhook-id`.
    pub(crate) fn webhook_id(&self) -> String {
        self.header("webhook-id").to_owned()
    }
}

type Behaviour = dyn Fn(usize) -> Reply + Send + Sync;

struct ReceiverState {
    behaviour: Box<Behaviour>,
    hits: Mutex<Vec<Hit>>,
}

/// A loopback HTTP server that records every request and answers the n-th (from 1)
/// as its behaviour says. It runs until the test ends.
pub(crate) struct Receiver {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts on a free port.
    pub(crate) async fn start(behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on(0, behaviour).await
    }

    /// Starts on `127.0.0.1:port` (0 for any).
    pub(crate) async fn start_on(
        port: u16,
        behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(ReceiverState {
            behaviour: Box::new(behaviour),
            hits: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let handler_state = Arc::clone(&state);
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&handler_state);
                async move { receive(&state, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { port, state }
    }

    /// A receiver that always answers `status`.
    pub(crate) async fn always(status: u16) -> Self {
        Self::start(move |_| Reply::Status(status)).await
    }

    /// `http://127.0.0.1:port/hook`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// `http://127.0.0.1:port{path}`.
    pub(crate) fn url_at(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests so far, in order of arrival.
    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Waits until it has had `count` requests; fails after `within`.
    pub(crate) async fn wait_hits(&self, count: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if hits.len() >= count {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {} got {} of {count} requests within {within:?}",
                self.port,
                hits.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits `wait`, then asserts it still has exactly `count` requests.
    pub(crate) async fn assert_stays_at(&self, count: usize, wait: Duration, what: &str) {
        tokio::time::sleep(wait).await;
        let hits = self.hits();
        assert_eq!(
            hits.len(),
            count,
            "{what}: receiver {} should have {count} requests after {wait:?}; got {:#?}",
            self.port,
            hits.iter()
                .map(|h| (h.n, &h.path, h.text()))
                .collect::<Vec<_>>()
        );
    }
}

async fn receive(
    state: &ReceiverState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = {
        let mut hits = state.hits.lock().unwrap();
        let n = hits.len() + 1;
        hits.push(Hit {
            n,
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            at: Instant::now(),
        });
        n
    };
    let mut reply = (state.behaviour)(n);
    loop {
        match reply {
            Reply::Status(status) => {
                return (StatusCode::from_u16(status).unwrap(), format!("reply {n}"))
                    .into_response();
            }
            Reply::WithHeaders(status, headers) => {
                let mut response =
                    (StatusCode::from_u16(status).unwrap(), format!("reply {n}")).into_response();
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(name, value.parse().expect("a header value"));
                }
                return response;
            }
            Reply::After(wait, then) => {
                tokio::time::sleep(wait).await;
                reply = *then;
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
        }
    }
}

/// A port on 127.0.0.1 with nothing listening: bound, read and released.
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

// ---------------------------------------------------------------------------------
// Standard Webhooks signatures, computed here.

/// The `v1,` signature of `id.timestamp.body` under a `whsec_` secret.
pub(crate) fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = secret_bytes(secret);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The key bytes of a `whsec_` secret.
pub(crate) fn secret_bytes(secret: &str) -> Vec<u8> {
    let encoded = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("secret {secret:?} does not start with whsec_"));
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("secret {secret:?} is not base64 after whsec_: {e}"))
}

/// The space-separated entries of a hit's `webhook-signature`.
pub(crate) fn signatures(hit: &Hit) -> Vec<String> {
    hit.header("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// Whether `secret` signed the hit: one of its signatures is the one computed here.
pub(crate) fn signed_by(hit: &Hit, secret: &str) -> bool {
    let expected = standard_signature(
        secret,
        hit.header("webhook-id"),
        hit.header("webhook-timestamp"),
        &hit.body,
    );
    signatures(hit).contains(&expected)
}

/// Asserts a hit is a Standard Webhooks POST signed with `secret`, stamped near now.
pub(crate) fn assert_signed(hit: &Hit, secret: &str) {
    assert_eq!(hit.method, "POST", "request {}", hit.n);
    assert!(
        hit.header("content-type").starts_with("application/json"),
        "content-type: {:?}",
        hit.headers
    );
    let id = hit.header("webhook-id");
    assert!(id.starts_with("msg_") && id.len() > 4, "webhook-id {id:?}");
    let timestamp: i64 = hit.header("webhook-timestamp").parse().unwrap_or_else(|e| {
        panic!(
            "webhook-timestamp is not unix seconds ({e}): {:?}",
            hit.headers
        )
    });
    let now = i64::try_from(crate::support::now()).unwrap();
    assert!(
        (timestamp - now).abs() <= 10,
        "webhook-timestamp {timestamp} is not near now ({now})"
    );
    for entry in signatures(hit) {
        assert!(entry.starts_with("v1,"), "signature entry {entry:?}");
    }
    assert!(
        signed_by(hit, secret),
        "no signature in {:?} verifies with the subscription's secret over {}.{}.{}",
        hit.header("webhook-signature"),
        id,
        hit.header("webhook-timestamp"),
        hit.text()
    );
}

// ---------------------------------------------------------------------------------
// The operations channel.

/// A socket subscribed to the app's operations channel.
pub(crate) async fn operations(server: &TestServer) -> Ws {
    let (mut ws, socket_id) = server.connect().await;
    let auth = auth_private(&server.app, &socket_id, OPERATIONS);
    subscribe(&mut ws, json!({"channel": OPERATIONS, "auth": auth})).await;
    crate::kit::expect_subscribed(&mut ws, OPERATIONS).await;
    ws
}

/// The operations events (`subscription.*`) read until one named `name` arrives;
/// returns all of them as `(name, data)`, that one last.
pub(crate) async fn operations_until(ws: &mut Ws, name: &str) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = recv_event(ws).await;
        if frame["channel"] != OPERATIONS {
            continue;
        }
        let event = frame["event"].as_str().unwrap_or_default().to_owned();
        seen.push((event.clone(), data_of(&frame)));
        if event == name {
            return seen;
        }
    }
    panic!("no {name} among {MAX_FRAMES} frames; operations events: {seen:?}");
}

// ---------------------------------------------------------------------------------
// Servers on a runtime of their own.

/// A server whose tasks run on their own runtime, so that shutting that runtime down
/// ends every one of them at once, as killing the process would. (Dropping a
/// `TestServer` aborts only its main task: the delivery sender and the job workers
/// would live on in the test's runtime.)
pub(crate) struct Isolated {
    server: Option<TestServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Isolated {
    /// Starts a server on `dir`'s store with `toml`.
    pub(crate) async fn start(toml: &str, dir: &Path) -> Isolated {
        let toml = toml.to_owned();
        let dir = dir.to_owned();
        let (runtime, server) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime.block_on(TestServer::start_in(&toml, &dir));
            (runtime, server)
        })
        .await
        .unwrap();
        Isolated {
            server: Some(server),
            runtime: Some(runtime),
        }
    }

    /// The server, for requests.
    pub(crate) fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    /// Ends every task of the server at once, without any shutdown.
    pub(crate) fn kill(mut self) {
        self.end();
    }

    /// Stops the server gracefully (within 10 s), then ends its runtime.
    pub(crate) async fn stop(mut self) {
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server.stop())
            .await
            .expect("the server did not stop within 10 s");
        self.end();
    }

    fn end(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.end();
    }
}

/// A scratch directory removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch(crate::support::scratch_dir())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
