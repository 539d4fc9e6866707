//! Fan-out: how fast one event reaches many sockets.
//!
//! Starts the release `herald` binary, opens `FANOUT_SOCKETS` WebSocket connections
//! (default 2000) subscribed to one channel, then sends `FANOUT_EVENTS` events
//! (default 200) through the demo trigger route, one after another, and waits until
//! every socket has every event. Reports deliveries per second and the latency from
//! sending each event to its arrival on the last socket. Linux or any Unix; the
//! client runs in this process on the same machine, so the figures include its cost.
//!
//! With `FANOUT_NODES=3` it starts that many nodes of one cluster instead, on the
//! Redis at 127.0.0.1:6379 and the PostgreSQL database `test` at 127.0.0.1:5432
//! (a schema and prefix of its own, dropped at the end), spreads the sockets over
//! them in turn and sends every event to the first node, so most deliveries cross
//! Redis.
//!
//! Run with `cargo bench --bench fanout`.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/server.rs"]
mod server;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let sockets = setting("FANOUT_SOCKETS", 2000);
    let events = setting("FANOUT_EVENTS", 200);
    let nodes = setting("FANOUT_NODES", 1).max(1);
    let cluster = format!("herald_bench_{}", std::process::id());
    let mut env = vec![("HERALD_SERVER__OUTBOUND_QUEUE", "1024")];
    if nodes > 1 {
        env.extend([
            ("HERALD_STORE__URL", POSTGRES),
            ("HERALD_STORE__SCHEMA", &cluster),
            ("HERALD_CLUSTER__ENABLED", "true"),
            ("HERALD_CLUSTER__PREFIX", &cluster),
        ]);
    }
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let (server, port) = server::start_server(&env).await;
        server::wait_ready(port).await;
        servers.push((server, port));
    }
    let port = servers[0].1;

    let subscribe = r#"{"event":"pusher:subscribe","data":{"channel":"fanout"}}"#;
    let mut readers = Vec::with_capacity(sockets);
    for n in 0..sockets {
        let node_port = servers[n % nodes].1;
        let url =
            format!("ws://127.0.0.1:{node_port}/app/demo-key?protocol=7&client=js&version=8.6.0");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        let _established = ws.next().await;
        ws.send(Message::text(subscribe)).await.expect("subscribe");
        let _succeeded = ws.next().await;
        // Each reader counts its events and reports when it has them all.
        readers.push(tokio::spawn(async move {
            let mut arrivals = Vec::with_capacity(events);
            while arrivals.len() < events {
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => arrivals.push(Instant::now()),
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            arrivals
        }));
    }

    let client = reqwest::Client::new();
    let trigger = format!("http://127.0.0.1:{port}/demo/events");
    let started = Instant::now();
    let mut sent = Vec::with_capacity(events);
    for n in 0..events {
        sent.push(Instant::now());
        let body = format!(r#"{{"channel":"fanout","event":"tick","data":"{n}"}}"#);
        let answer = client
            .post(&trigger)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("trigger");
        assert!(answer.status().is_success());
    }

    // For each event, the arrival on the slowest socket.
    let mut last_arrival = vec![started; events];
    for reader in readers {
        let arrivals = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("every socket gets every event")
            .expect("reader");
        assert_eq!(arrivals.len(), events, "a socket missed events");
        for (n, at) in arrivals.into_iter().enumerate() {
            last_arrival[n] = last_arrival[n].max(at);
        }
    }
    let elapsed = last_arrival.iter().max().copied().unwrap_or(started) - started;
    let mut latencies: Vec<Duration> = sent
        .iter()
        .zip(&last_arrival)
        .map(|(s, a)| *a - *s)
        .collect();
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];

    let deliveries = sockets * events;
    println!("nodes: {nodes}, sockets: {sockets}, events: {events}, deliveries: {deliveries}");
    println!("all delivered in {:.2} s", elapsed.as_secs_f64());
    println!(
        "deliveries per second: {:.0}",
        deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency to the last socket: p50 {:.1} ms, p99 {:.1} ms",
        percentile(50).as_secs_f64() * 1000.0,
        percentile(99).as_secs_f64() * 1000.0
    );

    for (mut server, _) in servers {
        server.start_kill().expect("stop server");
        let _ = server.wait().await;
    }
    if nodes > 1 {
        drop_schema(&cluster).await;
    }
}

/// The database the nodes of a cluster share.
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(POSTGRES).await.expect("PostgreSQL");
    // The name is made of letters, digits and underscores only.
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .expect("drop the bench's schema");
}
