//! A node killed with SIGKILL: the jobs and deliveries it had claimed are taken over
//! by another node sharing its PostgreSQL store and Redis, once their leases have
//! passed. The node that dies is the real `herald` binary in a process of its own,
//! killed by its handle; the node that takes over runs in the test. A node stopped
//! gracefully hands its running jobs over at once. Each test has its own schema and
//! Redis prefix.

use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::Child;
use tokio::time::Instant;

use crate::cli::{STARTUP, Scratch, herald, port_after_loopback, strip_ansi};
use crate::cluster::{drop_schema, node_config, unique_name, wait_ready, wait_readyz_at};
use crate::delivery_kit::{
    Receiver, Reply, assert_signed, attempt_log, expect, id, secret, wait_delivery_status,
};
use crate::jobs_kit::{
    Answer, TOKEN, Worker, create_job, http_type, id_of, jobs_config, step_kinds, wait_until_ended,
};
use crate::kit::WAIT;
use crate::support::TestServer;

/// Most lines of a node's output kept for failure messages; past them the output is
/// no longer read, so a node that logs without end cannot exhaust memory.
const MAX_LOG_LINES: usize = 10_000;

/// SIGKILL's number, which a killed process's exit status reports.
const SIGKILL: i32 = 9;

/// A Herald node running as its own process, killed when dropped.
pub(crate) struct ProcessNode {
    child: Child,
    /// `http://127.0.0.1:<port>`, as its start-up line announced.
    pub(crate) base: String,
    /// Its standard output and error so far, for failure messages.
    log: Arc<Mutex<String>>,
    _dir: Scratch,
}

impl ProcessNode {
    /// Starts the binary with `toml` as its `--config` on a free port, in a scratch
    /// directory named after `name`, and waits until it is ready.
    pub(crate) async fn start(name: &str, toml: &str) -> ProcessNode {
        let dir = Scratch::new(name);
        let config = dir.file("herald.toml", toml);
        let mut child = herald(&dir)
            .arg("--config")
            .arg(&config)
            .env("HERALD_SERVER__PORT", "0")
            .env("HERALD_FILES__DIR", dir.0.join("files"))
            .spawn()
            .expect("the herald binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(keep_lines(stderr, Arc::clone(&log)));

        // Read standard output until the start-up line; bounded in lines and in time.
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + STARTUP;
        let mut port = None;
        for _ in 0..200 {
            let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, stdout.next_line()).await
            else {
                break;
            };
            let line = strip_ansi(&line);
            push_line(&log, &line);
            if line.contains("herald listening") {
                port = port_after_loopback(&line);
                if port.is_some() {
                    break;
                }
            }
        }
        // The rest is read on, so that the process never blocks on a full pipe.
        tokio::spawn(keep_lines(stdout, Arc::clone(&log)));
        let Some(port) = port else {
            let _ = child.kill().await;
            let log = log.lock().unwrap().clone();
            panic!("herald announced no 127.0.0.1:<port>; its output: {log}");
        };
        let node = ProcessNode {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        wait_readyz_at(&format!("{}/readyz", node.base), 200).await;
        node
    }

    /// Its output so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `method /apps/demo-app{path}` with the demo app's token and a JSON body; the
    /// status and the JSON answer.
    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/apps/demo-app{path}", self.base);
        let request = match method {
            "POST" => reqwest::Client::new().post(&url),
            other => panic!("unsupported method {other}"),
        };
        let response = tokio::time::timeout(WAIT, request.bearer_auth(TOKEN).json(&body).send())
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} {path} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} with non-JSON ({e}): {text}"));
        (status, value)
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process, by its pid.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the node is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Sends SIGKILL to the process through its own handle, and waits until it is
    /// gone: nothing of it runs on, no shutdown, no hand-back.
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the killed node did not end within 5 s")
            .unwrap();
        assert_eq!(status.signal(), Some(SIGKILL), "ended by SIGKILL: {status}");
    }
}

/// Reads `lines` into `log` until they end or `MAX_LOG_LINES` have been read.
async fn keep_lines<R: AsyncRead + Unpin>(mut lines: Lines<BufReader<R>>, log: Arc<Mutex<String>>) {
    for _ in 0..MAX_LOG_LINES {
        match lines.next_line().await {
            Ok(Some(line)) => push_line(&log, &strip_ansi(&line)),
            Ok(None) | Err(_) => return,
        }
    }
}

fn push_line(log: &Mutex<String>, line: &str) {
    let mut log = log.lock().unwrap();
    log.push_str(line);
    log.push('\n');
}

/// `base` with the shared PostgreSQL store in schema `name` and the cluster on the
/// machine's Redis under prefix `name`.
fn on_shared_store(base: &str, name: &str) -> String {
    node_config("redis://127.0.0.1:6379", name, "5s", base)
}

