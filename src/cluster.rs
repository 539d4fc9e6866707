//! The bus between nodes: through Redis pub/sub, the nodes of a cluster share
//! channel events and enough of each other's state to behave as one server.
//!
//! Each node publishes on `{prefix}:events`, over one connection and in order, so
//! what one node sends arrives everywhere in the order it was sent:
//!
//! - Channel events (HTTP triggers, job events, client events, events to one user,
//!   cache channels and kept job outcomes), `terminate_connections`, and job
//!   cancellations. `socket_id` exclusion travels with an event and is applied on
//!   the node where the socket lives.
//! - Its own part of each channel, as absolute values: how many sockets it has
//!   there, which presence users have a socket there, which users are signed in.
//!   Every node merges the others' parts with its own, so that rosters, counts,
//!   `member_added`/`member_removed` and watchlists are those of the whole cluster.
//! - A heartbeat. A node silent for `node_timeout` is taken for dead and its part
//!   is dropped, as if its sockets had all left.
//!
//! A node that (re)connects, or that had to drop a message, asks every node for a
//! snapshot of its part and sends its own, so nodes rebuild what they missed. While
//! it cannot reach Redis a node keeps serving its own sockets, counts what it could
//! not publish, reports not ready on `/readyz`, and reconnects by itself.
//!
//! Pusher webhooks about occupancy and membership are sent by one node for the
//! whole cluster: the oldest live node, which sees every change in its merged view.
//! A node that shuts down resigns first, so that the next oldest reports its
//! sockets' departures. The others keep what they see meanwhile for a while: when
//! the node that speaks dies instead, its successor sends what happened since
//! shortly before the dead node's last word, at the cost of a few events sent
//! twice.
//!
//! Known limits: a snapshot is one message, so a node holding very many channels
//! sends a large one when a node joins; and while the nodes cannot all hear each
//! other (a network split), each side takes the other for dead after
//! `node_timeout`, and both may send the same webhook.

mod message;
mod nodes;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, WebhooksConfig};
use crate::hub::{ChannelShare, Frame, Member, NodeId, RemoteChange, Share};
use crate::protocol::{ChannelName, SocketId};
use crate::state::Shared;
use message::{Cached, ChannelPart, Envelope, Message, Snapshot};
use nodes::{Heard, Nodes};

/// Messages waiting to be published; past this they are counted as unpublished and
/// dropped, so that a slow or absent Redis never slows sockets.
const QUEUE: usize = 10_000;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a stopping node waits for its last messages to reach Redis.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// What waits to be published.
#[derive(Debug)]
enum Outbound {
    Message(Vec<u8>),
    /// This node's snapshot, taken when its turn comes so that it is no older
    /// than the changes queued before it.
    Snapshot,
    /// The last message of a stopping node.
    Bye,
}

/// This node's end of the bus.
#[derive(Debug)]
pub struct Bus {
    node: NodeId,
    /// When this node joined the cluster, in milliseconds since the Unix epoch: at
    /// start, and again after it was paused.
    joined: AtomicU64,
    queue: mpsc::Sender<Outbound>,
    /// Whether the subscription to other nodes' messages is up.
    connected: AtomicBool,
    /// Whether this node has listened long enough to have heard the others.
    settled: AtomicBool,
    /// Whether this node sends the cluster's Pusher webhooks.
    speaks: AtomicBool,
    /// Messages that could not be published (queue full or Redis down).
    unpublished: AtomicU64,
    /// Set when a message was dropped: the others' picture of this node may be
    /// wrong until a snapshot follows the messages still queued.
    resync: AtomicBool,
    /// Set while the queue is full, so that a burst of drops is logged once.
    overflowing: AtomicBool,
    /// Set once this node began to shut down: it no longer speaks for the cluster.
    resigned: AtomicBool,
    nodes: Mutex<Nodes>,
    /// How long a node may be silent before the others take it for dead.
    node_timeout: Duration,
    /// How long before its last word a node that sends webhooks may have taken a
    /// change in without its webhook being written yet: its leave delay, its
    /// batch window and a heartbeat. A node taking over from it sends again what
    /// it saw in that time.
    handover: Duration,
    /// The last time a node took over the webhooks from a dead one, and from when
    /// it sent again what it had seen: should it die too before that is written,
    /// the next one must look back as far.
    last_handover: Mutex<Option<(Instant, Instant)>>,
}

