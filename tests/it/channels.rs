//! Subscribing to public and private channels: authorization, channel names, and
//! delivery of events triggered through the HTTP API.

use serde_json::json;

use crate::kit::{
    api_error, assert_subscription_error, expect_event, expect_subscribed, join_private,
    join_public, member, round_trip,
};
use crate::support::{
    TestApp, TestServer, auth_presence, auth_private, hmac_hex, recv_event, send_json, subscribe,
};

#[tokio::test]
async fn public_subscription_succeeds_with_empty_object_data() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    subscribe(&mut ws, json!({"channel": "news"})).await;
    let event = recv_event(&mut ws).await;
    assert_eq!(
        event,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"})
    );
}

#[tokio::test]
async fn subscribe_data_may_be_a_json_string() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    subscribe(&mut ws, json!(json!({"channel": "news"}).to_string())).await;
    expect_subscribed(&mut ws, "news").await;

    let channel = "private-room";
    let auth = auth_private(&server.app, &socket_id, channel);
    subscribe(
        &mut ws,
        json!(json!({"channel": channel, "auth": auth}).to_string()),
    )
    .await;
    expect_subscribed(&mut ws, channel).await;
}

#[tokio::test]
async fn triggered_event_arrives_with_data_string_as_sent() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "news").await;

    server
        .trigger("news", "story", r#"{"title":"hi","n":1}"#)
        .await;
    expect_event(&mut ws, "news", "story", r#"{"title":"hi","n":1}"#).await;

    server.trigger("news", "note", "plain text, not JSON").await;
    expect_event(&mut ws, "news", "note", "plain text, not JSON").await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "news").await;
    join_public(&mut ws, "marker").await;

    send_json(
        &mut ws,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}),
    )
    .await;
    round_trip(&mut ws).await;
    server.trigger("news", "story", "missed").await;
    server.trigger("marker", "done", "").await;

    // Had the story been delivered it would come first.
    expect_event(&mut ws, "marker", "done", "").await;
}

#[tokio::test]
async fn subscribing_twice_is_acknowledged_twice_and_delivers_once() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "news").await;
    join_public(&mut ws, "marker").await;

    subscribe(&mut ws, json!({"channel": "news"})).await;
    expect_subscribed(&mut ws, "news").await;
    server.trigger("news", "story", "once").await;
    server.trigger("marker", "done", "").await;

    expect_event(&mut ws, "news", "story", "once").await;
    expect_event(&mut ws, "marker", "done", "").await;
}

#[tokio::test]
async fn subscribe_unsubscribe_subscribe_back_to_back_ends_subscribed_once() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "marker").await;

    subscribe(&mut ws, json!({"channel": "news"})).await;
    send_json(
        &mut ws,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}),
    )
    .await;
    subscribe(&mut ws, json!({"channel": "news"})).await;
    let answers = round_trip(&mut ws).await;
    let acks = answers
        .iter()
        .filter(|e| {
            e["event"] == "pusher_internal:subscription_succeeded" && e["channel"] == "news"
        })
        .count();
    assert_eq!(acks, 2, "each subscribe is acknowledged: {answers:?}");
    assert_eq!(answers.len(), 2, "nothing but the two acks: {answers:?}");

    server.trigger("news", "first", "1").await;
    server.trigger("news", "second", "2").await;
    server.trigger("marker", "done", "").await;
    expect_event(&mut ws, "news", "first", "1").await;
    expect_event(&mut ws, "news", "second", "2").await;
    expect_event(&mut ws, "marker", "done", "").await;
}

#[tokio::test]
async fn private_channel_with_valid_auth_is_joined_and_receives_events() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    join_private(&mut ws, &server.app, &socket_id, "private-room").await;
    server.trigger("private-room", "secret", "s").await;
    expect_event(&mut ws, "private-room", "secret", "s").await;
}

#[tokio::test]
async fn private_channel_without_auth_is_refused_with_auth_error() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    subscribe(&mut ws, json!({"channel": "private-room"})).await;
    assert_subscription_error(&mut ws, "private-room", "AuthError", 401).await;
}

#[tokio::test]
async fn private_channel_with_wrong_signature_is_refused_and_not_delivered() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;
    join_public(&mut ws, "marker").await;

    let wrong = TestApp {
        secret: "not-the-secret".into(),
        ..server.app.clone()
    };
    let auth = auth_private(&wrong, &socket_id, "private-room");
    subscribe(&mut ws, json!({"channel": "private-room", "auth": auth})).await;
    assert_subscription_error(&mut ws, "private-room", "AuthError", 401).await;

    server.trigger("private-room", "secret", "s").await;
    server.trigger("marker", "done", "").await;
    expect_event(&mut ws, "marker", "done", "").await;
}

