//! Three nodes sharing channel traffic through the real Redis on this machine and a
//! PostgreSQL store, each test with its own Redis prefix and database schema.

use std::time::Duration;

use serde_json::{Value, json};

use crate::extras_kit::sign_in;
use crate::jobs_kit::{
    bearer, create_job, get_job, http_type, id_of, jobs_config, send, wait_for_status,
};
use crate::support::{TestServer, assert_silent, recv_close, recv_event, recv_named, subscribe};

/// The PostgreSQL database the nodes share.
pub(crate) const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Three nodes of one cluster, with a prefix and schema no other test uses.
async fn three_nodes() -> (Vec<TestServer>, String) {
    nodes_on("redis://127.0.0.1:6379", 3).await
}

/// `count` nodes sharing the Redis at `redis_url`.
async fn nodes_on(redis_url: &str, count: usize) -> (Vec<TestServer>, String) {
    let name = unique_name();
    let config = node_config(redis_url, &name, "5s", "");
    (start_nodes(count, &config).await, name)
}

/// A schema and Redis prefix no other test uses.
pub(crate) fn unique_name() -> String {
    format!("herald_test_{}", uuid::Uuid::new_v4().simple())
}

/// A node's configuration: the schema and Redis prefix `name`, heartbeats every
/// 200 ms, `node_timeout`, and `rest` (other sections) after.
pub(crate) fn node_config(redis_url: &str, name: &str, node_timeout: &str, rest: &str) -> String {
    format!(
        "[store]\nurl = \"{POSTGRES}\"\nschema = \"{name}\"\n\n\
         [cluster]\nenabled = true\nredis_url = \"{redis_url}\"\nprefix = \"{name}\"\n\
         heartbeat = \"200ms\"\nnode_timeout = \"{node_timeout}\"\n\n{rest}"
    )
}

/// Starts `count` nodes on `config` and waits until each has joined the others.
pub(crate) async fn start_nodes(count: usize, config: &str) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(TestServer::start_with(config).await);
    }
    for node in &nodes {
        wait_ready(node).await;
    }
    nodes
}

/// Waits until a node hears the others (`/readyz` answers 200).
pub(crate) async fn wait_ready(node: &TestServer) {
    wait_readyz(node, 200).await;
}

/// Waits until `/readyz` answers `status`, for up to ten seconds.
pub(crate) async fn wait_readyz(node: &TestServer, status: u16) {
    wait_readyz_at(&node.url("/readyz"), status).await;
}

/// Waits until the `/readyz` at `url` answers `status`, for up to ten seconds.
pub(crate) async fn wait_readyz_at(url: &str, status: u16) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let answer = client.get(url).send().await;
        if answer.is_ok_and(|a| a.status() == status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {status}");
}

/// A Redis server of this test's own, on a free loopback port, that the test may
/// stop and start again. Stopped when dropped.
pub(crate) struct OwnRedis {
    port: u16,
    process: Option<tokio::process::Child>,
}

impl OwnRedis {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = OwnRedis {
            port,
            process: None,
        };
        redis.resume().await;
        redis
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, and waits until it answers.
    pub(crate) async fn resume(&mut self) {
        let process = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.process = Some(process);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Stops it, as a crash would.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
        }
    }
}

