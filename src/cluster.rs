//! The bus between nodes: channel events published on one node reach the sockets of
//! every other node through Redis pub/sub.
//!
//! Each node publishes what it sends to its own sockets as one message on
//! `{prefix}:events`, and delivers the messages of other nodes to its sockets. One
//! connection publishes, in order, so the events of one publisher arrive everywhere
//! in the order it sent them. `socket_id` exclusion travels with the message and is
//! applied on the node where the socket lives.
//!
//! What this covers so far: channel events (HTTP triggers, job events, client events,
//! events to one user, cache channels and job outcomes kept for late subscribers),
//! `terminate_connections`, and stopping a cancelled job's attempt wherever it runs.
//! Presence rosters, occupancy counts and watchlists are still per node: a node sees
//! only its own members and sockets. When Redis cannot be reached, a node keeps
//! serving its own sockets, counts what it could not publish, reports not ready on
//! `/readyz`, and reconnects by itself with back-off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::hub::Frame;
use crate::protocol::{ChannelName, SocketId};
use crate::state::Shared;

/// Messages waiting to be published; past this they are counted as unpublished and
/// dropped, so that a slow or absent Redis never slows sockets.
const QUEUE: usize = 10_000;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One message between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The node that published it, which does not act on it again.
    node: String,
    app: String,
    #[serde(flatten)]
    message: Message,
}

/// What nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    /// A channel event to deliver to local subscribers.
    Event {
        channel: String,
        /// The finished frame text.
        frame: String,
        /// A socket to leave out, wherever it lives.
        except: Option<String>,
        /// For frames kept for late subscribers: how long, in milliseconds.
        retain_ms: Option<u64>,
    },
    /// Close every local socket of this user with 4009.
    TerminateUser { user_id: String },
    /// Stop the attempt of this cancelled job, if it runs here.
    CancelJob { job_id: uuid::Uuid },
}

/// This node's end of the bus.
#[derive(Debug)]
pub struct Bus {
    node: String,
    queue: mpsc::Sender<Vec<u8>>,
    /// Whether the subscription to other nodes' events is up.
    connected: AtomicBool,
    /// Messages that could not be published (queue full or Redis down).
    unpublished: AtomicU64,
}

/// The parts of the bus that run as tasks, started by [`spawn`].
#[derive(Debug)]
pub struct BusTasks {
    config: ClusterConfig,
    queue: mpsc::Receiver<Vec<u8>>,
}

/// A bus for `config`, and its tasks to spawn once the server's state exists.
pub fn new(config: &ClusterConfig) -> (Arc<Bus>, BusTasks) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let bus = Bus {
        node: uuid::Uuid::new_v4().simple().to_string(),
        queue,
        connected: AtomicBool::new(false),
        unpublished: AtomicU64::new(0),
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
        self.send(
            app,
            Message::Event {
                channel: channel.to_string(),
                frame: frame.as_str().to_owned(),
                except: except.map(ToString::to_string),
                retain_ms: retain.map(|keep| u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)),
            },
        );
    }

    /// Asks the other nodes to close every socket of a user.
    pub fn terminate_user(&self, app: &str, user_id: &str) {
        let user_id = user_id.to_owned();
        self.send(app, Message::TerminateUser { user_id });
    }

    /// Asks the other nodes to stop a cancelled job's attempt.
    pub fn cancel_job(&self, app: &str, job_id: uuid::Uuid) {
        self.send(app, Message::CancelJob { job_id });
    }

    fn send(&self, app: &str, message: Message) {
        let envelope = Envelope {
            node: self.node.clone(),
            app: app.to_owned(),
            message,
        };
        let Ok(bytes) = serde_json::to_vec(&envelope) else {
            return;
        };
        if self.queue.try_send(bytes).is_err() {
            self.unpublished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether this node hears the other nodes now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Messages this node could not publish since it started.
    pub fn unpublished(&self) -> u64 {
        self.unpublished.load(Ordering::Relaxed)
    }
}

fn topic(config: &ClusterConfig) -> String {
    format!("{}:events", config.prefix)
}

/// Starts the publisher and the subscriber; both reconnect by themselves and stop
/// at shutdown.
pub fn spawn(shared: &Arc<Shared>, tasks: BusTasks) {
    let Some(bus) = shared.hub.bus().cloned() else {
        return;
    };
    let BusTasks { config, queue } = tasks;
    shared.tracker.spawn(publish(
        Arc::clone(&bus),
        config.clone(),
        queue,
        shared.shutdown.clone(),
    ));
    shared
        .tracker
        .spawn(subscribe(Arc::clone(shared), bus, config));
}

/// Publishes queued messages in order over one connection.
async fn publish(
    bus: Arc<Bus>,
    config: ClusterConfig,
    mut queue: mpsc::Receiver<Vec<u8>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let topic = topic(&config);
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        let connection = match redis::Client::open(config.redis_url.as_str()) {
            Ok(client) => client.get_multiplexed_async_connection().await,
            Err(error) => Err(error),
        };
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                debug!(%error, "cannot reach Redis to publish; retrying");
                // Messages that pile up meanwhile are counted, not kept.
                while queue.try_recv().is_ok() {
                    bus.unpublished.fetch_add(1, Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let message = tokio::select! {
                message = queue.recv() => message,
                () = shutdown.cancelled() => return,
            };
            let Some(message) = message else { return };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&topic)
                .arg(message)
                .query_async(&mut connection)
                .await;
            if let Err(error) = sent {
                bus.unpublished.fetch_add(1, Ordering::Relaxed);
                warn!(%error, "lost the Redis connection for publishing; reconnecting");
                continue 'connect;
            }
        }
    }
}

/// Delivers other nodes' messages to this node's sockets.
async fn subscribe(shared: Arc<Shared>, bus: Arc<Bus>, config: ClusterConfig) {
    let topic = topic(&config);
    let mut backoff = Duration::from_millis(100);
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
                bus.connected.store(true, Ordering::Release);
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
                warn!("lost the Redis connection to the other nodes; reconnecting");
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

/// Acts on one message from another node.
fn deliver(shared: &Shared, bus: &Bus, payload: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
        return;
    };
    if envelope.node == bus.node {
        return;
    }
    let app: Arc<str> = envelope.app.into();
    match envelope.message {
        Message::Event {
            channel,
            frame,
            except,
            retain_ms,
        } => {
            let Ok(channel) = ChannelName::parse(&channel) else {
                return;
            };
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
        Message::TerminateUser { user_id } => {
            shared.users.terminate(&app, &user_id);
        }
        Message::CancelJob { job_id } => shared.jobs.stop_attempt(job_id),
    }
}
