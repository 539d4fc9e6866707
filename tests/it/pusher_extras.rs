//! The rest of the Pusher Channels protocol: client events and their refusals and
//! rate limit, users (sign-in, the user channel, terminating a user's connections,
//! watchlists, the sign-in deadline), encrypted and cache channels, and
//! `subscription_count`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::extras_kit::{
    answers, assert_error_answer, assert_next_is_marker, assert_no_answer, expect_cache_miss,
    expect_count, expect_named, expect_watchlist, hang_up, join_any, join_unsigned,
    send_client_event, send_signin, settle, sign_in, signed_in, signin_auth, user_channel,
    user_data, watchlist,
};
use crate::kit::{
    api_error, api_ok, assert_refused, demo_app_with, expect_subscribed, expect_subscription_error,
    join_private, join_public, member, round_trip,
};
use crate::support::{
    TestServer, Ws, auth_presence, auth_private, data_of, recv_close, recv_event, send_json,
    subscribe,
};

/// A socket on `channel` joined as `user_id` (for presence channels).
async fn joined(server: &TestServer, channel: &str, user_id: &str) -> (Ws, String) {
    let (mut ws, socket_id) = server.connect().await;
    join_any(&mut ws, &server.app, &socket_id, channel, user_id).await;
    (ws, socket_id)
}

/// A sender and a receiver on `channel`, as users `ann` and `bob`; the receiver has
/// read everything up to its own subscription, and so has the sender (`member_added`
/// for bob included).
async fn pair(server: &TestServer, channel: &str) -> (Ws, Ws) {
    let (mut sender, _) = joined(server, channel, "ann").await;
    let (receiver, _) = joined(server, channel, "bob").await;
    let _ = answers(&mut sender).await;
    (sender, receiver)
}

// ---------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn client_event_on_private_channel_reaches_the_others_but_not_the_sender() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;
    let (mut third, _) = joined(&server, channel, "cy").await;

    let data = json!({"typing": true});
    send_client_event(&mut sender, channel, "client-typing", Some(data.clone())).await;
    for ws in [&mut receiver, &mut third] {
        let relayed = recv_event(ws).await;
        assert_eq!(relayed["event"], "client-typing", "{relayed}");
        assert_eq!(relayed["channel"], channel, "{relayed}");
        assert!(
            relayed["data"].is_string(),
            "data should be a JSON string: {relayed}"
        );
        assert_eq!(data_of(&relayed), data, "{relayed}");
        assert!(
            relayed.get("user_id").is_none(),
            "user_id belongs only on presence channels: {relayed}"
        );
    }
    assert_no_answer(&mut sender, "the sender of a client event").await;
}

#[tokio::test]
async fn client_event_on_presence_channel_carries_the_sender_user_id() {
    let server = TestServer::start().await;
    let channel = "presence-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    send_client_event(
        &mut sender,
        channel,
        "client-wave",
        Some(json!({"hand": "left"})),
    )
    .await;
    let relayed = recv_event(&mut receiver).await;
    assert_eq!(relayed["event"], "client-wave", "{relayed}");
    assert_eq!(relayed["channel"], channel, "{relayed}");
    assert_eq!(data_of(&relayed), json!({"hand": "left"}), "{relayed}");
    assert_eq!(relayed["user_id"], "ann", "the sender's user_id: {relayed}");
    assert_no_answer(&mut sender, "the sender of a presence client event").await;
}

#[tokio::test]
async fn client_event_data_may_be_a_string() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    let text = r#"plain "text", not JSON"#;
    send_client_event(&mut sender, channel, "client-note", Some(json!(text))).await;
    let relayed = recv_event(&mut receiver).await;
    assert_eq!(
        relayed,
        json!({"event": "client-note", "channel": channel, "data": text}),
        "a string is relayed as that string"
    );
}

#[tokio::test]
async fn client_event_without_data_is_relayed() {
    let server = TestServer::start().await;
    for channel in ["private-room", "presence-room"] {
        let (mut sender, mut receiver) = pair(&server, channel).await;
        send_client_event(&mut sender, channel, "client-poke", None).await;
        let relayed = recv_event(&mut receiver).await;
        assert_eq!(relayed["event"], "client-poke", "{relayed}");
        assert_eq!(relayed["channel"], channel, "{relayed}");
        assert!(
            relayed.get("data").is_none_or(Value::is_string),
            "data, when present, is a string: {relayed}"
        );
        assert_no_answer(&mut sender, "a client event without data").await;
    }
}

#[tokio::test]
async fn client_event_on_public_channel_is_refused_with_4303_and_not_relayed() {
    let server = TestServer::start().await;
    let channel = "news";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    send_client_event(&mut sender, channel, "client-shout", Some(json!({"x": 1}))).await;
    assert_error_answer(&mut sender, 4303, "a client event on a public channel").await;
    assert_next_is_marker(&server, &mut receiver, channel, "public channel").await;
}

