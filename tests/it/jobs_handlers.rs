//! The built-in handlers on real input: `relay`, `file-upload` with a real PNG (and
//! the stored file served back), and `chat-analysis` with a real conversation.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jobs_kit::{
    BUILTIN_TYPES, Form, accepted, bearer, builtin_server, create_job, events_until_end, fixture,
    id_of, jobs_config, listen, names, post_form, send, signed, step_kinds, unauthenticated,
    unique_channel, wait_until_ended,
};
use crate::kit::api_error;
use crate::support::TestServer;

// ---------------------------------------------------------------------------------
// relay.

#[tokio::test]
async fn relay_delivers_the_payload_as_the_result() {
    let server = builtin_server().await;
    let mut ws = listen(&server, "notifications").await;
    let payload = json!({"title": "Build finished", "ok": true, "count": 3});
    let id = id_of(&create_job(&server, json!({"eventType": "relay", "payload": payload})).await);

    let events = events_until_end(&mut ws, &id).await;
    assert_eq!(names(&events), ["job.started", "job.completed"]);
    let (_, completed) = &events[1];
    assert_eq!(completed["result"]["status"], "success");
    assert_eq!(completed["result"]["data"], payload);

    let job = wait_until_ended(&server, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"]["data"], payload);
}

// ---------------------------------------------------------------------------------
// file-upload.

#[tokio::test]
async fn an_uploaded_png_is_stored_described_and_served_back() {
    let server = builtin_server().await;
    let png = fixture("gradient-7x5.png");
    let sha256 = hex::encode(Sha256::digest(&png));
    let channel = unique_channel("upload");
    let mut ws = listen(&server, &channel).await;

    let form = Form::new()
        .text("eventType", "file-upload")
        .text("channel", &channel)
        .file("file", "gradient-7x5.png", "image/png", &png);
    let id = id_of(&accepted(post_form(&server, form).await).await);
    let events = events_until_end(&mut ws, &id).await;

    let kinds = names(&events);
    assert_eq!(kinds.first(), Some(&"job.started"));
    assert_eq!(kinds.last(), Some(&"job.completed"));
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "job.progress")
        .map(|(_, d)| d)
        .collect();
    assert!(!progress.is_empty(), "no job.progress among {kinds:?}");
    for data in &progress {
        let fraction = data["progress"]["fraction"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&fraction), "progress fraction: {data}");
        assert!(
            data["progress"]["message"].is_string(),
            "progress message: {data}"
        );
    }

    let (_, completed) = events.last().unwrap();
    let data = &completed["result"]["data"];
    assert_eq!(completed["result"]["status"], "success");
    assert_eq!(data["mimeType"], "image/png");
    assert_eq!(data["image"], json!({"width": 7, "height": 5}));
    assert_eq!(data["size"], 114);
    assert_eq!(data["sha256"], sha256);

    let job = wait_until_ended(&server, &id).await;
    assert_eq!(job["status"], "completed");
    let kinds = step_kinds(&job);
    assert_eq!(kinds.first().map(String::as_str), Some("queued"));
    assert!(
        kinds.iter().any(|k| k == "progress"),
        "no progress step in {kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("completed"));

    // The stored file, by its hash, with a token or a signature.
    let path = format!("/files/{sha256}");
    let response = send(bearer(&server, "GET", &path)).await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), png.as_slice());
    let response = signed(&server, "GET", &path, &[], None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), png.as_slice());
}

#[tokio::test]
async fn stored_files_need_credentials_and_an_existing_hash() {
    let server = builtin_server().await;
    let unknown = format!("/files/{}", "0".repeat(64));
    api_error(send(unauthenticated(&server, "GET", &unknown)).await, 401).await;
    let (code, _) = api_error(
        send(unauthenticated(&server, "GET", &unknown).bearer_auth("x")).await,
        401,
    )
    .await;
    assert_eq!(code, "invalid_token");

    for path in [
        unknown.as_str(),
        "/files/not-a-hash",
        "/files/..%2Fherald.db",
    ] {
        api_error(send(bearer(&server, "GET", path)).await, 404).await;
    }
}

#[tokio::test]
async fn a_file_upload_job_without_a_file_fails_at_once() {
    let server = builtin_server().await;
    let id = id_of(&create_job(&server, json!({"eventType": "file-upload"})).await);
    let job = wait_until_ended(&server, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["error"].as_str().is_some_and(|e| e.contains("file")),
        "{job:#}"
    );
}

// ---------------------------------------------------------------------------------
// chat-analysis.

/// English stop words that must never be top terms.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "have", "he", "i", "in",
    "is", "it", "me", "my", "not", "of", "on", "or", "so", "that", "the", "this", "to", "was",
    "we", "what", "with", "you", "your",
];

fn chat_fixture() -> Value {
    serde_json::from_slice(&fixture("chat_public_domain.json")).expect("the chat fixture is JSON")
}

