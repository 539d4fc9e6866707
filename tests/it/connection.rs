//! The WebSocket connection itself: handshake, keep-alive, refusals with their close
//! codes, malformed frames, size limits and shutdown.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{
    WAIT, assert_refused, demo_app_with, drain, expect_event, is_socket_id, join_public,
    next_frame, open, read_until_close, round_trip,
};
use crate::support::{TestServer, data_of, recv_close, recv_event, recv_named, send_json};

/// Keep-alive settings short enough for a test.
const FAST_KEEPALIVE: &str = "[server]\nactivity_timeout = \"1s\"\npong_timeout = \"1s\"\n";

#[tokio::test]
async fn handshake_announces_socket_id_and_default_activity_timeout() {
    let server = TestServer::start().await;
    let mut ws = open(&server.ws_url("demo-key")).await;

    let event = recv_event(&mut ws).await;
    assert_eq!(event["event"], "pusher:connection_established");
    assert!(
        event["data"].is_string(),
        "data should be a JSON string: {event}"
    );
    let data = data_of(&event);
    let socket_id = data["socket_id"].as_str().expect("socket_id string");
    assert!(
        is_socket_id(socket_id),
        "socket_id {socket_id:?} is not <digits>.<digits>"
    );
    assert_eq!(data["activity_timeout"], 120, "{event}");
}

#[tokio::test]
async fn handshake_announces_configured_activity_timeout() {
    let server = TestServer::start_with("[server]\nactivity_timeout = \"7s\"\n").await;
    let mut ws = open(&server.ws_url("demo-key")).await;

    let event = recv_event(&mut ws).await;
    assert_eq!(event["event"], "pusher:connection_established");
    assert_eq!(data_of(&event)["activity_timeout"], 7, "{event}");
}

#[tokio::test]
async fn each_connection_gets_its_own_socket_id() {
    let server = TestServer::start().await;
    let (_a, id_a) = server.connect().await;
    let (_b, id_b) = server.connect().await;
    assert_ne!(id_a, id_b);
}

#[tokio::test]
async fn pusher_ping_is_answered_with_pusher_pong() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    send_json(&mut ws, json!({"event": "pusher:ping", "data": {}})).await;
    let pong = recv_event(&mut ws).await;
    assert_eq!(pong["event"], "pusher:pong", "{pong}");
}

#[tokio::test]
async fn websocket_ping_frame_is_answered_with_pong_frame() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    for _ in 0..20 {
        match next_frame(&mut ws).await {
            Some(Message::Pong(payload)) => {
                assert_eq!(
                    &payload[..],
                    b"are you there",
                    "pong echoes the ping payload"
                );
                return;
            }
            Some(Message::Ping(_)) => continue,
            other => panic!("expected a pong frame, got {other:?}"),
        }
    }
    panic!("no pong frame");
}

#[tokio::test]
async fn silent_socket_gets_pusher_ping_after_activity_timeout() {
    let server = TestServer::start_with(FAST_KEEPALIVE).await;
    let (mut ws, _) = server.connect().await;
    let connected = Instant::now();

    let ping = recv_event(&mut ws).await;
    assert_eq!(ping["event"], "pusher:ping", "{ping}");
    assert!(
        connected.elapsed() >= Duration::from_millis(900),
        "pinged after {:?}, before the 1 s activity timeout",
        connected.elapsed()
    );
}

#[tokio::test]
async fn socket_silent_after_server_ping_is_closed_with_4201() {
    let server = TestServer::start_with(FAST_KEEPALIVE).await;
    let (mut ws, _) = server.connect().await;
    let connected = Instant::now();

    let code = recv_close(&mut ws, Duration::from_secs(6)).await;
    assert_eq!(code, 4201);
    assert!(
        connected.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before activity_timeout + pong_timeout (2 s)",
        connected.elapsed()
    );
}

