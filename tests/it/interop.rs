//! Herald against the real client and server libraries of the Pusher ecosystem:
//! pusher-js, Laravel Echo and the `pusher` Node SDK (its webhook check included),
//! the `standardwebhooks` library checking callbacks, the demo page in headless
//! Chromium, and the Python `pusher` SDK.
//!
//! The Node scripts live in `tests/interop/` and do their own checking; these tests
//! start the server, run a script against it and require a clean exit. The libraries
//! are installed by `scripts/test.sh`; without them these tests fail (never skip) and
//! say so.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::jobs_kit::{BUILTIN_TYPES, TOKEN, jobs_config};
use crate::kit::{join_presence, member};
use crate::pusher_webhooks::{FAST, Receiver, config};
use crate::support::{TestServer, data_of, recv_named, scratch_dir, send_json, subscribe};

/// Longer than any script's own deadline, so that the script reports first.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn pusher_js_and_the_node_sdk() {
    run_node_script("pusher_js.mjs").await;
}

#[tokio::test]
async fn laravel_echo() {
    run_node_script("echo.mjs").await;
}

#[tokio::test]
async fn demo_page_in_headless_chromium() {
    run_node_script("demo_page.mjs").await;
}

#[tokio::test]
async fn demo_page_jobs_in_headless_chromium() {
    run_node_script("demo_jobs.mjs").await;
}

#[tokio::test]
async fn python_sdk_triggers_reach_a_websocket() {
    // The Python SDK refuses app ids that are not all digits, so this test serves an
    // app that has one (the list replaces the shipped one, and the demo follows it).
    let server = TestServer::start_with(
        r#"
        [demo]
        app = "424242"

        [[apps]]
        id = "424242"
        key = "python-key"
        secret = "python-secret"
        "#,
    )
    .await;
    assert_eq!(
        server.app.id, "424242",
        "the test app did not become the first app"
    );
    let python = interop_dir().join(".venv/bin/python");
    require(&python, "the Python virtualenv with the pusher SDK");

    let (mut ws, _) = server.connect().await;
    subscribe(&mut ws, json!({"channel": "python-channel"})).await;
    recv_named(&mut ws, "pusher_internal:subscription_succeeded").await;

    let mut command = Command::new(&python);
    command.arg(interop_dir().join("trigger.py")).args([
        "python-channel",
        "from-python",
        "hello from Python",
    ]);
    let output = run(command, &server).await;
    assert_success("trigger.py", &output);

    for (event, data) in [
        ("from-python", "hello from Python"),
        ("from-python-batch-1", "hello from Python #1"),
        ("from-python-batch-2", "hello from Python #2"),
    ] {
        let frame = recv_named(&mut ws, event).await;
        assert_eq!(frame["channel"], "python-channel");
        assert_eq!(data_of(&frame), data, "data of {event}");
    }
}

#[tokio::test]
async fn node_sdk_verifies_pusher_webhooks() {
    require(
        &interop_dir().join("node_modules/pusher/package.json"),
        "the npm packages in tests/interop",
    );
    let receiver = Receiver::ok().await;
    let kinds: &[&str] = &[
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
    ];
    let server = TestServer::start_with(&config(&[(receiver.url("/hooks"), kinds)], FAST)).await;

    // One of each event: join, speak, leave.
    let room = "presence-sdk";
    let (mut ws, socket_id) = server.connect().await;
    let ada = member("ada", json!({"name": "Ada"}));
    join_presence(&mut ws, &server.app, &socket_id, room, &ada).await;
    let typing = json!({"event": "client-typing", "channel": room, "data": {"typing": true}});
    send_json(&mut ws, typing).await;
    let leave = json!({"event": "pusher:unsubscribe", "data": {"channel": room}});
    send_json(&mut ws, leave).await;
    let expected = [
        json!({"name": "channel_occupied", "channel": room}),
        json!({"name": "member_added", "channel": room, "user_id": "ada"}),
        json!({
            "name": "client_event", "channel": room, "event": "client-typing",
            "data": "{\"typing\":true}", "socket_id": socket_id, "user_id": "ada"
        }),
        json!({"name": "member_removed", "channel": room, "user_id": "ada"}),
        json!({"name": "channel_vacated", "channel": room}),
    ];
    receiver.wait_for("/hooks", &expected).await;

    // The script gets the requests exactly as they arrived.
    let requests: Vec<_> = receiver
        .requests()
        .into_iter()
        .map(|r| json!({"headers": r.headers, "body": r.body}))
        .collect();
    let dir = scratch_dir();
    let captured = dir.join("webhooks.json");
    let file = json!({"requests": requests, "expected": expected});
    std::fs::write(&captured, file.to_string()).unwrap();

    let mut command = Command::new("node");
    command
        .arg(interop_dir().join("pusher_webhooks.mjs"))
        .env("INTEROP_WEBHOOKS", &captured);
    let output = run(command, &server).await;
    let _ = std::fs::remove_dir_all(dir);
    assert_success("pusher_webhooks.mjs", &output);
}