#[tokio::test]
async fn a_real_conversation_is_analysed() {
    let server = builtin_server().await;
    let chat = chat_fixture();
    let messages = chat["messages"]
        .as_array()
        .expect("the fixture has messages")
        .clone();
    let channel = unique_channel("chat");
    let mut ws = listen(&server, &channel).await;
    let payload = json!({ "messages": messages });
    let body = json!({"eventType": "chat-analysis", "payload": payload, "channel": channel});
    let id = id_of(&create_job(&server, body).await);

    let events = events_until_end(&mut ws, &id).await;
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "job.completed", "events: {events:?}");
    let progress = events.iter().find(|(name, _)| name == "job.progress");
    let (_, progress) = progress.unwrap_or_else(|| panic!("no job.progress among {events:?}"));
    assert!(progress["progress"]["fraction"].is_number(), "{progress}");
    assert!(progress["progress"]["message"].is_string(), "{progress}");
    let report = &completed["result"]["data"];

    // Participants: everyone who wrote, with shares adding up to 1.
    let participants = report["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("no participants: {report:#}"));
    let mut users: Vec<&str> = participants
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    let mut expected: Vec<&str> = messages
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(users, expected);
    for share in ["messageShare", "wordShare"] {
        let sum: f64 = participants
            .iter()
            .map(|p| p[share].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 0.001, "{share} sums to {sum}");
    }
    let counted: u64 = participants
        .iter()
        .map(|p| p["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, messages.len() as u64);
    let ben = messages.iter().filter(|m| m["user"] == "ben").count();
    assert_eq!(participants[0]["user"], "ben", "most messages first");
    assert_eq!(participants[0]["messages"], ben);

    assert_eq!(
        report["language"]["code"], "eng",
        "{:#}",
        report["language"]
    );

    let terms = report["topTerms"]
        .as_array()
        .unwrap_or_else(|| panic!("no topTerms: {report:#}"));
    assert!(!terms.is_empty(), "no top terms");
    for term in terms {
        let word = term["term"].as_str().unwrap();
        assert!(
            !STOP_WORDS.contains(&word),
            "stop word {word:?} among the top terms: {terms:?}"
        );
        assert!(term["count"].as_u64().is_some_and(|c| c >= 1));
    }

    let job = wait_until_ended(&server, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn a_malformed_chat_fails_at_once_naming_the_field() {
    let server = builtin_server().await;
    let payload = json!({"messages": [
        {"user": "ana", "text": "hi", "ts": "2026-01-05T10:00:00Z"},
        {"user": "ben", "text": "hello", "ts": "yesterday"},
    ]});
    let id = id_of(
        &create_job(
            &server,
            json!({"eventType": "chat-analysis", "payload": payload}),
        )
        .await,
    );
    let job = wait_until_ended(&server, &id).await;

    assert_eq!(job["status"], "failed");
    assert_eq!(
        job["attempts"], 1,
        "a malformed payload is not retried: {job:#}"
    );
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("messages[1].ts"),
        "the error names the field: {error:?}"
    );
    assert!(!step_kinds(&job).iter().any(|k| k == "retrying"), "{job:#}");
}

#[tokio::test]
async fn an_app_sees_only_the_files_it_stored() {
    let other_app = format!(
        "\n[[apps]]\nid = \"other-app\"\nkey = \"other-key\"\nsecret = \"other-secret\"\n\
         api_token = \"other-token\"\n{BUILTIN_TYPES}"
    );
    let server =
        TestServer::start_with(&format!("{}{other_app}", jobs_config("", BUILTIN_TYPES))).await;
    let png = fixture("gradient-7x5.png");
    let sha256 = hex::encode(Sha256::digest(&png));
    let form = Form::new().text("eventType", "file-upload").file(
        "file",
        "gradient-7x5.png",
        "image/png",
        &png,
    );
    let id = id_of(&accepted(post_form(&server, form).await).await);
    assert_eq!(wait_until_ended(&server, &id).await["status"], "completed");

    // The other app knows the hash, but the file is not its.
    let client = reqwest::Client::new();
    let foreign = client
        .get(server.url(&format!("/apps/other-app/files/{sha256}")))
        .bearer_auth("other-token")
        .send()
        .await
        .unwrap();
    api_error(foreign, 404).await;
    let by_hash = json!({"eventType": "file-upload", "payload": {"sha256": sha256}});
    let created: Value = client
        .post(server.url("/apps/other-app/jobs"))
        .bearer_auth("other-token")
        .json(&by_hash)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_url = server.url(created["statusUrl"].as_str().unwrap());
    let mut job = Value::Null;
    for _ in 0..100 {
        job = client
            .get(&job_url)
            .bearer_auth("other-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "failed" || job["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "failed", "{job}");
}
