//! The `herald` binary: configuration refused as a whole, and the start-up line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

/// How long the binary may take to start or to give up.
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// The binary with piped output, no inherited `HERALD_*` or `RUST_LOG`, run in `dir`
/// (which should hold no `config.toml`, as the binary reads one from there).
pub(crate) fn herald(dir: &Scratch) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(&dir.0)
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
}

/// An empty directory of this test's own in the temp directory, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = format!("herald-it-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(dir);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        Scratch(path)
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` without ANSI colour sequences.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The port in the first `127.0.0.1:<port>` of `line`.
pub(crate) fn port_after_loopback(line: &str) -> Option<u16> {
    let rest = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[tokio::test]
async fn bad_config_exits_64_naming_every_bad_key() {
    let dir = Scratch::new("bad-config");
    let config = dir.file(
        "bad.toml",
        "[server]\nport = \"high\"\n\n[[apps]]\nid = \"demo-app\"\nkey = \"\"\n\
         secret = \"s\"\nflavour = \"vanilla\"\n",
    );
    let child = herald(&dir).arg("--config").arg(&config).spawn().unwrap();
    let output = tokio::time::timeout(STARTUP, child.wait_with_output())
        .await
        .expect("herald did not exit on a bad config")
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "stderr: {stderr}");
    for key in ["server.port", "apps[0].key", "flavour"] {
        assert!(stderr.contains(key), "stderr should name {key}: {stderr}");
    }
    assert!(
        !stdout.contains("127.0.0.1:") && !stderr.contains("127.0.0.1:"),
        "nothing should listen: stdout {stdout:?}, stderr {stderr:?}"
    );
}

#[tokio::test]
async fn startup_line_names_the_listen_address_and_app_ids() {
    let dir = Scratch::new("startup");
    let mut child = herald(&dir)
        .env("HERALD_SERVER__PORT", "0")
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // Read stdout until the start-up line; bounded in lines and in time.
    let deadline = Instant::now() + STARTUP;
    let mut seen = Vec::new();
    let mut startup = None;
    for _ in 0..200 {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let line = strip_ansi(&line);
                if line.contains("demo-app") && port_after_loopback(&line).is_some() {
                    startup = Some(line);
                    break;
                }
                seen.push(line);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    let Some(line) = startup else {
        child.kill().await.unwrap();
        let stderr = stderr_text.await.unwrap();
        panic!(
            "no start-up line naming 127.0.0.1:<port> and demo-app; \
             stdout {seen:?}, stderr {stderr:?}"
        );
    };

    // The address in the line is where the server really listens.
    let port = port_after_loopback(&line).unwrap();
    assert_ne!(port, 0, "the line should name the bound port: {line}");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"));
    let status = tokio::time::timeout(Duration::from_secs(5), health)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|r| r.status().as_u16());
    child.kill().await.unwrap();
    assert_eq!(
        status,
        Some(200),
        "GET /healthz on the announced port; line {line:?}"
    );
}
