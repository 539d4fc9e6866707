//! Helpers for the tests of the later parts of the Pusher protocol (`pusher_extras`):
//! signing in as a user, client events, refusals read in order, and sockets that
//! must be left alone.

#![allow(dead_code, reason = "each test file uses a different part of the kit")]

use std::time::Duration;

use serde_json::{Value, json};

use crate::kit::{expect_subscribed, join_presence, join_private, join_public, member, round_trip};
use crate::support::{
    TestApp, TestServer, Ws, data_of, hmac_hex, recv_event, send_json, subscribe,
};

/// The user channel of `user_id`.
pub(crate) fn user_channel(user_id: &str) -> String {
    format!("#server-to-user-{user_id}")
}

/// `user_data` as an app's server would sign it: an id, a little user info, and a
/// watchlist when one is given.
pub(crate) fn user_data(id: &str, watchlist: &[&str]) -> String {
    let mut data = json!({"id": id, "user_info": {"name": id}});
    if !watchlist.is_empty() {
        data["watchlist"] = json!(watchlist);
    }
    data.to_string()
}

/// `key:signature` of a sign-in: HMAC-SHA256 of `socket_id::user::user_data`.
pub(crate) fn signin_auth(app: &TestApp, socket_id: &str, user_data: &str) -> String {
    let signature = hmac_hex(&app.secret, &format!("{socket_id}::user::{user_data}"));
    format!("{}:{signature}", app.key)
}

/// Sends `pusher:signin` with `auth` and `user_data` as given.
pub(crate) async fn send_signin(ws: &mut Ws, auth: &str, user_data: &str) {
    let frame = json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}});
    send_json(ws, frame).await;
}

/// Signs in correctly and checks that the next frame is `pusher:signin_success`
/// carrying the exact `user_data` string.
pub(crate) async fn sign_in(ws: &mut Ws, app: &TestApp, socket_id: &str, user_data: &str) {
    send_signin(ws, &signin_auth(app, socket_id, user_data), user_data).await;
    let answer = recv_event(ws).await;
    assert_eq!(answer["event"], "pusher:signin_success", "{answer}");
    assert!(
        answer["data"].is_string(),
        "data should be a JSON string: {answer}"
    );
    assert_eq!(
        data_of(&answer),
        json!({ "user_data": user_data }),
        "signin_success should carry user_data as signed: {answer}"
    );
}

/// A new socket signed in as `id`, watching `watchlist`; returns it and its socket id.
pub(crate) async fn signed_in(server: &TestServer, id: &str, watchlist: &[&str]) -> (Ws, String) {
    let (mut ws, socket_id) = server.connect().await;
    sign_in(&mut ws, &server.app, &socket_id, &user_data(id, watchlist)).await;
    (ws, socket_id)
}

/// Joins `channel` the way its prefix requires: public, private (also encrypted), or
/// presence as `user_id`.
pub(crate) async fn join_any(
    ws: &mut Ws,
    app: &TestApp,
    socket_id: &str,
    channel: &str,
    user_id: &str,
) {
    if channel.starts_with("presence-") {
        let data = member(user_id, json!({"name": user_id}));
        join_presence(ws, app, socket_id, channel, &data).await;
    } else if channel.starts_with("private-") {
        join_private(ws, app, socket_id, channel).await;
    } else {
        join_public(ws, channel).await;
    }
}

/// Subscribes to a channel that needs no signature and waits for success.
pub(crate) async fn join_unsigned(ws: &mut Ws, channel: &str) {
    subscribe(ws, json!({"channel": channel})).await;
    expect_subscribed(ws, channel).await;
}

/// Sends a client event; `data: None` leaves the field out.
pub(crate) async fn send_client_event(
    ws: &mut Ws,
    channel: &str,
    event: &str,
    data: Option<Value>,
) {
    let mut frame = json!({"event": event, "channel": channel});
    if let Some(data) = data {
        frame["data"] = data;
    }
    send_json(ws, frame).await;
}

/// The frames the server sent before answering a `pusher:ping` sent now: what the
/// frames already sent on `ws` caused.
pub(crate) async fn answers(ws: &mut Ws) -> Vec<Value> {
    round_trip(ws).await
}

