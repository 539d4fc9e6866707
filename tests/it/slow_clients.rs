//! A client that stops reading: it is closed, its presence membership ends, and
//! nobody else waits for it.

use std::time::Duration;

use serde_json::json;

use crate::kit::{join_presence, member};
use crate::support::{TestServer, Ws, data_of, recv_event, recv_named};

/// A client whose socket takes in only a few KB at a time, so that the server's
/// writes block as soon as it stops reading.
async fn connect_with_small_buffer(server: &TestServer) -> (Ws, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let url = server.ws_url(&server.app.key);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let established = recv_event(&mut ws).await;
    let socket_id = data_of(&established)["socket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (ws, socket_id)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_leaves_presence() {
    let server =
        TestServer::start_with("[server]\noutbound_queue = 32\npong_timeout = \"1s\"\n").await;
    let app = server.app.clone();
    let room = "presence-slow";

    let (mut watcher, watcher_id) = server.connect().await;
    join_presence(
        &mut watcher,
        &app,
        &watcher_id,
        room,
        &member("watcher", json!({})),
    )
    .await;
    let (mut stuck, stuck_id) = connect_with_small_buffer(&server).await;
    join_presence(
        &mut stuck,
        &app,
        &stuck_id,
        room,
        &member("stuck", json!({})),
    )
    .await;
    recv_named(&mut watcher, "pusher_internal:member_added").await;

    // From here `stuck` reads nothing. 12 MB of events fill the socket buffers on
    // both sides and then the server's queue of 32 frames; the watcher reads them.
    let event = json!({"name": "bulk", "channel": room, "data": "x".repeat(10_000)});
    let batch = json!({"batch": vec![event; 10]});
    let flood = async {
        for _ in 0..120 {
            let response = server
                .api("POST", "/batch_events", &[], Some(batch.clone()))
                .await;
            assert_eq!(response.status(), 200);
        }
    };
    let drain = tokio::time::timeout(
        Duration::from_secs(20),
        recv_named(&mut watcher, "pusher_internal:member_removed"),
    );
    // The flood stops once the member is gone, so that the watcher, which stops
    // reading then, is not flooded out in turn.
    tokio::pin!(drain);
    let removed = tokio::select! {
        removed = &mut drain => removed,
        () = flood => drain.await,
    };
    let removed = removed.expect("the stuck member was not removed within 20 s");
    assert_eq!(
        data_of(&removed)["user_id"],
        "stuck",
        "the watcher hears that the stuck client left"
    );

    let users = server
        .api("GET", &format!("/channels/{room}/users"), &[], None)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(users, json!({"users": [{"id": "watcher"}]}));
    drop(stuck);
}