/// The parts of the bus that run as tasks, started by [`spawn`].
#[derive(Debug)]
pub struct BusTasks {
    config: ClusterConfig,
    queue: mpsc::Receiver<Outbound>,
}

/// A bus for `config`, and its tasks to spawn once the server's state exists;
/// `webhooks` tells how far a node taking over the cluster's webhooks looks back.
pub fn new(config: &ClusterConfig, webhooks: &WebhooksConfig) -> (Arc<Bus>, BusTasks) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let bus = Bus {
        node: uuid::Uuid::new_v4().simple().to_string().into(),
        joined: AtomicU64::new(unix_millis()),
        queue,
        connected: AtomicBool::new(false),
        settled: AtomicBool::new(false),
        speaks: AtomicBool::new(false),
        unpublished: AtomicU64::new(0),
        resync: AtomicBool::new(false),
        overflowing: AtomicBool::new(false),
        resigned: AtomicBool::new(false),
        nodes: Mutex::new(Nodes::default()),
        node_timeout: config.node_timeout,
        handover: webhooks.leave_delay + webhooks.batch_window + config.heartbeat,
        last_handover: Mutex::new(None),
    };
    let tasks = BusTasks {
        config: config.clone(),
        queue: receiver,
    };
    (Arc::new(bus), tasks)
}

impl Bus {
    /// Sends a channel event to the other nodes.
    pub fn forward(
        &self,
        app: &str,
        channel: &ChannelName,
        frame: &Frame,
        except: Option<&SocketId>,
        retain: Option<Duration>,
    ) {
        self.send(Message::Event {
            app: app.to_owned(),
            channel: channel.to_string(),
            frame: frame.as_str().to_owned(),
            except: except.map(ToString::to_string),
            retain_ms: retain.map(millis),
        });
    }

    /// Asks the other nodes to close every socket of a user.
    pub fn terminate_user(&self, app: &str, user_id: &str) {
        let (app, user_id) = (app.to_owned(), user_id.to_owned());
        self.send(Message::TerminateUser { app, user_id });
    }

    /// Asks the other nodes to stop a cancelled job's attempt.
    pub fn cancel_job(&self, job_id: uuid::Uuid) {
        self.send(Message::CancelJob { job_id });
    }

    /// Tells the others how many sockets this node has on a channel now.
    pub fn sockets(&self, app: &str, channel: &ChannelName, count: usize) {
        self.send(Message::Sockets {
            app: app.to_owned(),
            channel: channel.to_string(),
            count,
        });
    }

    /// Tells the others a presence user's first socket here joined a channel.
    pub fn member_joined(&self, app: &str, channel: &ChannelName, member: &Member) {
        self.send(Message::MemberJoined {
            app: app.to_owned(),
            channel: channel.to_string(),
            user_id: member.user_id.to_string(),
            user_info: member.user_info.clone(),
        });
    }

    /// Tells the others a presence user's last socket here left a channel.
    pub fn member_left(&self, app: &str, channel: &ChannelName, user_id: &str) {
        self.send(Message::MemberLeft {
            app: app.to_owned(),
            channel: channel.to_string(),
            user_id: user_id.to_owned(),
        });
    }

    /// Tells the others a user's first socket here signed in.
    pub fn user_online(&self, app: &str, user_id: &str) {
        let (app, user_id) = (app.to_owned(), user_id.to_owned());
        self.send(Message::UserOnline { app, user_id });
    }