/// Drops a schema a test made up, with everything in it.
pub(crate) async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(POSTGRES).await.unwrap();
    // The name is one this file made up: letters, digits and underscores.
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_event_triggered_on_one_node_reaches_every_node_once_in_order() {
    let (nodes, schema) = three_nodes().await;
    let mut sockets = Vec::new();
    for node in &nodes[1..] {
        let (mut ws, _) = node.connect().await;
        subscribe(&mut ws, json!({"channel": "news"})).await;
        recv_named(&mut ws, "pusher_internal:subscription_succeeded").await;
        sockets.push(ws);
    }

    for n in 0..20 {
        nodes[0].trigger("news", "story", &n.to_string()).await;
    }
    for ws in &mut sockets {
        for n in 0..20 {
            let event = recv_event(ws).await;
            assert_eq!(event["event"], "story");
            assert_eq!(
                event["data"],
                Value::String(n.to_string()),
                "in publish order"
            );
        }
        assert_silent(ws, Duration::from_millis(300)).await;
    }
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn socket_id_exclusion_works_for_a_socket_on_another_node() {
    let (nodes, schema) = three_nodes().await;
    let (mut excluded, excluded_id) = nodes[1].connect().await;
    let (mut other, _) = nodes[2].connect().await;
    for ws in [&mut excluded, &mut other] {
        subscribe(ws, json!({"channel": "news"})).await;
        recv_named(ws, "pusher_internal:subscription_succeeded").await;
    }

    let body = json!({"name": "story", "channel": "news", "data": "x", "socket_id": excluded_id});
    let answer = nodes[0].api("POST", "/events", &[], Some(body)).await;
    assert_eq!(answer.status(), 200);

    assert_eq!(recv_event(&mut other).await["event"], "story");
    assert_silent(&mut excluded, Duration::from_millis(500)).await;
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_job_result_reaches_subscribers_on_every_node_and_its_status_answers_everywhere() {
    let (nodes, schema) = three_nodes().await;
    let (mut ws, _) = nodes[2].connect().await;
    subscribe(&mut ws, json!({"channel": "notifications"})).await;
    recv_named(&mut ws, "pusher_internal:subscription_succeeded").await;

    let client = reqwest::Client::new();
    let created: Value = client
        .post(nodes[0].url("/apps/demo-app/jobs"))
        .bearer_auth("demo-token")
        .json(&json!({"eventType": "relay", "payload": {"service": "db", "state": "down"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed = recv_named(&mut ws, "job.completed").await;
    let data: Value = serde_json::from_str(completed["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        data["result"]["data"],
        json!({"service": "db", "state": "down"})
    );

    let status_url = created["statusUrl"].as_str().unwrap();
    for node in &nodes {
        let job: Value = client
            .get(node.url(status_url))
            .bearer_auth("demo-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "completed", "on {}", node.addr);
    }
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn nodes_ride_out_a_redis_restart() {
    let mut redis = OwnRedis::start().await;
    let (nodes, schema) = nodes_on(&redis.url(), 2).await;
    let (mut near, _) = nodes[0].connect().await;
    let (mut far, _) = nodes[1].connect().await;
    for ws in [&mut near, &mut far] {
        subscribe(ws, json!({"channel": "news"})).await;
        recv_named(ws, "pusher_internal:subscription_succeeded").await;
    }

    // Redis goes away: each node reports not ready and keeps serving its own sockets.
    redis.stop().await;
    for node in &nodes {
        wait_readyz(node, 503).await;
    }
    nodes[0].trigger("news", "while-down", "1").await;
    assert_eq!(recv_event(&mut near).await["event"], "while-down");
    assert_silent(&mut far, Duration::from_millis(300)).await;
    let readyz: Value = reqwest::get(nodes[0].url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(readyz["unpublished"].as_u64().unwrap() >= 1, "{readyz}");

    // Redis comes back: the nodes reconnect by themselves and carry events again.
    redis.resume().await;
    for node in &nodes {
        wait_readyz(node, 200).await;
    }
    nodes[0].trigger("news", "after", "2").await;
    assert_eq!(recv_event(&mut near).await["event"], "after");
    assert_eq!(recv_event(&mut far).await["event"], "after");
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn terminate_connections_closes_a_users_sockets_on_every_node() {
    let (nodes, schema) = three_nodes().await;
    let app = nodes[0].app.clone();
    let (mut far, far_id) = nodes[2].connect().await;
    sign_in(&mut far, &app, &far_id, r#"{"id":"ann"}"#).await;

    let path = "/users/ann/terminate_connections";
    let answer = nodes[0].api("POST", path, &[], Some(json!({}))).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(recv_close(&mut far, Duration::from_secs(5)).await, 4009);
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn send_to_user_reaches_the_user_on_another_node() {
    let (nodes, schema) = three_nodes().await;
    let app = nodes[0].app.clone();
    let (mut far, far_id) = nodes[1].connect().await;
    sign_in(&mut far, &app, &far_id, r#"{"id":"bob"}"#).await;
    subscribe(&mut far, json!({"channel": "#server-to-user-bob"})).await;
    recv_named(&mut far, "pusher_internal:subscription_succeeded").await;

    nodes[0]
        .trigger("#server-to-user-bob", "note", "hello")
        .await;
    let event = recv_named(&mut far, "note").await;
    assert_eq!(event["data"], "hello");
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn cancelling_on_one_node_stops_the_attempt_running_on_another() {
    // A worker that takes the request and never answers; it notes when Herald
    // drops the connection, which is what stopping the attempt does.
    let worker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker_url = format!("http://{}/work", worker.local_addr().unwrap());
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = worker.accept().await.unwrap();
        let mut buffer = [0u8; 4096];
        use tokio::io::AsyncReadExt;
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
        let _ = dropped_tx.send(());
    });

    let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
    let types = http_type("slow", &worker_url, "timeout = \"60s\"\nattempts = 1");
    let config = format!(
        "{}\n[store]\nurl = \"{POSTGRES}\"\nschema = \"{name}\"\n\n\
         [cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:6379\"\nprefix = \"{name}\"\n",
        jobs_config("", &types)
    );

    // Only the first node runs while the job is claimed, so the attempt is its own.
    let runner = TestServer::start_with(&config).await;
    wait_ready(&runner).await;
    let id = id_of(&create_job(&runner, json!({"eventType": "slow"})).await);
    wait_for_status(&runner, &id, &["started"]).await;
    let other = TestServer::start_with(&config).await;
    wait_ready(&other).await;

    let cancel = bearer(&other, "POST", &format!("/jobs/{id}/cancel"));
    assert_eq!(send(cancel).await.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), dropped)
        .await
        .expect("the running attempt was not stopped within 5 s")
        .unwrap();
    assert_eq!(get_job(&runner, &id).await["status"], "cancelled");
    drop((runner, other));
    drop_schema(&name).await;
}
