//! Pusher's outgoing webhooks: channel and member events, client events, the leave
//! delay that hides a quick return, batching, each URL's kinds, signatures, and
//! retries through the outbox. A receiver on loopback records every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::kit::{join_presence, join_private, join_public, member};
use crate::support::{TestApp, TestServer, Ws, hmac_hex, scratch_dir, send_json};

/// Longest a test waits for the receiver to see something.
const WAIT: Duration = Duration::from_secs(5);

/// How often a waiting test looks at what the receiver got.
const POLL: Duration = Duration::from_millis(20);

/// Long enough for a held leave and its batch to have gone out, had they been due.
const SETTLE: Duration = Duration::from_millis(900);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) path: String,
    /// Header names in lower case, as the Node SDK's webhook check expects them.
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
    pub(crate) at: Instant,
}

impl Captured {
    /// The body's `events`.
    pub(crate) fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {}", self.body));
        assert!(
            body["time_ms"]
                .as_i64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "time_ms missing or not in milliseconds: {body}"
        );
        body["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events list: {body}"))
            .clone()
    }

    /// Asserts the request is signed as Pusher signs webhooks, checked with an HMAC
    /// computed here.
    pub(crate) fn assert_signed_by(&self, app: &TestApp) {
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            self.headers.get("x-pusher-key"),
            Some(&app.key),
            "X-Pusher-Key"
        );
        let expected = hmac_hex(&app.secret, &self.body);
        assert_eq!(
            self.headers.get("x-pusher-signature"),
            Some(&expected),
            "X-Pusher-Signature of {}",
            self.body
        );
    }
}

struct ReceiverState {
    /// The status answered to the n-th request (from 1).
    status: Box<dyn Fn(usize) -> u16 + Send + Sync>,
    requests: Mutex<Vec<Captured>>,
}

/// A webhook receiver on `127.0.0.1:0` that records every request, on any path.
pub(crate) struct Receiver {
    /// `http://127.0.0.1:port`; configure `{base}/some/path`.
    pub(crate) base: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts a receiver answering `status(n)` to the n-th request; it runs until the
    /// test ends.
    pub(crate) async fn start(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Self {
        let state = Arc::new(ReceiverState {
            status: Box::new(status),
            requests: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { base, state }
    }

    /// A receiver that answers 200 to everything.
    pub(crate) async fn ok() -> Self {
        Receiver::start(|_| 200).await
    }

    /// `{base}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request so far, in the order they arrived.
    pub(crate) fn requests(&self) -> Vec<Captured> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The events of every request to `path`, in the order they arrived.
    pub(crate) fn events(&self, path: &str) -> Vec<Value> {
        let requests = self.requests();
        requests
            .iter()
            .filter(|r| r.path == path)
            .flat_map(Captured::events)
            .collect()
    }

    /// Waits until the events sent to `path` include every one of `expected` (in
    /// any order); returns them all. Fails after `WAIT`.
    pub(crate) async fn wait_for(&self, path: &str, expected: &[Value]) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events(path);
            if expected.iter().all(|e| events.contains(e)) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not get {expected:?} within {WAIT:?}; it got {events:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until at least `count` requests arrived; fails after `WAIT`.
    pub(crate) async fn wait_for_requests(&self, count: usize) -> Vec<Captured> {
        let deadline = Instant::now() + WAIT;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests within {WAIT:?}: {requests:?}",
                requests.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_ascii_lowercase(), value)
        })
        .collect();
    let captured = Captured {
        path: uri.path().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let number = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(captured);
        requests.len()
    };
    StatusCode::from_u16((state.status)(number)).unwrap()
}

/// The `[webhooks]` settings of Pusher's webhooks that tests vary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) batch_max: usize,
    pub(crate) batch_window: &'static str,
    pub(crate) leave_delay: &'static str,
}

/// Short waits, so that tests are quick.
pub(crate) const FAST: Timing = Timing {
    batch_max: 20,
    batch_window: "100ms",
    leave_delay: "300ms",
};

/// The test configuration's `leave_delay`, as a duration.
const LEAVE_DELAY: Duration = Duration::from_millis(300);

/// A configuration with one app, `hooks-app`, whose `[[apps.webhooks]]` are `hooks`
/// (URL, event kinds), with retries 100 ms apart and `timing`.
pub(crate) fn config(hooks: &[(String, &[&str])], timing: Timing) -> String {
    let Timing {
        batch_max,
        batch_window,
        leave_delay,
    } = timing;
    let mut toml = format!(
        r#"
        [demo]
        enabled = false

        [webhooks]
        allow_cidrs = ["127.0.0.0/8"]
        schedule = ["100ms"]
        batch_max = {batch_max}
        batch_window = "{batch_window}"
        leave_delay = "{leave_delay}"

        [[apps]]
        id = "hooks-app"
        key = "hooks-key"
        secret = "hooks-secret"
        "#
    );
    for (url, kinds) in hooks {
        let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
        toml.push_str(&format!(
            "\n[[apps.webhooks]]\nurl = \"{url}\"\nevents = [{}]\n",
            kinds.join(", ")
        ));
    }
    toml
}

/// A server whose app sends `kinds` to `{receiver}/hooks`, with `FAST` timing.
async fn server_for(receiver: &Receiver, kinds: &[&str]) -> TestServer {
    TestServer::start_with(&config(&[(receiver.url("/hooks"), kinds)], FAST)).await
}

fn occupied(channel: &str) -> Value {
    json!({"name": "channel_occupied", "channel": channel})
}

fn vacated(channel: &str) -> Value {
    json!({"name": "channel_vacated", "channel": channel})
}

fn added(channel: &str, user: &str) -> Value {
    json!({"name": "member_added", "channel": channel, "user_id": user})
}

fn removed(channel: &str, user: &str) -> Value {
    json!({"name": "member_removed", "channel": channel, "user_id": user})
}

/// Sends `pusher:unsubscribe`.
async fn unsubscribe(ws: &mut Ws, channel: &str) {
    send_json(
        ws,
        json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}),
    )
    .await;
}