#[tokio::test]
async fn socket_answering_pusher_ping_with_pong_stays_open() {
    let server = TestServer::start_with(FAST_KEEPALIVE).await;
    let (mut ws, _) = server.connect().await;

    // Answer every server ping for several activity windows.
    let deadline = Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    while Instant::now() < deadline {
        let frame = match tokio::time::timeout_at(deadline, next_frame(&mut ws)).await {
            Err(_) => break,
            Ok(frame) => frame,
        };
        match frame {
            Some(Message::Text(text)) => {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(event["event"], "pusher:ping", "unexpected frame {event}");
                pings += 1;
                send_json(&mut ws, json!({"event": "pusher:pong", "data": {}})).await;
            }
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            other => panic!("socket that answers pings was ended: {other:?}"),
        }
    }

    assert!(
        pings >= 2,
        "expected a server ping every second, got {pings} in 3.5 s"
    );
    assert!(round_trip(&mut ws).await.is_empty(), "socket still answers");
}

#[tokio::test]
async fn unknown_app_key_is_refused_with_4001() {
    let server = TestServer::start().await;
    let mut ws = open(&server.ws_url("no-such-key")).await;
    assert_refused(&mut ws, 4001).await;
}

#[tokio::test]
async fn disabled_app_is_refused_with_4003() {
    let config = "[demo]\nenabled = false\n[[apps]]\nid = \"off\"\nkey = \"off-key\"\n\
                  secret = \"off-secret\"\nenabled = false\n";
    let server = TestServer::start_with(config).await;
    let mut ws = open(&server.ws_url("off-key")).await;
    assert_refused(&mut ws, 4003).await;
}

#[tokio::test]
async fn connection_over_app_max_connections_is_refused_with_4004() {
    let server = TestServer::start_with(&demo_app_with("max_connections = 2")).await;
    let (mut first, _) = server.connect().await;
    let (_second, _) = server.connect().await;

    let mut third = open(&server.ws_url("demo-key")).await;
    assert_refused(&mut third, 4004).await;

    // Closing one socket frees its place. The server notices the close on its own
    // time, so retry a bounded number of times.
    first.close(None).await.unwrap();
    drain(&mut first).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut ws = open(&server.ws_url("demo-key")).await;
        let event = recv_event(&mut ws).await;
        if event["event"] == "pusher:connection_established" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a freed place was not reusable within 3 s: {event}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn non_numeric_protocol_is_refused_with_4006() {
    let server = TestServer::start().await;
    let url = format!(
        "ws://{}/app/demo-key?protocol=abc&client=js&version=8.6.0",
        server.addr
    );
    let mut ws = open(&url).await;
    assert_refused(&mut ws, 4006).await;
}

#[tokio::test]
async fn old_protocol_is_refused_with_4007() {
    let server = TestServer::start().await;
    let url = format!(
        "ws://{}/app/demo-key?protocol=3&client=js&version=8.6.0",
        server.addr
    );
    let mut ws = open(&url).await;
    assert_refused(&mut ws, 4007).await;
}

#[tokio::test]
async fn missing_protocol_is_refused_with_4008() {
    let server = TestServer::start().await;
    let url = format!(
        "ws://{}/app/demo-key?client=js&version=8.6.0&flash=false",
        server.addr
    );
    let mut ws = open(&url).await;
    assert_refused(&mut ws, 4008).await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_4200() {
    let server = TestServer::start_with("[server]\nshutdown_grace = \"3s\"\n").await;
    let url = server.ws_url("demo-key");
    let (mut idle, _) = server.connect().await;
    let (mut subscribed, _) = server.connect().await;
    join_public(&mut subscribed, "news").await;

    let stopping = tokio::spawn(server.stop());
    for ws in [&mut idle, &mut subscribed] {
        assert_refused(ws, 4200).await;
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("server did not stop within 5 s after its sockets closed")
        .expect("server stop failed");

    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a stopped server still accepts connections"
    );
}

/// Sends `frame` on one socket and checks that it gets `pusher:error` 4300, still
/// works afterwards, and that another socket sees nothing of it.
async fn assert_malformed_frame_is_rejected_harmlessly(frame: Message) {
    let server = TestServer::start().await;
    let (mut bystander, _) = server.connect().await;
    join_public(&mut bystander, "news").await;
    let (mut ws, _) = server.connect().await;

    ws.send(frame).await.unwrap();
    let error = recv_event(&mut ws).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(data_of(&error)["code"], 4300, "{error}");

    // The socket still works: it can subscribe and receive.
    join_public(&mut ws, "news").await;
    server.trigger("news", "update", "after").await;
    expect_event(&mut ws, "news", "update", "after").await;

    // The bystander's next frame is that event: nothing about the bad frame reached it.
    expect_event(&mut bystander, "news", "update", "after").await;
}

#[tokio::test]
async fn frame_that_is_not_json_gets_4300_and_socket_stays_open() {
    assert_malformed_frame_is_rejected_harmlessly(Message::text("hello, server")).await;
}

#[tokio::test]
async fn json_array_frame_gets_4300_and_socket_stays_open() {
    assert_malformed_frame_is_rejected_harmlessly(Message::text(r#"["pusher:ping", {}]"#)).await;
}

#[tokio::test]
async fn non_string_event_name_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": 42, "data": {}}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::text(frame)).await;
}

#[tokio::test]
async fn subscribe_without_data_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": "pusher:subscribe"}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::text(frame)).await;
}

#[tokio::test]
async fn subscribe_with_null_data_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": "pusher:subscribe", "data": null}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::text(frame)).await;
}

#[tokio::test]
async fn subscribe_with_empty_string_data_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": "pusher:subscribe", "data": ""}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::text(frame)).await;
}