#[tokio::test]
async fn client_event_on_the_user_channel_is_refused_with_4303() {
    let server = TestServer::start().await;
    let channel = user_channel("ann");
    let (mut first, _) = signed_in(&server, "ann", &[]).await;
    let (mut second, _) = signed_in(&server, "ann", &[]).await;
    join_unsigned(&mut first, &channel).await;
    join_unsigned(&mut second, &channel).await;

    send_client_event(&mut first, &channel, "client-echo", Some(json!({}))).await;
    assert_error_answer(&mut first, 4303, "a client event on #server-to-user-").await;
    assert_next_is_marker(&server, &mut second, &channel, "the user's other socket").await;
}

#[tokio::test]
async fn client_event_on_a_channel_the_socket_never_joined_is_refused_with_4303() {
    let server = TestServer::start().await;
    for channel in ["private-room", "presence-room", "private-encrypted-room"] {
        let (mut receiver, _) = joined(&server, channel, "bob").await;
        let (mut outsider, _) = server.connect().await;

        send_client_event(&mut outsider, channel, "client-intrude", Some(json!({}))).await;
        assert_error_answer(&mut outsider, 4303, &format!("{channel} never joined")).await;
        assert_next_is_marker(&server, &mut receiver, channel, channel).await;
    }
}

#[tokio::test]
async fn client_event_after_a_refused_subscription_is_refused_with_4303() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut receiver, _) = joined(&server, channel, "bob").await;
    let (mut outsider, _) = server.connect().await;

    let forged = format!("{}:{}", server.app.key, "0".repeat(64));
    subscribe(&mut outsider, json!({"channel": channel, "auth": forged})).await;
    expect_subscription_error(&mut outsider, channel).await;
    send_client_event(&mut outsider, channel, "client-intrude", Some(json!({}))).await;
    assert_error_answer(&mut outsider, 4303, "after a refused subscription").await;
    assert_next_is_marker(&server, &mut receiver, channel, "refused subscriber").await;
}

#[tokio::test]
async fn client_event_after_unsubscribing_is_refused_with_4303() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    let leave = json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
    send_json(&mut sender, leave).await;
    send_client_event(&mut sender, channel, "client-late", Some(json!({}))).await;
    assert_error_answer(&mut sender, 4303, "after unsubscribing").await;
    assert_next_is_marker(&server, &mut receiver, channel, "unsubscribed sender").await;
}

#[tokio::test]
async fn events_not_named_client_are_refused_with_4300_and_not_relayed() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    for name in ["pusher:foo", "pusher_internal:foo", "xclient-foo", "typing"] {
        send_client_event(&mut sender, channel, name, Some(json!({"n": 1}))).await;
        assert_error_answer(&mut sender, 4300, &format!("event {name:?}")).await;
    }
    // The socket is still subscribed and may still speak properly.
    send_client_event(&mut sender, channel, "client-ok", Some(json!({"n": 2}))).await;
    let relayed = recv_event(&mut receiver).await;
    assert_eq!(
        relayed["event"], "client-ok",
        "nothing before the proper event: {relayed}"
    );
}

#[tokio::test]
async fn client_events_are_refused_with_4303_when_the_app_turns_them_off() {
    let server = TestServer::start_with(&demo_app_with("client_events = false")).await;
    for channel in ["private-room", "presence-room"] {
        let (mut sender, mut receiver) = pair(&server, channel).await;
        send_client_event(&mut sender, channel, "client-typing", Some(json!({}))).await;
        assert_error_answer(
            &mut sender,
            4303,
            &format!("client_events = false, {channel}"),
        )
        .await;
        assert_next_is_marker(&server, &mut receiver, channel, channel).await;
    }
}

#[tokio::test]
async fn eleventh_client_event_in_a_second_gets_4301_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    for n in 0..11 {
        send_client_event(&mut sender, channel, "client-burst", Some(json!({"n": n}))).await;
    }
    assert_error_answer(&mut sender, 4301, "the 11th client event in a second").await;
    for n in 0..10 {
        let relayed = recv_event(&mut receiver).await;
        assert_eq!(relayed["event"], "client-burst", "{relayed}");
        assert_eq!(
            data_of(&relayed),
            json!({"n": n}),
            "events relayed in order"
        );
    }
    assert_next_is_marker(&server, &mut receiver, channel, "the 11th event").await;
    expect_named(&mut sender, channel, "marker").await;

    // A second later the socket may speak again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_client_event(&mut sender, channel, "client-again", Some(json!({"n": 11}))).await;
    assert_no_answer(&mut sender, "a client event a second after the limit").await;
    let relayed = recv_event(&mut receiver).await;
    assert_eq!(relayed["event"], "client-again", "{relayed}");
}

