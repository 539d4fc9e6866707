//! Presence channels: the roster, member_added and member_removed per user rather than
//! per socket, channel_data checks and the member limit.

use serde_json::{Value, json};

use crate::kit::{
    api_ok, assert_subscription_error, demo_app_with, expect_event, join_presence, member,
    round_trip, send_presence,
};
use crate::support::{
    TestServer, Ws, auth_presence, auth_private, data_of, recv_event, send_json, subscribe,
};

const ROOM: &str = "presence-room";

/// Asserts a roster holds exactly `members` (id, info), in any order.
fn assert_roster(roster: &Value, members: &[(&str, Value)]) {
    let mut ids: Vec<&str> = roster["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids list in {roster}"))
        .iter()
        .map(|id| id.as_str().expect("ids are strings"))
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = members.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "roster ids in {roster}");

    let hash: serde_json::Map<String, Value> = members
        .iter()
        .map(|(id, info)| ((*id).to_owned(), info.clone()))
        .collect();
    assert_eq!(
        roster["hash"],
        Value::Object(hash),
        "roster hash in {roster}"
    );
    assert_eq!(roster["count"], members.len(), "roster count in {roster}");
}

/// Asserts the next frame is `member_added` for `user_id` with `info`.
async fn expect_member_added(ws: &mut Ws, user_id: &str, info: Value) {
    let event = recv_event(ws).await;
    assert_eq!(event["event"], "pusher_internal:member_added", "{event}");
    assert_eq!(event["channel"], ROOM, "{event}");
    assert_eq!(
        data_of(&event),
        json!({"user_id": user_id, "user_info": info}),
        "{event}"
    );
}

/// Asserts the next frame is `member_removed` for `user_id`.
async fn expect_member_removed(ws: &mut Ws, user_id: &str) {
    let event = recv_event(ws).await;
    assert_eq!(event["event"], "pusher_internal:member_removed", "{event}");
    assert_eq!(event["channel"], ROOM, "{event}");
    assert_eq!(data_of(&event), json!({"user_id": user_id}), "{event}");
}

/// Connects and joins `ROOM` as `user_id`; returns the socket and the roster it got.
async fn join_as(server: &TestServer, user_id: &str, info: Value) -> (Ws, Value) {
    let (mut ws, socket_id) = server.connect().await;
    let data = member(user_id, info);
    let roster = join_presence(&mut ws, &server.app, &socket_id, ROOM, &data).await;
    (ws, roster)
}

/// Triggers a marker event on `ROOM`; whatever a socket receives before it was sent
/// before it.
async fn trigger_marker(server: &TestServer) {
    server.trigger(ROOM, "marker", "").await;
}

async fn expect_marker(ws: &mut Ws) {
    expect_event(ws, ROOM, "marker", "").await;
}

#[tokio::test]
async fn presence_subscription_returns_the_roster_including_self() {
    let server = TestServer::start().await;

    let (_ann, roster) = join_as(&server, "ann", json!({"name": "Ann"})).await;
    assert_roster(&roster, &[("ann", json!({"name": "Ann"}))]);

    let (_bob, roster) = join_as(&server, "bob", json!({"name": "Bob", "age": 40})).await;
    assert_roster(
        &roster,
        &[
            ("ann", json!({"name": "Ann"})),
            ("bob", json!({"name": "Bob", "age": 40})),
        ],
    );
}

#[tokio::test]
async fn member_added_reaches_others_but_not_the_joiner() {
    let server = TestServer::start().await;
    let (mut ann, _) = join_as(&server, "ann", json!({"name": "Ann"})).await;

    let (mut bob, _) = join_as(&server, "bob", json!({"name": "Bob"})).await;
    expect_member_added(&mut ann, "bob", json!({"name": "Bob"})).await;

    trigger_marker(&server).await;
    expect_marker(&mut ann).await;
    expect_marker(&mut bob).await;
}

