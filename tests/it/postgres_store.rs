//! The PostgreSQL store against the real database on loopback
//! (`TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Each test works in a schema of its own, `herald_test_…`, which a guard drops when
//! the test ends, passed or failed. Two stores opened on one schema are two nodes:
//! two pools that share nothing but the database.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use herald::delivery::{Attempt, DeliveryFilter, DeliveryKind, DeliveryStatus};
use herald::jobs::{JobFilter, JobStatus, NewJob, WebhookResult};
use herald::store::{
    AttemptOutcome, Cancelled, Health, Inserted, Outbox, PostgresStore, Store, SubscriptionPatch,
};

use crate::jobs_kit::{create_job, id_of, jobs_config, wait_until_ended};
use crate::support::TestServer;

/// Longest any one step of these tests may take, concurrent ones included.
const STEP: Duration = Duration::from_secs(30);

/// How long dropping a test schema may wait for locks.
const DROP_WAIT: Duration = Duration::from_secs(15);

const APP: &str = "app-1";

fn database_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema this test made; dropped with everything in it when the guard goes, on
/// a thread of its own so that a panicking test still cleans up.
///
/// The tests run on a multi-threaded runtime because of this guard: while it waits,
/// the runtime's workers must still be free to hand the stores' connections back,
/// which rolls back a transaction left open and releases its locks.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Schema {
        Schema {
            name: format!("herald_test_{}", Uuid::new_v4().simple()),
        }
    }

    /// A store (a node) working in this schema, creating it on first use.
    async fn open(&self) -> PostgresStore {
        within(PostgresStore::open(&database_url(), Some(&self.name)))
            .await
            .unwrap_or_else(|e| panic!("cannot open the PostgreSQL store: {e:?}"))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the schema");
            let result = runtime.block_on(drop_schema(&name));
            let _ = done.send(result);
        });
        match finished.recv_timeout(DROP_WAIT + Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("cannot drop schema {}: {error}", self.name),
            Err(_) => eprintln!("dropping schema {} did not finish in time", self.name),
        }
    }
}

async fn drop_schema(name: &str) -> Result<(), sqlx::Error> {
    use sqlx::{Connection, Executor};
    let mut connection = sqlx::PgConnection::connect(&database_url()).await?;
    let wait = format!("SET lock_timeout = '{}s'", DROP_WAIT.as_secs());
    connection.execute(sqlx::AssertSqlSafe(wait)).await?;
    let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
    connection.execute(sqlx::AssertSqlSafe(drop)).await?;
    connection.close().await
}

/// Runs `step`, failing the test if it takes longer than `STEP`.
async fn within<T>(step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, step)
        .await
        .expect("a store step took longer than 30 s")
}

fn new_job(event_type: &str) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        app_id: APP.into(),
        event_type: event_type.into(),
        channel: Some("jobs".into()),
        callback_url: None,
        payload: json!({"n": 1, "text": "grüße"}),
        metadata: json!({"source": "test"}),
        max_attempts: 3,
        idempotency_key: None,
        request_digest: None,
    }
}