#[tokio::test]
async fn client_event_rate_is_counted_per_connection() {
    let server = TestServer::start().await;
    let channel = "private-room";
    let (mut ann, mut bob) = pair(&server, channel).await;
    let (mut listener, _) = joined(&server, channel, "cy").await;

    for n in 0..10 {
        send_client_event(&mut ann, channel, "client-ann", Some(json!({"n": n}))).await;
        send_client_event(&mut bob, channel, "client-bob", Some(json!({"n": n}))).await;
    }
    let mut heard = Vec::new();
    for _ in 0..20 {
        heard.push(recv_event(&mut listener).await["event"].clone());
    }
    let from_ann = heard.iter().filter(|e| *e == "client-ann").count();
    assert_eq!(from_ann, 10, "events from ann among {heard:?}");
    let from_bob = heard.iter().filter(|e| *e == "client-bob").count();
    assert_eq!(from_bob, 10, "events from bob among {heard:?}");
    for (name, ws) in [("ann", &mut ann), ("bob", &mut bob)] {
        let frames = answers(ws).await;
        assert!(
            frames.iter().all(|f| f["event"] != "pusher:error"),
            "{name}, who sent 10 while the other sent 10, was refused: {frames:?}"
        );
    }
}

#[tokio::test]
async fn client_event_rate_is_the_apps_option() {
    let server = TestServer::start_with(&demo_app_with("client_event_rate = 3")).await;
    let channel = "presence-room";
    let (mut sender, mut receiver) = pair(&server, channel).await;

    for n in 0..4 {
        send_client_event(&mut sender, channel, "client-burst", Some(json!({"n": n}))).await;
    }
    assert_error_answer(
        &mut sender,
        4301,
        "the 4th client event with client_event_rate = 3",
    )
    .await;
    for n in 0..3 {
        assert_eq!(data_of(&recv_event(&mut receiver).await), json!({"n": n}));
    }
    assert_next_is_marker(&server, &mut receiver, channel, "the 4th event").await;
}

// ---------------------------------------------------------------------------------
// Users: sign-in and the user channel
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn signed_in_socket_joins_its_user_channel_and_gets_events_sent_to_the_user() {
    let server = TestServer::start().await;
    let (mut ws, _) = signed_in(&server, "ann", &[]).await;
    let channel = user_channel("ann");
    join_unsigned(&mut ws, &channel).await;

    // As the Node SDK's sendToUser sends it: `channels` holding the user channel.
    let body = json!({"name": "notice", "channels": [channel], "data": "{\"text\":\"hi\"}"});
    api_ok(server.api("POST", "/events", &[], Some(body)).await).await;
    let event = recv_event(&mut ws).await;
    assert_eq!(
        event,
        json!({"event": "notice", "channel": channel, "data": "{\"text\":\"hi\"}"})
    );

    // And with `channel`.
    server.trigger(&channel, "second", "two").await;
    assert_eq!(
        expect_named(&mut ws, &channel, "second").await,
        json!("two")
    );
}

#[tokio::test]
async fn user_channel_is_refused_to_sockets_not_signed_in_as_that_user() {
    let server = TestServer::start().await;
    let channel = user_channel("ann");
    let (mut anonymous, _) = server.connect().await;
    let (mut bob, _) = signed_in(&server, "bob", &[]).await;

    for ws in [&mut anonymous, &mut bob] {
        subscribe(ws, json!({"channel": channel})).await;
        let error = expect_subscription_error(ws, &channel).await;
        assert_eq!(error["type"], "AuthError", "{error}");
    }
    // Even a private-channel style signature does not open it.
    let (mut forger, forger_id) = server.connect().await;
    let auth = auth_private(&server.app, &forger_id, &channel);
    subscribe(&mut forger, json!({"channel": channel, "auth": auth})).await;
    let error = expect_subscription_error(&mut forger, &channel).await;
    assert_eq!(error["type"], "AuthError", "{error}");

    server.trigger(&channel, "notice", "for ann only").await;
    for ws in [&mut anonymous, &mut bob, &mut forger] {
        assert_no_answer(ws, "a socket refused the user channel").await;
    }
}