/// Joins the presence `channel` as `user`.
async fn join_as(server: &TestServer, ws: &mut Ws, socket_id: &str, channel: &str, user: &str) {
    join_presence(
        ws,
        &server.app,
        socket_id,
        channel,
        &member(user, json!({})),
    )
    .await;
}

/// Asserts every request was signed with the test app's key and secret.
fn assert_all_signed(receiver: &Receiver, server: &TestServer) {
    for request in receiver.requests() {
        request.assert_signed_by(&server.app);
    }
}

#[tokio::test]
async fn a_channel_is_occupied_then_vacated_after_the_leave_delay() {
    let receiver = Receiver::ok().await;
    let server = server_for(&receiver, &["channel_occupied", "channel_vacated"]).await;
    let (mut ws, _) = server.connect().await;

    join_public(&mut ws, "lobby").await;
    receiver.wait_for("/hooks", &[occupied("lobby")]).await;

    let left = Instant::now();
    unsubscribe(&mut ws, "lobby").await;
    let events = receiver.wait_for("/hooks", &[vacated("lobby")]).await;
    assert_eq!(events, [occupied("lobby"), vacated("lobby")]);
    let vacated_at = receiver.requests().last().unwrap().at;
    assert!(
        vacated_at - left >= LEAVE_DELAY,
        "channel_vacated came {:?} after the unsubscribe, before the leave delay",
        vacated_at - left
    );
    assert_all_signed(&receiver, &server);
}

#[tokio::test]
async fn a_user_with_two_sockets_is_added_once_and_removed_once() {
    let receiver = Receiver::ok().await;
    let server = server_for(&receiver, &["member_added", "member_removed"]).await;
    let room = "presence-room";
    let (mut tab1, id1) = server.connect().await;
    let (mut tab2, id2) = server.connect().await;

    join_as(&server, &mut tab1, &id1, room, "ada").await;
    join_as(&server, &mut tab2, &id2, room, "ada").await;
    receiver.wait_for("/hooks", &[added(room, "ada")]).await;

    // One tab closing is no departure: ada is still there.
    unsubscribe(&mut tab1, room).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.events("/hooks"), [added(room, "ada")]);

    unsubscribe(&mut tab2, room).await;
    receiver.wait_for("/hooks", &[removed(room, "ada")]).await;
    tokio::time::sleep(SETTLE).await;
    // Only the kinds listed: no channel_occupied or channel_vacated.
    assert_eq!(
        receiver.events("/hooks"),
        [added(room, "ada"), removed(room, "ada")]
    );
    assert_all_signed(&receiver, &server);
}

