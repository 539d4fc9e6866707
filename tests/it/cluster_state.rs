//! Several nodes behaving as one server: presence rosters, occupancy and counts,
//! watchlists, cache channels and Pusher webhooks decided for the whole cluster;
//! and what happens to a node's sockets and members when it shuts down, is killed,
//! or loses Redis for a while. Real Redis and PostgreSQL, each test with its own
//! prefix and schema.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cluster::{
    OwnRedis, drop_schema, node_config, start_nodes, unique_name, wait_ready, wait_readyz,
};
use crate::extras_kit::{expect_watchlist, signed_in};
use crate::kit::{demo_app_with, join_presence, join_public, member, open};
use crate::node_kill::ProcessNode;
use crate::pusher_webhooks::{FAST, Receiver, config as hooks_config};
use crate::support::{
    TestApp, TestServer, Ws, assert_silent, data_of, recv_close, recv_event, recv_named, subscribe,
};

const REDIS: &str = "redis://127.0.0.1:6379";

/// Longest a test waits for the nodes to agree.
const AGREE: Duration = Duration::from_secs(5);

/// Waits until `check` holds, polling; fails naming `what` after `AGREE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + AGREE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {AGREE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    let receiver = Receiver::ok().await;
    let kinds = [
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
    ];
    let hooks = hooks_config(&[(receiver.url("/hooks"), &kinds)], FAST);
    (receiver, hooks)
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
    let arrived = [
        json!({"name": "channel_occupied", "channel": room}),
        json!({"name": "member_added", "channel": room, "user_id": "carol"}),
    ];
    receiver.wait_for("/hooks", &arrived).await;

    // Its successor announces what the dead node's sockets took with them.
    doomed.kill().await;
    let gone = [
        json!({"name": "member_removed", "channel": room, "user_id": "carol"}),
        json!({"name": "channel_vacated", "channel": room}),
    ];
    receiver.wait_for("/hooks", &gone).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.events("/hooks").len(),
        4,
        "each event exactly once"
    );
    drop(nodes);
    drop_schema(&name).await;
}
