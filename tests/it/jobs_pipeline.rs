//! How jobs run: statuses and steps, the events pushed on a job's channel (live and
//! to late subscribers), retries with back-off, timeouts, restarts of the server, and
//! the concurrency limit of an event type.

use std::time::Duration;

use serde_json::{Value, json};

use crate::jobs_kit::{
    Answer, JobEvent, Worker, assert_event_fields, create_job, events_until_end, get_job,
    http_type, id_of, jobs_config, listen, names, step_kinds, unique_channel, wait_for_status,
    wait_until_ended,
};
use crate::kit::expect_subscribed;
use crate::support::{TestServer, assert_silent, data_of, recv_event, scratch_dir, subscribe};

/// A server with one `http` event type `work` calling `worker`, with extra options.
async fn worker_server(worker: &Worker, options: &str) -> TestServer {
    TestServer::start_with(&jobs_config("", &http_type("work", &worker.url, options))).await
}

/// Creates a `work` job on a fresh channel, listens there first, and reads its
/// events until it ends. Returns the job id, the events and the final job view.
async fn run_job(
    server: &TestServer,
    payload: Value,
    metadata: Value,
) -> (String, Vec<JobEvent>, Value) {
    let channel = unique_channel("work");
    let mut ws = listen(server, &channel).await;
    let body =
        json!({"eventType": "work", "payload": payload, "metadata": metadata, "channel": channel});
    let id = id_of(&create_job(server, body).await);
    let events = events_until_end(&mut ws, &id).await;
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    let job = wait_until_ended(server, &id).await;
    (id, events, job)
}

// ---------------------------------------------------------------------------------
// A job's life and its events.

#[tokio::test]
async fn a_job_runs_through_its_statuses_and_pushes_its_events() {
    let worker = Worker::always(Answer::ok(
        json!({"status": "success", "message": "done", "data": {"w": 3}}),
    ))
    .await;
    let server = worker_server(&worker, "").await;
    let (id, events, job) =
        run_job(&server, json!({"image": "a.png"}), json!({"user": "ana"})).await;

    assert_eq!(names(&events), ["job.started", "job.completed"]);
    for (name, data) in &events {
        assert_event_fields(name, data);
        assert_eq!(data["jobId"], id);
        assert_eq!(data["eventType"], "work");
        assert_eq!(data["metadata"], json!({"user": "ana"}));
        assert_eq!(data["attempt"], 1);
    }
    let (_, started) = &events[0];
    assert_eq!(started["status"], "started");
    let (_, completed) = &events[1];
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["result"],
        json!({"status": "success", "message": "done", "data": {"w": 3}})
    );
    assert_eq!(completed["error"], Value::Null);

    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], completed["result"]);
    assert_eq!(step_kinds(&job), ["queued", "started", "completed"]);
}