#[tokio::test]
async fn bad_signin_closes_the_socket_with_4009() {
    let server = TestServer::start().await;
    let data = user_data("ann", &[]);

    // Signed with the wrong secret.
    let (mut ws, socket_id) = server.connect().await;
    let mut wrong = server.app.clone();
    wrong.secret = "not-the-secret".into();
    send_signin(&mut ws, &signin_auth(&wrong, &socket_id, &data), &data).await;
    assert_refused(&mut ws, 4009).await;

    // Signed for another socket.
    let (mut ws, _) = server.connect().await;
    send_signin(
        &mut ws,
        &signin_auth(&server.app, "1234.5678", &data),
        &data,
    )
    .await;
    assert_refused(&mut ws, 4009).await;

    // Signed for other user data than was sent.
    let (mut ws, socket_id) = server.connect().await;
    let other = user_data("root", &[]);
    send_signin(
        &mut ws,
        &signin_auth(&server.app, &socket_id, &data),
        &other,
    )
    .await;
    assert_refused(&mut ws, 4009).await;

    // Signed as a private channel would be, without `::user::`.
    let (mut ws, socket_id) = server.connect().await;
    let auth = auth_private(&server.app, &socket_id, &data);
    send_signin(&mut ws, &auth, &data).await;
    assert_refused(&mut ws, 4009).await;
}

#[tokio::test]
async fn signin_whose_user_data_has_no_id_closes_the_socket_with_4009() {
    let server = TestServer::start().await;
    for data in [
        r#"{"user_info":{"name":"nobody"}}"#,
        r#"{"id":""}"#,
        r#"{"id":7}"#,
    ] {
        let (mut ws, socket_id) = server.connect().await;
        send_signin(&mut ws, &signin_auth(&server.app, &socket_id, data), data).await;
        assert_refused(&mut ws, 4009).await;
    }
}

#[tokio::test]
async fn socket_signed_in_again_as_another_user_no_longer_gets_the_first_users_events() {
    let server = TestServer::start().await;
    let (mut ws, socket_id) = signed_in(&server, "ann", &[]).await;
    join_unsigned(&mut ws, &user_channel("ann")).await;

    sign_in(&mut ws, &server.app, &socket_id, &user_data("bob", &[])).await;
    server
        .trigger(&user_channel("ann"), "for-ann", "private")
        .await;
    assert_no_answer(
        &mut ws,
        "a socket now signed in as bob, on ann's user channel",
    )
    .await;

    // Nor is it closed when ann's connections are terminated.
    api_ok(
        server
            .api(
                "POST",
                "/users/ann/terminate_connections",
                &[],
                Some(json!({})),
            )
            .await,
    )
    .await;
    assert_no_answer(&mut ws, "ann's connections terminated").await;
}

#[tokio::test]
async fn terminate_connections_closes_every_socket_of_the_user_and_no_other() {
    let server = TestServer::start().await;
    let (mut ann1, _) = signed_in(&server, "ann", &[]).await;
    let (mut ann2, _) = signed_in(&server, "ann", &[]).await;
    let (mut bob, _) = signed_in(&server, "bob", &[]).await;
    join_unsigned(&mut bob, &user_channel("bob")).await;
    let (mut anonymous, _) = joined(&server, "news", "").await;

    let answer = api_ok(
        server
            .api(
                "POST",
                "/users/ann/terminate_connections",
                &[],
                Some(json!({})),
            )
            .await,
    )
    .await;
    assert_eq!(answer, json!({}), "terminate_connections answers {{}}");
    assert_refused(&mut ann1, 4009).await;
    assert_refused(&mut ann2, 4009).await;

    // The others are untouched and still served.
    assert_no_answer(&mut bob, "bob, another user").await;
    assert_no_answer(&mut anonymous, "a socket that never signed in").await;
    server
        .trigger(&user_channel("bob"), "still-here", "yes")
        .await;
    assert_eq!(
        expect_named(&mut bob, &user_channel("bob"), "still-here").await,
        json!("yes")
    );
    assert_next_is_marker(&server, &mut anonymous, "news", "anonymous").await;

    // A user with no socket is no error.
    let answer = api_ok(
        server
            .api(
                "POST",
                "/users/nobody/terminate_connections",
                &[],
                Some(json!({})),
            )
            .await,
    )
    .await;
    assert_eq!(answer, json!({}));
}

#[tokio::test]
async fn terminate_connections_must_be_signed() {
    let server = TestServer::start().await;
    let (mut ann, _) = signed_in(&server, "ann", &[]).await;
    let url = server.url(&format!(
        "/apps/{}/users/ann/terminate_connections",
        server.app.id
    ));
    let response = reqwest::Client::new()
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "an unsigned terminate_connections");
    assert_no_answer(&mut ann, "after an unsigned terminate_connections").await;
}

