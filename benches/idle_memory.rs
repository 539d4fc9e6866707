//! Server memory per idle socket.
//!
//! Starts the release `herald` binary as its own process, opens `SOCKETS` WebSocket
//! connections to it (each subscribed to one public channel, as a page would be),
//! and reads the server's resident memory from `/proc` before and after. The growth
//! divided by the number of sockets is the figure reported. Linux only.
//!
//! Run with `cargo bench --bench idle_memory`; `IDLE_SOCKETS` changes the
//! count (default 5000; mind `ulimit -n`, which must exceed it).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/server.rs"]
mod server;

#[tokio::main]
async fn main() {
    let sockets: usize = std::env::var("IDLE_SOCKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);

    let (mut server, port) =
        server::start_server(&[("HERALD_SERVER__ACTIVITY_TIMEOUT", "1h")]).await;
    let pid = server.id().expect("server is running");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let url = format!("ws://127.0.0.1:{port}/app/demo-key?protocol=7&client=js&version=8.6.0");
    let mut open = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        let _established = ws.next().await;
        let subscribe = format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"room-{}"}}}}"#,
            i % 100
        );
        ws.send(Message::text(subscribe)).await.expect("subscribe");
        let _succeeded = ws.next().await;
        open.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);

    let per_socket = (after.saturating_sub(before) as f64 * 1024.0) / sockets as f64;
    println!("idle sockets:            {sockets}");
    println!("server RSS before:       {before} KiB");
    println!("server RSS with sockets: {after} KiB");
    println!("server memory per idle socket: {per_socket:.0} bytes");

    drop(open);
    server.start_kill().expect("stop server");
    let _ = server.wait().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line")
}
