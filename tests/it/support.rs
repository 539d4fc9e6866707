//! What every integration test needs: the real server on port 0, WebSocket clients,
//! and signatures computed here, independently of Herald's own code.

#![allow(dead_code, reason = "each test file uses a different part of the kit")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Credentials of the app a test talks to.
#[derive(Clone, Debug)]
pub struct TestApp {
    pub id: String,
    pub key: String,
    pub secret: String,
}

impl TestApp {
    /// The demo app of the shipped `config.toml`.
    pub fn demo() -> Self {
        TestApp {
            id: "demo-app".into(),
            key: "demo-key".into(),
            secret: "demo-secret".into(),
        }
    }
}

/// A Herald server running in this process on a free loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: TestApp,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), herald::RunError>>>,
    /// The scratch directory this server made for itself, removed when it is dropped.
    owned_dir: Option<std::path::PathBuf>,
}

impl TestServer {
    /// The shipped configuration, on port 0.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// `toml` laid over the shipped configuration, as a `--config` file would be.
    /// The first app in the resulting configuration becomes `self.app`.
    pub async fn start_with(toml: &str) -> Self {
        let dir = scratch_dir();
        let mut server = Self::start_in(toml, &dir).await;
        server.owned_dir = Some(dir);
        server
    }

    /// Like `start_with`, keeping the job store and files in `dir`, so that a
    /// second server started on the same `dir` finds what the first one left.
    pub async fn start_in(toml: &str, dir: &std::path::Path) -> Self {
        let env = [
            ("HERALD_STORE__PATH", dir.join("herald.db")),
            ("HERALD_FILES__DIR", dir.join("files")),
        ]
        .map(|(k, v)| (k.to_owned(), v.display().to_string()));
        let config = herald::Config::load(Some(toml), env)
            .unwrap_or_else(|e| panic!("test config rejected: {e}"));
        let first = &config.apps[0];
        let app = TestApp {
            id: first.id.clone(),
            key: first.key.clone(),
            secret: first.secret.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(herald::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            app,
            stop: Some(stop),
            task: Some(task),
            owned_dir: None,
        }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The WebSocket URL pusher-js would use for `key`.
    pub fn ws_url(&self, key: &str) -> String {
        format!(
            "ws://{}/app/{key}?protocol=7&client=js&version=8.6.0&flash=false",
            self.addr
        )
    }

    /// Connects to the test app and reads `pusher:connection_established`.
    /// Returns the socket and its socket id.
    pub async fn connect(&self) -> (Ws, String) {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.ws_url(&self.app.key))
            .await
            .unwrap();
        let established = recv_event(&mut ws).await;
        assert_eq!(established["event"], "pusher:connection_established");
        let data = data_of(&established);
        (ws, data["socket_id"].as_str().unwrap().to_owned())
    }

    /// Signs and sends an HTTP API request for the test app.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> reqwest::Response {
        let body = body.map(|b| b.to_string());
        let full = format!("/apps/{}{path}", self.app.id);
        let signed = sign_query(&self.app, method, &full, query, body.as_deref(), now());
        let url = format!("{}?{signed}", self.url(&full));
        let client = reqwest::Client::new();
        let request = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            other => panic!("unsupported method {other}"),
        };
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(body),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// Triggers `event` on `channel` with `data` through the signed HTTP API.
    pub async fn trigger(&self, channel: &str, event: &str, data: &str) {
        let body = json!({"name": event, "channel": channel, "data": data});
        let response = self.api("POST", "/events", &[], Some(body)).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Shuts the server down gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(dir) = self.owned_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A new empty directory for one test's store and files.
pub fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Hex HMAC-SHA256.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The query string of a signed Pusher HTTP API request, `auth_signature` included.
pub fn sign_query(
    app: &TestApp,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&str>,
    timestamp: u64,
) -> String {
    let mut params: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    params.push(("auth_key".into(), app.key.clone()));
    params.push(("auth_timestamp".into(), timestamp.to_string()));
    params.push(("auth_version".into(), "1.0".into()));
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        params.push(("body_md5".into(), hex::encode(Md5::digest(body.as_bytes()))));
    }
    // Like the Pusher SDKs: keys in lower case, sorted, for the signature; the URL
    // keeps them as given.
    let join = |params: &[(String, String)]| {
        params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let mut signed: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    signed.sort();
    let signature = hmac_hex(&app.secret, &format!("{method}\n{path}\n{}", join(&signed)));
    format!("{}&auth_signature={signature}", join(&params))
}

/// `key:signature` for a private channel.
pub fn auth_private(app: &TestApp, socket_id: &str, channel: &str) -> String {
    let signature = hmac_hex(&app.secret, &format!("{socket_id}:{channel}"));
    format!("{}:{signature}", app.key)
}

/// `key:signature` for a presence channel with the exact `channel_data` string.
pub fn auth_presence(app: &TestApp, socket_id: &str, channel: &str, channel_data: &str) -> String {
    let signature = hmac_hex(
        &app.secret,
        &format!("{socket_id}:{channel}:{channel_data}"),
    );
    format!("{}:{signature}", app.key)
}

/// Sends a JSON frame.
pub async fn send_json(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Sends `pusher:subscribe` for a channel.
pub async fn subscribe(ws: &mut Ws, data: Value) {
    send_json(ws, json!({"event": "pusher:subscribe", "data": data})).await;
}

/// The next text frame as JSON, skipping nothing; fails after five seconds.
pub async fn recv_event(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("socket ended")
            .expect("socket error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next frame whose `event` is `name`, skipping others; fails after five seconds.
pub async fn recv_named(ws: &mut Ws, name: &str) -> Value {
    loop {
        let event = recv_event(ws).await;
        if event["event"] == name {
            return event;
        }
    }
}

/// Asserts that nothing but pings arrives within `wait`.
pub async fn assert_silent(ws: &mut Ws, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// The close code the server ends the socket with; fails after `wait`.
pub async fn recv_close(ws: &mut Ws, wait: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("socket not closed within {wait:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame.code.into(),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket error before close: {e}"),
        }
    }
}

/// `data` of a server frame, decoded from its JSON string.
pub fn data_of(event: &Value) -> Value {
    match &event["data"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
        other => other.clone(),
    }
}
