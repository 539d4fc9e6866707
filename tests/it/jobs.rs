//! The jobs API: authentication, `POST /jobs` (JSON and multipart), idempotency,
//! refusals, `GET /jobs/{id}`, `GET /jobs` with filters and paging, and cancelling.

use std::time::Duration;

use serde_json::{Value, json};

use crate::jobs_kit::{
    Answer, BUILTIN_TYPES, Form, Worker, accepted, bearer, builtin_server, create_job,
    events_until_end, fixture, get_job, http_type, id_of, jobs_config, list_jobs, listen, names,
    post_form, post_form_signed, post_job, send, signed, step_kinds, unauthenticated,
    unique_channel, wait_for_status, wait_until_ended,
};
use crate::kit::{api_error, api_ok};
use crate::support::TestServer;

// ---------------------------------------------------------------------------------
// Authentication.

#[tokio::test]
async fn jobs_are_accepted_with_the_api_token_or_a_signature() {
    let server = builtin_server().await;

    let by_token = create_job(&server, json!({"eventType": "relay", "payload": {"n": 1}})).await;
    let response = signed(
        &server,
        "POST",
        "/jobs",
        &[],
        Some(json!({"eventType": "relay", "payload": {"n": 2}})),
    )
    .await;
    let by_signature = accepted(response).await;

    // Both are readable either way.
    for id in [id_of(&by_token), id_of(&by_signature)] {
        let path = format!("/jobs/{id}");
        let viewed = api_ok(signed(&server, "GET", &path, &[], None).await).await;
        assert_eq!(viewed["id"], id);
        assert_eq!(get_job(&server, &id).await["id"], id);
    }
}

#[tokio::test]
async fn a_wrong_token_or_no_credentials_are_refused() {
    let server = builtin_server().await;
    let body = json!({"eventType": "relay"});

    let wrong = unauthenticated(&server, "POST", "/jobs")
        .bearer_auth("not-the-token")
        .json(&body);
    let (code, _) = api_error(send(wrong).await, 401).await;
    assert_eq!(code, "invalid_token");

    let none = unauthenticated(&server, "POST", "/jobs").json(&body);
    api_error(send(none).await, 401).await;

    for path in ["/jobs", "/jobs/00000000-0000-4000-8000-000000000000"] {
        api_error(send(unauthenticated(&server, "GET", path)).await, 401).await;
        let wrong = unauthenticated(&server, "GET", path).bearer_auth("nope");
        let (code, _) = api_error(send(wrong).await, 401).await;
        assert_eq!(code, "invalid_token");
    }
    // Nothing was created by the refused requests.
    assert_eq!(list_jobs(&server, &[]).await["jobs"], json!([]));
}

// ---------------------------------------------------------------------------------
// POST /jobs.

#[tokio::test]
async fn a_job_is_accepted_with_its_location_and_status_url() {
    let server = builtin_server().await;
    let response = post_job(
        &server,
        json!({"eventType": "chat-analysis", "payload": {"messages": []}}),
    )
    .await;

    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = accepted(response).await;
    let id = id_of(&body);
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "id {id:?} is not a UUID"
    );
    let status_url = format!("/apps/demo-app/jobs/{id}");
    assert_eq!(
        location.as_deref(),
        Some(status_url.as_str()),
        "Location header"
    );
    assert_eq!(
        body,
        json!({
            "id": id,
            "eventType": "chat-analysis",
            "status": "queued",
            "statusUrl": status_url,
            "channel": format!("job-{id}"),
            "callbackUrls": [],
        })
    );
}