#[tokio::test]
async fn client_events_are_reported_with_their_sender() {
    let receiver = Receiver::ok().await;
    let server = server_for(&receiver, &["client_event"]).await;
    let (mut ws, socket_id) = server.connect().await;
    join_as(&server, &mut ws, &socket_id, "presence-chat", "ada").await;
    join_private(&mut ws, &server.app, &socket_id, "private-chat").await;

    let typing =
        json!({"event": "client-typing", "channel": "presence-chat", "data": {"text": "hi"}});
    send_json(&mut ws, typing).await;
    let ping = json!({"event": "client-ping", "channel": "private-chat", "data": "plain"});
    send_json(&mut ws, ping).await;

    let expected = [
        json!({
            "name": "client_event", "channel": "presence-chat", "event": "client-typing",
            "data": "{\"text\":\"hi\"}", "socket_id": socket_id, "user_id": "ada"
        }),
        // No user on a private channel, so no user_id.
        json!({
            "name": "client_event", "channel": "private-chat", "event": "client-ping",
            "data": "plain", "socket_id": socket_id
        }),
    ];
    let events = receiver.wait_for("/hooks", &expected).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_all_signed(&receiver, &server);
}

#[tokio::test]
async fn a_quick_return_is_invisible() {
    let receiver = Receiver::ok().await;
    let kinds: &[&str] = &[
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
    ];
    // A longer delay than elsewhere, so that a slow machine still returns in time.
    let timing = Timing {
        leave_delay: "1s",
        ..FAST
    };
    let toml = config(&[(receiver.url("/hooks"), kinds)], timing);
    let server = TestServer::start_with(&toml).await;
    let (public, room) = ("news", "presence-team");
    let (mut ws, socket_id) = server.connect().await;
    join_public(&mut ws, public).await;
    join_as(&server, &mut ws, &socket_id, room, "ada").await;
    let arrived = [occupied(public), occupied(room), added(room, "ada")];
    receiver.wait_for("/hooks", &arrived).await;

    // Leave and come back on the same socket, as a client that resubscribes...
    unsubscribe(&mut ws, public).await;
    join_public(&mut ws, public).await;
    // ...and on a new socket, as after a page reload.
    drop(ws);
    let (mut ws, socket_id) = server.connect().await;
    join_public(&mut ws, public).await;
    join_as(&server, &mut ws, &socket_id, room, "ada").await;
    // Past the leave delay and a batch window, had the leaves stood.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut events = receiver.events("/hooks");
    events.sort_by_key(Value::to_string);
    let mut expected = arrived.to_vec();
    expected.sort_by_key(Value::to_string);
    assert_eq!(events, expected, "a return within the leave delay showed");

    // A real departure still shows.
    unsubscribe(&mut ws, public).await;
    unsubscribe(&mut ws, room).await;
    let gone = [vacated(public), vacated(room), removed(room, "ada")];
    let events = receiver.wait_for("/hooks", &gone).await;
    assert_eq!(events.len(), 6, "{events:?}");
}

#[tokio::test]
async fn events_are_batched_up_to_batch_max_or_for_the_window() {
    let receiver = Receiver::ok().await;
    let hooks = [(receiver.url("/hooks"), &["channel_occupied"][..])];
    let timing = Timing {
        batch_max: 5,
        batch_window: "2s",
        ..FAST
    };
    let window = Duration::from_secs(2);
    let server = TestServer::start_with(&config(&hooks, timing)).await;
    let (mut ws, _) = server.connect().await;

    let channels: Vec<String> = (0..12).map(|i| format!("batch-{i}")).collect();
    let started = Instant::now();
    for channel in &channels {
        send_json(
            &mut ws,
            json!({"event": "pusher:subscribe", "data": {"channel": channel}}),
        )
        .await;
    }
    let expected: Vec<Value> = channels.iter().map(|c| occupied(c)).collect();
    let events = receiver.wait_for("/hooks", &expected).await;
    assert_eq!(events.len(), 12, "{events:?}");

    // Two full batches at once, and the rest when the window closed.
    let requests = receiver.requests();
    let mut sizes: Vec<usize> = requests.iter().map(|r| r.events().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 5, 5]);
    let partial = requests.iter().find(|r| r.events().len() == 2).unwrap();
    assert!(
        partial.at - started >= window,
        "the partial batch came after {:?}, before the window closed",
        partial.at - started
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.events().len() == 5)
            .all(|r| r.at - started < window)
    );
    assert_all_signed(&receiver, &server);
}

