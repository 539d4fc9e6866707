//! Callback delivery: subscriptions, where callbacks may go, signed Standard Webhooks
//! requests to a real receiver on loopback, retries on schedule, dead deliveries and
//! their replay, the health of subscriptions told on the operations channel, slow and
//! hanging receivers, and the outbox across crashes and restarts.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::delivery_kit::{
    Hit, Isolated, Receiver, Reply, SECOND_APP, Scratch, assert_signed, attempt_log, call, call_as,
    closed_port, config, create_subscription, deliveries, expect, get_subscription, id,
    job_deliveries, list_subscriptions, operations, operations_until, post_job, relay, secret,
    secret_bytes, server_with, signatures, signed_by, wait_deliveries, wait_delivery_status,
    wait_job,
};
use crate::support::{TestServer, assert_silent};

/// Longest wait for anything that should happen within a second or two.
const SOON: Duration = Duration::from_secs(5);

/// Slack for the sender's poll (250 ms) and scheduling on a busy machine.
const SLACK: Duration = Duration::from_millis(600);

/// Callback URLs that must be refused when nothing but global addresses is allowed.
const FORBIDDEN: [&str; 9] = [
    "http://127.0.0.1:9/hook",
    "http://127.1/hook",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/",
    "http://localhost:9/hook",
];

// ---------------------------------------------------------------------------------
// Subscriptions.

