//! The Pusher HTTP API under `/apps/{app_id}`: request signing, triggering events and
//! batches, channel queries, limits, errors, and the health routes.

use serde_json::{Value, json};

use crate::kit::{
    api_error, api_ok, demo_app_with, expect_event, join_presence, join_public, md5_hex, member,
    round_trip, send_raw, sign_params,
};
use crate::support::{TestApp, TestServer, Ws, hmac_hex, now, recv_event, send_json, sign_query};

/// The request of Pusher's published signing example.
const EXAMPLE_BODY: &str =
    r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
const EXAMPLE_KEY: &str = "278d425bdf160c739803";
const EXAMPLE_SECRET: &str = "7ad3773142a6692b25b8";
const EXAMPLE_SIGNATURE: &str = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";

fn example_app() -> TestApp {
    TestApp {
        id: "3".into(),
        key: EXAMPLE_KEY.into(),
        secret: EXAMPLE_SECRET.into(),
    }
}

fn example_config() -> String {
    format!(
        "[demo]\nenabled = false\n[[apps]]\nid = \"3\"\n\
         key = \"{EXAMPLE_KEY}\"\nsecret = \"{EXAMPLE_SECRET}\"\n"
    )
}

/// A small valid event body.
fn event_body() -> String {
    json!({"name": "e", "channel": "news", "data": "d"}).to_string()
}

/// The auth parameters for `body` at `timestamp`, `body_md5` given explicitly.
fn auth_params(app: &TestApp, timestamp: u64, body_md5: &str) -> Vec<(&'static str, String)> {
    vec![
        ("auth_key", app.key.clone()),
        ("auth_timestamp", timestamp.to_string()),
        ("auth_version", "1.0".into()),
        ("body_md5", body_md5.to_owned()),
    ]
}

/// POSTs `body` to `/events` signed for `timestamp`.
async fn post_events_at(server: &TestServer, body: &str, timestamp: u64) -> reqwest::Response {
    let path = format!("/apps/{}/events", server.app.id);
    let query = sign_query(&server.app, "POST", &path, &[], Some(body), timestamp);
    send_raw(server, "POST", &path, &query, Some(body)).await
}

/// POSTs an event body to `/events`, signed now.
async fn post_events(server: &TestServer, body: Value) -> reqwest::Response {
    server.api("POST", "/events", &[], Some(body)).await
}

#[test]
fn published_signing_example_is_reproduced_by_the_test_kit() {
    let app = example_app();
    let body_md5 = "ec365a775a4cd0599faeb73354201b6f";
    assert_eq!(md5_hex(EXAMPLE_BODY), body_md5);

    let query = format!(
        "auth_key={EXAMPLE_KEY}&auth_timestamp=1353088179&auth_version=1.0&body_md5={body_md5}"
    );
    let to_sign = format!("POST\n/apps/3/events\n{query}");
    assert_eq!(hmac_hex(EXAMPLE_SECRET, &to_sign), EXAMPLE_SIGNATURE);

    let signed = sign_query(
        &app,
        "POST",
        "/apps/3/events",
        &[],
        Some(EXAMPLE_BODY),
        1353088179,
    );
    assert_eq!(
        signed,
        format!("{query}&auth_signature={EXAMPLE_SIGNATURE}")
    );
}

#[tokio::test]
async fn request_signed_like_the_published_example_is_accepted_and_delivered() {
    let server = TestServer::start_with(&example_config()).await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "project-3").await;

    let response = post_events_at(&server, EXAMPLE_BODY, now()).await;
    assert_eq!(api_ok(response).await, json!({}));
    expect_event(&mut ws, "project-3", "foo", r#"{"some":"data"}"#).await;
}

#[tokio::test]
async fn wrong_signature_is_refused_with_the_string_that_should_be_signed() {
    let server = TestServer::start().await;
    let body = event_body();
    let path = "/apps/demo-app/events";
    let (query, to_sign) = sign_params(
        &server.app.secret,
        "POST",
        path,
        &auth_params(&server.app, now(), &md5_hex(&body)),
    );
    let unsigned = query.split("&auth_signature=").next().unwrap();
    let forged = format!("{unsigned}&auth_signature={}", "0".repeat(64));

    let response = send_raw(&server, "POST", path, &forged, Some(&body)).await;
    let (code, message) = api_error(response, 401).await;
    assert_eq!(code, "invalid_signature");
    let escaped = to_sign.replace('\n', "\\n");
    assert!(
        message.contains(&to_sign) || message.contains(&escaped),
        "message should quote the string to sign {to_sign:?}: {message:?}"
    );
}