async fn insert(store: &PostgresStore, job: &NewJob) -> herald::jobs::Job {
    match store.insert_job(job).await.unwrap() {
        Inserted::New(job) => job,
        Inserted::Existing(job, _) => panic!("job {} already existed", job.id),
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// `Store::claim` of a `relay` job (`Outbox` has a `claim` too).
async fn claim_job(
    store: &PostgresStore,
    lease: Duration,
) -> Result<Option<herald::jobs::Job>, herald::store::StoreError> {
    Store::claim(store, APP, "relay", lease).await
}

/// `Outbox::claim`.
async fn claim_deliveries(
    store: &PostgresStore,
    busy: &[String],
    limit: u32,
    lease_until: chrono::DateTime<Utc>,
) -> Result<Vec<herald::delivery::Delivery>, herald::store::StoreError> {
    Outbox::claim(store, busy, limit, lease_until).await
}

// ---------------------------------------------------------------------------------
// Jobs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_stored_read_back_listed_and_paged() {
    let schema = Schema::new();
    let store = schema.open().await;

    let mut made = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        made.push(insert(&store, &new_job(kind)).await);
    }
    let mut other = new_job("even");
    other.app_id = "app-2".into();
    insert(&store, &other).await;

    // One job, as stored.
    let first = &made[0];
    let read = store.job(APP, first.id).await.unwrap().unwrap();
    assert_eq!(&read, first);
    assert_eq!(read.status, JobStatus::Queued);
    assert_eq!(read.payload, json!({"n": 1, "text": "grüße"}));
    assert_eq!(read.created_at.timestamp_subsec_nanos() % 1_000_000, 0);
    assert!(store.job("app-2", first.id).await.unwrap().is_none());
    let steps = store.steps(first.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].kind, "queued");

    // Every page in turn, newest first, by (created_at, id).
    let mut expected: Vec<_> = made.iter().map(|j| (j.created_at, j.id)).collect();
    expected.sort();
    expected.reverse();
    let mut seen = Vec::new();
    let mut filter = JobFilter {
        limit: 3,
        ..JobFilter::default()
    };
    for _ in 0..10 {
        let page = store.jobs(APP, &filter).await.unwrap();
        seen.extend(page.iter().map(|j| (j.created_at, j.id)));
        match page.last() {
            Some(last) if page.len() == 3 => filter.after = Some((last.created_at, last.id)),
            _ => break,
        }
    }
    assert_eq!(seen, expected);

    // Filters.
    let odd = JobFilter {
        event_type: Some("odd".into()),
        limit: 50,
        ..JobFilter::default()
    };
    assert_eq!(store.jobs(APP, &odd).await.unwrap().len(), 3);
    let queued = JobFilter {
        status: Some(JobStatus::Queued),
        limit: 50,
        ..JobFilter::default()
    };
    assert_eq!(store.jobs(APP, &queued).await.unwrap().len(), 7);
    let completed = JobFilter {
        status: Some(JobStatus::Completed),
        limit: 50,
        ..JobFilter::default()
    };
    assert!(store.jobs(APP, &completed).await.unwrap().is_empty());
    let future = JobFilter {
        since: Some(Utc::now() + chrono::Duration::hours(1)),
        limit: 50,
        ..JobFilter::default()
    };
    assert!(store.jobs(APP, &future).await.unwrap().is_empty());
    let past = JobFilter {
        until: Some(Utc::now() + chrono::Duration::hours(1)),
        limit: 50,
        ..JobFilter::default()
    };
    assert_eq!(store.jobs(APP, &past).await.unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_makes_one_job_under_concurrent_inserts() {
    let schema = Schema::new();
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &node_a } else { &node_b });
            tokio::spawn(async move {
                let mut job = new_job("relay");
                job.idempotency_key = Some("key-1".into());
                job.request_digest = Some("digest-1".into());
                store.insert_job(&job).await.unwrap()
            })
        })
        .collect();
    let outcomes = within(futures::future::join_all(tasks)).await;

    let mut new = Vec::new();
    let mut existing = Vec::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            Inserted::New(job) => new.push(job.id),
            Inserted::Existing(job, digest) => {
                assert_eq!(digest.as_deref(), Some("digest-1"));
                existing.push(job.id);
            }
        }
    }
    assert_eq!(new.len(), 1, "exactly one insert creates the job");
    assert_eq!(existing.len(), 9);
    assert!(existing.iter().all(|id| *id == new[0]));
    let all = JobFilter {
        limit: 50,
        ..JobFilter::default()
    };
    assert_eq!(node_a.jobs(APP, &all).await.unwrap().len(), 1);
    assert_eq!(node_a.steps(new[0]).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_claiming_at_once_take_every_job_exactly_once() {
    let schema = Schema::new();
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);
    let mut queued = HashSet::new();
    for _ in 0..50 {
        queued.insert(insert(&node_a, &new_job("relay")).await.id);
    }

    // Four claimers per node, each claiming until nothing is left.
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &node_a } else { &node_b });
            tokio::spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..100 {
                    match claim_job(&store, LEASE).await.unwrap() {
                        Some(job) => taken.push(job),
                        None => break,
                    }
                    // A moment of "work", so that every claimer takes a share.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (i % 2, taken)
            })
        })
        .collect();
    let results = within(futures::future::join_all(claimers)).await;

    let mut claimed = Vec::new();
    let mut per_node = [0; 2];
    for result in results {
        let (node, taken) = result.unwrap();
        per_node[node] += taken.len();
        for job in taken {
            assert_eq!(job.status, JobStatus::Started);
            assert_eq!(job.attempts, 1);
            claimed.push(job.id);
        }
    }
    let unique: HashSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "a job was claimed twice");
    assert_eq!(unique, queued, "every job is claimed");
    assert!(
        per_node.iter().all(|n| *n > 0),
        "both nodes claim: {per_node:?}"
    );
    assert!(claim_job(&node_b, LEASE).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_job_whose_lease_ran_out_is_claimed_by_another_node() {
    let schema = Schema::new();
    let node_a = schema.open().await;
    let node_b = schema.open().await;
    let job = insert(&node_a, &new_job("relay")).await;

    // Node A claims it with a short lease, and dies.
    let short = Duration::from_secs(1);
    let taken = claim_job(&node_a, short).await.unwrap().unwrap();
    assert_eq!((taken.id, taken.attempts), (job.id, 1));
    assert!(claim_job(&node_b, LEASE).await.unwrap().is_none());

    // Starting up again puts nothing back: the job may be running elsewhere.
    assert_eq!(node_b.requeue_interrupted().await.unwrap(), 0);
    let still = node_b.job(APP, job.id).await.unwrap().unwrap();
    assert_eq!(still.status, JobStatus::Started);

    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let again = claim_job(&node_b, LEASE).await.unwrap().unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(
        again.started_at, taken.started_at,
        "the first start is kept"
    );
    let kinds: Vec<_> = node_b
        .steps(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds, ["queued", "started", "retrying", "started"]);

    // Node B's lease holds.
    assert!(claim_job(&node_a, LEASE).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_come_due_at_their_time_and_cancel_ends_a_job() {
    let schema = Schema::new();
    let store = schema.open().await;
    let job = insert(&store, &new_job("relay")).await;
    claim_job(&store, LEASE).await.unwrap().unwrap();

    let later = Utc::now() + chrono::Duration::milliseconds(300);
    assert!(store.retry_at(job.id, "boom", later).await.unwrap());
    assert!(claim_job(&store, LEASE).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = claim_job(&store, LEASE).await.unwrap().unwrap();
    assert_eq!((again.attempts, again.error.as_deref()), (2, Some("boom")));

    let progress = herald::jobs::Progress {
        fraction: 0.5,
        message: "half\0way".into(),
    };
    store.record_progress(job.id, &progress).await.unwrap();
    let read = store.job(APP, job.id).await.unwrap().unwrap();
    assert_eq!(read.progress, Some(progress));

    match store.cancel(APP, job.id).await.unwrap() {
        Cancelled::Now(job) => assert_eq!(job.status, JobStatus::Cancelled),
        other => panic!("not cancelled: {other:?}"),
    }
    assert!(matches!(
        store.cancel(APP, job.id).await.unwrap(),
        Cancelled::AlreadyFinal(_)
    ));
    assert!(matches!(
        store.cancel(APP, Uuid::new_v4()).await.unwrap(),
        Cancelled::NotFound
    ));
    let result = WebhookResult::success("late", json!(null));
    let finished = store.finish(job.id, JobStatus::Completed, &result, None);
    assert!(
        finished.await.unwrap().is_none(),
        "a cancelled job stays so"
    );
    assert!(!store.retry_at(job.id, "late", Utc::now()).await.unwrap());
    let kinds: Vec<_> = store
        .steps(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "started",
            "retrying",
            "started",
            "progress",
            "cancelled"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_writes_the_result_and_its_deliveries_in_one_transaction() {
    let schema = Schema::new();
    let store = schema.open().await;
    let url = |n: u8| format!("https://example.com/hook/{n}");
    let same = store
        .create_subscription(APP, "relay", &url(1), None, "whsec_a")
        .await
        .unwrap()
        .unwrap();
    let every = store
        .create_subscription(APP, "*", &url(2), None, "whsec_b")
        .await
        .unwrap()
        .unwrap();
    store
        .create_subscription(APP, "other", &url(3), None, "whsec_c")
        .await
        .unwrap()
        .unwrap();
    let disabled = store
        .create_subscription(APP, "relay", &url(4), None, "whsec_d")
        .await
        .unwrap()
        .unwrap();
    let off = SubscriptionPatch {
        enabled: Some(false),
        ..SubscriptionPatch::default()
    };
    store
        .update_subscription(APP, disabled.id, &off)
        .await
        .unwrap();

    let job = insert(&store, &new_job("relay")).await;
    claim_job(&store, LEASE).await.unwrap().unwrap();
    let result = WebhookResult::success("relayed", json!({"x": 1}));
    let ended = store
        .finish(job.id, JobStatus::Completed, &result, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, JobStatus::Completed);
    assert_eq!(ended.result.as_ref(), Some(&result));
    assert!(ended.completed_at.is_some());

    let filter = DeliveryFilter {
        job_id: Some(job.id),
        limit: 50,
        ..DeliveryFilter::default()
    };
    let deliveries = store.deliveries(APP, &filter).await.unwrap();
    let mut targets: Vec<_> = deliveries
        .iter()
        .map(|(d, _)| d.subscription_id.unwrap())
        .collect();
    targets.sort();
    let mut expected = vec![same.id, every.id];
    expected.sort();
    assert_eq!(
        targets, expected,
        "one delivery per enabled matching subscription"
    );
    let body = herald::jobs::job_payload(&ended, None).to_string();
    for (delivery, attempts) in &deliveries {
        assert_eq!(delivery.body, body);
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert!(attempts.is_empty());
    }
    let since = Utc::now() - chrono::Duration::minutes(1);
    let recent = store.finished_since(since).await.unwrap();
    assert_eq!(recent.iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);

    // When the deliveries cannot be written, neither is the result.
    fail_delivery_inserts(&schema).await;
    let second = insert(&store, &new_job("relay")).await;
    claim_job(&store, LEASE).await.unwrap().unwrap();
    let failed = store
        .finish(second.id, JobStatus::Completed, &result, None)
        .await;
    assert!(failed.is_err(), "the failing trigger should stop finish");
    let unchanged = store.job(APP, second.id).await.unwrap().unwrap();
    assert_eq!(unchanged.status, JobStatus::Started);
    assert!(unchanged.result.is_none());
    let kinds: Vec<_> = store
        .steps(second.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds, ["queued", "started"]);
}

/// Makes every insert into the test schema's `deliveries` fail.
async fn fail_delivery_inserts(schema: &Schema) {
    use sqlx::{Connection, Executor};
    let mut connection = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let name = &schema.name;
    let function = format!(
        "CREATE FUNCTION \"{name}\".refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'deliveries refused by the test'; END $$"
    );
    let trigger = format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON \"{name}\".deliveries \
         FOR EACH ROW EXECUTE FUNCTION \"{name}\".refuse()"
    );
    connection
        .execute(sqlx::AssertSqlSafe(function))
        .await
        .unwrap();
    connection
        .execute(sqlx::AssertSqlSafe(trigger))
        .await
        .unwrap();
    connection.close().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Subscriptions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_created_read_changed_rotated_and_deleted() {
    let schema = Schema::new();
    let store = schema.open().await;
    let url = "https://example.com/a";
    let created = store
        .create_subscription(APP, "relay", url, Some("for\0people"), "whsec_1")
        .await
        .unwrap()
        .unwrap();
    assert!(created.enabled);
    assert_eq!(created.description.as_deref(), Some("for\u{FFFD}people"));
    let twice = store
        .create_subscription(APP, "relay", url, None, "whsec_2")
        .await
        .unwrap();
    assert_eq!(twice.unwrap_err().id, created.id, "the same type and URL");
    let every = store
        .create_subscription(APP, "*", url, None, "whsec_3")
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        store.subscription(APP, created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.subscription("app-2", created.id).await.unwrap(), None);
    let all = store.subscriptions(APP, None).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        [created.id, every.id]
    );
    let stars = store.subscriptions(APP, Some("*")).await.unwrap();
    assert_eq!(stars.iter().map(|s| s.id).collect::<Vec<_>>(), [every.id]);
    let matching = store.matching(APP, "relay").await.unwrap();
    assert_eq!(matching.len(), 2);
    assert_eq!(store.matching(APP, "other").await.unwrap().len(), 1);

    // A pending delivery follows the subscription to its new URL.
    let pending = store
        .enqueue(
            APP,
            DeliveryKind::Standard,
            url,
            "{}",
            None,
            Some(created.id),
        )
        .await
        .unwrap();
    let moved = SubscriptionPatch {
        callback_url: Some("https://example.com/b".into()),
        description: Some("moved".into()),
        enabled: None,
    };
    let changed = store
        .update_subscription(APP, created.id, &moved)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.callback_url, "https://example.com/b");
    assert_eq!(changed.description.as_deref(), Some("moved"));
    let delivery = store.delivery(APP, &pending.id).await.unwrap().unwrap();
    assert_eq!(delivery.url, "https://example.com/b");
    let nobody = store.update_subscription(APP, Uuid::new_v4(), &moved).await;
    assert_eq!(nobody.unwrap(), None);

    // Enabling clears the failure record.
    let gone = Duration::from_secs(3600);
    let (health, _) = store
        .record_health(created.id, false, true, gone)
        .await
        .unwrap();
    assert_eq!(health, Health::Disabled);
    let on = SubscriptionPatch {
        enabled: Some(true),
        ..SubscriptionPatch::default()
    };
    let enabled = store
        .update_subscription(APP, created.id, &on)
        .await
        .unwrap()
        .unwrap();
    assert!(enabled.enabled);
    assert_eq!(
        (enabled.disabled_reason, enabled.failing_since),
        (None, None)
    );

    let until = Utc::now() + chrono::Duration::hours(24);
    let rotated = store
        .rotate_secret(APP, created.id, "whsec_new", until)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret, "whsec_new");
    assert_eq!(rotated.previous_secret.as_deref(), Some("whsec_1"));
    assert_eq!(
        rotated.previous_until.map(|t| t.timestamp_millis()),
        Some(until.timestamp_millis())
    );

    // Deleting kills what was not delivered.
    assert!(store.delete_subscription(APP, created.id).await.unwrap());
    assert!(!store.delete_subscription(APP, created.id).await.unwrap());
    let dead = store.delivery(APP, &pending.id).await.unwrap().unwrap();
    assert_eq!(dead.status, DeliveryStatus::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("subscription deleted"));
    assert_eq!(store.subscription(APP, created.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_subscription_per_type_and_url_under_concurrent_creates() {
    let schema = Schema::new();
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &node_a } else { &node_b });
            tokio::spawn(async move {
                let url = "https://example.com/same";
                let secret = format!("whsec_{i}");
                store
                    .create_subscription(APP, "relay", url, None, &secret)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let outcomes = within(futures::future::join_all(tasks)).await;
    let (created, existing): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .map(Result::unwrap)
        .partition(Result::is_ok);
    assert_eq!(created.len(), 1, "exactly one create succeeds");
    let id = created[0].as_ref().unwrap().id;
    assert!(existing.iter().all(|e| e.as_ref().unwrap_err().id == id));
    assert_eq!(node_b.subscriptions(APP, None).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------
// The outbox.

fn lease_until(lease: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap()
}

fn attempt(status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        at: Utc::now(),
        duration_ms: 12,
        status_code: status,
        response: Some("answer\0with a NUL".into()),
        error: error.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_bodies_byte_for_byte() {
    let schema = Schema::new();
    let store = schema.open().await;
    let body = "{ \"b\" : 1,\n  \"a\": \"\\u00e9 é \\u0000\", \"n\": 1.0e3 }  ";
    let written = store
        .enqueue(
            APP,
            DeliveryKind::Pusher,
            "https://example.com/p",
            body,
            None,
            None,
        )
        .await
        .unwrap();
    assert!(written.id.starts_with("msg_"));
    assert_eq!(written.kind, DeliveryKind::Pusher);
    let read = store.delivery(APP, &written.id).await.unwrap().unwrap();
    assert_eq!(read.body, body);
    assert_eq!(read, written);
    assert_eq!(store.delivery("app-2", &written.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_busy_targets_put_first_attempts_first_and_hold_a_lease() {
    let schema = Schema::new();
    let store = schema.open().await;
    let busy_url = "https://example.com/busy";
    let free_url = "https://example.com/free";
    let enqueue = |url: &'static str| {
        let store = &store;
        async move {
            store
                .enqueue(APP, DeliveryKind::Pusher, url, "{}", None, None)
                .await
                .unwrap()
        }
    };

    // A retry that is due, then a fresh delivery, then one to a busy target.
    let retry = enqueue(free_url).await;
    store
        .record_attempt(
            &retry.id,
            &attempt(Some(500), Some("500")),
            AttemptOutcome::RetryAt(Utc::now()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = enqueue(free_url).await;
    let blocked = enqueue(busy_url).await;

    let busy = vec![format!("url:{busy_url}")];
    let first = claim_deliveries(&store, &busy, 1, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(first.iter().map(|d| &d.id).collect::<Vec<_>>(), [&fresh.id]);
    let next = claim_deliveries(&store, &busy, 10, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(next.iter().map(|d| &d.id).collect::<Vec<_>>(), [&retry.id]);
    assert!(
        claim_deliveries(&store, &busy, 10, lease_until(LEASE))
            .await
            .unwrap()
            .is_empty()
    );

    // The busy target's delivery once it is free; released ones come back.
    let rest = claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&blocked.id]
    );
    store.release(&blocked.id).await.unwrap();
    let back = claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&blocked.id]
    );

    // A lease that runs out frees its delivery for another sender; starting up
    // again frees none, since they may be another node's.
    store.clear_leases().await.unwrap();
    assert!(
        claim_deliveries(&store, &[], 10, lease_until(LEASE))
            .await
            .unwrap()
            .is_empty()
    );
    let short = Duration::from_millis(200);
    let late = enqueue(free_url).await;
    let taken = claim_deliveries(&store, &[], 10, lease_until(short))
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|d| &d.id).collect::<Vec<_>>(), [&late.id]);
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let again = claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(again.iter().map(|d| &d.id).collect::<Vec<_>>(), [&late.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_claiming_deliveries_at_once_take_each_once() {
    let schema = Schema::new();
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);
    let mut written = HashSet::new();
    for i in 0..60 {
        let url = format!("https://example.com/{}", i % 6);
        let delivery = node_a
            .enqueue(APP, DeliveryKind::Pusher, &url, "{}", None, None)
            .await
            .unwrap();
        written.insert(delivery.id);
    }
    let claimers: Vec<_> = (0..6)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &node_a } else { &node_b });
            tokio::spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..100 {
                    let batch = claim_deliveries(&store, &[], 4, lease_until(LEASE))
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    taken.extend(batch.into_iter().map(|d| d.id));
                }
                taken
            })
        })
        .collect();
    let results = within(futures::future::join_all(claimers)).await;
    let claimed: Vec<String> = results.into_iter().flat_map(Result::unwrap).collect();
    let unique: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), unique.len(), "a delivery was claimed twice");
    assert_eq!(unique, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_recorded_with_what_comes_next() {
    let schema = Schema::new();
    let store = schema.open().await;
    let delivery = store
        .enqueue(
            APP,
            DeliveryKind::Pusher,
            "https://example.com/x",
            "{}",
            None,
            None,
        )
        .await
        .unwrap();
    claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();

    let next = Utc::now() + chrono::Duration::minutes(5);
    let failed = attempt(Some(503), Some("503 Service Unavailable"));
    store
        .record_attempt(&delivery.id, &failed, AttemptOutcome::RetryAt(next))
        .await
        .unwrap();
    let read = store.delivery(APP, &delivery.id).await.unwrap().unwrap();
    assert_eq!(read.status, DeliveryStatus::Failed);
    assert_eq!(read.attempts, 1);
    assert_eq!(
        read.next_attempt_at.map(|t| t.timestamp_millis()),
        Some(next.timestamp_millis())
    );
    assert_eq!(read.last_error.as_deref(), Some("503 Service Unavailable"));
    assert!(
        claim_deliveries(&store, &[], 10, lease_until(LEASE))
            .await
            .unwrap()
            .is_empty()
    );

    let unreachable = attempt(None, Some("connection refused"));
    store
        .record_attempt(&delivery.id, &unreachable, AttemptOutcome::Dead)
        .await
        .unwrap();
    let filter = DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        limit: 50,
        ..DeliveryFilter::default()
    };
    let listed = store.deliveries(APP, &filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    let (dead, attempts) = &listed[0];
    assert_eq!(dead.id, delivery.id);
    assert!(dead.completed_at.is_some());
    assert_eq!(dead.next_attempt_at, None);
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), None]);
    assert_eq!(attempts[0].duration_ms, 12);
    assert_eq!(
        attempts[0].response.as_deref(),
        Some("answer\u{FFFD}with a NUL"),
        "a NUL in a receiver's answer does not stop the attempt being recorded"
    );

    let ok = store
        .enqueue(
            APP,
            DeliveryKind::Pusher,
            "https://example.com/y",
            "{}",
            None,
            None,
        )
        .await
        .unwrap();
    store
        .record_attempt(&ok.id, &attempt(Some(204), None), AttemptOutcome::Succeeded)
        .await
        .unwrap();
    let done = store.delivery(APP, &ok.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.attempts), (DeliveryStatus::Succeeded, 1));
    let all = DeliveryFilter {
        limit: 50,
        ..DeliveryFilter::default()
    };
    let newest_first: Vec<_> = store
        .deliveries(APP, &all)
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _)| d.id)
        .collect();
    assert_eq!(newest_first, [ok.id, delivery.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_moves_through_failing_recovered_and_disabled() {
    let schema = Schema::new();
    let store = schema.open().await;
    let subscription = store
        .create_subscription(APP, "relay", "https://example.com/h", None, "whsec_h")
        .await
        .unwrap()
        .unwrap();
    let id = subscription.id;
    let long = Duration::from_secs(3600);

    let (health, after) = store.record_health(id, true, false, long).await.unwrap();
    assert_eq!(health, Health::Unchanged);
    assert_eq!(after.unwrap().failing_since, None);

    let (health, after) = store.record_health(id, false, false, long).await.unwrap();
    assert_eq!(health, Health::Failing);
    let since = after.unwrap().failing_since.expect("failing since now");
    let (health, after) = store.record_health(id, false, false, long).await.unwrap();
    assert_eq!(health, Health::Unchanged);
    assert_eq!(
        after.unwrap().failing_since,
        Some(since),
        "the first failure counts"
    );

    let (health, after) = store.record_health(id, true, false, long).await.unwrap();
    assert_eq!(health, Health::Recovered);
    assert_eq!(after.unwrap().failing_since, None);

    // Failing for longer than allowed disables it, once.
    store.record_health(id, false, false, long).await.unwrap();
    let (health, after) = store
        .record_health(id, false, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(health, Health::Disabled);
    let after = after.unwrap();
    assert!(!after.enabled);
    assert_eq!(
        after.disabled_reason.as_deref(),
        Some("every delivery failed for too long")
    );
    let (health, _) = store
        .record_health(id, false, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(health, Health::Unchanged, "already disabled");

    // 410 Gone disables at once.
    let other = store
        .create_subscription(APP, "relay", "https://example.com/g", None, "whsec_g")
        .await
        .unwrap()
        .unwrap();
    let (health, after) = store
        .record_health(other.id, false, true, long)
        .await
        .unwrap();
    assert_eq!(health, Health::Disabled);
    assert_eq!(
        after.unwrap().disabled_reason.as_deref(),
        Some("the receiver answered 410 Gone")
    );

    let nobody = store.record_health(Uuid::new_v4(), true, false, long).await;
    assert_eq!(nobody.unwrap(), (Health::Unchanged, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_dead_delivery_can_be_retried_with_a_fresh_schedule() {
    let schema = Schema::new();
    let store = schema.open().await;
    let delivery = store
        .enqueue(
            APP,
            DeliveryKind::Pusher,
            "https://example.com/r",
            "{}",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.retry_delivery(APP, &delivery.id).await.unwrap(),
        None,
        "pending"
    );

    claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();
    let failed = attempt(Some(500), Some("500"));
    store
        .record_attempt(&delivery.id, &failed, AttemptOutcome::Dead)
        .await
        .unwrap();
    assert_eq!(
        store.retry_delivery("app-2", &delivery.id).await.unwrap(),
        None
    );
    let retried = store
        .retry_delivery(APP, &delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.completed_at, None);
    let due = claim_deliveries(&store, &[], 10, lease_until(LEASE))
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&delivery.id]
    );
}

// ---------------------------------------------------------------------------------
// The server on PostgreSQL.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgres_runs_a_relay_job_to_completion() {
    let schema = Schema::new();
    let relay = "\n[[apps.event_types]]\nname = \"relay\"\nhandler = \"relay\"\n\
                 channel = \"notifications\"\ntimeout = \"5s\"\nattempts = 1\n";
    let store = format!(
        "[store]\nurl = \"{}\"\nschema = \"{}\"\n\n",
        database_url(),
        schema.name
    );
    let config = format!("{store}{}", jobs_config("", relay));
    let server = TestServer::start_with(&config).await;

    let created = create_job(
        &server,
        json!({"eventType": "relay", "payload": {"service": "billing", "state": "down"}}),
    )
    .await;
    let job = wait_until_ended(&server, &id_of(&created)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(
        job["result"]["data"],
        json!({"service": "billing", "state": "down"})
    );

    // The job is in this test's schema.
    let store = schema.open().await;
    let id = Uuid::parse_str(&id_of(&created)).unwrap();
    let stored = store.job("demo-app", id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Completed);
    drop(store);
    within(server.stop()).await;
}