// ---------------------------------------------------------------------------------
// Users: watchlists
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn watchlist_hears_the_first_socket_online_and_the_last_offline() {
    let server = TestServer::start().await;
    let (mut watcher, _) = signed_in(&server, "ann", &["bob", "cy"]).await;
    assert_no_answer(&mut watcher, "a watchlist of users who are all offline").await;

    let (bob1, _) = signed_in(&server, "bob", &[]).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("online", &["bob"])
    );

    // A second socket of bob's is no news, nor is a user not on the list.
    let (bob2, _) = signed_in(&server, "bob", &[]).await;
    let (dan, _) = signed_in(&server, "dan", &[]).await;
    assert_no_answer(&mut watcher, "bob's second socket and an unwatched user").await;

    hang_up(bob1).await;
    hang_up(dan).await;
    settle().await;
    assert_no_answer(
        &mut watcher,
        "bob's first socket going while another is open",
    )
    .await;

    hang_up(bob2).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("offline", &["bob"])
    );
}

#[tokio::test]
async fn signing_in_again_as_the_same_user_is_no_news_to_watchers() {
    let server = TestServer::start().await;
    let (mut watcher, _) = signed_in(&server, "ann", &["bob"]).await;
    let (mut bob, bob_id) = signed_in(&server, "bob", &[]).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("online", &["bob"])
    );

    sign_in(&mut bob, &server.app, &bob_id, &user_data("bob", &[])).await;
    assert_no_answer(
        &mut watcher,
        "bob signing in again on the socket he never left",
    )
    .await;
}

#[tokio::test]
async fn signin_reports_watched_users_already_online_as_one_event() {
    let server = TestServer::start().await;
    let (_bob, _) = signed_in(&server, "bob", &[]).await;
    let (_cy, _) = signed_in(&server, "cy", &[]).await;

    let (mut watcher, socket_id) = server.connect().await;
    let data = user_data("ann", &["bob", "cy", "dan"]);
    sign_in(&mut watcher, &server.app, &socket_id, &data).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("online", &["bob", "cy"]),
        "the watched users already online, in one online event"
    );
    assert_no_answer(&mut watcher, "after the online event").await;
}

#[tokio::test]
async fn terminated_user_goes_offline_for_its_watchers() {
    let server = TestServer::start().await;
    let (mut watcher, _) = signed_in(&server, "ann", &["bob"]).await;
    let (mut bob, _) = signed_in(&server, "bob", &[]).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("online", &["bob"])
    );

    api_ok(
        server
            .api(
                "POST",
                "/users/bob/terminate_connections",
                &[],
                Some(json!({})),
            )
            .await,
    )
    .await;
    assert_refused(&mut bob, 4009).await;
    assert_eq!(
        expect_watchlist(&mut watcher).await,
        watchlist("offline", &["bob"])
    );
}

// ---------------------------------------------------------------------------------
// Users: user_authentication_timeout
// ---------------------------------------------------------------------------------

const SIGNIN_DEADLINE: &str = "user_authentication_timeout = \"1s\"";

/// Asserts the socket is closed with 4009 about a second after `opened`.
async fn assert_closed_for_no_signin(ws: &mut Ws, opened: Instant, what: &str) {
    let code = recv_close(ws, Duration::from_secs(4)).await;
    let after = opened.elapsed();
    assert_eq!(code, 4009, "{what}: close code");
    assert!(
        after >= Duration::from_millis(900),
        "{what}: closed after {after:?}, before the 1 s deadline"
    );
}

/// Asserts the socket still answers once the deadline is well past.
async fn assert_open_past_deadline(ws: &mut Ws, what: &str) {
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let frames = round_trip(ws).await;
    assert!(
        frames.iter().all(|f| f["event"] != "pusher:error"),
        "{what}: {frames:?}"
    );
}

#[tokio::test]
async fn socket_that_neither_signs_in_nor_joins_a_private_channel_is_closed_with_4009() {
    let server = TestServer::start_with(&demo_app_with(SIGNIN_DEADLINE)).await;
    let opened = Instant::now();
    let (mut idle, _) = server.connect().await;
    let (mut public, _) = joined(&server, "news", "").await;
    let (mut refused, refused_id) = server.connect().await;
    let auth = auth_private(&server.app, &refused_id, "private-other");
    subscribe(
        &mut refused,
        json!({"channel": "private-room", "auth": auth}),
    )
    .await;
    expect_subscription_error(&mut refused, "private-room").await;

    assert_closed_for_no_signin(&mut idle, opened, "an idle socket").await;
    assert_closed_for_no_signin(&mut public, opened, "a socket on a public channel only").await;
    assert_closed_for_no_signin(
        &mut refused,
        opened,
        "a socket whose private subscription failed",
    )
    .await;
}

#[tokio::test]
async fn signin_before_the_deadline_keeps_the_socket_open() {
    let server = TestServer::start_with(&demo_app_with(SIGNIN_DEADLINE)).await;
    let (mut ws, _) = signed_in(&server, "ann", &[]).await;
    assert_open_past_deadline(&mut ws, "a signed-in socket").await;
}