#[tokio::test]
async fn timestamp_more_than_600_seconds_off_is_refused() {
    let server = TestServer::start().await;
    let body = event_body();

    assert_eq!(
        post_events_at(&server, &body, now() - 590).await.status(),
        200
    );
    api_error(post_events_at(&server, &body, now() - 601).await, 401).await;
    api_error(post_events_at(&server, &body, now() + 601).await, 401).await;
}

#[tokio::test]
async fn body_not_matching_body_md5_is_refused() {
    let server = TestServer::start().await;
    let body = event_body();
    let other = json!({"name": "e", "channel": "news", "data": "other"}).to_string();
    let path = "/apps/demo-app/events";
    let params = auth_params(&server.app, now(), &md5_hex(&other));
    let (query, _) = sign_params(&server.app.secret, "POST", path, &params);

    api_error(
        send_raw(&server, "POST", path, &query, Some(&body)).await,
        401,
    )
    .await;
}

#[tokio::test]
async fn unsigned_request_is_refused() {
    let server = TestServer::start().await;
    let body = event_body();
    api_error(
        send_raw(&server, "POST", "/apps/demo-app/events", "", Some(&body)).await,
        401,
    )
    .await;
}

#[tokio::test]
async fn unknown_app_id_is_404() {
    let server = TestServer::start().await;
    let body = event_body();
    let path = "/apps/no-such-app/events";
    let query = sign_query(&server.app, "POST", path, &[], Some(&body), now());
    api_error(
        send_raw(&server, "POST", path, &query, Some(&body)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn disabled_app_is_403() {
    let config = "[demo]\nenabled = false\n[[apps]]\nid = \"off\"\nkey = \"off-key\"\n\
                  secret = \"off-secret\"\nenabled = false\n";
    let server = TestServer::start_with(config).await;
    let body = json!({"name": "e", "channel": "news", "data": "d"});
    api_error(post_events(&server, body).await, 403).await;
}

#[tokio::test]
async fn malformed_event_body_is_400() {
    let server = TestServer::start().await;
    let path = "/apps/demo-app/events";
    for body in [
        "{not json",
        r#"{"name":"e","channel":"news"}"#,
        r#"{"name":"e","data":"d"}"#,
    ] {
        let query = sign_query(&server.app, "POST", path, &[], Some(body), now());
        api_error(
            send_raw(&server, "POST", path, &query, Some(body)).await,
            400,
        )
        .await;
    }
}

#[tokio::test]
async fn trigger_answers_an_empty_object() {
    let server = TestServer::start().await;
    let response = post_events(
        &server,
        json!({"name": "e", "channel": "news", "data": "d"}),
    )
    .await;
    assert_eq!(api_ok(response).await, json!({}));
}

#[tokio::test]
async fn trigger_to_several_channels_reaches_each() {
    let server = TestServer::start().await;
    let (mut a, _) = server.connect().await;
    join_public(&mut a, "alpha").await;
    let (mut b, _) = server.connect().await;
    join_public(&mut b, "beta").await;

    let body = json!({"name": "e", "channels": ["alpha", "beta"], "data": "both"});
    api_ok(post_events(&server, body).await).await;
    expect_event(&mut a, "alpha", "e", "both").await;
    expect_event(&mut b, "beta", "e", "both").await;
}

#[tokio::test]
async fn socket_id_excludes_that_socket_from_delivery() {
    let server = TestServer::start().await;
    let (mut sender, sender_id) = server.connect().await;
    join_public(&mut sender, "news").await;
    let (mut other, _) = server.connect().await;
    join_public(&mut other, "news").await;

    let body = json!({"name": "e", "channel": "news", "data": "to others", "socket_id": sender_id});
    api_ok(post_events(&server, body).await).await;
    server.trigger("news", "marker", "").await;

    expect_event(&mut other, "news", "e", "to others").await;
    expect_event(&mut sender, "news", "marker", "").await;
}

#[tokio::test]
async fn malformed_socket_id_is_400() {
    let server = TestServer::start().await;
    for socket_id in ["abc", "1.2.3", "12", "1.", ".1"] {
        let body = json!({"name": "e", "channel": "news", "data": "d", "socket_id": socket_id});
        api_error(post_events(&server, body).await, 400).await;
    }
}

#[tokio::test]
async fn trigger_to_100_channels_is_accepted_and_101_refused() {
    let server = TestServer::start().await;
    let names = |n: usize| (0..n).map(|i| format!("ch-{i}")).collect::<Vec<_>>();

    let body = json!({"name": "e", "channels": names(100), "data": "d"});
    api_ok(post_events(&server, body).await).await;
    let body = json!({"name": "e", "channels": names(101), "data": "d"});
    api_error(post_events(&server, body).await, 400).await;
}

#[tokio::test]
async fn event_name_of_201_characters_is_refused() {
    let server = TestServer::start().await;
    let body = json!({"name": "n".repeat(200), "channel": "news", "data": "d"});
    api_ok(post_events(&server, body).await).await;
    let body = json!({"name": "n".repeat(201), "channel": "news", "data": "d"});
    api_error(post_events(&server, body).await, 400).await;
}

#[tokio::test]
async fn event_data_limit_counts_utf8_bytes() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "news").await;

    let at_limit = "a".repeat(10240);
    let body = json!({"name": "e", "channel": "news", "data": at_limit});
    api_ok(post_events(&server, body).await).await;
    expect_event(&mut ws, "news", "e", &at_limit).await;

    // 10237 + 4 = 10241 bytes, though only 10238 characters.
    let over = format!("{}\u{1F600}", "a".repeat(10237));
    assert_eq!(over.len(), 10241);
    let body = json!({"name": "e", "channel": "news", "data": over});
    let (code, _) = api_error(post_events(&server, body).await, 413).await;
    assert_eq!(code, "event_too_large");
}

#[tokio::test]
async fn app_max_message_size_sets_the_event_data_limit() {
    let server = TestServer::start_with(&demo_app_with("max_message_size = 100")).await;

    let body = json!({"name": "e", "channel": "news", "data": "a".repeat(100)});
    api_ok(post_events(&server, body).await).await;
    let body = json!({"name": "e", "channel": "news", "data": "a".repeat(101)});
    let (code, _) = api_error(post_events(&server, body).await, 413).await;
    assert_eq!(code, "event_too_large");
}

/// Fills `presence-room` with users ann (two sockets) and bob, and `news` with two
/// sockets; the channels stay occupied while the returned sockets live.
async fn occupy(server: &TestServer) -> Vec<Ws> {
    let mut sockets = Vec::new();
    for user in ["ann", "ann", "bob"] {
        let (mut ws, socket_id) = server.connect().await;
        let data = member(user, json!({}));
        join_presence(&mut ws, &server.app, &socket_id, "presence-room", &data).await;
        sockets.push(ws);
    }
    for _ in 0..2 {
        let (mut ws, _) = server.connect().await;
        join_public(&mut ws, "news").await;
        sockets.push(ws);
    }
    sockets
}

#[tokio::test]
async fn trigger_info_reports_user_and_subscription_counts() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let body = json!({
        "name": "e",
        "channels": ["presence-room", "news"],
        "data": "d",
        "info": "user_count,subscription_count",
    });
    let answer = api_ok(post_events(&server, body).await).await;
    assert_eq!(
        answer,
        json!({"channels": {
            "presence-room": {"user_count": 2},
            "news": {"subscription_count": 2},
        }})
    );
}

