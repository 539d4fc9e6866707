//! Helpers for the core-server tests, built on `support`: subscribing, reading refusals,
//! raw signed HTTP requests and config overlays.

#![allow(dead_code, reason = "each test file uses a different part of the kit")]

use std::time::Duration;

use futures::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    TestApp, TestServer, Ws, auth_presence, auth_private, data_of, hmac_hex, recv_event, send_json,
    subscribe,
};

/// How long any single wait in these tests may take.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Most frames a helper reads while looking for one in particular.
const MAX_FRAMES: usize = 200;

/// `[[apps]]` for the demo app with extra `options` lines, to lay over the shipped config.
pub(crate) fn demo_app_with(options: &str) -> String {
    format!(
        "[[apps]]\nid = \"demo-app\"\nkey = \"demo-key\"\nsecret = \"demo-secret\"\n{options}\n"
    )
}

/// Opens a WebSocket on `url` and reads nothing.
pub(crate) async fn open(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("no WebSocket handshake within 5 s")
        .unwrap_or_else(|e| panic!("WebSocket handshake to {url} failed: {e}"));
    ws
}

/// The next frame of any kind, or `None` once the stream has ended; fails after `WAIT`.
pub(crate) async fn next_frame(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Err(_) => panic!("no frame within 5 s"),
        Ok(None) => None,
        Ok(Some(Ok(message))) => Some(message),
        Ok(Some(Err(e))) => panic!("socket error: {e}"),
    }
}

/// Reads until the server closes the socket. Returns every event seen before
/// the close frame and the close code, then lets the closing handshake finish.
pub(crate) async fn read_until_close(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut events = Vec::new();
    for _ in 0..MAX_FRAMES {
        let frame = match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!("socket not closed within 5 s; events so far: {events:?}"),
            Ok(Some(Err(e))) => {
                panic!("socket failed ({e}) instead of closing with a code; events: {events:?}")
            }
            Ok(frame) => frame.map(Result::unwrap),
        };
        match frame {
            Some(Message::Text(text)) => {
                events.push(serde_json::from_str(&text).expect("server sent non-JSON text"));
            }
            Some(Message::Close(Some(frame))) => {
                drain(ws).await;
                return (events, frame.code.into());
            }
            Some(Message::Close(None)) | None => panic!("closed without a code after {events:?}"),
            Some(_) => continue,
        }
    }
    panic!("no close among {MAX_FRAMES} frames");
}

/// Reads and drops frames until the stream ends (at most two seconds), so that a
/// closing handshake can finish.
pub(crate) async fn drain(ws: &mut Ws) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
}

/// Asserts that the server sends `pusher:error` with `code`, then closes with `code`.
pub(crate) async fn assert_refused(ws: &mut Ws, code: u16) {
    let (events, close) = read_until_close(ws).await;
    let error = events
        .iter()
        .find(|e| e["event"] == "pusher:error")
        .unwrap_or_else(|| panic!("no pusher:error before the close; got {events:?}"));
    let data = data_of(error);
    assert_eq!(data["code"], code, "pusher:error code in {error}");
    assert!(
        data["message"].as_str().is_some_and(|m| !m.is_empty()),
        "pusher:error without a message: {error}"
    );
    assert_eq!(close, code, "close code (events before it: {events:?})");
}

/// Whether `id` has the Pusher socket id form `<digits>.<digits>`.
pub(crate) fn is_socket_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// Sends `pusher:ping` and reads up to the `pusher:pong`. The server handles a socket's
/// frames in order, so everything sent before has been acted on. Returns the frames
/// that came before the pong.
pub(crate) async fn round_trip(ws: &mut Ws) -> Vec<Value> {
    send_json(ws, json!({"event": "pusher:ping", "data": {}})).await;
    let mut before = Vec::new();
    for _ in 0..MAX_FRAMES {
        let event = recv_event(ws).await;
        if event["event"] == "pusher:pong" {
            return before;
        }
        before.push(event);
    }
    panic!("no pusher:pong among {MAX_FRAMES} frames");
}

/// The next `subscription_succeeded` or `subscription_error` for `channel`.
pub(crate) async fn subscription_outcome(ws: &mut Ws, channel: &str) -> Value {
    for _ in 0..MAX_FRAMES {
        let event = recv_event(ws).await;
        let outcome = event["event"] == "pusher_internal:subscription_succeeded"
            || event["event"] == "pusher:subscription_error";
        if outcome && event["channel"] == channel {
            return event;
        }
    }
    panic!("no subscription outcome for {channel} among {MAX_FRAMES} frames");
}

/// Waits for `subscription_succeeded` on `channel` and returns that frame.
pub(crate) async fn expect_subscribed(ws: &mut Ws, channel: &str) -> Value {
    let event = subscription_outcome(ws, channel).await;
    assert_eq!(
        event["event"], "pusher_internal:subscription_succeeded",
        "subscribing to {channel:?}: {event}"
    );
    event
}