#[tokio::test]
async fn private_or_presence_subscription_before_the_deadline_keeps_the_socket_open() {
    let server = TestServer::start_with(&demo_app_with(SIGNIN_DEADLINE)).await;
    let (mut private, _) = joined(&server, "private-room", "").await;
    let (mut presence, _) = joined(&server, "presence-room", "ann").await;
    let (mut encrypted, _) = joined(&server, "private-encrypted-room", "").await;
    assert_open_past_deadline(&mut private, "a socket on a private channel").await;
    assert_open_past_deadline(&mut presence, "a socket on a presence channel").await;
    assert_open_past_deadline(&mut encrypted, "a socket on an encrypted channel").await;
}

// ---------------------------------------------------------------------------------
// Encrypted channels
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn encrypted_channel_is_authorized_as_a_private_channel() {
    let server = TestServer::start().await;
    let channel = "private-encrypted-vault";
    let (mut ws, socket_id) = server.connect().await;

    subscribe(&mut ws, json!({"channel": channel})).await;
    let error = expect_subscription_error(&mut ws, channel).await;
    assert_eq!(error["type"], "AuthError", "no signature: {error}");

    let wrong = auth_private(&server.app, &socket_id, "private-vault");
    subscribe(&mut ws, json!({"channel": channel, "auth": wrong})).await;
    let error = expect_subscription_error(&mut ws, channel).await;
    assert_eq!(
        error["type"], "AuthError",
        "signed for another channel: {error}"
    );

    join_private(&mut ws, &server.app, &socket_id, channel).await;
}

#[tokio::test]
async fn encrypted_channel_events_are_relayed_untouched() {
    let server = TestServer::start().await;
    let channel = "private-encrypted-vault";
    let (mut ws, _) = joined(&server, channel, "").await;

    let sealed = r#"{"nonce":"bm9uY2Ugbm9uY2Ugbm9uY2Ugbm9uY2U=","ciphertext":"c2VhbGVk+/=="}"#;
    server.trigger(channel, "sealed", sealed).await;
    let event = recv_event(&mut ws).await;
    assert_eq!(
        event,
        json!({"event": "sealed", "channel": channel, "data": sealed})
    );
}

#[tokio::test]
async fn trigger_naming_an_encrypted_channel_with_others_is_400() {
    let server = TestServer::start().await;
    let (mut listener, _) = joined(&server, "news", "").await;

    for channels in [
        json!(["private-encrypted-vault", "news"]),
        json!(["news", "private-encrypted-vault"]),
        json!(["private-encrypted-a", "private-encrypted-b"]),
    ] {
        let body = json!({"name": "leak", "channels": channels, "data": "x"});
        let response = server.api("POST", "/events", &[], Some(body)).await;
        let (code, _) = api_error(response, 400).await;
        assert_eq!(code, "encrypted_channel_with_others", "channels {channels}");
    }
    assert_next_is_marker(&server, &mut listener, "news", "a refused trigger").await;

    // Alone, in a one-item `channels` list, it is fine.
    let body = json!({"name": "ok", "channels": ["private-encrypted-vault"], "data": "x"});
    api_ok(server.api("POST", "/events", &[], Some(body)).await).await;
}

// ---------------------------------------------------------------------------------
// Cache channels
// ---------------------------------------------------------------------------------

const CACHE_CHANNELS: [&str; 4] = [
    "cache-prices",
    "private-cache-prices",
    "private-encrypted-cache-prices",
    "presence-cache-prices",
];

/// Subscribes `ws` to `channel` (signed as its prefix needs) and waits for success.
async fn join_cache(server: &TestServer, ws: &mut Ws, socket_id: &str, channel: &str) {
    if channel.starts_with("presence-") {
        let data = member("ann", json!({}));
        let auth = auth_presence(&server.app, socket_id, channel, &data);
        let request = json!({"channel": channel, "auth": auth, "channel_data": data});
        subscribe(ws, request).await;
    } else if channel.starts_with("private-") {
        let auth = auth_private(&server.app, socket_id, channel);
        subscribe(ws, json!({"channel": channel, "auth": auth})).await;
    } else {
        subscribe(ws, json!({"channel": channel})).await;
    }
    expect_subscribed(ws, channel).await;
}

#[tokio::test]
async fn cache_channels_send_the_last_event_right_after_subscription_succeeded() {
    let server = TestServer::start().await;
    for channel in CACHE_CHANNELS {
        server.trigger(channel, "price", "{\"eur\":1}").await;
        server.trigger(channel, "price", "{\"eur\":2}").await;

        let (mut ws, socket_id) = server.connect().await;
        join_cache(&server, &mut ws, &socket_id, channel).await;
        let replayed = recv_event(&mut ws).await;
        assert_eq!(
            replayed,
            json!({"event": "price", "channel": channel, "data": "{\"eur\":2}"}),
            "the frame right after subscription_succeeded on {channel}"
        );
        assert_no_answer(&mut ws, &format!("{channel}: only the last event")).await;
    }
}