    /// Tells the others a user's last signed-in socket here went.
    pub fn user_offline(&self, app: &str, user_id: &str) {
        let (app, user_id) = (app.to_owned(), user_id.to_owned());
        self.send(Message::UserOffline { app, user_id });
    }

    fn send(&self, message: Message) {
        let envelope = Envelope {
            node: self.node.to_string(),
            since: self.joined.load(Ordering::Acquire),
            message,
        };
        let Ok(bytes) = serde_json::to_vec(&envelope) else {
            return;
        };
        self.enqueue(Outbound::Message(bytes));
    }

    fn enqueue(&self, outbound: Outbound) {
        if self.queue.try_send(outbound).is_err() {
            self.lost_one();
            if !self.overflowing.swap(true, Ordering::AcqRel) {
                warn!(
                    capacity = QUEUE,
                    "too many messages for the other nodes at once; dropping them until \
                     the queue drains, then sending a snapshot"
                );
            }
        }
    }

    fn lost_one(&self) {
        self.unpublished.fetch_add(1, Ordering::Relaxed);
        self.resync.store(true, Ordering::Release);
    }

    /// Whether this node hears the other nodes now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether this node hears the others and has had time to learn their state.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && self.settled.load(Ordering::Acquire)
    }

    /// Stops speaking for the cluster and tells the others, so that the next oldest
    /// node reports the departures of this node's sockets: at shutdown, before
    /// they close.
    pub fn resign(&self) {
        // The last node keeps speaking: nobody else would report its sockets'
        // departures.
        if !self.nodes().any_eligible() {
            return;
        }
        self.resigned.store(true, Ordering::Release);
        self.elect();
        self.send(Message::Resign);
    }

    /// Joins the cluster again as its newest node, after this process was paused:
    /// the others may have taken it for dead and reported its members gone, and
    /// one of them, not this node, must report their return.
    fn rejoin(&self) {
        self.joined.store(unix_millis(), Ordering::Release);
        self.elect();
    }

    /// How long this node keeps the changes it saw while another node spoke for
    /// the cluster: long enough for that node to be taken for dead, and for what
    /// it may not have sent by then.
    pub fn unspoken_window(&self) -> Duration {
        (self.node_timeout + self.handover) * 2
    }

    /// Whether this node sends the cluster's Pusher webhooks about occupancy and
    /// membership: the oldest live node does.
    pub fn speaks_for_cluster(&self) -> bool {
        self.speaks.load(Ordering::Acquire)
    }

    /// Messages this node could not publish since it started.
    pub fn unpublished(&self) -> u64 {
        self.unpublished.load(Ordering::Relaxed)
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides again whether this node speaks for the cluster; true if it has
    /// just begun to.
    fn elect(&self) -> bool {
        let joined = self.joined.load(Ordering::Acquire);
        let oldest = self.nodes().is_oldest(&self.node, joined);
        let speaks = self.settled.load(Ordering::Acquire)
            && !self.resigned.load(Ordering::Acquire)
            && oldest;
        let spoke = self.speaks.swap(speaks, Ordering::AcqRel);
        if spoke != speaks {
            debug!(speaks, "this node's role for cluster webhooks changed");
        }
        speaks && !spoke
    }
}

fn unix_millis() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn topic(config: &ClusterConfig) -> String {
    format!("{}:events", config.prefix)
}

/// Starts the publisher, the subscriber and the heartbeat. The subscriber and the
/// heartbeat stop at shutdown; the publisher runs until [`leave`] so that the
/// departures of this node's sockets still reach the others.
pub fn spawn(shared: &Arc<Shared>, tasks: BusTasks) -> Option<JoinHandle<()>> {
    let bus = shared.hub.bus().cloned()?;
    let BusTasks { config, queue } = tasks;
    let publisher = tokio::spawn(publish(
        Arc::clone(shared),
        Arc::clone(&bus),
        config.clone(),
        queue,
    ));
    let listener = subscribe(Arc::clone(shared), Arc::clone(&bus), config.clone());
    shared.tracker.spawn(listener);
    shared
        .tracker
        .spawn(heartbeat(Arc::clone(shared), bus, config));
    Some(publisher)
}