#[tokio::test]
async fn a_late_subscriber_gets_the_outcome_once_right_after_subscribing() {
    let worker = Worker::always(Answer::ok(json!({"ok": true}))).await;
    let server = worker_server(&worker, "").await;
    let created = create_job(
        &server,
        json!({"eventType": "work", "metadata": {"k": "v"}}),
    )
    .await;
    let id = id_of(&created);
    let channel = created["channel"].as_str().unwrap().to_owned();
    assert_eq!(channel, format!("job-{id}"));
    wait_for_status(&server, &id, &["completed"]).await;

    for _ in 0..2 {
        let (mut ws, _) = server.connect().await;
        subscribe(&mut ws, json!({"channel": channel})).await;
        expect_subscribed(&mut ws, &channel).await;
        let next = recv_event(&mut ws).await;
        assert_eq!(
            next["event"], "job.completed",
            "right after subscription_succeeded: {next}"
        );
        assert_eq!(next["channel"], channel);
        let data = data_of(&next);
        assert_event_fields("job.completed", &data);
        assert_eq!(data["jobId"], id);
        assert_eq!(data["status"], "completed");
        assert_eq!(data["metadata"], json!({"k": "v"}));
        assert_eq!(data["result"]["status"], "success");
        assert_eq!(data["result"]["data"], json!({"ok": true}));
        assert_silent(&mut ws, Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_late_subscriber_gets_the_outcome_after_a_restart_too() {
    let dir = scratch_dir();
    let worker = Worker::always(Answer::ok(json!({"ok": true}))).await;
    let config = jobs_config("", &http_type("work", &worker.url, ""));
    let first = TestServer::start_in(&config, &dir).await;
    let created = create_job(&first, json!({"eventType": "work"})).await;
    let id = id_of(&created);
    let channel = created["channel"].as_str().unwrap().to_owned();
    wait_for_status(&first, &id, &["completed"]).await;
    tokio::time::timeout(Duration::from_secs(10), first.stop())
        .await
        .expect("the server did not stop within 10 s");

    let second = TestServer::start_in(&config, &dir).await;
    let (mut ws, _) = second.connect().await;
    subscribe(&mut ws, json!({"channel": channel})).await;
    expect_subscribed(&mut ws, &channel).await;
    let next = recv_event(&mut ws).await;
    assert_eq!(
        next["event"], "job.completed",
        "right after subscription_succeeded: {next}"
    );
    assert_eq!(data_of(&next)["jobId"], id);
    assert_silent(&mut ws, Duration::from_millis(500)).await;
}

// ---------------------------------------------------------------------------------
// Retries, timeouts and failures of the `http` handler.

#[tokio::test]
async fn a_failing_worker_is_retried_until_it_answers() {
    let worker = Worker::start(|n| {
        if n <= 2 {
            Answer::server_error()
        } else {
            Answer::ok(json!({"size": 9}))
        }
    })
    .await;
    let server = worker_server(&worker, "").await;
    let payload = json!({"image": "b.png"});
    let metadata = json!({"trace": "t-1"});
    let (id, events, job) = run_job(&server, payload.clone(), metadata.clone()).await;

    assert_eq!(
        names(&events),
        [
            "job.started",
            "job.retrying",
            "job.started",
            "job.retrying",
            "job.started",
            "job.completed"
        ]
    );
    let retrying: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "job.retrying")
        .map(|(_, d)| d)
        .collect();
    for data in &retrying {
        assert_event_fields("job.retrying", data);
        assert!(
            data["error"].as_str().is_some_and(|e| e.contains("500")),
            "retry error names the answer: {data}"
        );
    }
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "job.started")
        .map(|(_, d)| &d["attempt"])
        .collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)]);

    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["maxAttempts"], 3);
    assert_eq!(job["result"]["data"], json!({"size": 9}));
    assert_eq!(
        step_kinds(&job),
        [
            "queued",
            "started",
            "retrying",
            "started",
            "retrying",
            "started",
            "completed"
        ]
    );

    let requests = worker.requests();
    assert_eq!(requests.len(), 3);
    for (n, request) in requests.iter().enumerate() {
        let expected = json!({
            "id": id,
            "eventType": "work",
            "payload": payload,
            "metadata": metadata,
            "attempt": n + 1,
        });
        assert_eq!(request, &expected, "request {} to the worker", n + 1);
    }
}

#[tokio::test]
async fn a_worker_that_always_fails_fails_the_job_after_every_attempt() {
    let worker = Worker::always(Answer::server_error()).await;
    let server = worker_server(&worker, "").await;
    let (_, events, job) = run_job(&server, json!({}), json!({})).await;

    assert_eq!(names(&events).last(), Some(&"job.failed"));
    assert_eq!(
        names(&events)
            .iter()
            .filter(|n| **n == "job.retrying")
            .count(),
        2
    );
    let (_, failed) = events.last().unwrap();
    assert_event_fields("job.failed", failed);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempt"], 3);
    assert_eq!(failed["result"]["status"], "error");
    assert!(failed["error"].is_string(), "{failed}");

    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 3);
    assert!(
        job["error"].as_str().is_some_and(|e| e.contains("500")),
        "error: {job:#}"
    );
    assert_eq!(step_kinds(&job).last().map(String::as_str), Some("failed"));
    assert_eq!(worker.requests().len(), 3);
}

#[tokio::test]
async fn an_attempt_slower_than_the_timeout_fails_and_is_retried() {
    let slow_then_fast = |n: usize| {
        let answer = Answer::ok(json!({"fast": n}));
        if n == 1 {
            Answer::After(Duration::from_secs(3), Box::new(answer))
        } else {
            answer
        }
    };
    let worker = Worker::start(slow_then_fast).await;
    let server = worker_server(&worker, "timeout = \"300ms\"\nattempts = 2").await;
    let (_, events, job) = run_job(&server, json!({}), json!({})).await;

    assert_eq!(
        names(&events),
        [
            "job.started",
            "job.retrying",
            "job.started",
            "job.completed"
        ]
    );
    let (_, retrying) = &events[1];
    let error = retrying["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("timed out"),
        "the retry says the attempt timed out: {retrying}"
    );
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["result"]["data"], json!({"fast": 2}));
}

#[tokio::test]
async fn an_attempt_that_always_times_out_fails_the_job() {
    let worker = Worker::always(Answer::After(
        Duration::from_secs(3),
        Box::new(Answer::ok(json!({}))),
    ))
    .await;
    let server = worker_server(&worker, "timeout = \"200ms\"\nattempts = 1").await;
    let (_, events, job) = run_job(&server, json!({}), json!({})).await;

    assert_eq!(names(&events), ["job.started", "job.failed"]);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{job:#}"
    );
}