#[tokio::test]
async fn cache_channel_subscriber_present_at_the_trigger_gets_the_event_once() {
    let server = TestServer::start().await;
    let channel = "cache-prices";
    let (mut early, socket_id) = server.connect().await;
    join_cache(&server, &mut early, &socket_id, channel).await;
    expect_cache_miss(&mut early, channel).await;

    server.trigger(channel, "price", "3").await;
    assert_eq!(expect_named(&mut early, channel, "price").await, json!(3));

    let (mut late, socket_id) = server.connect().await;
    join_cache(&server, &mut late, &socket_id, channel).await;
    assert_eq!(expect_named(&mut late, channel, "price").await, json!(3));
    for ws in [&mut early, &mut late] {
        assert_no_answer(ws, "the cached event is not sent again").await;
    }
}

#[tokio::test]
async fn cache_channel_replays_again_on_each_new_subscription() {
    let server = TestServer::start().await;
    let channel = "cache-prices";
    server.trigger(channel, "price", "7").await;
    let (mut ws, _) = joined(&server, channel, "").await;
    assert_eq!(expect_named(&mut ws, channel, "price").await, json!(7));

    let leave = json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
    send_json(&mut ws, leave).await;
    join_unsigned(&mut ws, channel).await;
    assert_eq!(
        expect_named(&mut ws, channel, "price").await,
        json!(7),
        "after resubscribing"
    );
}

#[tokio::test]
async fn batch_events_fill_cache_channels_too() {
    let server = TestServer::start().await;
    let batch = json!({"batch": [
        {"name": "price", "channel": "cache-a", "data": "1"},
        {"name": "price", "channel": "cache-b", "data": "2"},
        {"name": "price", "channel": "cache-a", "data": "3"},
    ]});
    api_ok(server.api("POST", "/batch_events", &[], Some(batch)).await).await;
    for (channel, data) in [("cache-a", 3), ("cache-b", 2)] {
        let (mut ws, _) = joined(&server, channel, "").await;
        assert_eq!(
            expect_named(&mut ws, channel, "price").await,
            json!(data),
            "{channel}"
        );
    }
}

#[tokio::test]
async fn cache_channel_with_nothing_cached_sends_cache_miss() {
    let server = TestServer::start().await;
    for channel in CACHE_CHANNELS {
        let (mut ws, socket_id) = server.connect().await;
        join_cache(&server, &mut ws, &socket_id, channel).await;
        expect_cache_miss(&mut ws, channel).await;
        assert_no_answer(&mut ws, channel).await;
    }
}

#[tokio::test]
async fn channels_that_are_not_cache_channels_send_no_cache_miss() {
    let server = TestServer::start().await;
    for channel in [
        "news",
        "private-news",
        "presence-news",
        "my-cache-news",
        "cachenews",
    ] {
        server.trigger(channel, "old", "before").await;
        let (mut ws, _) = joined(&server, channel, "ann").await;
        assert_no_answer(&mut ws, &format!("{channel} is no cache channel")).await;
    }
}

#[tokio::test]
async fn cached_event_expires_after_cache_ttl() {
    let server = TestServer::start_with(&demo_app_with("cache_ttl = \"1s\"")).await;
    let channel = "cache-prices";
    server.trigger(channel, "price", "4").await;

    let (mut fresh, socket_id) = server.connect().await;
    join_cache(&server, &mut fresh, &socket_id, channel).await;
    assert_eq!(expect_named(&mut fresh, channel, "price").await, json!(4));

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (mut late, socket_id) = server.connect().await;
    join_cache(&server, &mut late, &socket_id, channel).await;
    expect_cache_miss(&mut late, channel).await;
    assert_no_answer(&mut late, "after the cached event expired").await;
}

#[tokio::test]
async fn channel_info_cache_reports_the_cached_data_and_its_ttl() {
    let server = TestServer::start().await;
    let channel = "cache-prices";
    server.trigger(channel, "price", "{\"eur\":5}").await;

    let info = [("info", "cache")];
    let path = format!("/channels/{channel}");
    let answer = api_ok(server.api("GET", &path, &info, None).await).await;
    assert_eq!(answer["occupied"], false, "{answer}");
    assert_eq!(answer["cache"]["data"], "{\"eur\":5}", "{answer}");
    let ttl = answer["cache"]["ttl"]
        .as_u64()
        .unwrap_or_else(|| panic!("ttl is not a number of seconds: {answer}"));
    assert!(
        (1790..=1800).contains(&ttl),
        "ttl of a 30 min cache just filled: {answer}"
    );
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "only occupied and cache: {answer}");

    let (_ws, _) = joined(&server, channel, "").await;
    let answer = api_ok(server.api("GET", &path, &info, None).await).await;
    assert_eq!(answer["occupied"], true, "{answer}");
    assert_eq!(answer["cache"]["data"], "{\"eur\":5}", "{answer}");
}