/// Waits for `pusher:subscription_error` on `channel` and returns its decoded data,
/// after checking that the data is a JSON string holding `type`, `error` and `status`.
pub(crate) async fn expect_subscription_error(ws: &mut Ws, channel: &str) -> Value {
    let event = subscription_outcome(ws, channel).await;
    assert_eq!(
        event["event"], "pusher:subscription_error",
        "subscribing to {channel:?} should fail: {event}"
    );
    assert!(
        event["data"].is_string(),
        "data should be a JSON string: {event}"
    );
    let data = data_of(&event);
    assert!(data["type"].is_string(), "no type in {event}");
    assert!(data["status"].is_u64(), "no numeric status in {event}");
    assert!(
        data["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no error text in {event}"
    );
    data
}

/// Asserts the subscription to `channel` fails with `kind` and `status`.
pub(crate) async fn assert_subscription_error(ws: &mut Ws, channel: &str, kind: &str, status: u16) {
    let data = expect_subscription_error(ws, channel).await;
    assert_eq!(data["type"], kind, "error type for {channel:?}: {data}");
    assert_eq!(
        data["status"], status,
        "error status for {channel:?}: {data}"
    );
}

/// Subscribes to a public channel and waits for success.
pub(crate) async fn join_public(ws: &mut Ws, channel: &str) {
    subscribe(ws, json!({"channel": channel})).await;
    expect_subscribed(ws, channel).await;
}

/// Subscribes to a private channel with a correct signature and waits for success.
pub(crate) async fn join_private(ws: &mut Ws, app: &TestApp, socket_id: &str, channel: &str) {
    let auth = auth_private(app, socket_id, channel);
    subscribe(ws, json!({"channel": channel, "auth": auth})).await;
    expect_subscribed(ws, channel).await;
}

/// `channel_data` for a presence member, as an app's auth endpoint would return it.
pub(crate) fn member(user_id: &str, info: Value) -> String {
    json!({"user_id": user_id, "user_info": info}).to_string()
}

/// Sends a correctly signed presence subscription with `channel_data`.
pub(crate) async fn send_presence(
    ws: &mut Ws,
    app: &TestApp,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
) {
    let auth = auth_presence(app, socket_id, channel, channel_data);
    let data = json!({"channel": channel, "auth": auth, "channel_data": channel_data});
    subscribe(ws, data).await;
}

/// Joins a presence channel and returns the decoded `presence` roster.
pub(crate) async fn join_presence(
    ws: &mut Ws,
    app: &TestApp,
    socket_id: &str,
    channel: &str,
    channel_data: &str,
) -> Value {
    send_presence(ws, app, socket_id, channel, channel_data).await;
    let event = expect_subscribed(ws, channel).await;
    assert!(
        event["data"].is_string(),
        "data should be a JSON string: {event}"
    );
    data_of(&event)["presence"].clone()
}

/// The query string of a signed request from exactly `params` (auth fields included),
/// with `auth_signature` appended; also returns the string that was signed.
pub(crate) fn sign_params(
    secret: &str,
    method: &str,
    path: &str,
    params: &[(&str, String)],
) -> (String, String) {
    let mut params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    params.sort();
    let joined = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!("{method}\n{path}\n{joined}");
    let signature = hmac_hex(secret, &to_sign);
    (format!("{joined}&auth_signature={signature}"), to_sign)
}

/// Hex MD5 of a request body.
pub(crate) fn md5_hex(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

/// Sends `method path?query` with `body` (raw text) to the server, as given.
pub(crate) async fn send_raw(
    server: &TestServer,
    method: &str,
    path: &str,
    query: &str,
    body: Option<&str>,
) -> reqwest::Response {
    let url = if query.is_empty() {
        server.url(path)
    } else {
        format!("{}?{query}", server.url(path))
    };
    let client = reqwest::Client::new();
    let request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        other => panic!("unsupported method {other}"),
    };
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(body.to_owned()),
        None => request,
    };
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("no HTTP answer within 5 s")
        .expect("HTTP request failed")
}

/// Asserts an HTTP API answer is `status` with a JSON `{code, message}` body whose code
/// is snake_case and whose message is not empty; returns `(code, message)`.
pub(crate) async fn api_error(response: reqwest::Response, status: u16) -> (String, String) {
    let got = response.status().as_u16();
    let text = response.text().await.expect("response body");
    assert_eq!(got, status, "status, body: {text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let code = body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no string code: {text}"));
    let snake = code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    assert!(snake, "code {code:?} is not snake_case");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no string message: {text}"));
    assert!(!message.is_empty(), "empty message: {text}");
    (code.to_owned(), message.to_owned())
}

/// Asserts an HTTP API answer is 200 and returns its JSON body.
pub(crate) async fn api_ok(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    assert_eq!(status, 200, "status, body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts the next frame on `ws` is exactly the channel event `name` on `channel`.
pub(crate) async fn expect_event(ws: &mut Ws, channel: &str, name: &str, data: &str) {
    let event = recv_event(ws).await;
    assert_eq!(
        event,
        json!({"event": name, "channel": channel, "data": data}),
        "expected {name} on {channel}"
    );
}