#[tokio::test]
async fn second_socket_of_a_user_is_not_announced_and_not_counted_twice() {
    let server = TestServer::start().await;
    let (mut ann, _) = join_as(&server, "ann", json!({})).await;
    let (_bob1, _) = join_as(&server, "bob", json!({"tab": 1})).await;
    expect_member_added(&mut ann, "bob", json!({"tab": 1})).await;

    let (_bob2, roster) = join_as(&server, "bob", json!({"tab": 1})).await;
    assert_eq!(roster["count"], 2, "two distinct users: {roster}");
    trigger_marker(&server).await;
    expect_marker(&mut ann).await;
}

#[tokio::test]
async fn member_removed_only_after_the_last_socket_of_a_user_leaves() {
    let server = TestServer::start().await;
    let (mut ann, _) = join_as(&server, "ann", json!({})).await;
    let (mut bob1, _) = join_as(&server, "bob", json!({})).await;
    expect_member_added(&mut ann, "bob", json!({})).await;
    let (bob2, _) = join_as(&server, "bob", json!({})).await;

    // One of bob's sockets unsubscribes: bob is still there.
    send_json(
        &mut bob1,
        json!({"event": "pusher:unsubscribe", "data": {"channel": ROOM}}),
    )
    .await;
    round_trip(&mut bob1).await;
    trigger_marker(&server).await;
    expect_marker(&mut ann).await;

    // The last one goes away without a closing handshake: now bob has left.
    drop(bob2);
    expect_member_removed(&mut ann, "bob").await;
}

#[tokio::test]
async fn member_removed_when_the_only_socket_unsubscribes() {
    let server = TestServer::start().await;
    let (mut ann, _) = join_as(&server, "ann", json!({})).await;
    let (mut bob, _) = join_as(&server, "bob", json!({})).await;
    expect_member_added(&mut ann, "bob", json!({})).await;

    send_json(
        &mut bob,
        json!({"event": "pusher:unsubscribe", "data": {"channel": ROOM}}),
    )
    .await;
    expect_member_removed(&mut ann, "bob").await;

    // Bob no longer receives the channel's events.
    trigger_marker(&server).await;
    expect_marker(&mut ann).await;
    assert!(
        round_trip(&mut bob).await.is_empty(),
        "bob still receives the channel"
    );
}

#[tokio::test]
async fn member_removed_when_the_only_socket_closes() {
    let server = TestServer::start().await;
    let (mut ann, _) = join_as(&server, "ann", json!({})).await;
    let (mut bob, _) = join_as(&server, "bob", json!({})).await;
    expect_member_added(&mut ann, "bob", json!({})).await;

    bob.close(None).await.unwrap();
    expect_member_removed(&mut ann, "bob").await;

    let (_cid, roster) = join_as(&server, "cid", json!({})).await;
    assert_roster(&roster, &[("ann", json!({})), ("cid", json!({}))]);
}

#[tokio::test]
async fn presence_without_channel_data_is_refused_with_auth_error() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    let auth = auth_private(&server.app, &socket_id, ROOM);
    subscribe(&mut ws, json!({"channel": ROOM, "auth": auth})).await;
    assert_subscription_error(&mut ws, ROOM, "AuthError", 401).await;
}

#[tokio::test]
async fn presence_signature_covers_the_exact_channel_data_string() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;
    let spaced = "{ \"user_id\" :  \"wes\" ,\n\t\"user_info\" : { \"name\" : \"Wes\" } }";

    // Signed over a re-serialized copy of what is sent: refused.
    let compact = member("wes", json!({"name": "Wes"}));
    let auth = auth_presence(&server.app, &socket_id, ROOM, &compact);
    subscribe(
        &mut ws,
        json!({"channel": ROOM, "auth": auth, "channel_data": spaced}),
    )
    .await;
    assert_subscription_error(&mut ws, ROOM, "AuthError", 401).await;

    // Signed over the bytes sent: accepted, and the info is read from them.
    let roster = join_presence(&mut ws, &server.app, &socket_id, ROOM, spaced).await;
    assert_roster(&roster, &[("wes", json!({"name": "Wes"}))]);
}