#[tokio::test]
async fn batch_events_are_each_delivered() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;
    join_public(&mut ws, "alpha").await;
    join_public(&mut ws, "beta").await;

    let batch = json!({"batch": [
        {"name": "one", "channel": "alpha", "data": "1"},
        {"name": "two", "channel": "beta", "data": "2"},
    ]});
    let response = server.api("POST", "/batch_events", &[], Some(batch)).await;
    api_ok(response).await;

    let mut got = vec![recv_event(&mut ws).await, recv_event(&mut ws).await];
    got.sort_by_key(|e| e["event"].as_str().map(str::to_owned));
    assert_eq!(
        got,
        [
            json!({"event": "one", "channel": "alpha", "data": "1"}),
            json!({"event": "two", "channel": "beta", "data": "2"}),
        ]
    );
}

#[tokio::test]
async fn batch_info_reports_counts_per_item() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let batch = json!({"batch": [
        {"name": "e", "channel": "presence-room", "data": "d", "info": "user_count"},
        {"name": "e", "channel": "news", "data": "d", "info": "subscription_count"},
    ]});
    let answer = api_ok(server.api("POST", "/batch_events", &[], Some(batch)).await).await;
    assert_eq!(
        answer,
        json!({"batch": [{"user_count": 2}, {"subscription_count": 2}]})
    );
}

