//! Several nodes behaving as one server: presence rosters, occupancy and counts,
//! watchlists, cache channels and Pusher webhooks decided for the whole cluster;
//! and what happens to a node's sockets and members when it shuts down, is killed,
//! or loses Redis for a while. Real Redis and PostgreSQL, each test with its own
//! prefix and schema.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::cluster::{
    OwnRedis, drop_schema, node_config, start_nodes, unique_name, wait_ready, wait_readyz,
};
use crate::extras_kit::{expect_watchlist, signed_in};
use crate::kit::{demo_app_with, join_presence, join_public, member, open};
use crate::node_kill::ProcessNode;
use crate::pusher_webhooks::{FAST, Receiver, Timing, config as hooks_config};
use crate::support::{
    TestApp, TestServer, Ws, assert_silent, data_of, recv_close, recv_event, recv_named, subscribe,
};

const REDIS: &str = "redis://127.0.0.1:6379";

/// Longest a test waits for the nodes to agree.
const AGREE: Duration = Duration::from_secs(5);

/// Waits until `check` holds, polling; fails naming `what` after `AGREE`.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, AGREE, check).await;
}

/// Like `eventually`, waiting up to `limit`.
async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The user ids `GET /channels/{channel}/users` lists on `node`, sorted.
async fn users_on(node: &TestServer, channel: &str) -> Vec<String> {
    let path = format!("/channels/{channel}/users");
    let answer: Value = node
        .api("GET", &path, &[], None)
        .await
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = (answer["users"].as_array())
        .unwrap_or_else(|| panic!("no users list: {answer}"))
        .iter()
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// `GET /channels/{channel}?info=…` on `node`.
async fn channel_on(node: &TestServer, channel: &str, info: &str) -> Value {
    let path = format!("/channels/{channel}");
    let answer = node.api("GET", &path, &[("info", info)], None).await;
    answer.json().await.unwrap()
}

/// `GET /channels` on `node`: the names of the occupied channels.
async fn occupied_on(node: &TestServer) -> Vec<String> {
    let answer: Value = node
        .api("GET", "/channels", &[], None)
        .await
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = answer["channels"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

async fn wait_users(nodes: &[TestServer], channel: &str, expected: &[&str]) {
    for node in nodes {
        let what = format!("{} lists {expected:?} on {channel}", node.addr);
        eventually(&what, || async {
            users_on(node, channel).await == expected
        })
        .await;
    }
}

/// Joins `channel` as `user_id` on a new socket of `node`; returns the socket and
/// the roster it was given.
async fn present(node: &TestServer, channel: &str, user_id: &str) -> (Ws, Value) {
    let (mut ws, socket_id) = node.connect().await;
    let data = member(user_id, json!({ "name": user_id.to_uppercase() }));
    let roster = join_presence(&mut ws, &node.app, &socket_id, channel, &data).await;
    (ws, roster)
}

fn ids_of(roster: &Value) -> Vec<String> {
    let mut ids: Vec<String> = (roster["ids"].as_array().unwrap().iter())
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A receiver, and the configuration of an app that sends it channel and member
/// webhooks on `/hooks`.
async fn channel_hooks() -> (Receiver, String) {
    channel_hooks_with(FAST).await
}

/// Like `channel_hooks`, with `timing`.
async fn channel_hooks_with(timing: Timing) -> (Receiver, String) {
    let receiver = Receiver::ok().await;
    let kinds = [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
    ];
    let hooks = hooks_config(&[(receiver.url("/hooks"), &kinds)], timing);
    (receiver, hooks)
}

/// What a receiver that applies `events` in order believes of one channel: whether
/// it is occupied, and its members, sorted.
fn replayed(events: &[Value]) -> (bool, Vec<String>) {
    let mut occupied = false;
    let mut members = std::collections::BTreeSet::new();
    for event in events {
        let user = event["user_id"].as_str().map(str::to_owned);
        match (event["name"].as_str().unwrap(), user) {
            ("channel_occupied", _) => occupied = true,
            ("channel_vacated", _) => occupied = false,
            ("member_added", Some(user)) => {
                members.insert(user);
            }
            ("member_removed", Some(user)) => {
                members.remove(&user);
            }
            other => panic!("unexpected event {other:?} in {events:?}"),
        }
    }
    (occupied, members.into_iter().collect())
}

/// Joins `channel` as each of `users` on `node`, and waits until the receiver has
/// heard each join; returns their sockets.
async fn joined_and_heard<const N: usize>(
    receiver: &Receiver,
    node: &TestServer,
    channel: &str,
    users: [&str; N],
) -> [Ws; N] {
    let mut sockets = Vec::with_capacity(N);
    for user in users {
        sockets.push(present(node, channel, user).await.0);
    }
    let added =
        users.map(|user| json!({"name": "member_added", "channel": channel, "user_id": user}));
    receiver.wait_for("/hooks", &added).await;
    sockets
        .try_into()
        .unwrap_or_else(|_| unreachable!("one socket per user"))
}

/// Waits up to `limit` until the receiver, applying its webhooks in order,
/// believes the channel occupied by exactly `members`.
async fn receiver_ends_with(receiver: &Receiver, members: &[&str], limit: Duration) {
    let expected = (true, members.iter().map(|m| (*m).to_owned()).collect());
    let what = format!("the receiver ends with {members:?}");
    eventually_within(&what, limit, || async {
        replayed(&receiver.events("/hooks")) == expected
    })
    .await;
}

async fn expect_member(ws: &mut Ws, event: &str, user_id: &str) {
    let frame = recv_named(ws, &format!("pusher_internal:{event}")).await;
    assert_eq!(data_of(&frame)["user_id"], user_id, "{frame}");
}

#[tokio::test]
async fn presence_is_one_roster_across_nodes() {
    let name = unique_name();
    let nodes = start_nodes(3, &node_config(REDIS, &name, "5s", "")).await;
    let room = "presence-room";

    let (mut alice, roster) = present(&nodes[0], room, "alice").await;
    assert_eq!(roster["count"], 1);
    wait_users(&nodes, room, &["alice"]).await;

    // Bob's first socket, on another node: he gets the whole roster, Alice hears of him.
    let (bob_tab1, roster) = present(&nodes[1], room, "bob").await;
    assert_eq!(ids_of(&roster), ["alice", "bob"]);
    assert_eq!(roster["count"], 2);
    assert_eq!(roster["hash"]["alice"], json!({"name": "ALICE"}));
    expect_member(&mut alice, "member_added", "bob").await;
    wait_users(&nodes, room, &["alice", "bob"]).await;

    // Bob's second socket, on a third node: nobody hears of it.
    let (bob_tab2, roster) = present(&nodes[2], room, "bob").await;
    assert_eq!(ids_of(&roster), ["alice", "bob"]);
    for node in &nodes {
        let what = format!("3 sockets and 2 users on {}", node.addr);
        eventually(&what, || async {
            let info = channel_on(node, room, "user_count,subscription_count").await;
            info == json!({"occupied": true, "user_count": 2, "subscription_count": 3})
        })
        .await;
    }
    assert_silent(&mut alice, Duration::from_millis(300)).await;

    // His first socket leaves: he is still there. His last leaves: he is gone.
    drop(bob_tab1);
    eventually("bob's first socket is gone", || async {
        channel_on(&nodes[0], room, "subscription_count").await["subscription_count"] == 2
    })
    .await;
    assert_silent(&mut alice, Duration::from_millis(300)).await;
    drop(bob_tab2);
    expect_member(&mut alice, "member_removed", "bob").await;
    wait_users(&nodes, room, &["alice"]).await;
    assert_silent(&mut alice, Duration::from_millis(300)).await;
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_full_presence_channel_counts_members_on_every_node() {
    let name = unique_name();
    let rest = demo_app_with("max_presence_members = 2");
    let nodes = start_nodes(2, &node_config(REDIS, &name, "5s", &rest)).await;
    let room = "presence-small";
    let (_a, _) = present(&nodes[0], room, "a").await;
    let (_b, _) = present(&nodes[0], room, "b").await;
    wait_users(&nodes, room, &["a", "b"]).await;

    let (mut ws, socket_id) = nodes[1].connect().await;
    let data = member("c", json!(null));
    crate::kit::send_presence(&mut ws, &nodes[1].app, &socket_id, room, &data).await;
    let refused = recv_named(&mut ws, "pusher:subscription_error").await;
    assert_eq!(data_of(&refused)["type"], "LimitReached", "{refused}");
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn occupancy_and_subscription_counts_are_the_whole_clusters() {
    let name = unique_name();
    let rest = demo_app_with("subscription_count = true");
    let nodes = start_nodes(3, &node_config(REDIS, &name, "5s", &rest)).await;

    let (mut first, _) = nodes[0].connect().await;
    join_public(&mut first, "news").await;
    let count = recv_named(&mut first, "pusher_internal:subscription_count").await;
    assert_eq!(data_of(&count)["subscription_count"], 1);

    // A socket on another node: the first hears the cluster's count.
    let (mut second, _) = nodes[1].connect().await;
    join_public(&mut second, "news").await;
    let count = recv_named(&mut first, "pusher_internal:subscription_count").await;
    assert_eq!(data_of(&count)["subscription_count"], 2);

    for node in &nodes {
        let what = format!("{} reports news with 2 sockets", node.addr);
        eventually(&what, || async {
            occupied_on(node).await == ["news"]
                && channel_on(node, "news", "subscription_count").await
                    == json!({"occupied": true, "subscription_count": 2})
        })
        .await;
    }

    second.close(None).await.unwrap();
    let count = recv_named(&mut first, "pusher_internal:subscription_count").await;
    assert_eq!(data_of(&count)["subscription_count"], 1);
    drop(first);
    for node in &nodes {
        let what = format!("{} reports no channel occupied", node.addr);
        eventually(&what, || async {
            occupied_on(node).await.is_empty()
                && channel_on(node, "news", "").await == json!({"occupied": false})
        })
        .await;
    }
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn channel_and_member_webhooks_fire_once_for_the_cluster() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let nodes = start_nodes(3, &node_config(REDIS, &name, "5s", &hooks)).await;
    let room = "presence-hooked";

    // The same user on two nodes, another on the third.
    let (u1_here, _) = present(&nodes[0], room, "u1").await;
    let (u1_there, _) = present(&nodes[1], room, "u1").await;
    let (u2, _) = present(&nodes[2], room, "u2").await;
    wait_users(&nodes, room, &["u1", "u2"]).await;
    drop((u1_here, u1_there, u2));

    let expected = [
        json!({"name": "channel_occupied", "channel": room}),
        json!({"name": "member_added", "channel": room, "user_id": "u1"}),
        json!({"name": "member_added", "channel": room, "user_id": "u2"}),
        json!({"name": "member_removed", "channel": room, "user_id": "u1"}),
        json!({"name": "member_removed", "channel": room, "user_id": "u2"}),
        json!({"name": "channel_vacated", "channel": room}),
    ];
    receiver.wait_for("/hooks", &expected).await;
    // Had any node sent its own copy, it would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut events = receiver.events("/hooks");
    events.sort_by_key(Value::to_string);
    let mut wanted = expected.to_vec();
    wanted.sort_by_key(Value::to_string);
    assert_eq!(events, wanted, "each event exactly once");
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn watchlists_see_users_on_every_node() {
    let name = unique_name();
    let nodes = start_nodes(2, &node_config(REDIS, &name, "5s", "")).await;

    let (mut watcher, _) = signed_in(&nodes[0], "watcher", &["bob"]).await;
    let (bob, _) = signed_in(&nodes[1], "bob", &[]).await;
    let online = expect_watchlist(&mut watcher).await;
    assert_eq!(
        online["events"],
        json!([{"name": "online", "user_ids": ["bob"]}])
    );

    // A watcher signing in later, elsewhere, is told bob is online already.
    let (mut late, _) = signed_in(&nodes[0], "late", &["bob"]).await;
    let already = expect_watchlist(&mut late).await;
    assert_eq!(
        already["events"],
        json!([{"name": "online", "user_ids": ["bob"]}])
    );

    drop(bob);
    let offline = expect_watchlist(&mut watcher).await;
    assert_eq!(
        offline["events"],
        json!([{"name": "offline", "user_ids": ["bob"]}])
    );
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_cache_channel_set_on_one_node_answers_on_the_others() {
    let name = unique_name();
    let nodes = start_nodes(3, &node_config(REDIS, &name, "5s", "")).await;
    let (mut empty, _) = nodes[2].connect().await;
    join_public(&mut empty, "cache-prices").await;
    let miss = recv_event(&mut empty).await;
    assert_eq!(miss["event"], "pusher:cache_miss", "{miss}");

    nodes[0].trigger("cache-prices", "price", "42").await;
    assert_eq!(recv_event(&mut empty).await["data"], "42");
    for node in &nodes[1..] {
        let (mut ws, _) = node.connect().await;
        join_public(&mut ws, "cache-prices").await;
        let cached = recv_event(&mut ws).await;
        assert_eq!(
            (cached["event"].as_str(), cached["data"].as_str()),
            (Some("price"), Some("42"))
        );
        let info = channel_on(node, "cache-prices", "cache").await;
        assert_eq!(info["cache"]["data"], "42", "{info}");
    }
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_node_that_joins_later_knows_the_cache_and_the_members() {
    let name = unique_name();
    let config = node_config(REDIS, &name, "5s", "");
    let first = start_nodes(1, &config).await;
    first[0].trigger("cache-weather", "forecast", "sunny").await;
    let (_alice, _) = present(&first[0], "presence-room", "alice").await;

    let late = start_nodes(1, &config).await;
    let (mut ws, _) = late[0].connect().await;
    join_public(&mut ws, "cache-weather").await;
    let cached = recv_event(&mut ws).await;
    assert_eq!(cached["event"], "forecast", "{cached}");
    assert_eq!(cached["data"], "sunny");

    let (_bob, roster) = present(&late[0], "presence-room", "bob").await;
    assert_eq!(ids_of(&roster), ["alice", "bob"]);
    drop((first, late));
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_node_shut_down_gracefully_leaves_no_ghost_members() {
    // A long node_timeout: only the leaving node's own messages can explain what
    // the others see within the test's few seconds.
    let name = unique_name();
    let nodes = start_nodes(2, &node_config(REDIS, &name, "60s", "")).await;
    let mut nodes = nodes.into_iter();
    let (staying, leaving) = (nodes.next().unwrap(), nodes.next().unwrap());
    let room = "presence-room";
    let (mut alice, _) = present(&staying, room, "alice").await;
    let (mut dave, _) = present(&leaving, room, "dave").await;
    expect_member(&mut alice, "member_added", "dave").await;

    let stopped = tokio::spawn(leaving.stop());
    assert_eq!(recv_close(&mut dave, Duration::from_secs(5)).await, 4200);
    expect_member(&mut alice, "member_removed", "dave").await;
    stopped.await.unwrap();
    assert_eq!(users_on(&staying, room).await, ["alice"]);
    let info = channel_on(&staying, room, "subscription_count").await;
    assert_eq!(info["subscription_count"], 1, "{info}");
    drop(staying);
    drop_schema(&name).await;
}

/// Joins `channel` as `user_id` on a new socket of `app` on a node running as its
/// own process.
async fn present_on(node: &ProcessNode, app: &TestApp, channel: &str, user_id: &str) -> Ws {
    let host = node.base.trim_start_matches("http://");
    let url = format!(
        "ws://{host}/app/{}?protocol=7&client=js&version=8.6.0",
        app.key
    );
    let mut ws = open(&url).await;
    let established = recv_event(&mut ws).await;
    let socket_id = data_of(&established)["socket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = member(user_id, json!(null));
    join_presence(&mut ws, app, &socket_id, channel, &data).await;
    ws
}

#[tokio::test]
async fn the_members_of_a_killed_node_are_removed_within_the_node_timeout() {
    let name = unique_name();
    let config = node_config(REDIS, &name, "1500ms", "");
    let nodes = start_nodes(1, &config).await;
    let survivor = &nodes[0];
    let mut doomed = ProcessNode::start("killed-member", &config).await;
    let room = "presence-room";
    let (mut alice, _) = present(survivor, room, "alice").await;

    let _carol = present_on(&doomed, &survivor.app, room, "carol").await;
    expect_member(&mut alice, "member_added", "carol").await;
    wait_users(&nodes, room, &["alice", "carol"]).await;

    doomed.kill().await;
    let killed = Instant::now();
    expect_member(&mut alice, "member_removed", "carol").await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "member_removed after {took:?}"
    );
    assert_eq!(users_on(survivor, room).await, ["alice"]);
    let info = channel_on(survivor, room, "subscription_count").await;
    assert_eq!(info["subscription_count"], 1, "{info}");
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn nodes_rebuild_what_they_missed_while_redis_was_down() {
    let mut redis = OwnRedis::start().await;
    let name = unique_name();
    let nodes = start_nodes(2, &node_config(&redis.url(), &name, "5s", "")).await;
    let room = "presence-room";
    let (mut alice, _) = present(&nodes[0], room, "alice").await;
    let (bob, _) = present(&nodes[1], room, "bob").await;
    expect_member(&mut alice, "member_added", "bob").await;

    redis.stop().await;
    for node in &nodes {
        wait_readyz(node, 503).await;
    }
    // While the nodes cannot hear each other, Bob leaves and Carol arrives.
    drop(bob);
    let (_carol, roster) = present(&nodes[1], room, "carol").await;
    assert_eq!(ids_of(&roster), ["alice", "carol"]);
    assert_silent(&mut alice, Duration::from_millis(300)).await;

    redis.resume().await;
    for node in &nodes {
        wait_ready(node).await;
    }
    let mut heard = Vec::new();
    for _ in 0..2 {
        let frame = recv_event(&mut alice).await;
        heard.push(format!("{} {}", frame["event"], data_of(&frame)["user_id"]));
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            r#""pusher_internal:member_added" "carol""#,
            r#""pusher_internal:member_removed" "bob""#
        ]
    );
    wait_users(&nodes, room, &["alice", "carol"]).await;
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_subscriber_on_another_node_counts_for_trigger_info() {
    let name = unique_name();
    let nodes = start_nodes(2, &node_config(REDIS, &name, "5s", "")).await;
    let (mut ws, _) = nodes[1].connect().await;
    subscribe(&mut ws, json!({"channel": "counted"})).await;
    recv_named(&mut ws, "pusher_internal:subscription_succeeded").await;
    eventually("the first node sees the subscriber", || async {
        channel_on(&nodes[0], "counted", "subscription_count").await["subscription_count"] == 1
    })
    .await;
    let body =
        json!({"name": "e", "channel": "counted", "data": "{}", "info": "subscription_count"});
    let answer: Value = nodes[0]
        .api("POST", "/events", &[], Some(body))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["channels"]["counted"]["subscription_count"], 1,
        "{answer}"
    );
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn when_the_node_sending_webhooks_is_killed_another_takes_over() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let config = node_config(REDIS, &name, "1500ms", &hooks);
    // Started first, the process is the oldest node: it sends the cluster's webhooks.
    let mut doomed = ProcessNode::start("killed-speaker", &config).await;
    let nodes = start_nodes(1, &config).await;
    let app = nodes[0].app.clone();
    let room = "presence-failover";

    let _carol = present_on(&doomed, &app, room, "carol").await;
    let (erin, _) = present(&nodes[0], room, "erin").await;
    let arrived = [
        json!({"name": "channel_occupied", "channel": room}),
        json!({"name": "member_added", "channel": room, "user_id": "carol"}),
        json!({"name": "member_added", "channel": room, "user_id": "erin"}),
    ];
    receiver.wait_for("/hooks", &arrived).await;

    // While the dead node is not yet known to be dead, nobody sends webhooks; its
    // successor then sends what happened meanwhile, and what its sockets took with
    // them.
    doomed.kill().await;
    let (_dave, _) = present(&nodes[0], room, "dave").await;
    drop(erin);
    let later = [
        json!({"name": "member_added", "channel": room, "user_id": "dave"}),
        json!({"name": "member_removed", "channel": room, "user_id": "erin"}),
        json!({"name": "member_removed", "channel": room, "user_id": "carol"}),
    ];
    receiver.wait_for("/hooks", &later).await;
    // What the dead node saw last may come twice, but the receiver ends up with
    // the truth.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = receiver.events("/hooks");
    assert_eq!(
        replayed(&events),
        (true, vec!["dave".to_owned()]),
        "{events:#?}"
    );
    drop(nodes);
    drop_schema(&name).await;
}

/// A TCP proxy to a Redis server that can cut every connection through it, as a
/// network fault between one node and Redis would, and let them through again.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CutProxy {
    async fn start(redis_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (refusing, open_links) = (Arc::clone(&cut), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refusing.load(Ordering::Acquire) {
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut redis) = TcpStream::connect(("127.0.0.1", redis_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut redis).await;
                    }
                });
                open_links.lock().unwrap().push(link);
            }
        });
        CutProxy { port, cut, links }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

#[tokio::test]
async fn a_node_that_alone_lost_redis_catches_up_when_it_is_back() {
    let redis = OwnRedis::start().await;
    let proxy = CutProxy::start(redis.port()).await;
    let name = unique_name();
    let direct = node_config(&redis.url(), &name, "5s", "");
    let through_proxy = node_config(&proxy.url(), &name, "5s", "");
    let near = start_nodes(1, &direct).await.remove(0);
    let far = start_nodes(1, &through_proxy).await.remove(0);
    let room = "presence-room";
    let (alice, _) = present(&near, room, "alice").await;
    wait_users(std::slice::from_ref(&far), room, &["alice"]).await;
    let (mut carol, roster) = present(&far, room, "carol").await;
    assert_eq!(ids_of(&roster), ["alice", "carol"]);
    let (mut watcher, _) = signed_in(&far, "watcher", &["zed"]).await;

    proxy.cut();
    wait_readyz(&far, 503).await;
    drop(alice);
    let (_dan, _) = present(&near, room, "dan").await;
    let (_zed, _) = signed_in(&near, "zed", &[]).await;
    assert_silent(&mut carol, Duration::from_millis(300)).await;

    proxy.restore();
    wait_ready(&far).await;
    wait_users(std::slice::from_ref(&far), room, &["carol", "dan"]).await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let frame = recv_event(&mut carol).await;
        heard.push(format!("{} {}", frame["event"], data_of(&frame)["user_id"]));
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            r#""pusher_internal:member_added" "dan""#,
            r#""pusher_internal:member_removed" "alice""#
        ]
    );
    let online = expect_watchlist(&mut watcher).await;
    assert_eq!(
        online["events"],
        json!([{"name": "online", "user_ids": ["zed"]}])
    );
    drop((near, far));
    drop_schema(&name).await;
}

#[tokio::test]
async fn dropped_messages_are_repaired_by_a_snapshot() {
    let redis = OwnRedis::start().await;
    let name = unique_name();
    let nodes = start_nodes(2, &node_config(&redis.url(), &name, "10s", "")).await;

    // Redis holds back every publish for a while, so the node's queue of
    // messages for the others overflows.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg("3000")
        .arg("WRITE")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let channels = 11_000;
    let (mut ws, _) = nodes[1].connect().await;
    subscribe_many(&mut ws, channels).await;

    let what = format!("the other node lists all {channels} channels");
    eventually_within(&what, Duration::from_secs(20), || async {
        occupied_on(&nodes[0]).await.len() == channels
    })
    .await;
    let readyz: Value = reqwest::get(nodes[1].url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(readyz["unpublished"].as_u64().unwrap() > 0, "{readyz}");

    drop(ws);
    let what = "the other node lists no channel once the socket is gone";
    eventually_within(what, Duration::from_secs(20), || async {
        occupied_on(&nodes[0]).await.is_empty()
    })
    .await;
    drop(nodes);
    drop_schema(&name).await;
}

/// Subscribes `ws` to `count` public channels, reading the answers as it goes.
async fn subscribe_many(ws: &mut Ws, count: usize) {
    for batch in (0..count).collect::<Vec<_>>().chunks(500) {
        for n in batch {
            subscribe(ws, json!({"channel": format!("many-{n}")})).await;
        }
        for _ in batch {
            recv_named(ws, "pusher_internal:subscription_succeeded").await;
        }
    }
}

#[tokio::test]
async fn a_user_moving_off_a_node_that_shuts_down_is_no_news_to_webhooks() {
    let (receiver, hooks) = channel_hooks_with(Timing {
        leave_delay: "2s",
        ..FAST
    })
    .await;
    let name = unique_name();
    let config = node_config(REDIS, &name, "5s", &hooks);
    // The first node is the oldest, so it sends the cluster's webhooks.
    let mut nodes = start_nodes(2, &config).await.into_iter();
    let (leaving, staying) = (nodes.next().unwrap(), nodes.next().unwrap());
    let room = "presence-moving";
    let (mut gina, _) = present(&leaving, room, "gina").await;
    let arrived = [
        json!({"name": "channel_occupied", "channel": room}),
        json!({"name": "member_added", "channel": room, "user_id": "gina"}),
    ];
    receiver.wait_for("/hooks", &arrived).await;

    // Told to reconnect (4200), she does so at once on the other node.
    let stopped = tokio::spawn(leaving.stop());
    assert_eq!(recv_close(&mut gina, Duration::from_secs(5)).await, 4200);
    let (_gina, _) = present(&staying, room, "gina").await;
    stopped.await.unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = receiver.events("/hooks");
    assert_eq!(
        replayed(&events),
        (true, vec!["gina".to_owned()]),
        "{events:#?}"
    );
    drop(staying);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_node_that_was_paused_does_not_take_the_others_for_dead() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let config = node_config(REDIS, &name, "1500ms", &hooks);
    let nodes = start_nodes(1, &config).await;
    let paused = ProcessNode::start("paused", &config).await;
    let room = "presence-paused";
    let (_alice, _) = present(&nodes[0], room, "alice").await;
    let arrived = [json!({"name": "member_added", "channel": room, "user_id": "alice"})];
    receiver.wait_for("/hooks", &arrived).await;

    // Longer than node_timeout, as a frozen container or a paused VM would be.
    paused.signal("STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    paused.signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let events = receiver.events("/hooks");
    assert_eq!(
        replayed(&events),
        (true, vec!["alice".to_owned()]),
        "{events:#?}"
    );
    assert_eq!(users_on(&nodes[0], room).await, ["alice"]);
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_member_leaving_as_the_webhook_sender_shuts_down_is_reported() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let config = node_config(REDIS, &name, "5s", &hooks);
    // The first node is the oldest, so it sends the cluster's webhooks.
    let mut nodes = start_nodes(2, &config).await.into_iter();
    let (leaving, staying) = (nodes.next().unwrap(), nodes.next().unwrap());
    let room = "presence-leaving";
    let [_carol, bob] = joined_and_heard(&receiver, &staying, room, ["carol", "bob"]).await;

    // Bob leaves just as the sender begins to shut down.
    let stopped = tokio::spawn(leaving.stop());
    drop(bob);
    stopped.await.unwrap();
    let gone = [json!({"name": "member_removed", "channel": room, "user_id": "bob"})];
    receiver.wait_for("/hooks", &gone).await;
    let events = receiver.events("/hooks");
    assert_eq!(
        replayed(&events),
        (true, vec!["carol".to_owned()]),
        "{events:#?}"
    );
    drop(staying);
    drop_schema(&name).await;
}

#[tokio::test]
async fn members_of_a_paused_webhook_sender_are_reported_back_when_it_returns() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let config = node_config(REDIS, &name, "1500ms", &hooks);
    // Started first, the process is the oldest node: it sends the cluster's webhooks.
    let sender = ProcessNode::start("paused-sender", &config).await;
    let nodes = start_nodes(1, &config).await;
    let app = nodes[0].app.clone();
    let room = "presence-returning";
    let _alice = present_on(&sender, &app, room, "alice").await;
    let (_bob, _) = present(&nodes[0], room, "bob").await;
    let arrived = [
        json!({"name": "member_added", "channel": room, "user_id": "alice"}),
        json!({"name": "member_added", "channel": room, "user_id": "bob"}),
    ];
    receiver.wait_for("/hooks", &arrived).await;

    // Paused past node_timeout, the sender is taken for dead and its member
    // reported gone; when it runs again she is back, and must be reported so.
    sender.signal("STOP");
    let gone = [json!({"name": "member_removed", "channel": room, "user_id": "alice"})];
    receiver.wait_for("/hooks", &gone).await;
    sender.signal("CONT");
    wait_users(&nodes, room, &["alice", "bob"]).await;
    receiver_ends_with(&receiver, &["alice", "bob"], AGREE).await;
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn changes_while_a_dead_sender_awaits_judgement_survive_a_redis_outage() {
    let mut redis = OwnRedis::start().await;
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let config = node_config(&redis.url(), &name, "1500ms", &hooks);
    let mut sender = ProcessNode::start("killed-before-outage", &config).await;
    let nodes = start_nodes(1, &config).await;
    let room = "presence-outage";
    let [erin, _bob] = joined_and_heard(&receiver, &nodes[0], room, ["erin", "bob"]).await;

    // The sender dies; before it is declared dead, erin leaves, dave arrives, and
    // Redis goes away for longer than node_timeout.
    sender.kill().await;
    drop(erin);
    let (_dave, _) = present(&nodes[0], room, "dave").await;
    redis.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.resume().await;

    let later = [
        json!({"name": "member_removed", "channel": room, "user_id": "erin"}),
        json!({"name": "member_added", "channel": room, "user_id": "dave"}),
    ];
    receiver.wait_for("/hooks", &later).await;
    let events = receiver.events("/hooks");
    assert_eq!(
        replayed(&events),
        (true, vec!["bob".to_owned(), "dave".to_owned()]),
        "{events:#?}"
    );
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn a_second_sender_dying_before_writing_what_it_took_over_loses_nothing() {
    let (receiver, hooks) = channel_hooks_with(Timing {
        leave_delay: "1s",
        ..FAST
    })
    .await;
    let name = unique_name();
    // Judged dead only well after the leave delay, so that what happened just
    // after the first death is older than the second sender's last few seconds.
    let config = node_config(REDIS, &name, "4s", &hooks);
    // Oldest first: the first process sends the webhooks, the second takes over.
    let mut first = ProcessNode::start("first-sender", &config).await;
    let mut second = ProcessNode::start("second-sender", &config).await;
    let nodes = start_nodes(1, &config).await;
    let room = "presence-twice";
    let [erin, _bob] = joined_and_heard(&receiver, &nodes[0], room, ["erin", "bob"]).await;

    first.kill().await;
    drop(erin);
    let (_dave, _) = present(&nodes[0], room, "dave").await;
    // The second process takes over and sends dave's arrival; erin's departure
    // waits for the leave delay, and the second dies before writing it.
    let taken_over = [json!({"name": "member_added", "channel": room, "user_id": "dave"})];
    receiver.wait_for("/hooks", &taken_over).await;
    second.kill().await;

    receiver_ends_with(&receiver, &["bob", "dave"], Duration::from_secs(15)).await;
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn changes_during_a_short_pause_of_the_sender_are_reported() {
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    // A pause longer than half node_timeout but shorter than all of it: the
    // sender is not taken for dead, yet joins again as the newest node.
    let config = node_config(REDIS, &name, "2s", &hooks);
    let sender = ProcessNode::start("briefly-paused-sender", &config).await;
    let nodes = start_nodes(1, &config).await;
    let room = "presence-brief";
    let [bob, _carol] = joined_and_heard(&receiver, &nodes[0], room, ["bob", "carol"]).await;

    sender.signal("STOP");
    drop(bob);
    let (_dave, _) = present(&nodes[0], room, "dave").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sender.signal("CONT");

    receiver_ends_with(&receiver, &["carol", "dave"], AGREE).await;
    drop(nodes);
    drop_schema(&name).await;
}

#[tokio::test]
async fn members_of_a_sender_cut_off_from_redis_are_reported_back_when_it_returns() {
    let redis = OwnRedis::start().await;
    let proxy = CutProxy::start(redis.port()).await;
    let (receiver, hooks) = channel_hooks().await;
    let name = unique_name();
    let direct = node_config(&redis.url(), &name, "1500ms", &hooks);
    let through_proxy = node_config(&proxy.url(), &name, "1500ms", &hooks);
    // Started first, the process is the oldest node: it sends the webhooks.
    let sender = ProcessNode::start("cut-off-sender", &through_proxy).await;
    let nodes = start_nodes(1, &direct).await;
    let app = nodes[0].app.clone();
    let room = "presence-cut";
    let _alice = present_on(&sender, &app, room, "alice").await;
    let [_bob] = joined_and_heard(&receiver, &nodes[0], room, ["bob"]).await;
    let arrived = [json!({"name": "member_added", "channel": room, "user_id": "alice"})];
    receiver.wait_for("/hooks", &arrived).await;

    // Cut off past node_timeout, the sender is taken for dead and alice reported
    // gone; back, it must not take the role back without her return reported.
    proxy.cut();
    let gone = [json!({"name": "member_removed", "channel": room, "user_id": "alice"})];
    receiver.wait_for("/hooks", &gone).await;
    proxy.restore();
    wait_users(&nodes, room, &["alice", "bob"]).await;
    receiver_ends_with(&receiver, &["alice", "bob"], AGREE).await;
    drop(nodes);
    drop_schema(&name).await;
}