#[tokio::test]
async fn presence_signed_for_other_channel_data_is_refused() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    let signed = member("ann", json!({}));
    let sent = member("admin", json!({}));
    let auth = auth_presence(&server.app, &socket_id, ROOM, &signed);
    subscribe(
        &mut ws,
        json!({"channel": ROOM, "auth": auth, "channel_data": sent}),
    )
    .await;
    assert_subscription_error(&mut ws, ROOM, "AuthError", 401).await;
}

/// Sends a correctly signed subscription with `channel_data` and expects
/// `InvalidChannelData`.
async fn assert_invalid_channel_data(channel_data: &str) {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;
    send_presence(&mut ws, &server.app, &socket_id, ROOM, channel_data).await;
    assert_subscription_error(&mut ws, ROOM, "InvalidChannelData", 400).await;
}

#[tokio::test]
async fn channel_data_that_is_not_json_is_refused() {
    assert_invalid_channel_data("user_id=ann").await;
}

#[tokio::test]
async fn channel_data_without_user_id_is_refused() {
    assert_invalid_channel_data(r#"{"user_info":{"name":"Ann"}}"#).await;
}

#[tokio::test]
async fn user_id_of_129_characters_is_refused() {
    assert_invalid_channel_data(&member(&"u".repeat(129), json!({}))).await;
}

#[tokio::test]
async fn user_id_of_128_characters_is_accepted() {
    let server = TestServer::start().await;
    let id = "u".repeat(128);
    let (_ws, roster) = join_as(&server, &id, json!({})).await;
    assert_roster(&roster, &[(id.as_str(), json!({}))]);
}

#[tokio::test]
async fn user_info_over_1024_bytes_is_refused() {
    assert_invalid_channel_data(&member("ann", json!({"bio": "x".repeat(1100)}))).await;
}

#[tokio::test]
async fn user_info_under_1024_bytes_is_accepted() {
    let server = TestServer::start().await;
    let info = json!({"bio": "x".repeat(1000)});
    let (_ws, roster) = join_as(&server, "ann", info.clone()).await;
    assert_roster(&roster, &[("ann", info)]);
}

#[tokio::test]
async fn presence_channel_refuses_the_101st_user_by_default() {
    let server = TestServer::start().await;
    let mut members = Vec::new();
    for i in 0..100 {
        let (ws, _) = join_as(&server, &format!("user-{i}"), json!({})).await;
        members.push(ws);
    }

    let (mut ws, socket_id) = server.connect().await;
    send_presence(
        &mut ws,
        &server.app,
        &socket_id,
        ROOM,
        &member("user-100", json!({})),
    )
    .await;
    assert_subscription_error(&mut ws, ROOM, "LimitReached", 403).await;
}

#[tokio::test]
async fn max_presence_members_caps_distinct_users_not_sockets() {
    let server = TestServer::start_with(&demo_app_with("max_presence_members = 2")).await;
    let (_ann, _) = join_as(&server, "ann", json!({})).await;
    let (_bob, _) = join_as(&server, "bob", json!({})).await;

    let (mut cid, socket_id) = server.connect().await;
    send_presence(
        &mut cid,
        &server.app,
        &socket_id,
        ROOM,
        &member("cid", json!({})),
    )
    .await;
    assert_subscription_error(&mut cid, ROOM, "LimitReached", 403).await;

    // Another tab of a user already present still gets in.
    let (_ann2, roster) = join_as(&server, "ann", json!({})).await;
    assert_eq!(roster["count"], 2, "{roster}");

    // The refused user is not a member.
    let response = server
        .api("GET", &format!("/channels/{ROOM}/users"), &[], None)
        .await;
    let body = api_ok(response).await;
    let mut ids: Vec<&str> = body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users list: {body}"))
        .iter()
        .map(|user| user["id"].as_str().expect("string id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ann", "bob"]);
}