/// Asserts that what the socket sent so far was answered with exactly one
/// `pusher:error` of `code` (and a message), and nothing else.
pub(crate) async fn assert_error_answer(ws: &mut Ws, code: u16, what: &str) {
    let frames = answers(ws).await;
    assert_eq!(
        frames.len(),
        1,
        "{what}: expected one pusher:error {code}, got {frames:?}"
    );
    let error = &frames[0];
    assert_eq!(error["event"], "pusher:error", "{what}: {error}");
    let data = data_of(error);
    assert_eq!(data["code"], code, "{what}: pusher:error code in {error}");
    assert!(
        data["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: pusher:error without a message: {error}"
    );
}

/// Asserts that what the socket sent so far caused nothing to be sent back to it.
pub(crate) async fn assert_no_answer(ws: &mut Ws, what: &str) {
    let frames = answers(ws).await;
    assert!(
        frames.is_empty(),
        "{what}: expected nothing, got {frames:?}"
    );
}

/// Triggers a marker on `channel` over HTTP and asserts that it is the next frame
/// `ws` gets: nothing sent to the channel before the trigger reached `ws`.
pub(crate) async fn assert_next_is_marker(
    server: &TestServer,
    ws: &mut Ws,
    channel: &str,
    what: &str,
) {
    let marker = format!("marker-{}", uuid::Uuid::new_v4().simple());
    server.trigger(channel, "marker", &marker).await;
    let next = recv_event(ws).await;
    assert_eq!(
        next,
        json!({"event": "marker", "channel": channel, "data": marker}),
        "{what}: something other than the marker reached the socket"
    );
}

/// The next frame, which must be `event` on `channel`; returns its decoded data.
pub(crate) async fn expect_named(ws: &mut Ws, channel: &str, event: &str) -> Value {
    let frame = recv_event(ws).await;
    assert_eq!(
        frame["event"], event,
        "expected {event} on {channel}, got {frame}"
    );
    assert_eq!(
        frame["channel"], channel,
        "expected {event} on {channel}, got {frame}"
    );
    data_of(&frame)
}

/// Asserts the next frame is `pusher:cache_miss` for `channel`.
pub(crate) async fn expect_cache_miss(ws: &mut Ws, channel: &str) {
    let frame = recv_event(ws).await;
    assert_eq!(
        frame["event"], "pusher:cache_miss",
        "expected a cache miss: {frame}"
    );
    assert_eq!(
        frame["channel"], channel,
        "cache miss for the wrong channel: {frame}"
    );
}

/// Asserts the next frame is `pusher_internal:subscription_count` of `count` on
/// `channel`.
pub(crate) async fn expect_count(ws: &mut Ws, channel: &str, count: u64) {
    let frame = recv_event(ws).await;
    assert_eq!(
        frame["event"], "pusher_internal:subscription_count",
        "expected subscription_count {count} on {channel}: {frame}"
    );
    assert_eq!(frame["channel"], channel, "{frame}");
    assert!(
        frame["data"].is_string(),
        "data should be a JSON string: {frame}"
    );
    assert_eq!(
        data_of(&frame),
        json!({"subscription_count": count}),
        "{frame}"
    );
}

/// The next `pusher_internal:watchlist_events` frame's events, each with its user ids
/// sorted.
pub(crate) async fn expect_watchlist(ws: &mut Ws) -> Value {
    let frame = recv_event(ws).await;
    assert_eq!(
        frame["event"], "pusher_internal:watchlist_events",
        "expected watchlist events: {frame}"
    );
    assert!(
        frame.get("channel").is_none(),
        "watchlist events name no channel: {frame}"
    );
    let mut data = data_of(&frame);
    let events = data["events"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("no events list in {frame}"));
    for event in events {
        if let Some(ids) = event["user_ids"].as_array_mut() {
            ids.sort_by_key(|id| id.as_str().map(str::to_owned));
        }
    }
    data
}

/// `{"events": [{"name": name, "user_ids": ids}]}`.
pub(crate) fn watchlist(name: &str, ids: &[&str]) -> Value {
    json!({"events": [{"name": name, "user_ids": ids}]})
}

/// Closes a client socket and reads until the server has answered the close, so that
/// the server has seen it go.
pub(crate) async fn hang_up(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    crate::kit::drain(&mut ws).await;
}

/// A pause long enough for the server to have finished with a socket that just
/// closed: its leaving runs after the close handshake, which the client cannot observe.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