#[tokio::test]
async fn channel_info_attributes_that_do_not_fit_the_channel_are_400() {
    let server = TestServer::start().await;
    let _news = joined(&server, "news", "").await;
    let _room = joined(&server, "presence-room", "ann").await;
    for (channel, info) in [
        ("news", "cache"),
        ("presence-room", "cache"),
        ("private-encrypted-room", "cache"),
        ("news", "user_count"),
        ("cache-prices", "user_count"),
    ] {
        let response = server
            .api(
                "GET",
                &format!("/channels/{channel}"),
                &[("info", info)],
                None,
            )
            .await;
        let (code, message) = api_error(response, 400).await;
        assert!(
            !code.is_empty() && !message.is_empty(),
            "{channel} info={info}"
        );
    }
}

// ---------------------------------------------------------------------------------
// subscription_count
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn subscription_count_is_sent_to_the_channel_when_it_changes() {
    let server = TestServer::start_with(&demo_app_with("subscription_count = true")).await;
    for channel in ["news", "private-news"] {
        let (mut first, first_id) = joined(&server, channel, "").await;
        expect_count(&mut first, channel, 1).await;
        // Subscribing again changes no count.
        subscribe(
            &mut first,
            json!({"channel": channel, "auth": auth_private(&server.app, &first_id, channel)}),
        )
        .await;
        expect_subscribed(&mut first, channel).await;
        assert_no_answer(&mut first, "a repeated subscription").await;

        let (mut second, _) = joined(&server, channel, "").await;
        expect_count(&mut second, channel, 2).await;
        expect_count(&mut first, channel, 2).await;

        let leave = json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
        send_json(&mut second, leave).await;
        expect_count(&mut first, channel, 1).await;
        assert_no_answer(&mut second, "a socket that left").await;

        let (mut third, _) = joined(&server, channel, "").await;
        expect_count(&mut third, channel, 2).await;
        expect_count(&mut first, channel, 2).await;
        hang_up(third).await;
        expect_count(&mut first, channel, 1).await;
    }
}

#[tokio::test]
async fn subscription_count_is_never_sent_on_presence_channels() {
    let server = TestServer::start_with(&demo_app_with("subscription_count = true")).await;
    let channel = "presence-room";
    let (mut ann, _) = joined(&server, channel, "ann").await;
    let (mut bob, _) = joined(&server, channel, "bob").await;
    let frames = answers(&mut ann).await;
    let names: Vec<&Value> = frames.iter().map(|f| &f["event"]).collect();
    assert_eq!(
        names,
        [&json!("pusher_internal:member_added")],
        "{frames:?}"
    );

    let leave = json!({"event": "pusher:unsubscribe", "data": {"channel": channel}});
    send_json(&mut bob, leave).await;
    assert_no_answer(&mut bob, "bob after leaving").await;
    let frames = answers(&mut ann).await;
    let names: Vec<&Value> = frames.iter().map(|f| &f["event"]).collect();
    assert_eq!(
        names,
        [&json!("pusher_internal:member_removed")],
        "{frames:?}"
    );
}

#[tokio::test]
async fn subscription_count_is_not_sent_when_the_option_is_off() {
    let server = TestServer::start().await;
    let (mut first, _) = joined(&server, "news", "").await;
    let (second, _) = joined(&server, "news", "").await;
    hang_up(second).await;
    settle().await;
    let (mut third, _) = joined(&server, "news", "").await;
    assert_no_answer(&mut third, "subscription_count = false").await;
    join_public(&mut first, "other").await;
    assert_no_answer(&mut first, "subscription_count = false").await;
}

#[tokio::test]
async fn subscription_count_and_cache_replay_both_follow_subscription_succeeded() {
    let server = TestServer::start_with(&demo_app_with("subscription_count = true")).await;
    let channel = "cache-prices";
    server.trigger(channel, "price", "6").await;
    let (mut ws, socket_id) = server.connect().await;
    join_cache(&server, &mut ws, &socket_id, channel).await;
    let frames = answers(&mut ws).await;
    let names: Vec<&Value> = frames.iter().map(|f| &f["event"]).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.as_str().map(str::to_owned));
    assert_eq!(
        sorted,
        [
            &json!("price"),
            &json!("pusher_internal:subscription_count")
        ],
        "after subscription_succeeded: {frames:?}"
    );
}