#[tokio::test]
async fn binary_frame_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": "pusher:ping", "data": {}}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::binary(frame.into_bytes())).await;
}

#[tokio::test]
async fn unknown_pusher_event_gets_4300_and_socket_stays_open() {
    let frame = json!({"event": "pusher:teleport", "data": {}}).to_string();
    assert_malformed_frame_is_rejected_harmlessly(Message::text(frame)).await;
}

/// A `pusher:ping` frame padded to exactly `len` bytes.
fn padded_ping(len: usize) -> String {
    let empty = json!({"event": "pusher:ping", "data": {"pad": ""}}).to_string();
    let frame = json!({"event": "pusher:ping", "data": {"pad": "x".repeat(len - empty.len())}});
    let frame = frame.to_string();
    assert_eq!(frame.len(), len);
    frame
}

#[tokio::test]
async fn frame_at_max_message_size_is_accepted() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    ws.send(Message::text(padded_ping(10240))).await.unwrap();
    let pong = recv_event(&mut ws).await;
    assert_eq!(pong["event"], "pusher:pong", "{pong}");
}

#[tokio::test]
async fn frame_over_max_message_size_gets_4302_and_socket_stays_open() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    ws.send(Message::text(padded_ping(10241))).await.unwrap();
    let error = recv_event(&mut ws).await;
    assert_eq!(error["event"], "pusher:error", "{error}");
    assert_eq!(data_of(&error)["code"], 4302, "{error}");

    assert!(round_trip(&mut ws).await.is_empty(), "socket still answers");
}

#[tokio::test]
async fn app_max_message_size_limits_client_frames() {
    let server = TestServer::start_with(&demo_app_with("max_message_size = 2048")).await;
    let (mut ws, _) = server.connect().await;

    ws.send(Message::text(padded_ping(2049))).await.unwrap();
    let error = recv_named(&mut ws, "pusher:error").await;
    assert_eq!(data_of(&error)["code"], 4302, "{error}");
}

#[tokio::test]
async fn frame_over_max_frame_size_closes_socket_with_1009() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect().await;

    // The server may close before it has read the whole frame, so a failed send is
    // not the point here; the close code is.
    let _ = ws.send(Message::text(padded_ping(70_000))).await;
    let (_, code) = read_until_close(&mut ws).await;
    assert_eq!(code, 1009);
}