#[tokio::test]
async fn standard_webhooks_library_verifies_callbacks() {
    // Callbacks go to the script's receiver on loopback, which the shipped
    // configuration refuses; `jobs_config` opens 127.0.0.0/8 and sets the app's token.
    require(
        &interop_dir().join("node_modules/standardwebhooks/package.json"),
        "the npm packages in tests/interop",
    );
    let server = TestServer::start_with(&jobs_config("", BUILTIN_TYPES)).await;
    let mut command = Command::new("node");
    command
        .arg(interop_dir().join("standard_webhooks.mjs"))
        .env("INTEROP_TOKEN", TOKEN);
    let output = run(command, &server).await;
    assert_success("standard_webhooks.mjs", &output);
}

#[tokio::test]
async fn pusher_js_encrypted_channels() {
    run_node_script("encrypted.mjs").await;
}

#[tokio::test]
async fn pusher_js_user_signin_send_to_user_watchlist_and_terminate() {
    run_node_script("users.mjs").await;
}

#[tokio::test]
async fn pusher_js_cache_channels() {
    run_node_script("cache.mjs").await;
}

#[tokio::test]
async fn laravel_echo_whispers_on_a_private_channel() {
    run_node_script("whisper.mjs").await;
}

#[tokio::test]
async fn pusher_js_subscription_count() {
    require(
        &interop_dir().join("node_modules/pusher-js/package.json"),
        "the npm packages in tests/interop",
    );
    let server =
        TestServer::start_with(&crate::kit::demo_app_with("subscription_count = true")).await;
    let mut command = Command::new("node");
    command.arg(interop_dir().join("subscription_count.mjs"));
    let output = run(command, &server).await;
    assert_success("subscription_count.mjs", &output);
}

/// Runs `tests/interop/{script}` with Node against a fresh server and requires it to
/// exit 0.
async fn run_node_script(script: &str) {
    require(
        &interop_dir().join("node_modules/pusher-js/package.json"),
        "the npm packages in tests/interop",
    );
    let server = TestServer::start().await;
    let mut command = Command::new("node");
    command.arg(interop_dir().join(script));
    let output = run(command, &server).await;
    assert_success(script, &output);
}

/// Runs `command` from the repository root with the server's address and credentials
/// in its environment, killing it if it outlives `SCRIPT_TIMEOUT`.
async fn run(mut command: Command, server: &TestServer) -> Output {
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("INTEROP_HOST", server.addr.ip().to_string())
        .env("INTEROP_PORT", server.addr.port().to_string())
        .env("INTEROP_APP_ID", &server.app.id)
        .env("INTEROP_KEY", &server.app.key)
        .env("INTEROP_SECRET", &server.app.secret)
        .kill_on_drop(true);
    let program = format!("{:?}", command.as_std());
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} still running after {SCRIPT_TIMEOUT:?}"));
    output.unwrap_or_else(|e| panic!("could not run {program}: {e} (is it installed?)"))
}

fn assert_success(name: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{name} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Fails the test, saying how to fix it, when `path` is missing.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "missing {what} ({} not found): run scripts/test.sh, which installs everything \
         the interop tests need and then runs the tests",
        path.display()
    );
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}