/// Says goodbye to the other nodes, once this node's sockets are closed, and waits
/// a little for that and everything queued before it to be published.
pub async fn leave(shared: &Shared, publisher: JoinHandle<()>) {
    let Some(bus) = shared.hub.bus() else { return };
    bus.enqueue(Outbound::Bye);
    if tokio::time::timeout(LEAVE_WAIT, publisher).await.is_err() {
        warn!("could not tell the other nodes this one is leaving; they will time it out");
    }
}

/// Publishes queued messages in order over one connection, until this node says
/// goodbye.
async fn publish(
    shared: Arc<Shared>,
    bus: Arc<Bus>,
    config: ClusterConfig,
    mut queue: mpsc::Receiver<Outbound>,
) {
    let topic = topic(&config);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connection = match redis::Client::open(config.redis_url.as_str()) {
            Ok(client) => client.get_multiplexed_async_connection().await,
            Err(error) => Err(error),
        };
        match connection {
            Ok(mut connection) => {
                backoff = Duration::from_millis(100);
                let sent = send_queued(&shared, &bus, &topic, &mut connection, &mut queue);
                match sent.await {
                    Ok(()) => return,
                    Err(error) => {
                        bus.lost_one();
                        warn!(%error, "lost the Redis connection for publishing; reconnecting");
                    }
                }
            }
            Err(error) => {
                debug!(%error, "cannot reach Redis to publish; retrying");
                // Messages that pile up meanwhile are counted, not kept; a
                // snapshot repairs the others' picture once Redis is back.
                while let Ok(outbound) = queue.try_recv() {
                    match outbound {
                        Outbound::Message(_) | Outbound::Snapshot => bus.lost_one(),
                        Outbound::Bye => return,
                    }
                }
                if shared.shutdown.is_cancelled() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sends queued messages in order until this node says goodbye. An error means the
/// connection is lost, with the message being sent.
async fn send_queued(
    shared: &Shared,
    bus: &Bus,
    topic: &str,
    connection: &mut redis::aio::MultiplexedConnection,
    queue: &mut mpsc::Receiver<Outbound>,
) -> redis::RedisResult<()> {
    while let Some(outbound) = queue.recv().await {
        let (bytes, last) = match outbound {
            Outbound::Message(bytes) => (bytes, false),
            Outbound::Snapshot => (snapshot(shared, bus), false),
            Outbound::Bye => (envelope_bytes(bus, Message::Bye), true),
        };
        publish_bytes(connection, topic, bytes).await?;
        if last {
            return Ok(());
        }
        // A snapshot repairs what was dropped, once nothing older than it is left
        // to send: the others apply messages in the order they come. What was
        // dropped may have been a request for theirs, so it is asked for again.
        if queue.is_empty() && bus.resync.swap(false, Ordering::AcqRel) {
            bus.overflowing.store(false, Ordering::Release);
            let request = envelope_bytes(bus, Message::SyncRequest);
            publish_bytes(connection, topic, request).await?;
            publish_bytes(connection, topic, snapshot(shared, bus)).await?;
        }
    }
    Ok(())
}

async fn publish_bytes(
    connection: &mut redis::aio::MultiplexedConnection,
    topic: &str,
    bytes: Vec<u8>,
) -> redis::RedisResult<()> {
    let command = redis::cmd("PUBLISH").arg(topic).arg(bytes).to_owned();
    command.query_async::<i64>(connection).await.map(drop)
}

fn envelope_bytes(bus: &Bus, message: Message) -> Vec<u8> {
    let envelope = Envelope {
        node: bus.node.to_string(),
        since: bus.joined.load(Ordering::Acquire),
        message,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// This node's part of every channel, its signed-in users and its cache channels.
fn snapshot(shared: &Shared, bus: &Bus) -> Vec<u8> {
    let channels = shared.hub.local_shares().into_iter();
    let channels = channels.map(|part| ChannelPart {
        app: part.app.to_string(),
        channel: part.channel.to_string(),
        sockets: part.share.sockets,
        members: (part.share.members.into_iter())
            .map(|(id, info)| (id.to_string(), info))
            .collect(),
    });
    let users = shared.users.local_users().into_iter();
    let users = users.map(|(app, user)| (app.to_string(), user.to_string()));
    let cached = shared.hub.cached_frames().into_iter();
    let cached = cached.map(|(app, channel, frame, left)| Cached {
        app: app.to_string(),
        channel: channel.to_string(),
        frame: frame.as_str().to_owned(),
        ttl_ms: millis(left),
    });
    let snapshot = Snapshot {
        channels: channels.collect(),
        users: users.collect(),
        cached: cached.collect(),
    };
    envelope_bytes(bus, Message::Snapshot(snapshot))
}

/// Acts on other nodes' messages; on each (re)connection asks for their snapshots
/// and sends this node's.
async fn subscribe(shared: Arc<Shared>, bus: Arc<Bus>, config: ClusterConfig) {
    let topic = topic(&config);
    let mut backoff = Duration::from_millis(100);
    // The first failure of a run is a warning; the retries are not news.
    let mut failing = false;
    // When the connection was lost, once it had been up.
    let mut lost_at: Option<Instant> = None;
    loop {
        let listening = async {
            let client = redis::Client::open(config.redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&topic).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            pubsub = listening => pubsub,
            () = shared.shutdown.cancelled() => return,
        };
        match pubsub {
            Ok(mut pubsub) => {
                failing = false;
                if lost_at
                    .take()
                    .is_some_and(|at| at.elapsed() > config.node_timeout / 2)
                {
                    // The others may have taken this node for dead and reported
                    // its members gone: one of them must report their return.
                    info!("away from the others for a while; joining them again");
                    bus.rejoin();
                }
                bus.nodes().refresh_all(Instant::now());
                bus.connected.store(true, Ordering::Release);
                bus.send(Message::SyncRequest);
                bus.enqueue(Outbound::Snapshot);
                info!("listening to the other nodes through Redis");
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = shared.shutdown.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    deliver(&shared, &bus, message.get_payload_bytes());
                }
                bus.connected.store(false, Ordering::Release);
                lost_at = Some(Instant::now());
                warn!("lost the Redis connection to the other nodes; reconnecting");
            }
            Err(error) if !failing => {
                failing = true;
                warn!(%error, url = %config.redis_url, "cannot reach Redis; serving only this \
                       node's sockets until it answers");
            }
            Err(error) => debug!(%error, "cannot reach Redis to listen; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Says this node is alive every `heartbeat`, settles it once it has listened for
/// a heartbeat, and drops the nodes that have gone silent.
async fn heartbeat(shared: Arc<Shared>, bus: Arc<Bus>, config: ClusterConfig) {
    let mut every = tokio::time::interval(config.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listening_since: Option<Instant> = None;
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let paused = now.duration_since(last_tick) > config.node_timeout / 2;
        last_tick = now;
        if paused {
            // This process was stopped or starved (a paused VM, a frozen
            // container): it could not listen, so the others' silence says
            // nothing about them, while they may have taken it for dead.
            warn!("this node did not run for a while; joining the others again");
            bus.nodes().refresh_all(now);
            bus.rejoin();
        }
        if !bus.is_connected() {
            listening_since = None;
            continue;
        }
        bus.send(Message::Heartbeat);
        let since = *listening_since.get_or_insert(now);
        if now.duration_since(since) >= config.heartbeat
            && !bus.settled.swap(true, Ordering::AcqRel)
            && bus.elect()
        {
            shared.hub.speak_from(None);
        }
        if paused {
            continue;
        }
        let gone = bus.nodes().expire(now, config.node_timeout);
        take_over(&shared, &bus, gone);
    }
}

/// Drops the nodes that went silent. If that makes this node the one that speaks
/// for the cluster, it first reports the changes it saw since shortly before the
/// earliest of them was last heard: a dead node that spoke cannot have reported
/// those, or may not have written them yet. Some may so be sent twice; none is
/// lost.
fn take_over(shared: &Shared, bus: &Bus, gone: Vec<(NodeId, Instant)>) {
    let Some(earliest) = gone.iter().map(|(_, last)| *last).min() else {
        return;
    };
    // Every node notes the handover, so that the next one can look back as far.
    let since = handover_since(bus, earliest);
    if bus.elect() {
        info!("this node now sends the cluster's channel webhooks");
        shared.hub.speak_from(Some(since));
    }
    for (node, _) in gone {
        info!(%node, "a node went silent; dropping its sockets and members");
        forget(shared, &node);
    }
}

/// From when a node taking over the webhooks from one last heard at `last_word`
/// sends again what it saw: the handover time before that word, or further back
/// if that node had itself just taken over (it may not have written what it sent
/// again). Notes this handover for the next.
fn handover_since(bus: &Bus, last_word: Instant) -> Instant {
    let mut since = last_word.checked_sub(bus.handover).unwrap_or(last_word);
    let mut last = (bus.last_handover.lock()).unwrap_or_else(PoisonError::into_inner);
    if let Some((at, from)) = *last
        && at >= since
    {
        since = since.min(from);
    }
    *last = Some((Instant::now(), since));
    since
}

/// Starts sending the cluster's webhooks in place of a live node that stopped
/// speaking (it resigned, or joined again after a pause) and was last heard before
/// that at `last_word`: what this node saw since shortly before is sent again.
fn begin_speaking(shared: &Shared, bus: &Bus, last_word: Instant) {
    info!("this node now sends the cluster's channel webhooks");
    let since = handover_since(bus, last_word);
    shared.hub.speak_from(Some(since));
}

/// Drops everything a node that left or died held.
fn forget(shared: &Shared, node: &NodeId) {
    let counts = |app: &str| counts_of(shared, app);
    shared.hub.replace_node(node, Vec::new(), counts);
    shared.users.replace_node(node, Vec::new());
}

/// Whether an app's sockets hear `subscription_count`.
fn counts_of(shared: &Shared, app: &str) -> bool {
    shared
        .apps
        .by_id(app)
        .is_some_and(|app| app.config.subscription_count)
}

/// Acts on one message from another node.
fn deliver(shared: &Shared, bus: &Bus, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
        return;
    };
    if *envelope.node == *bus.node {
        return;
    }
    let node: NodeId = envelope.node.into();
    let since = envelope.since;
    let heard = (bus.nodes()).heard(&node, since, Instant::now());
    let leaving = matches!(envelope.message, Message::Bye);
    let last_word = match heard {
        Heard::Known => None,
        Heard::New => Some(Instant::now()),
        Heard::Rejoined { last_word } => Some(last_word),
    };
    if let Some(last_word) = last_word
        && bus.elect()
    {
        begin_speaking(shared, bus, last_word);
    }
    // A node that was taken for dead but is alive again has its changes since
    // then only as a snapshot.
    let full = matches!(
        envelope.message,
        Message::Snapshot(_) | Message::SyncRequest | Message::Bye
    );
    if heard == Heard::New && !full {
        debug!(%node, "heard a new node");
        bus.send(Message::SyncRequest);
    }
    act(shared, bus, &node, envelope.message);
    // Heard again once the message is acted on, so that what it caused here is
    // older than the node's last word.
    if !leaving {
        (bus.nodes()).heard(&node, since, Instant::now());
    }
}

/// Does what another node's message asks.
fn act(shared: &Shared, bus: &Bus, node: &NodeId, message: Message) {
    match message {
        Message::Event {
            app,
            channel,
            frame,
            except,
            retain_ms,
        } => {
            let Ok(channel) = ChannelName::parse(&channel) else {
                return;
            };
            let app: Arc<str> = app.into();
            let except = except.as_deref().and_then(|id| SocketId::parse(id).ok());
            let frame = Frame::from(frame);
            let hub = &shared.hub;
            match retain_ms {
                Some(ms) => {
                    let keep = Duration::from_millis(ms);
                    hub.retain_here(&app, &channel, &frame, except.as_ref(), keep);
                }
                None => {
                    hub.publish_here(&app, &channel, &frame, except.as_ref());
                }
            }
        }
        Message::TerminateUser { app, user_id } => {
            shared.users.terminate(&app.into(), &user_id);
        }
        Message::CancelJob { job_id } => shared.jobs.stop_attempt(job_id),
        Message::Sockets {
            app,
            channel,
            count,
        } => change(shared, node, &app, &channel, RemoteChange::Sockets(count)),
        Message::MemberJoined {
            app,
            channel,
            user_id,
            user_info,
        } => {
            let joined = RemoteChange::Joined(user_id.into(), user_info);
            change(shared, node, &app, &channel, joined);
        }
        Message::MemberLeft {
            app,
            channel,
            user_id,
        } => change(
            shared,
            node,
            &app,
            &channel,
            RemoteChange::Left(user_id.into()),
        ),
        Message::UserOnline { app, user_id } => {
            (shared.users).set_remote(&app.into(), &user_id.into(), node, true);
        }
        Message::UserOffline { app, user_id } => {
            (shared.users).set_remote(&app.into(), &user_id.into(), node, false);
        }
        Message::Heartbeat => {}
        Message::SyncRequest => bus.enqueue(Outbound::Snapshot),
        Message::Snapshot(snapshot) => apply_snapshot(shared, node, snapshot),
        Message::Resign => {
            bus.nodes().retire(node);
            if bus.elect() {
                begin_speaking(shared, bus, Instant::now());
            }
        }
        Message::Bye => {
            info!(%node, "a node left");
            bus.nodes().forget(node);
            if bus.elect() {
                begin_speaking(shared, bus, Instant::now());
            }
            forget(shared, node);
        }
    }
}

/// Applies one change another node reports about its part of a channel.
fn change(shared: &Shared, node: &NodeId, app: &str, channel: &str, change: RemoteChange) {
    let Ok(channel) = ChannelName::parse(channel) else {
        return;
    };
    let counts = counts_of(shared, app);
    (shared.hub).apply_remote(&app.into(), &channel, node, change, counts);
}

/// Replaces what this node knew of another with that node's snapshot.
fn apply_snapshot(shared: &Shared, node: &NodeId, snapshot: Snapshot) {
    let shares = snapshot.channels.into_iter().filter_map(|part| {
        let channel = ChannelName::parse(&part.channel).ok()?;
        let members = part.members.into_iter();
        let share = Share {
            sockets: part.sockets,
            members: members.map(|(id, info)| (id.into(), info)).collect(),
        };
        Some(ChannelShare {
            app: part.app.into(),
            channel,
            share,
        })
    });
    let counts = |app: &str| counts_of(shared, app);
    shared.hub.replace_node(node, shares.collect(), counts);
    let users = snapshot.users.into_iter();
    let users = users.map(|(app, user)| (app.into(), user.into()));
    shared.users.replace_node(node, users.collect());
    for cached in snapshot.cached {
        if let Ok(channel) = ChannelName::parse(&cached.channel) {
            let keep = Duration::from_millis(cached.ttl_ms);
            let frame = Frame::from(cached.frame);
            shared
                .hub
                .keep_latest(&cached.app.into(), &channel, frame, keep);
        }
    }
}