#[tokio::test]
async fn a_job_running_on_a_killed_node_is_completed_by_another() {
    // The first attempt is held open by the worker, so it is still running when its
    // node dies; any later attempt is answered at once.
    let worker = Worker::start(|n| match n {
        1 => Answer::Hang,
        _ => Answer::ok(json!({"rendered": true})),
    })
    .await;
    let name = unique_name();
    // A 3 s attempt and a 1 s margin: the job is leased for 4 s from its claim.
    let types = http_type("render", &worker.url, "timeout = \"3s\"");
    let config = on_shared_store(
        &format!(
            "{}\n[jobs]\nlease_margin = \"1s\"\n",
            jobs_config("", &types)
        ),
        &name,
    );

    let mut doomed = ProcessNode::start("kill-job", &config).await;
    let body = json!({"eventType": "render", "payload": {"page": 1}});
    let created = expect(
        doomed.call("POST", "/jobs", body).await,
        202,
        None,
        "POST /jobs on the node to be killed",
    );
    let job_id = id(&created);
    let first = worker.wait_for_requests(1).await;
    let claimed = Instant::now();
    assert_eq!(first[0]["id"], job_id.as_str(), "{}", doomed.log());
    assert_eq!(first[0]["attempt"], 1);
    doomed.kill().await;

    // Another node, started only now so that the first attempt was surely the
    // killed node's, takes the job once its lease has passed.
    let taker = TestServer::start_with(&config).await;
    wait_ready(&taker).await;
    let job = wait_until_ended(&taker, &job_id).await;
    let taken_after = claimed.elapsed();

    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["result"]["data"], json!({"rendered": true}), "{job:#}");
    assert_eq!(job["attempts"], 2, "{job:#}");
    assert_eq!(
        step_kinds(&job),
        ["queued", "started", "retrying", "started", "completed"],
        "{job:#}"
    );
    let takeover = &job["steps"][2]["message"];
    assert!(
        takeover.as_str().is_some_and(|m| m.contains("stopped")),
        "the retry should say the node stopped: {job:#}"
    );
    assert!(
        taken_after >= Duration::from_secs(3),
        "taken over after {taken_after:?}, while the killed node's 4 s lease held"
    );

    let requests = worker.requests();
    assert_eq!(requests.len(), 2, "one attempt per node: {requests:?}");
    assert_eq!(requests[1]["id"], job_id.as_str());
    assert_eq!(requests[1]["attempt"], 2);

    taker.stop().await;
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_delivery_in_flight_on_a_killed_node_is_sent_by_another() {
    // The killed node's attempt is held open; the next one is answered at once.
    let receiver = Receiver::start(|n| match n {
        1 => Reply::Hang,
        _ => Reply::Status(200),
    })
    .await;
    let name = unique_name();
    // Each claim of a delivery is leased for 3 s; an attempt may take 2 s.
    let webhooks = [("timeout", "\"2s\""), ("lease", "\"3s\"")];
    let config = on_shared_store(&crate::delivery_kit::config(&webhooks), &name);

    let mut doomed = ProcessNode::start("kill-delivery", &config).await;
    let subscribe = json!({"eventType": "relay", "callbackUrl": receiver.url()});
    let subscription = expect(
        doomed.call("POST", "/subscriptions", subscribe).await,
        201,
        None,
        "POST /subscriptions on the node to be killed",
    );
    let body = json!({"eventType": "relay", "payload": {"order": 7}});
    let created = expect(
        doomed.call("POST", "/jobs", body).await,
        202,
        None,
        "POST /jobs on the node to be killed",
    );
    let job_id = id(&created);
    let first = receiver.wait_hits(1, Duration::from_secs(10)).await[0].clone();
    doomed.kill().await;

    let taker = TestServer::start_with(&config).await;
    wait_ready(&taker).await;
    let hits = receiver.wait_hits(2, Duration::from_secs(10)).await;
    let second = &hits[1];
    assert_eq!(
        second.webhook_id(),
        first.webhook_id(),
        "the same message, sent again"
    );
    assert_eq!(second.body, first.body, "the same body");
    let result = second.json();
    assert_eq!(result["jobId"], job_id.as_str(), "{result}");
    assert_eq!(result["result"]["data"], json!({"order": 7}), "{result}");
    assert_signed(second, &secret(&subscription));
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_secs(2),
        "sent again {gap:?} after the first try, while the killed node's 3 s lease held"
    );

    let delivery = wait_delivery_status(&taker, &job_id, "succeeded", WAIT).await;
    assert_eq!(delivery["id"], first.webhook_id().as_str(), "{delivery:#}");
    let log = attempt_log(&delivery);
    assert_eq!(
        log.last().map(|a| a["statusCode"].clone()),
        Some(json!(200)),
        "{delivery:#}"
    );
    receiver
        .assert_stays_at(2, Duration::from_millis(500), "after the takeover")
        .await;

    taker.stop().await;
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_node_shut_down_hands_its_running_job_to_another_at_once() {
    let worker = Worker::start(|n| match n {
        1 => Answer::Hang,
        _ => Answer::ok(json!({"rendered": true})),
    })
    .await;
    let name = unique_name();
    // The default lease (10 s attempt and 30 s margin) is far longer than the test:
    // only the hand-back at shutdown can explain a quick second attempt.
    let types = http_type("render", &worker.url, "timeout = \"10s\"");
    let config = on_shared_store(&jobs_config("", &types), &name);

    let leaving = TestServer::start_with(&config).await;
    wait_ready(&leaving).await;
    let body = json!({"eventType": "render", "payload": {"page": 1}});
    let job_id = id_of(&create_job(&leaving, body).await);
    worker.wait_for_requests(1).await;
    let staying = TestServer::start_with(&config).await;
    wait_ready(&staying).await;

    let stopped = Instant::now();
    leaving.stop().await;
    let job = wait_until_ended(&staying, &job_id).await;
    assert!(stopped.elapsed() < Duration::from_secs(10), "{job:#}");
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["attempts"], 2, "{job:#}");
    let handed_back = &job["steps"][2]["message"];
    assert!(
        handed_back
            .as_str()
            .is_some_and(|m| m.contains("server stopped")),
        "the retry should say the server stopped: {job:#}"
    );
    staying.stop().await;
    drop_schema(&name).await;
}