#[tokio::test]
async fn a_worker_error_result_fails_the_job_without_a_retry() {
    let worker = Worker::always(Answer::ok(
        json!({"status": "error", "message": "no", "data": null}),
    ))
    .await;
    let server = worker_server(&worker, "").await;
    let (_, events, job) = run_job(&server, json!({}), json!({})).await;

    assert_eq!(names(&events), ["job.started", "job.failed"]);
    let (_, failed) = &events[1];
    assert_eq!(
        failed["result"],
        json!({"status": "error", "message": "no", "data": null})
    );
    assert_eq!(failed["error"], "no");
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["error"], "no");

    // The back-off (100 ms) and the retry poll (500 ms) pass: still one request.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(worker.requests().len(), 1);
    assert_eq!(
        get_job(&server, job["id"].as_str().unwrap()).await["status"],
        "failed"
    );
}

// ---------------------------------------------------------------------------------
// Restarts.

#[tokio::test]
async fn a_job_running_when_the_server_stops_runs_again_after_a_restart() {
    let dir = scratch_dir();
    let stuck = Worker::always(Answer::Hang).await;
    let first =
        TestServer::start_in(&jobs_config("", &http_type("work", &stuck.url, "")), &dir).await;
    let id = id_of(&create_job(&first, json!({"eventType": "work", "payload": {"p": 1}})).await);
    wait_for_status(&first, &id, &["started"]).await;
    stuck.wait_for_requests(1).await;
    tokio::time::timeout(Duration::from_secs(10), first.stop())
        .await
        .expect("the server did not stop within 10 s");

    let answering = Worker::always(Answer::ok(json!({"again": true}))).await;
    let second = TestServer::start_in(
        &jobs_config("", &http_type("work", &answering.url, "")),
        &dir,
    )
    .await;
    let job = wait_until_ended(&second, &id).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["result"]["data"], json!({"again": true}));
    let requests = answering.wait_for_requests(1).await;
    assert_eq!(requests[0]["id"], id);
    assert_eq!(requests[0]["payload"], json!({"p": 1}));
}

#[tokio::test]
async fn jobs_queued_when_the_server_stops_all_run_after_a_restart() {
    let dir = scratch_dir();
    let stuck = Worker::always(Answer::Hang).await;
    let one_at_a_time = "concurrency = 1\ntimeout = \"30s\"";
    let first = TestServer::start_in(
        &jobs_config("", &http_type("work", &stuck.url, one_at_a_time)),
        &dir,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(id_of(
            &create_job(&first, json!({"eventType": "work", "payload": {"n": n}})).await,
        ));
    }
    wait_for_status(&first, &ids[0], &["started"]).await;
    assert_eq!(get_job(&first, &ids[2]).await["status"], "queued");
    tokio::time::timeout(Duration::from_secs(10), first.stop())
        .await
        .expect("the server did not stop within 10 s");

    let answering = Worker::always(Answer::ok(json!({"ok": 1}))).await;
    let second = TestServer::start_in(
        &jobs_config("", &http_type("work", &answering.url, "")),
        &dir,
    )
    .await;
    for id in &ids {
        let job = wait_until_ended(&second, id).await;
        assert_eq!(job["status"], "completed", "{job:#}");
    }
    let mut ran: Vec<String> = answering
        .requests()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ran.sort();
    ran.dedup();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(ran, expected);
}

// ---------------------------------------------------------------------------------
// Concurrency.

/// Runs three jobs on a worker that takes 300 ms each; returns the most it held at once.
async fn most_at_once(concurrency: usize) -> usize {
    let worker = Worker::always(Answer::After(
        Duration::from_millis(300),
        Box::new(Answer::ok(json!({}))),
    ))
    .await;
    let server = worker_server(&worker, &format!("concurrency = {concurrency}")).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(
            &create_job(&server, json!({"eventType": "work"})).await,
        ));
    }
    for id in &ids {
        assert_eq!(wait_until_ended(&server, id).await["status"], "completed");
    }
    worker.max_in_flight()
}

#[tokio::test]
async fn an_event_type_with_concurrency_one_runs_one_job_at_a_time() {
    assert_eq!(most_at_once(1).await, 1);
}

#[tokio::test]
async fn an_event_type_runs_jobs_side_by_side_up_to_its_concurrency() {
    // The counterpart of the test above, showing that the worker can see overlap.
    let most = most_at_once(3).await;
    assert!(most > 1, "three slots, yet at most {most} job ran at once");
}