#[tokio::test]
async fn private_channel_with_wrong_key_prefix_is_refused() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    let signature = hmac_hex(&server.app.secret, &format!("{socket_id}:private-room"));
    let auth = format!("other-key:{signature}");
    subscribe(&mut ws, json!({"channel": "private-room", "auth": auth})).await;
    assert_subscription_error(&mut ws, "private-room", "AuthError", 401).await;
}

#[tokio::test]
async fn private_channel_signed_for_another_socket_is_refused() {
    let server = TestServer::start().await;
    let (_other, other_id) = server.connect().await;
    let (mut ws, _) = server.connect().await;

    let auth = auth_private(&server.app, &other_id, "private-room");
    subscribe(&mut ws, json!({"channel": "private-room", "auth": auth})).await;
    assert_subscription_error(&mut ws, "private-room", "AuthError", 401).await;
}

#[tokio::test]
async fn private_channel_signed_with_channel_data_is_accepted() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    let channel_data = member("u1", json!({"name": "Ann"}));
    let auth = auth_presence(&server.app, &socket_id, "private-room", &channel_data);
    let data = json!({"channel": "private-room", "auth": auth, "channel_data": channel_data});
    subscribe(&mut ws, data).await;
    expect_subscribed(&mut ws, "private-room").await;
}

#[tokio::test]
async fn channel_prefixes_are_matched_exactly() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    for channel in [
        "my-private-x",
        "privateroom",
        "presenceroom",
        "my-presence-x",
    ] {
        subscribe(&mut ws, json!({"channel": channel})).await;
        let event = expect_subscribed(&mut ws, channel).await;
        assert_eq!(event["data"], "{}", "{channel} is public: {event}");
    }
}

#[tokio::test]
async fn channel_name_may_use_every_allowed_character() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    let channel = "AZaz09_-=@,.;";
    join_public(&mut ws, channel).await;
    server.trigger(channel, "e", "d").await;
    expect_event(&mut ws, channel, "e", "d").await;
}

#[tokio::test]
async fn channel_name_of_200_characters_is_accepted() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    let channel = "c".repeat(200);
    join_public(&mut ws, &channel).await;
    server.trigger(&channel, "e", "d").await;
    expect_event(&mut ws, &channel, "e", "d").await;
}

#[tokio::test]
async fn channel_name_of_201_characters_is_refused_as_invalid() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    let channel = "c".repeat(201);
    subscribe(&mut ws, json!({"channel": channel})).await;
    assert_subscription_error(&mut ws, &channel, "InvalidChannel", 400).await;
}

/// Names with one character outside `A-Z a-z 0-9 _ - = @ , . ;`.
const BAD_NAMES: [&str; 6] = [
    "news room",
    "news/room",
    "news*",
    "nëws",
    "news:room",
    "news\"x",
];

#[tokio::test]
async fn channel_name_with_a_forbidden_character_is_refused_as_invalid() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    for channel in BAD_NAMES {
        subscribe(&mut ws, json!({"channel": channel})).await;
        assert_subscription_error(&mut ws, channel, "InvalidChannel", 400).await;
    }

    // Also when it is signed correctly as a private channel.
    let channel = "private-news room";
    let auth = auth_private(&server.app, &socket_id, channel);
    subscribe(&mut ws, json!({"channel": channel, "auth": auth})).await;
    assert_subscription_error(&mut ws, channel, "InvalidChannel", 400).await;
}

#[tokio::test]
async fn http_api_judges_channel_names_like_the_websocket() {
    let server = TestServer::start().await;
    let post = |channel: String| {
        let body = json!({"name": "e", "channel": channel, "data": "d"});
        server.api("POST", "/events", &[], Some(body))
    };

    assert_eq!(post("c".repeat(200)).await.status(), 200);
    assert_eq!(post("AZaz09_-=@,.;".into()).await.status(), 200);
    api_error(post("c".repeat(201)).await, 400).await;
    for channel in BAD_NAMES {
        api_error(post(channel.into()).await, 400).await;
    }

    let body = json!({"name": "e", "channels": ["fine", "not fine"], "data": "d"});
    api_error(server.api("POST", "/events", &[], Some(body)).await, 400).await;
}

#[tokio::test]
async fn failed_private_subscription_leaves_the_socket_usable() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = server.connect().await;

    subscribe(
        &mut ws,
        json!({"channel": "private-room", "auth": "demo-key:00"}),
    )
    .await;
    assert_subscription_error(&mut ws, "private-room", "AuthError", 401).await;

    join_private(&mut ws, &server.app, &socket_id, "private-room").await;
    server.trigger("private-room", "e", "d").await;
    expect_event(&mut ws, "private-room", "e", "d").await;
}