#[tokio::test]
async fn the_channel_comes_from_the_event_type_unless_the_request_names_one() {
    let server = builtin_server().await;

    for event_type in ["file-upload", "chat-analysis"] {
        let body = create_job(&server, json!({"eventType": event_type})).await;
        assert_eq!(
            body["channel"],
            format!("job-{}", id_of(&body)),
            "{event_type}"
        );
    }
    let relay = create_job(&server, json!({"eventType": "relay"})).await;
    assert_eq!(relay["channel"], "notifications");

    let named = create_job(
        &server,
        json!({"eventType": "relay", "channel": "private-orders-7"}),
    )
    .await;
    assert_eq!(named["channel"], "private-orders-7");
    assert_eq!(
        get_job(&server, &id_of(&named)).await["channel"],
        "private-orders-7"
    );
}

#[tokio::test]
async fn the_callback_url_is_echoed_and_kept() {
    let server = builtin_server().await;
    let url = "http://127.0.0.1:9/hooks/herald?x=1";
    let body = create_job(&server, json!({"eventType": "relay", "callbackUrl": url})).await;
    assert_eq!(body["callbackUrls"], json!([url]));
    assert_eq!(get_job(&server, &id_of(&body)).await["callbackUrl"], url);
}

#[tokio::test]
async fn a_multipart_job_carries_its_fields_and_describes_its_file() {
    let server = builtin_server().await;
    let png = fixture("gradient-7x5.png");
    let channel = unique_channel("uploads");
    let form = Form::new()
        .text("eventType", "file-upload")
        .text("payload", r#"{"album": "holidays"}"#)
        .text("metadata", r#"{"user": 42}"#)
        .text("channel", &channel)
        .text("callbackUrl", "http://127.0.0.1:9/hook")
        .file("file", "gradient.png", "image/png", &png);
    let body = accepted(post_form(&server, form).await).await;
    assert_eq!(body["eventType"], "file-upload");
    assert_eq!(body["channel"], channel);
    assert_eq!(body["callbackUrls"], json!(["http://127.0.0.1:9/hook"]));

    let job = get_job(&server, &id_of(&body)).await;
    assert_eq!(job["metadata"], json!({"user": 42}));
    assert_eq!(
        job["payload"],
        json!({
            "album": "holidays",
            "upload": {"fileName": "gradient.png", "contentType": "image/png", "size": 114},
        })
    );
}

#[tokio::test]
async fn a_signed_multipart_upload_is_accepted() {
    let server = builtin_server().await;
    let form = Form::new().text("eventType", "file-upload").file(
        "file",
        "gradient.png",
        "image/png",
        &fixture("gradient-7x5.png"),
    );
    let body = accepted(post_form_signed(&server, form).await).await;
    let job = wait_until_ended(&server, &id_of(&body)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(job["payload"]["upload"]["size"], 114);
}

#[tokio::test]
async fn malformed_multipart_forms_are_refused_naming_the_part() {
    let server = builtin_server().await;
    let cases = [
        (
            Form::new()
                .text("eventType", "relay")
                .text("payload", "{not json"),
            "payload",
        ),
        (
            Form::new()
                .text("eventType", "relay")
                .text("metadata", "[1,"),
            "metadata",
        ),
        (Form::new().text("payload", "{}"), "eventType"),
        (
            Form::new().text("eventType", "relay").text("colour", "red"),
            "colour",
        ),
    ];
    for (form, part) in cases {
        let (code, message) = api_error(post_form(&server, form).await, 400).await;
        assert_eq!(code, "invalid_body", "{message}");
        assert!(
            message.contains(part),
            "the message should name {part:?}: {message:?}"
        );
    }
    assert_eq!(list_jobs(&server, &[]).await["jobs"], json!([]));
}

// ---------------------------------------------------------------------------------
// Idempotency-Key.

/// Sends `body` with `key`.
async fn post_with_key(server: &TestServer, key: &str, body: &Value) -> reqwest::Response {
    send(
        bearer(server, "POST", "/jobs")
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn a_repeated_idempotent_request_gets_the_first_answer_and_one_job() {
    let server = builtin_server().await;
    let body = json!({"eventType": "relay", "payload": {"order": 7}, "metadata": {"m": 1}});

    let first = accepted(post_with_key(&server, "order-7", &body).await).await;
    let again = accepted(post_with_key(&server, "order-7", &body).await).await;
    assert_eq!(again, first);

    let listed = list_jobs(&server, &[]).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed:#}");
}

#[tokio::test]
async fn a_repeated_idempotent_request_whose_channel_names_the_job_gets_the_first_answer() {
    // The default channel of chat-analysis is `job-{jobId}`: the retry must still be
    // recognised as the same request.
    let server = builtin_server().await;
    let body = json!({"eventType": "chat-analysis", "payload": {"messages": []}});

    let first = accepted(post_with_key(&server, "chat-1", &body).await).await;
    let response = post_with_key(&server, "chat-1", &body).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        status, 202,
        "the same request under the same key should be replayed: {text}"
    );
    let again: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        list_jobs(&server, &[]).await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let server = builtin_server().await;
    let first = json!({"eventType": "relay", "payload": {"order": 7}});
    accepted(post_with_key(&server, "order-7", &first).await).await;

    let other = json!({"eventType": "relay", "payload": {"order": 8}});
    let (code, _) = api_error(post_with_key(&server, "order-7", &other).await, 422).await;
    assert_eq!(code, "idempotency_key_reused");
    assert_eq!(
        list_jobs(&server, &[]).await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------
// Refusals.

/// Posts `body` and asserts a 400 with `code`; returns the message.
async fn refused(server: &TestServer, body: Value, code: &str) -> String {
    let (got, message) = api_error(post_job(server, body.clone()).await, 400).await;
    assert_eq!(got, code, "for {body}: {message}");
    message
}

#[tokio::test]
async fn an_unknown_event_type_is_refused_with_the_declared_ones() {
    let server = builtin_server().await;
    let message = refused(
        &server,
        json!({"eventType": "resize"}),
        "unknown_event_type",
    )
    .await;
    for declared in ["file-upload", "chat-analysis", "relay"] {
        assert!(
            message.contains(declared),
            "{message:?} should list {declared}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_naming_the_field() {
    let server = builtin_server().await;

    let not_json = bearer(&server, "POST", "/jobs")
        .header("content-type", "application/json")
        .body("{\"eventType\": ");
    let (code, _) = api_error(send(not_json).await, 400).await;
    assert_eq!(code, "invalid_body");

    let message = refused(&server, json!({"eventType": 7}), "invalid_body").await;
    assert!(message.contains("eventType"), "{message:?}");
    let message = refused(
        &server,
        json!({"eventType": "relay", "channel": ["a"]}),
        "invalid_body",
    )
    .await;
    assert!(message.contains("channel"), "{message:?}");
    let message = refused(&server, json!({"payload": {}}), "invalid_body").await;
    assert!(message.contains("eventType"), "{message:?}");

    let (code, message) = api_error(
        post_job(&server, json!({"eventType": "relay", "colour": "red"})).await,
        400,
    )
    .await;
    assert!(message.contains("colour"), "{code}: {message:?}");

    assert_eq!(list_jobs(&server, &[]).await["jobs"], json!([]));
}

#[tokio::test]
async fn bad_channels_and_callback_urls_are_refused() {
    let server = builtin_server().await;
    for channel in ["has space", "", &"x".repeat(300), "bad:char"] {
        refused(
            &server,
            json!({"eventType": "relay", "channel": channel}),
            "invalid_channel",
        )
        .await;
    }
    for url in ["ftp://example.com/x", "not a url", "javascript:alert(1)"] {
        refused(
            &server,
            json!({"eventType": "relay", "callbackUrl": url}),
            "invalid_callback_url",
        )
        .await;
    }
}

#[tokio::test]
async fn a_body_over_max_job_size_is_refused() {
    let server = TestServer::start_with(&jobs_config("max_job_size = 1024", BUILTIN_TYPES)).await;
    let big = json!({"eventType": "relay", "payload": {"text": "x".repeat(2000)}});

    let (code, _) = api_error(post_job(&server, big.clone()).await, 413).await;
    assert_eq!(code, "body_too_large");
    let (code, _) = api_error(signed(&server, "POST", "/jobs", &[], Some(big)).await, 413).await;
    assert_eq!(code, "body_too_large");

    // Under the limit is fine.
    create_job(
        &server,
        json!({"eventType": "relay", "payload": {"text": "x".repeat(500)}}),
    )
    .await;
}

#[tokio::test]
async fn a_file_over_max_upload_size_is_refused() {
    let server = TestServer::start_with(&jobs_config("max_upload_size = 100", BUILTIN_TYPES)).await;
    let form = Form::new().text("eventType", "file-upload").file(
        "file",
        "gradient.png",
        "image/png",
        &fixture("gradient-7x5.png"),
    );
    let (code, _) = api_error(post_form(&server, form).await, 413).await;
    assert_eq!(code, "file_too_large");

    let small =
        Form::new()
            .text("eventType", "file-upload")
            .file("file", "a.txt", "text/plain", b"hello");
    accepted(post_form(&server, small).await).await;
    assert_eq!(
        list_jobs(&server, &[]).await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_file_for_an_event_type_that_takes_none_is_refused() {
    let server = builtin_server().await;
    let form = Form::new().text("eventType", "relay").file(
        "file",
        "gradient.png",
        "image/png",
        &fixture("gradient-7x5.png"),
    );
    let (code, _) = api_error(post_form(&server, form).await, 400).await;
    assert_eq!(code, "unexpected_file");

    // The file part may come first too.
    let form = Form::new()
        .file(
            "file",
            "gradient.png",
            "image/png",
            &fixture("gradient-7x5.png"),
        )
        .text("eventType", "chat-analysis");
    let (code, _) = api_error(post_form(&server, form).await, 400).await;
    assert_eq!(code, "unexpected_file");
    assert_eq!(list_jobs(&server, &[]).await["jobs"], json!([]));
}

// ---------------------------------------------------------------------------------
// GET /jobs/{id}.

#[tokio::test]
async fn a_job_shows_every_field_and_its_steps() {
    let server = builtin_server().await;
    let body =
        json!({"eventType": "relay", "payload": {"text": "hello"}, "metadata": {"user": "ana"}});
    let id = id_of(&create_job(&server, body).await);
    let job = wait_until_ended(&server, &id).await;

    let fields = [
        "id",
        "eventType",
        "status",
        "attempts",
        "maxAttempts",
        "progress",
        "payload",
        "metadata",
        "result",
        "error",
        "channel",
        "callbackUrl",
        "createdAt",
        "startedAt",
        "completedAt",
        "steps",
    ];
    for field in fields {
        assert!(job.get(field).is_some(), "no {field:?} in {job:#}");
    }
    assert_eq!(job["id"], id);
    assert_eq!(job["eventType"], "relay");
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["maxAttempts"], 1);
    assert_eq!(job["payload"], json!({"text": "hello"}));
    assert_eq!(job["metadata"], json!({"user": "ana"}));
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["callbackUrl"], Value::Null);
    for time in ["createdAt", "startedAt", "completedAt"] {
        let text = job[time]
            .as_str()
            .unwrap_or_else(|| panic!("{time} is not a string: {job}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "{time} {text:?} is not RFC 3339"
        );
    }
    assert!(job["createdAt"].as_str() <= job["startedAt"].as_str());
    assert!(job["startedAt"].as_str() <= job["completedAt"].as_str());

    assert_eq!(step_kinds(&job), ["queued", "started", "completed"]);
    for step in job["steps"].as_array().unwrap() {
        assert!(step["at"].is_string(), "step without a time: {step}");
    }
}

#[tokio::test]
async fn an_unknown_job_is_not_found() {
    let server = builtin_server().await;
    for id in ["00000000-0000-4000-8000-000000000000", "not-a-uuid"] {
        let response = send(bearer(&server, "GET", &format!("/jobs/{id}"))).await;
        let (code, _) = api_error(response, 404).await;
        assert_eq!(code, "job_not_found");
    }
}

// ---------------------------------------------------------------------------------
// GET /jobs.

/// The ids of a page.
fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array in {page}"))
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates `count` relay jobs a few milliseconds apart; returns their ids, oldest first.
async fn relay_jobs(server: &TestServer, count: usize) -> Vec<String> {
    let mut created = Vec::new();
    for n in 0..count {
        let body = create_job(server, json!({"eventType": "relay", "payload": {"n": n}})).await;
        created.push(id_of(&body));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    created
}

#[tokio::test]
async fn jobs_are_listed_newest_first_and_paged_without_gaps_or_repeats() {
    let server = builtin_server().await;
    let created = relay_jobs(&server, 5).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let all = list_jobs(&server, &[]).await;
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["nextCursor"], Value::Null);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let mut query = vec![("limit", "2".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = list_jobs(&server, &query).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2, "limit=2 gave {page:#}");
        seen.extend(page_ids);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen, newest_first,
        "paging visits every job once, newest first"
    );
}

#[tokio::test]
async fn jobs_can_be_listed_with_a_signed_request() {
    let server = builtin_server().await;
    let created = relay_jobs(&server, 2).await;

    let all = api_ok(signed(&server, "GET", "/jobs", &[], None).await).await;
    assert_eq!(ids(&all), [created[1].clone(), created[0].clone()]);
    let filtered = signed(
        &server,
        "GET",
        "/jobs",
        &[("eventType", "relay"), ("limit", "1")],
        None,
    )
    .await;
    assert_eq!(ids(&api_ok(filtered).await), [created[1].clone()]);
}

#[tokio::test]
async fn jobs_are_filtered_by_event_type_status_and_time() {
    let worker = Worker::always(Answer::ok(
        json!({"status": "error", "message": "no", "data": null}),
    ))
    .await;
    let types = format!(
        "{BUILTIN_TYPES}{}",
        http_type("thumbnail", &worker.url, "attempts = 1")
    );
    let server = TestServer::start_with(&jobs_config("", &types)).await;

    let relays = relay_jobs(&server, 3).await;
    let mut thumbnails = Vec::new();
    for _ in 0..2 {
        thumbnails.push(id_of(
            &create_job(&server, json!({"eventType": "thumbnail"})).await,
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in relays.iter().chain(&thumbnails) {
        wait_until_ended(&server, id).await;
    }
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };

    let by_type = list_jobs(&server, &[("eventType", "relay")]).await;
    assert_eq!(sorted(ids(&by_type)), sorted(relays.clone()));
    let failed = list_jobs(&server, &[("status", "failed")]).await;
    assert_eq!(sorted(ids(&failed)), sorted(thumbnails.clone()));
    let both = list_jobs(
        &server,
        &[("status", "completed"), ("eventType", "thumbnail")],
    )
    .await;
    assert_eq!(both["jobs"], json!([]));

    // `since` includes the job created at that time; `until` excludes it.
    let third = get_job(&server, &relays[2]).await;
    let at = third["createdAt"].as_str().unwrap();
    let since = list_jobs(&server, &[("since", at)]).await;
    let mut expected = vec![relays[2].clone()];
    expected.extend(thumbnails.iter().cloned());
    assert_eq!(sorted(ids(&since)), sorted(expected));
    let until = list_jobs(&server, &[("until", at)]).await;
    assert_eq!(sorted(ids(&until)), sorted(relays[..2].to_vec()));
}

#[tokio::test]
async fn a_bad_list_query_is_refused() {
    let server = builtin_server().await;
    let queries: [&[(&str, &str)]; 7] = [
        &[("status", "done")],
        &[("limit", "0")],
        &[("limit", "100000")],
        &[("limit", "ten")],
        &[("since", "yesterday")],
        &[("until", "2026-13-45")],
        &[("cursor", "not-a-cursor")],
    ];
    for query in queries {
        let response = send(bearer(&server, "GET", "/jobs").query(query)).await;
        let (code, message) = api_error(response, 400).await;
        assert_eq!(code, "invalid_query", "for {query:?}: {message}");
    }
}

// ---------------------------------------------------------------------------------
// Cancelling.

/// A server whose `slow` jobs run one at a time on a worker that never answers.
async fn server_with_a_stuck_worker() -> (TestServer, Worker) {
    let worker = Worker::always(Answer::Hang).await;
    let types = http_type("slow", &worker.url, "concurrency = 1\ntimeout = \"30s\"");
    (
        TestServer::start_with(&jobs_config("", &types)).await,
        worker,
    )
}

#[tokio::test]
async fn a_queued_job_can_be_cancelled_and_its_channel_is_told() {
    let (server, _worker) = server_with_a_stuck_worker().await;
    let running = id_of(&create_job(&server, json!({"eventType": "slow"})).await);
    wait_for_status(&server, &running, &["started"]).await;

    let channel = unique_channel("cancel");
    let mut ws = listen(&server, &channel).await;
    let queued =
        id_of(&create_job(&server, json!({"eventType": "slow", "channel": channel})).await);
    assert_eq!(get_job(&server, &queued).await["status"], "queued");

    let response = send(bearer(&server, "POST", &format!("/jobs/{queued}/cancel"))).await;
    let cancelled = api_ok(response).await;
    assert_eq!(cancelled["id"], queued);
    assert_eq!(cancelled["status"], "cancelled");

    let events = events_until_end(&mut ws, &queued).await;
    assert_eq!(names(&events), ["job.cancelled"]);
    assert_eq!(events[0].1["status"], "cancelled");
    let job = get_job(&server, &queued).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(
        step_kinds(&job).last().map(String::as_str),
        Some("cancelled")
    );
}

#[tokio::test]
async fn a_running_job_can_be_cancelled_and_stays_cancelled() {
    let (server, worker) = server_with_a_stuck_worker().await;
    let channel = unique_channel("cancel");
    let mut ws = listen(&server, &channel).await;
    let id = id_of(&create_job(&server, json!({"eventType": "slow", "channel": channel})).await);
    wait_for_status(&server, &id, &["started"]).await;
    worker.wait_for_requests(1).await;

    let response = signed(&server, "POST", &format!("/jobs/{id}/cancel"), &[], None).await;
    assert_eq!(api_ok(response).await["status"], "cancelled");

    let events = events_until_end(&mut ws, &id).await;
    assert_eq!(names(&events), ["job.started", "job.cancelled"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let job = get_job(&server, &id).await;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    assert_eq!(
        worker.requests().len(),
        1,
        "a cancelled job is not run again"
    );
}

#[tokio::test]
async fn cancelling_an_ended_or_unknown_job_is_refused() {
    let server = builtin_server().await;
    let id = id_of(&create_job(&server, json!({"eventType": "relay"})).await);
    wait_until_ended(&server, &id).await;

    let response = send(bearer(&server, "POST", &format!("/jobs/{id}/cancel"))).await;
    let (code, _) = api_error(response, 409).await;
    assert_eq!(code, "job_already_ended");
    assert_eq!(get_job(&server, &id).await["status"], "completed");

    for unknown in ["00000000-0000-4000-8000-000000000000", "nope"] {
        let response = send(bearer(&server, "POST", &format!("/jobs/{unknown}/cancel"))).await;
        let (code, _) = api_error(response, 404).await;
        assert_eq!(code, "job_not_found");
    }
}