#[tokio::test]
async fn batch_of_10_is_accepted_and_11_refused() {
    let server = TestServer::start().await;
    let batch = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({"name": "e", "channel": format!("ch-{i}"), "data": "d"}))
            .collect();
        json!({ "batch": items })
    };

    api_ok(
        server
            .api("POST", "/batch_events", &[], Some(batch(10)))
            .await,
    )
    .await;
    api_error(
        server
            .api("POST", "/batch_events", &[], Some(batch(11)))
            .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn channels_list_shows_only_occupied_channels() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;
    let (mut leaver, _) = server.connect().await;
    join_public(&mut leaver, "gone").await;
    send_json(
        &mut leaver,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "gone"}}),
    )
    .await;
    round_trip(&mut leaver).await;

    let answer = api_ok(server.api("GET", "/channels", &[], None).await).await;
    let channels = answer["channels"]
        .as_object()
        .unwrap_or_else(|| panic!("{answer}"));
    let mut names: Vec<&str> = channels.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["news", "presence-room"], "{answer}");
}

#[tokio::test]
async fn channels_list_filters_by_prefix_and_counts_presence_users() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let query = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let answer = api_ok(server.api("GET", "/channels", &query, None).await).await;
    assert_eq!(
        answer,
        json!({"channels": {"presence-room": {"user_count": 2}}})
    );

    let query = [("filter_by_prefix", "ne")];
    let answer = api_ok(server.api("GET", "/channels", &query, None).await).await;
    let names: Vec<&String> = answer["channels"]
        .as_object()
        .expect("channels")
        .keys()
        .collect();
    assert_eq!(names, ["news"], "{answer}");
}

#[tokio::test]
async fn channels_list_user_count_needs_the_presence_prefix() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let query = [("info", "user_count")];
    api_error(server.api("GET", "/channels", &query, None).await, 400).await;
    let query = [("filter_by_prefix", "private-"), ("info", "user_count")];
    api_error(server.api("GET", "/channels", &query, None).await, 400).await;
}

#[tokio::test]
async fn channel_info_reports_occupation_and_counts() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let info = [("info", "subscription_count")];
    let answer = api_ok(server.api("GET", "/channels/news", &info, None).await).await;
    assert_eq!(answer, json!({"occupied": true, "subscription_count": 2}));

    let info = [("info", "user_count")];
    let answer = api_ok(
        server
            .api("GET", "/channels/presence-room", &info, None)
            .await,
    )
    .await;
    assert_eq!(answer, json!({"occupied": true, "user_count": 2}));

    let answer = api_ok(server.api("GET", "/channels/empty", &[], None).await).await;
    assert_eq!(answer["occupied"], false, "{answer}");
}

#[tokio::test]
async fn channel_user_count_of_a_non_presence_channel_is_400() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let info = [("info", "user_count,subscription_count")];
    api_error(server.api("GET", "/channels/news", &info, None).await, 400).await;
}

#[tokio::test]
async fn presence_users_are_listed_once_each() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;

    let answer = api_ok(
        server
            .api("GET", "/channels/presence-room/users", &[], None)
            .await,
    )
    .await;
    let mut users = answer["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .clone();
    users.sort_by_key(|u| u["id"].as_str().map(str::to_owned));
    assert_eq!(users, [json!({"id": "ann"}), json!({"id": "bob"})]);
}

#[tokio::test]
async fn users_of_a_non_presence_channel_is_400() {
    let server = TestServer::start().await;
    let _occupants = occupy(&server).await;
    api_error(
        server.api("GET", "/channels/news/users", &[], None).await,
        400,
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = send_raw(&server, "GET", path, "", None).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}