#[tokio::test]
async fn each_url_gets_only_the_kinds_it_lists() {
    let receiver = Receiver::ok().await;
    let channels: &[&str] = &["channel_occupied"];
    let members: &[&str] = &["member_added", "client_event"];
    let hooks = [
        (receiver.url("/a"), channels),
        (receiver.url("/b"), members),
    ];
    let server = TestServer::start_with(&config(&hooks, FAST)).await;
    let room = "presence-kinds";
    let (mut ws, socket_id) = server.connect().await;

    join_as(&server, &mut ws, &socket_id, room, "ada").await;
    let typing = json!({"event": "client-typing", "channel": room, "data": "x"});
    send_json(&mut ws, typing).await;
    unsubscribe(&mut ws, room).await;

    let client_event = json!({
        "name": "client_event", "channel": room, "event": "client-typing", "data": "x",
        "socket_id": socket_id, "user_id": "ada"
    });
    receiver.wait_for("/a", &[occupied(room)]).await;
    receiver
        .wait_for("/b", &[added(room, "ada"), client_event.clone()])
        .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.events("/a"), [occupied(room)]);
    assert_eq!(receiver.events("/b"), [added(room, "ada"), client_event]);
    assert_all_signed(&receiver, &server);
}

#[tokio::test]
async fn a_failed_batch_is_sent_again_with_the_same_body() {
    let receiver = Receiver::start(|n| if n == 1 { 500 } else { 200 }).await;
    let server = server_for(&receiver, &["channel_occupied"]).await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "retried").await;

    let requests = receiver.wait_for_requests(2).await;
    assert_eq!(requests[0].events(), [occupied("retried")]);
    assert_eq!(
        requests[1].body, requests[0].body,
        "the retry changed the body"
    );
    assert_all_signed(&receiver, &server);

    // The batch is a delivery like any other, with both attempts listed.
    let deadline = Instant::now() + WAIT;
    let delivery = loop {
        let response = server.api("GET", "/deliveries", &[], None).await;
        assert_eq!(response.status(), 200);
        let listed: Value = response.json().await.unwrap();
        let delivery = listed["deliveries"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["kind"] == "pusher"))
            .cloned();
        if let Some(delivery) = delivery.filter(|d| d["status"] == "succeeded") {
            break delivery;
        }
        assert!(
            Instant::now() < deadline,
            "no succeeded pusher delivery: {listed}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(delivery["url"], receiver.url("/hooks"));
    assert_eq!(delivery["attempts"], 2, "{delivery}");
}

#[tokio::test]
async fn held_leaves_are_written_at_shutdown_and_sent_by_the_next_process() {
    let receiver = Receiver::ok().await;
    let kinds: &[&str] = &["channel_occupied", "channel_vacated"];
    // A leave delay far longer than the test: only shutdown can release it.
    let timing = Timing {
        leave_delay: "1h",
        ..FAST
    };
    let toml = config(&[(receiver.url("/hooks"), kinds)], timing);
    let dir = scratch_dir();
    let server = TestServer::start_in(&toml, &dir).await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "closing").await;
    receiver.wait_for("/hooks", &[occupied("closing")]).await;

    server.stop().await;
    drop(ws);
    let restarted = TestServer::start_in(&toml, &dir).await;
    let events = receiver.wait_for("/hooks", &[vacated("closing")]).await;
    assert_eq!(events, [occupied("closing"), vacated("closing")]);
    restarted.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
