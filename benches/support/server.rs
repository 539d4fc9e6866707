//! Starting the release `herald` binary for a benchmark.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Starts the release binary on a free port, in a scratch directory of its own, with
/// `env` added to its environment; returns it with the port it logged.
pub(crate) async fn start_server(env: &[(&str, &str)]) -> (tokio::process::Child, u16) {
    let dir = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
    let dir = dir.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .current_dir(&dir)
        .env("HERALD_SERVER__PORT", "0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start herald");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.expect("read log") {
        if let Some(rest) = line.split("addr=127.0.0.1:").nth(1) {
            let port = rest
                .split_whitespace()
                .next()
                .expect("port")
                .parse()
                .expect("port");
            // Keep reading, so that the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, port);
        }
    }
    panic!("herald exited before logging its address");
}

/// Waits until the server on `port` answers 200 on `/readyz` (a cluster node does
/// once it has joined the others), for up to ten seconds.
#[allow(dead_code, reason = "not every benchmark starts a cluster")]
pub(crate) async fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    for _ in 0..200 {
        if let Ok(answer) = reqwest::get(&url).await
            && answer.status().is_success()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url} never answered 200");
}