#[tokio::test]
async fn subscriptions_are_created_listed_changed_and_deleted() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;

    let (status, created) = call(
        &server,
        "POST",
        "/subscriptions",
        Some(json!({"eventType": "relay", "callbackUrl": receiver.url(), "description": "orders"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["id"].is_string(), "{created}");
    assert_eq!(created["eventType"], "relay");
    assert_eq!(created["callbackUrl"], receiver.url());
    assert_eq!(created["description"], "orders");
    assert_eq!(created["enabled"], true);
    let key = secret_bytes(&secret(&created));
    assert!(
        key.len() >= 24,
        "the secret carries {} bytes: {created}",
        key.len()
    );
    let sub_id = id(&created);

    // Another subscription: every type, no description; its secret differs.
    let everything = create_subscription(&server, "*", &receiver.url_at("/all")).await;
    assert_eq!(everything["eventType"], "*");
    assert_eq!(everything["description"], Value::Null);
    assert_ne!(secret(&everything), secret(&created));

    let duplicate = call(
        &server,
        "POST",
        "/subscriptions",
        Some(json!({"eventType": "relay", "callbackUrl": receiver.url()})),
    )
    .await;
    expect(
        duplicate,
        409,
        Some("subscription_exists"),
        "the same type and URL again",
    );
    let unknown = call(
        &server,
        "POST",
        "/subscriptions",
        Some(json!({"eventType": "no-such-type", "callbackUrl": receiver.url()})),
    )
    .await;
    expect(
        unknown,
        400,
        Some("unknown_event_type"),
        "an undeclared event type",
    );

    let all = list_subscriptions(&server, None).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    for listed in &all {
        assert!(
            listed.get("secret").is_none(),
            "a listing shows a secret: {listed}"
        );
        assert!(
            listed["id"].is_string() && listed["callbackUrl"].is_string(),
            "{listed}"
        );
    }
    let relays = list_subscriptions(&server, Some("relay")).await;
    assert_eq!(relays.len(), 1, "{relays:#?}");
    assert_eq!(relays[0]["id"], created["id"]);
    let wildcards = list_subscriptions(&server, Some("*")).await;
    assert_eq!(wildcards.len(), 1, "{wildcards:#?}");
    assert_eq!(wildcards[0]["id"], everything["id"]);

    let shown = get_subscription(&server, &sub_id).await;
    assert_eq!(shown["secret"], created["secret"], "GET shows the secret");
    assert_eq!(shown["callbackUrl"], receiver.url());

    let patched = expect(
        call(
            &server,
            "PATCH",
            &format!("/subscriptions/{sub_id}"),
            Some(json!({
                "callbackUrl": receiver.url_at("/moved"),
                "description": "moved",
                "enabled": false
            })),
        )
        .await,
        200,
        None,
        "PATCH",
    );
    assert_eq!(
        patched["callbackUrl"],
        receiver.url_at("/moved"),
        "{patched}"
    );
    assert_eq!(patched["description"], "moved");
    assert_eq!(patched["enabled"], false);
    let shown = get_subscription(&server, &sub_id).await;
    assert_eq!(shown["callbackUrl"], receiver.url_at("/moved"));
    assert_eq!(shown["description"], "moved");
    assert_eq!(shown["enabled"], false);
    assert_eq!(shown["secret"], created["secret"], "PATCH keeps the secret");

    let refused = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{sub_id}"),
        Some(json!({"callbackUrl": "http://10.0.0.1/hook"})),
    )
    .await;
    expect(
        refused,
        400,
        Some("invalid_target"),
        "PATCH to a private address",
    );
    assert_eq!(
        get_subscription(&server, &sub_id).await["callbackUrl"],
        receiver.url_at("/moved"),
        "a refused PATCH changes nothing"
    );

    let (status, body) = call(&server, "DELETE", &format!("/subscriptions/{sub_id}"), None).await;
    assert_eq!(status, 204, "{body}");
    for method in ["GET", "DELETE", "PATCH"] {
        let body = (method == "PATCH").then(|| json!({"description": "x"}));
        let answer = call(&server, method, &format!("/subscriptions/{sub_id}"), body).await;
        expect(
            answer,
            404,
            Some("subscription_not_found"),
            &format!("{method} after DELETE"),
        );
    }
    let unknown = call(&server, "GET", "/subscriptions/not-an-id", None).await;
    expect(
        unknown,
        404,
        Some("subscription_not_found"),
        "GET of a made-up id",
    );
    assert_eq!(list_subscriptions(&server, None).await.len(), 1);
}

#[tokio::test]
async fn subscriptions_and_deliveries_belong_to_their_app() {
    let toml = format!("{}{SECOND_APP}", config(&[]));
    let server = TestServer::start_with(&toml).await;
    let receiver = Receiver::always(200).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    let sub_id = id(&subscription);
    let job_id = relay(&server, json!({})).await;
    let delivery = wait_delivery_status(&server, &job_id, "succeeded", SOON).await;

    // Signed like the Pusher API, the same routes answer.
    let signed = crate::jobs_kit::signed(
        &server,
        "GET",
        &format!("/subscriptions/{sub_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(signed.status(), 200, "signed GET /subscriptions/{{id}}");
    let signed = crate::jobs_kit::signed(
        &server,
        "POST",
        "/subscriptions",
        &[],
        Some(json!({"eventType": "*", "callbackUrl": receiver.url_at("/signed")})),
    )
    .await;
    assert_eq!(signed.status(), 201, "signed POST /subscriptions");
    let anonymous = call_as(&server, "demo-app", None, "GET", "/subscriptions", None).await;
    assert_eq!(anonymous.0, 401, "no credentials: {}", anonymous.1);
    let wrong = call_as(
        &server,
        "demo-app",
        Some("second-token"),
        "GET",
        "/subscriptions",
        None,
    )
    .await;
    assert_eq!(wrong.0, 401, "another app's token: {}", wrong.1);

    // The other app sees none of them.
    let as_second = |method: &'static str, path: String, body: Option<Value>| {
        let server = &server;
        async move {
            call_as(
                server,
                "second-app",
                Some("second-token"),
                method,
                &path,
                body,
            )
            .await
        }
    };
    let listed = expect(
        as_second("GET", "/subscriptions".into(), None).await,
        200,
        None,
        "list",
    );
    assert_eq!(listed["subscriptions"], json!([]), "{listed}");
    let listed = expect(
        as_second("GET", "/deliveries".into(), None).await,
        200,
        None,
        "deliveries",
    );
    assert_eq!(listed["deliveries"], json!([]), "{listed}");
    for (method, path, code) in [
        (
            "GET",
            format!("/subscriptions/{sub_id}"),
            "subscription_not_found",
        ),
        (
            "DELETE",
            format!("/subscriptions/{sub_id}"),
            "subscription_not_found",
        ),
        (
            "POST",
            format!("/subscriptions/{sub_id}/rotate-secret"),
            "subscription_not_found",
        ),
        (
            "POST",
            format!("/deliveries/{}/retry", id(&delivery)),
            "delivery_not_found",
        ),
        ("POST", format!("/jobs/{job_id}/redeliver"), "job_not_found"),
    ] {
        let answer = as_second(method, path.clone(), None).await;
        expect(
            answer,
            404,
            Some(code),
            &format!("second-app {method} {path}"),
        );
    }
    let patch = as_second(
        "PATCH",
        format!("/subscriptions/{sub_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    expect(
        patch,
        404,
        Some("subscription_not_found"),
        "second-app PATCH",
    );
    assert_eq!(
        get_subscription(&server, &sub_id).await["secret"],
        subscription["secret"]
    );
    assert_eq!(get_subscription(&server, &sub_id).await["enabled"], true);

    // Its jobs go to its own subscriptions only.
    let created = as_second("POST", "/jobs".into(), Some(json!({"eventType": "relay"}))).await;
    let second_job = id(&expect(created, 202, None, "second-app job"));
    let deadline = Instant::now() + SOON;
    loop {
        let job = as_second("GET", format!("/jobs/{second_job}"), None).await;
        if job.1["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second-app job did not complete: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver
        .assert_stays_at(1, Duration::from_millis(700), "another app's job")
        .await;
}

#[tokio::test]
async fn a_patch_onto_another_subscriptions_url_is_a_conflict() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;
    create_subscription(&server, "relay", &receiver.url_at("/a")).await;
    let second = create_subscription(&server, "relay", &receiver.url_at("/b")).await;
    let answer = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{}", id(&second)),
        Some(json!({"callbackUrl": receiver.url_at("/a")})),
    )
    .await;
    expect(
        answer,
        409,
        Some("subscription_exists"),
        "PATCH making a second relay subscription to /a",
    );
}

#[tokio::test]
async fn callback_urls_are_checked_when_saved() {
    // The shipped default: nothing but global addresses. Subscriptions are tried
    // first and must all be refused before any job runs, so that a wrongly accepted
    // private address is never sent to; jobs then name loopback forms only.
    let blocked = server_with(&[("allow_cidrs", "[]")]).await;
    let bad_forms = ["ftp://127.0.0.1/hook", "file:///etc/passwd", "not a url"];
    for url in FORBIDDEN {
        let answer = call(
            &blocked,
            "POST",
            "/subscriptions",
            Some(json!({"eventType": "relay", "callbackUrl": url})),
        )
        .await;
        expect(
            answer,
            400,
            Some("invalid_target"),
            &format!("POST /subscriptions {url}"),
        );
    }
    for url in bad_forms {
        let answer = call(
            &blocked,
            "POST",
            "/subscriptions",
            Some(json!({"eventType": "relay", "callbackUrl": url})),
        )
        .await;
        expect(answer, 400, None, &format!("POST /subscriptions {url}"));
    }
    assert_eq!(
        list_subscriptions(&blocked, None).await,
        Vec::<Value>::new(),
        "refused URLs left subscriptions behind"
    );

    let loopback_forms = FORBIDDEN.iter().filter(|url| {
        ["127.", "[::1]", "[::ffff:127.", "0.0.0.0", "localhost"]
            .iter()
            .any(|form| url.starts_with(&format!("http://{form}")))
    });
    for url in loopback_forms {
        let job = call(
            &blocked,
            "POST",
            "/jobs",
            Some(json!({"eventType": "relay", "payload": {}, "callbackUrl": url})),
        )
        .await;
        expect(
            job,
            400,
            Some("invalid_target"),
            &format!("POST /jobs callbackUrl {url}"),
        );
    }
    for url in bad_forms {
        let job = call(
            &blocked,
            "POST",
            "/jobs",
            Some(json!({"eventType": "relay", "callbackUrl": url})),
        )
        .await;
        expect(job, 400, None, &format!("POST /jobs callbackUrl {url}"));
    }
    let jobs = crate::jobs_kit::list_jobs(&blocked, &[]).await;
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(0),
        "refused jobs were stored: {jobs}"
    );
    assert_eq!(
        list_subscriptions(&blocked, None).await,
        Vec::<Value>::new()
    );

    // Opened for loopback, loopback is taken and the rest still refused.
    let open = server_with(&[("allow_cidrs", r#"["127.0.0.0/8"]"#)]).await;
    for url in ["http://169.254.169.254/", "http://10.0.0.1/"] {
        let still_refused = call(
            &open,
            "POST",
            "/subscriptions",
            Some(json!({"eventType": "relay", "callbackUrl": url})),
        )
        .await;
        expect(
            still_refused,
            400,
            Some("invalid_target"),
            &format!("{url} with loopback opened"),
        );
    }
    let receiver = Receiver::always(200).await;
    create_subscription(&open, "relay", &receiver.url()).await;
    post_job(
        &open,
        json!({"eventType": "relay", "callbackUrl": receiver.url_at("/job")}),
    )
    .await;
}

#[tokio::test]
async fn a_jobs_callback_url_makes_sure_of_one_subscription() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;
    let everything = create_subscription(&server, "*", &receiver.url_at("/all")).await;
    let other = create_subscription(&server, "other", &receiver.url_at("/other")).await;
    let off = create_subscription(&server, "relay", &receiver.url_at("/off")).await;
    let answer = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{}", id(&off)),
        Some(json!({"enabled": false})),
    )
    .await;
    expect(answer, 200, None, "disable /off");

    let named = receiver.url_at("/named");
    let mut subscription_ids = Vec::new();
    for n in 0..3 {
        let accepted = post_job(
            &server,
            json!({"eventType": "relay", "payload": {"n": n}, "callbackUrl": named}),
        )
        .await;
        let mut urls: Vec<String> = accepted["callbackUrls"]
            .as_array()
            .unwrap_or_else(|| panic!("no callbackUrls: {accepted}"))
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        urls.sort();
        let mut expected = vec![receiver.url_at("/all"), named.clone()];
        expected.sort();
        assert_eq!(urls, expected, "callbackUrls of job {n}: {accepted}");
        let job_id = id(&accepted);
        wait_job(&server, &job_id).await;
        let found =
            wait_deliveries(&server, &job_id, SOON, "two deliveries", |d| d.len() == 2).await;
        let to_named = found
            .iter()
            .find(|d| d["url"] == named)
            .unwrap_or_else(|| panic!("no delivery to {named}: {found:#?}"));
        subscription_ids.push(to_named["subscriptionId"].clone());
        assert!(
            found
                .iter()
                .any(|d| d["subscriptionId"] == everything["id"]),
            "no delivery to the * subscription: {found:#?}"
        );
        assert!(
            !found.iter().any(|d| d["subscriptionId"] == other["id"]),
            "a relay result went to the `other` subscription: {found:#?}"
        );
    }
    assert!(subscription_ids[0].is_string(), "{subscription_ids:?}");
    assert!(
        subscription_ids.iter().all(|s| *s == subscription_ids[0]),
        "one URL, several subscriptions: {subscription_ids:?}"
    );
    let relays = list_subscriptions(&server, Some("relay")).await;
    let to_named: Vec<&Value> = relays
        .iter()
        .filter(|s| s["callbackUrl"] == named)
        .collect();
    assert_eq!(to_named.len(), 1, "{relays:#?}");
    assert_eq!(to_named[0]["id"], subscription_ids[0]);
    assert_eq!(to_named[0]["enabled"], true);
}

#[tokio::test]
async fn concurrent_first_requests_naming_one_callback_url_all_succeed() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;
    let url = receiver.url_at("/together");
    let requests = (0..8).map(|n| {
        call(
            &server,
            "POST",
            "/jobs",
            Some(json!({"eventType": "relay", "payload": {"n": n}, "callbackUrl": url})),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let statuses: Vec<(u16, Value)> = answers
        .into_iter()
        .filter(|(status, _)| *status != 202)
        .collect();
    assert!(
        statuses.is_empty(),
        "8 concurrent jobs naming one new callbackUrl: not all 202: {statuses:#?}"
    );
    assert_eq!(list_subscriptions(&server, Some("relay")).await.len(), 1);
}

// ---------------------------------------------------------------------------------
// Delivery.

#[tokio::test]
async fn a_completed_job_is_posted_signed_to_each_matching_subscription() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;
    let exact = create_subscription(&server, "relay", &receiver.url_at("/exact")).await;
    let wildcard = create_subscription(&server, "*", &receiver.url_at("/wildcard")).await;
    create_subscription(&server, "other", &receiver.url_at("/other")).await;
    let disabled = create_subscription(&server, "relay", &receiver.url_at("/disabled")).await;
    let answer = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{}", id(&disabled)),
        Some(json!({"enabled": false})),
    )
    .await;
    expect(answer, 200, None, "disable");

    let payload = json!({"service": "billing", "state": "down", "note": "é ✓"});
    let metadata = json!({"tenant": "t-1"});
    let created = post_job(
        &server,
        json!({"eventType": "relay", "payload": payload, "metadata": metadata}),
    )
    .await;
    let job_id = id(&created);
    wait_job(&server, &job_id).await;

    let hits = receiver.wait_hits(2, SOON).await;
    receiver
        .assert_stays_at(
            2,
            Duration::from_millis(700),
            "one request per matching enabled subscription",
        )
        .await;
    let mut paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/exact", "/wildcard"]);
    assert_ne!(
        hits[0].webhook_id(),
        hits[1].webhook_id(),
        "each delivery has its own id"
    );

    for hit in &hits {
        let subscription = if hit.path == "/exact" {
            &exact
        } else {
            &wildcard
        };
        assert_signed(hit, &secret(subscription));
        let other = if hit.path == "/exact" {
            &wildcard
        } else {
            &exact
        };
        assert!(
            !signed_by(hit, &secret(other)),
            "signed with another subscription's secret"
        );
        assert_eq!(signatures(hit).len(), 1, "{:?}", hit.headers);

        let body = hit.json();
        assert_eq!(body["jobId"], job_id.as_str(), "{body}");
        assert_eq!(body["eventType"], "relay");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["metadata"], metadata);
        assert_eq!(body["result"]["status"], "success", "{body}");
        assert!(body["result"]["message"].is_string(), "{body}");
        assert_eq!(body["result"]["data"], payload, "{body}");
    }

    let found = wait_deliveries(&server, &job_id, SOON, "both succeeded", |d| {
        d.len() == 2 && d.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    for delivery in &found {
        let hit = hits
            .iter()
            .find(|h| h.webhook_id() == delivery["id"])
            .unwrap_or_else(|| {
                panic!("delivery {} was not received: {delivery:#}", delivery["id"])
            });
        assert!(delivery["url"].as_str().unwrap().ends_with(&hit.path));
        let log = attempt_log(delivery);
        assert_eq!(log.len(), 1, "{delivery:#}");
        assert_eq!(log[0]["statusCode"], 200, "{delivery:#}");
        assert_eq!(log[0]["error"], Value::Null, "{delivery:#}");
        assert!(log[0]["durationMs"].is_u64(), "{delivery:#}");
    }
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_during_the_grace() {
    let server = server_with(&[("secret_grace", r#""1h""#)]).await;
    let receiver = Receiver::always(200).await;
    let created = create_subscription(&server, "relay", &receiver.url()).await;
    let old = secret(&created);

    let rotated = expect(
        call(
            &server,
            "POST",
            &format!("/subscriptions/{}/rotate-secret", id(&created)),
            None,
        )
        .await,
        200,
        None,
        "rotate-secret",
    );
    let new = secret(&rotated);
    assert_ne!(new, old);
    assert!(secret_bytes(&new).len() >= 24);
    assert_eq!(
        get_subscription(&server, &id(&created)).await["secret"],
        new.as_str()
    );

    relay(&server, json!({"after": "rotation"})).await;
    let hit = receiver.wait_hits(1, SOON).await.remove(0);
    let entries = signatures(&hit);
    assert_eq!(
        entries.len(),
        2,
        "two signatures during the grace: {entries:?}"
    );
    assert_signed(&hit, &new);
    assert!(
        signed_by(&hit, &old),
        "no signature verifies with the old secret: {entries:?}"
    );

    let unknown = call(
        &server,
        "POST",
        &format!("/subscriptions/{}/rotate-secret", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    expect(
        unknown,
        404,
        Some("subscription_not_found"),
        "rotate an unknown subscription",
    );
}

#[tokio::test]
async fn without_a_grace_only_the_new_secret_signs() {
    let server = server_with(&[("secret_grace", r#""0s""#)]).await;
    let receiver = Receiver::always(200).await;
    let created = create_subscription(&server, "relay", &receiver.url()).await;
    let old = secret(&created);
    let rotated = expect(
        call(
            &server,
            "POST",
            &format!("/subscriptions/{}/rotate-secret", id(&created)),
            None,
        )
        .await,
        200,
        None,
        "rotate-secret",
    );
    let new = secret(&rotated);

    relay(&server, json!({})).await;
    let hit = receiver.wait_hits(1, SOON).await.remove(0);
    assert_eq!(signatures(&hit).len(), 1, "{:?}", hit.headers);
    assert_signed(&hit, &new);
    assert!(!signed_by(&hit, &old), "the old secret still signs");
}

// ---------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn a_failing_receiver_gets_the_same_message_again_on_schedule() {
    let server = server_with(&[("schedule", r#"["200ms", "400ms", "800ms"]"#)]).await;
    let receiver = Receiver::start(|n| Reply::Status(if n <= 3 { 500 } else { 200 })).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    let job_id = relay(&server, json!({"retry": true})).await;

    let hits = receiver.wait_hits(4, Duration::from_secs(8)).await;
    receiver
        .assert_stays_at(4, Duration::from_millis(1200), "nothing after the 2xx")
        .await;
    for hit in &hits {
        assert_signed(hit, &secret(&subscription));
        assert_eq!(hit.webhook_id(), hits[0].webhook_id(), "request {}", hit.n);
        assert_eq!(hit.body, hits[0].body, "request {} has other bytes", hit.n);
    }
    let schedule = [200u64, 400, 800].map(Duration::from_millis);
    for (i, wait) in schedule.iter().enumerate() {
        let gap = hits[i + 1].at - hits[i].at;
        assert!(
            gap + Duration::from_millis(30) >= *wait && gap <= *wait + SLACK,
            "gap before attempt {} is {gap:?}; the schedule says {wait:?}",
            i + 2
        );
    }

    let delivery = wait_delivery_status(&server, &job_id, "succeeded", SOON).await;
    assert_eq!(delivery["id"], hits[0].webhook_id().as_str());
    assert_eq!(delivery["attempts"], 4, "{delivery:#}");
    let log = attempt_log(&delivery);
    assert_eq!(log.len(), 4, "{delivery:#}");
    for (n, attempt) in log.iter().enumerate() {
        let failed = n < 3;
        assert_eq!(
            attempt["statusCode"],
            if failed { 500 } else { 200 },
            "{attempt}"
        );
        assert!(attempt["durationMs"].is_u64(), "{attempt}");
        assert_eq!(attempt["response"], format!("reply {}", n + 1), "{attempt}");
        assert_eq!(attempt["error"].is_string(), failed, "{attempt}");
    }
}

#[tokio::test]
async fn a_delivery_dies_after_its_schedule_and_can_be_sent_again() {
    let server = server_with(&[("schedule", r#"["200ms", "200ms"]"#)]).await;
    let receiver = Receiver::start(|n| Reply::Status(if n <= 3 { 500 } else { 200 })).await;
    create_subscription(&server, "relay", &receiver.url()).await;
    let job_id = relay(&server, json!({"doomed": true})).await;

    let dead = wait_delivery_status(&server, &job_id, "dead", SOON).await;
    assert_eq!(attempt_log(&dead).len(), 3, "{dead:#}");
    assert_eq!(dead["attempts"], 3, "{dead:#}");
    receiver
        .assert_stays_at(
            3,
            Duration::from_millis(800),
            "a dead delivery is not tried again",
        )
        .await;
    let delivery_id = id(&dead);

    let retried = call(
        &server,
        "POST",
        &format!("/deliveries/{delivery_id}/retry"),
        None,
    )
    .await;
    expect(retried, 202, None, "retry of a dead delivery");
    let hits = receiver.wait_hits(4, SOON).await;
    assert_eq!(
        hits[3].webhook_id(),
        delivery_id,
        "the retry is the same message"
    );
    assert_eq!(hits[3].body, hits[0].body);
    let done = wait_delivery_status(&server, &job_id, "succeeded", SOON).await;
    assert_eq!(
        attempt_log(&done).last().unwrap()["statusCode"],
        200,
        "{done:#}"
    );

    let again = call(
        &server,
        "POST",
        &format!("/deliveries/{delivery_id}/retry"),
        None,
    )
    .await;
    expect(
        again,
        409,
        Some("delivery_not_retryable"),
        "retry of a succeeded delivery",
    );
    let unknown = call(
        &server,
        "POST",
        "/deliveries/msg_00000000000000000000000000000000/retry",
        None,
    )
    .await;
    expect(
        unknown,
        404,
        Some("delivery_not_found"),
        "retry of an unknown delivery",
    );
    receiver
        .assert_stays_at(4, Duration::from_millis(500), "after the refused retries")
        .await;
}

#[tokio::test]
async fn retrying_an_old_succeeded_delivery_is_a_conflict_however_many_came_after() {
    let server = server_with(&[]).await;
    let receiver = Receiver::always(200).await;
    create_subscription(&server, "relay", &receiver.url()).await;
    let first_job = relay(&server, json!({"first": true})).await;
    let first = wait_delivery_status(&server, &first_job, "succeeded", SOON).await;

    // 200 newer deliveries, from one job of another type with 200 subscribers.
    for n in 0..200 {
        create_subscription(&server, "other", &receiver.url_at(&format!("/other/{n}"))).await;
    }
    let created = post_job(&server, json!({"eventType": "other"})).await;
    let other_job = id(&created);
    wait_job(&server, &other_job).await;
    receiver.wait_hits(201, Duration::from_secs(15)).await;

    let answer = call(
        &server,
        "POST",
        &format!("/deliveries/{}/retry", id(&first)),
        None,
    )
    .await;
    expect(
        answer,
        409,
        Some("delivery_not_retryable"),
        "retry of the first, succeeded delivery",
    );
}

#[tokio::test]
async fn retry_after_on_429_and_503_replaces_the_scheduled_wait() {
    let server = server_with(&[("schedule", r#"["10s"]"#), ("retry_after_max", r#""1h""#)]).await;
    let busy = Receiver::start(|n| match n {
        1 => Reply::WithHeaders(429, vec![("retry-after", "1".into())]),
        _ => Reply::Status(200),
    })
    .await;
    let unavailable = Receiver::start(|n| match n {
        1 => Reply::WithHeaders(503, vec![("retry-after", "1".into())]),
        _ => Reply::Status(200),
    })
    .await;
    // An HTTP date two seconds ahead: whole seconds, so the wait is 1 to 2 s.
    let dated = Receiver::start(|n| match n {
        1 => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(2);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            Reply::WithHeaders(503, vec![("retry-after", date)])
        }
        _ => Reply::Status(200),
    })
    .await;
    create_subscription(&server, "relay", &busy.url()).await;
    create_subscription(&server, "relay", &unavailable.url()).await;
    create_subscription(&server, "relay", &dated.url()).await;
    relay(&server, json!({})).await;

    for (name, receiver, least, most) in [
        ("429, Retry-After: 1", &busy, 950, 1000),
        ("503, Retry-After: 1", &unavailable, 950, 1000),
        ("503, Retry-After: <date 2 s ahead>", &dated, 900, 2000),
    ] {
        let hits = receiver.wait_hits(2, SOON).await;
        let gap = hits[1].at - hits[0].at;
        assert!(
            gap >= Duration::from_millis(least) && gap <= Duration::from_millis(most) + SLACK,
            "{name}, schedule 10s: the retry came after {gap:?}"
        );
        assert_eq!(hits[1].webhook_id(), hits[0].webhook_id());
    }
}

#[tokio::test]
async fn retry_after_is_capped_by_retry_after_max() {
    let server = server_with(&[("schedule", r#"["10s"]"#), ("retry_after_max", r#""2s""#)]).await;
    let receiver = Receiver::start(|n| match n {
        1 => Reply::WithHeaders(429, vec![("retry-after", "60".into())]),
        _ => Reply::Status(200),
    })
    .await;
    create_subscription(&server, "relay", &receiver.url()).await;
    relay(&server, json!({})).await;
    let hits = receiver.wait_hits(2, Duration::from_secs(6)).await;
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(1950) && gap <= Duration::from_secs(2) + SLACK,
        "Retry-After: 60 capped at 2s: the retry came after {gap:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = server_with(&[("schedule", r#"["10s"]"#)]).await;
    let elsewhere = Receiver::always(200).await;
    let location = elsewhere.url();
    let redirecting =
        Receiver::start(move |_| Reply::WithHeaders(302, vec![("location", location.clone())]))
            .await;
    create_subscription(&server, "relay", &redirecting.url()).await;
    let job_id = relay(&server, json!({})).await;

    redirecting.wait_hits(1, SOON).await;
    let delivery = wait_deliveries(&server, &job_id, SOON, "one attempt", |d| {
        d.len() == 1 && !attempt_log(&d[0]).is_empty()
    })
    .await
    .remove(0);
    assert_eq!(
        delivery["status"], "failed",
        "a 302 is not a delivery: {delivery:#}"
    );
    let log = attempt_log(&delivery);
    assert_eq!(log[0]["statusCode"], 302, "{delivery:#}");
    assert!(log[0]["error"].is_string(), "{delivery:#}");
    elsewhere
        .assert_stays_at(0, Duration::from_millis(700), "the redirect's target")
        .await;
}

#[tokio::test]
async fn deleting_a_subscription_ends_its_pending_deliveries() {
    let server = server_with(&[(
        "schedule",
        r#"["300ms", "300ms", "300ms", "300ms", "300ms"]"#,
    )])
    .await;
    let receiver = Receiver::always(500).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    let job_id = relay(&server, json!({})).await;
    receiver.wait_hits(1, SOON).await;
    let (status, body) = call(
        &server,
        "DELETE",
        &format!("/subscriptions/{}", id(&subscription)),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let delivery = wait_delivery_status(&server, &job_id, "dead", SOON).await;
    assert!(delivery["lastError"].is_string(), "{delivery:#}");
    let count = receiver.hits().len();
    receiver
        .assert_stays_at(count, Duration::from_millis(900), "after DELETE")
        .await;
}

#[tokio::test]
async fn pending_retries_follow_a_subscription_to_its_new_url() {
    let server = server_with(&[("schedule", r#"["500ms", "500ms", "500ms", "500ms"]"#)]).await;
    let broken = Receiver::always(500).await;
    let fixed = Receiver::always(200).await;
    let subscription = create_subscription(&server, "relay", &broken.url()).await;
    let job_id = relay(&server, json!({})).await;
    let first = broken.wait_hits(1, SOON).await.remove(0);

    let moved = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{}", id(&subscription)),
        Some(json!({"callbackUrl": fixed.url()})),
    )
    .await;
    expect(moved, 200, None, "PATCH callbackUrl");
    let count = broken.hits().len();
    let hit = fixed.wait_hits(1, SOON).await.remove(0);
    assert_eq!(
        hit.webhook_id(),
        first.webhook_id(),
        "the pending delivery, moved"
    );
    assert_signed(&hit, &secret(&subscription));
    wait_delivery_status(&server, &job_id, "succeeded", SOON).await;
    broken
        .assert_stays_at(
            count,
            Duration::from_millis(300),
            "the old URL after the PATCH",
        )
        .await;
}

#[tokio::test]
async fn bad_delivery_queries_are_refused() {
    let server = server_with(&[]).await;
    for query in [
        "status=lost",
        "limit=0",
        "limit=201",
        "jobId=nope",
        "subscriptionId=nope",
    ] {
        let answer = call(&server, "GET", &format!("/deliveries?{query}"), None).await;
        expect(
            answer,
            400,
            Some("invalid_query"),
            &format!("GET /deliveries?{query}"),
        );
    }
    assert_eq!(
        deliveries(&server, "status=dead&limit=200").await,
        Vec::<Value>::new()
    );
}

// ---------------------------------------------------------------------------------
// Subscription health.

#[tokio::test]
async fn gone_disables_the_subscription_at_once() {
    let server = server_with(&[("schedule", r#"["200ms", "200ms", "200ms"]"#)]).await;
    let mut ops = operations(&server).await;
    let receiver = Receiver::start(|n| Reply::Status(if n == 1 { 410 } else { 200 })).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    let sub_id = id(&subscription);
    let job_id = relay(&server, json!({})).await;

    let events = operations_until(&mut ops, "subscription.disabled").await;
    let (_, data) = events.last().unwrap();
    assert_eq!(data["subscriptionId"], sub_id.as_str(), "{data}");
    assert_eq!(data["callbackUrl"], receiver.url(), "{data}");

    let shown = get_subscription(&server, &sub_id).await;
    assert_eq!(shown["enabled"], false, "{shown:#}");
    assert!(
        shown["disabledReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "no disabledReason: {shown:#}"
    );
    let delivery = wait_delivery_status(&server, &job_id, "dead", SOON).await;
    assert_eq!(attempt_log(&delivery).len(), 1, "{delivery:#}");
    assert_eq!(attempt_log(&delivery)[0]["statusCode"], 410);

    let later = relay(&server, json!({"later": true})).await;
    receiver
        .assert_stays_at(1, Duration::from_millis(800), "after 410 Gone")
        .await;
    assert_eq!(job_deliveries(&server, &later).await, Vec::<Value>::new());

    // Enabled again by hand, it starts afresh.
    let enabled = call(
        &server,
        "PATCH",
        &format!("/subscriptions/{sub_id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    let enabled = expect(enabled, 200, None, "enable again");
    assert_eq!(enabled["enabled"], true, "{enabled}");
    assert_eq!(enabled["disabledReason"], Value::Null, "{enabled}");
    let again = relay(&server, json!({"again": true})).await;
    receiver.wait_hits(2, SOON).await;
    assert_eq!(job_deliveries(&server, &again).await.len(), 1);
}

#[tokio::test]
async fn failing_and_recovering_are_told_on_the_operations_channel() {
    let server = server_with(&[("schedule", r#"["200ms", "200ms"]"#)]).await;
    let mut ops = operations(&server).await;
    let receiver = Receiver::start(|n| Reply::Status(if n == 1 { 500 } else { 200 })).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    relay(&server, json!({})).await;

    let events = operations_until(&mut ops, "subscription.recovered").await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["subscription.failing", "subscription.recovered"]);
    for (name, data) in &events {
        assert_eq!(data["subscriptionId"], subscription["id"], "{name}: {data}");
        assert_eq!(data["eventType"], "relay", "{name}: {data}");
    }
    assert!(events[0].1["failingSince"].is_string(), "{:?}", events[0]);
    let shown = get_subscription(&server, &id(&subscription)).await;
    assert_eq!(shown["enabled"], true);
    assert_eq!(shown["failingSince"], Value::Null, "{shown:#}");
    assert_silent(&mut ops, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_subscription_failing_past_disable_after_is_disabled() {
    let server = server_with(&[
        (
            "schedule",
            r#"["300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]"#,
        ),
        ("disable_after", r#""1s""#),
    ])
    .await;
    let mut ops = operations(&server).await;
    let receiver = Receiver::always(500).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;
    let job_id = relay(&server, json!({})).await;

    let events = operations_until(&mut ops, "subscription.disabled").await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["subscription.failing", "subscription.disabled"],
        "{events:?}"
    );
    let shown = get_subscription(&server, &id(&subscription)).await;
    assert_eq!(shown["enabled"], false, "{shown:#}");
    assert!(shown["disabledReason"].is_string(), "{shown:#}");

    let delivery = wait_delivery_status(&server, &job_id, "dead", SOON).await;
    let attempts = receiver.hits().len();
    assert!(
        (3..=6).contains(&attempts),
        "attempts over about a second at 300 ms: {attempts}; {delivery:#}"
    );
    receiver
        .assert_stays_at(attempts, Duration::from_millis(900), "once disabled")
        .await;
    assert_silent(&mut ops, Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------
// Slow receivers.

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_another() {
    let server = server_with(&[
        ("timeout", r#""3s""#),
        ("schedule", r#"["10s"]"#),
        ("max_in_flight", "4"),
        ("max_in_flight_per_target", "2"),
    ])
    .await;
    let hanging = Receiver::start(|_| Reply::Hang).await;
    let fast = Receiver::always(200).await;
    create_subscription(&server, "relay", &hanging.url()).await;
    create_subscription(&server, "relay", &fast.url()).await;

    let started = Instant::now();
    relay(&server, json!({"n": 0})).await;
    fast.wait_hits(1, SOON).await;
    let first = fast.hits()[0].at - started;
    assert!(
        first <= Duration::from_secs(1),
        "the fast receiver waited {first:?}"
    );
    hanging.wait_hits(1, SOON).await;

    // More deliveries to the hanging receiver than it may have in flight.
    let started = Instant::now();
    for n in 1..=6 {
        relay(&server, json!({"n": n})).await;
    }
    fast.wait_hits(7, SOON).await;
    let last = fast.hits()[6].at - started;
    assert!(
        last <= Duration::from_millis(1500),
        "six deliveries to the fast receiver took {last:?} beside a hanging one"
    );
    assert!(
        hanging.hits().len() <= 2,
        "the hanging receiver holds {} requests; max_in_flight_per_target is 2",
        hanging.hits().len()
    );
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_a_failed_attempt() {
    let server = server_with(&[("timeout", r#""1s""#), ("schedule", r#"["10s"]"#)]).await;
    let slow =
        Receiver::start(|_| Reply::After(Duration::from_secs(3), Box::new(Reply::Status(200))))
            .await;
    create_subscription(&server, "relay", &slow.url()).await;
    let job_id = relay(&server, json!({})).await;
    let delivery = wait_deliveries(&server, &job_id, SOON, "a timed-out attempt", |d| {
        d.len() == 1 && !attempt_log(&d[0]).is_empty()
    })
    .await
    .remove(0);
    assert_eq!(delivery["status"], "failed", "{delivery:#}");
    let attempt = &attempt_log(&delivery)[0];
    assert_eq!(attempt["statusCode"], Value::Null, "{attempt}");
    assert!(attempt["error"].is_string(), "{attempt}");
    let took = attempt["durationMs"].as_u64().unwrap();
    assert!((900..=2500).contains(&took), "a 1 s timeout took {took} ms");
}

// ---------------------------------------------------------------------------------
// Replays.

#[tokio::test]
async fn redeliver_sends_a_finished_jobs_result_again() {
    let hanging_worker = crate::jobs_kit::Worker::always(crate::jobs_kit::Answer::Hang).await;
    let blocked_type = crate::jobs_kit::http_type(
        "stuck",
        &hanging_worker.url,
        "concurrency = 1\ntimeout = \"30s\"\nattempts = 1",
    );
    let toml = format!("{}{blocked_type}", config(&[]));
    let server = TestServer::start_with(&toml).await;
    let receiver = Receiver::always(200).await;
    let subscription = create_subscription(&server, "relay", &receiver.url()).await;

    let job_id = relay(&server, json!({"again": [1, 2]})).await;
    let first = receiver.wait_hits(1, SOON).await.remove(0);
    let answer = call(&server, "POST", &format!("/jobs/{job_id}/redeliver"), None).await;
    let body = expect(answer, 202, None, "redeliver");
    let written = body["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(written.len(), 1, "{body}");

    let second = receiver.wait_hits(2, SOON).await.remove(1);
    assert_signed(&second, &secret(&subscription));
    assert_ne!(
        second.webhook_id(),
        first.webhook_id(),
        "a replay is a new message"
    );
    assert_eq!(written[0]["id"], second.webhook_id().as_str());
    assert_eq!(second.json(), first.json(), "the same result");
    let found = wait_deliveries(&server, &job_id, SOON, "two succeeded", |d| {
        d.len() == 2 && d.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(found.len(), 2);

    // A job still waiting has nothing to deliver.
    let running = id(&post_job(&server, json!({"eventType": "stuck"})).await);
    crate::jobs_kit::wait_for_status(&server, &running, &["started"]).await;
    let queued = id(&post_job(&server, json!({"eventType": "stuck"})).await);
    assert_eq!(
        crate::jobs_kit::get_job(&server, &queued).await["status"],
        "queued"
    );
    for (job, what) in [(&queued, "a queued job"), (&running, "a started job")] {
        let answer = call(&server, "POST", &format!("/jobs/{job}/redeliver"), None).await;
        expect(
            answer,
            409,
            Some("job_not_finished"),
            &format!("redeliver {what}"),
        );
    }
    let unknown = call(
        &server,
        "POST",
        &format!("/jobs/{}/redeliver", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    expect(
        unknown,
        404,
        Some("job_not_found"),
        "redeliver an unknown job",
    );
    receiver
        .assert_stays_at(2, Duration::from_millis(500), "after the refused replays")
        .await;
}

// ---------------------------------------------------------------------------------
// Crashes and restarts.

/// Jobs complete while the receiver's port is closed; the server then ends (killed
/// or stopped) and a new one on the same store, with the receiver back on that port,
/// delivers each result exactly once.
async fn deliveries_survive_a_restart(kill: bool) {
    let dir = Scratch::new();
    let schedule = format!("[{}]", vec!["\"300ms\""; 20].join(", "));
    let toml = config(&[("schedule", schedule.as_str())]);
    let port = closed_port().await;
    let url = format!("http://127.0.0.1:{port}/hook");

    let first = Isolated::start(&toml, &dir.0).await;
    let sub_id = id(&create_subscription(first.server(), "relay", &url).await);
    let mut jobs = Vec::new();
    for n in 0..3 {
        jobs.push(relay(first.server(), json!({"n": n})).await);
    }
    let mut ids = Vec::new();
    for job in &jobs {
        let found = wait_deliveries(first.server(), job, SOON, "a failed attempt", |d| {
            d.len() == 1 && d[0]["status"] == "failed"
        })
        .await;
        let log = attempt_log(&found[0]);
        assert!(log[0]["error"].is_string(), "{found:#?}");
        ids.push(id(&found[0]));
    }
    if kill {
        first.kill();
    } else {
        first.stop().await;
    }

    let receiver = Receiver::start_on(port, |_| Reply::Status(200)).await;
    let second = Isolated::start(&toml, &dir.0).await;
    let subscription = get_subscription(second.server(), &sub_id).await;
    receiver.wait_hits(3, SOON).await;
    receiver
        .assert_stays_at(3, Duration::from_millis(1500), "each delivery once")
        .await;
    for hit in receiver.hits() {
        assert_signed(&hit, &secret(&subscription));
    }
    let mut received: Vec<String> = receiver.hits().iter().map(Hit::webhook_id).collect();
    received.sort();
    ids.sort();
    assert_eq!(received, ids, "the deliveries received, by webhook-id");
    for job in &jobs {
        let delivery = wait_delivery_status(second.server(), job, "succeeded", SOON).await;
        assert_eq!(attempt_log(&delivery).last().unwrap()["statusCode"], 200);
    }
    drop(second);
}

#[tokio::test]
async fn deliveries_pending_at_a_kill_arrive_once_after_a_restart() {
    deliveries_survive_a_restart(true).await;
}

#[tokio::test]
async fn deliveries_pending_at_a_graceful_stop_arrive_once_after_a_restart() {
    deliveries_survive_a_restart(false).await;
}

#[tokio::test]
async fn targets_refused_by_a_new_policy_are_refused_when_sending() {
    let dir = Scratch::new();
    let receiver = Receiver::always(200).await;
    let literal = receiver.url_at("/literal");
    let named = format!("http://localhost:{}/named", receiver.port);

    let open = config(&[("allow_cidrs", r#"["127.0.0.0/8", "::1/128"]"#)]);
    let first = Isolated::start(&open, &dir.0).await;
    create_subscription(first.server(), "relay", &literal).await;
    create_subscription(first.server(), "relay", &named).await;
    first.stop().await;

    let closed = config(&[("allow_cidrs", "[]"), ("schedule", r#"["10s"]"#)]);
    let second = Isolated::start(&closed, &dir.0).await;
    let job_id = relay(second.server(), json!({})).await;
    let found = wait_deliveries(second.server(), &job_id, SOON, "two attempts", |d| {
        d.len() == 2 && d.iter().all(|d| !attempt_log(d).is_empty())
    })
    .await;
    for delivery in &found {
        assert_ne!(delivery["status"], "succeeded", "{delivery:#}");
        let attempt = &attempt_log(delivery)[0];
        assert_eq!(attempt["statusCode"], Value::Null, "{delivery:#}");
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("127.0.0.1") || error.contains("::1"),
            "the error does not name the refused address: {delivery:#}"
        );
    }
    receiver
        .assert_stays_at(0, Duration::from_millis(500), "refused targets")
        .await;
    let failed = deliveries(second.server(), "status=failed").await;
    assert_eq!(failed.len(), 2, "{failed:#?}");
}
