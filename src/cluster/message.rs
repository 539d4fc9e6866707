//! What nodes say to each other on the bus, as JSON.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    /// The node that published it, which does not act on it again.
    pub node: String,
    /// When that node started, in milliseconds since the Unix epoch: the oldest
    /// node speaks for the cluster.
    pub since: u64,
    #[serde(flatten)]
    pub message: Message,
}

/// What nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Message {
    /// A channel event to deliver to local subscribers.
    Event {
        app: String,
        channel: String,
        /// The finished frame text.
        frame: String,
        /// A socket to leave out, wherever it lives.
        except: Option<String>,
        /// For frames kept for late subscribers: how long, in milliseconds.
        retain_ms: Option<u64>,
    },
    /// Close every local socket of this user with 4009.
    TerminateUser { app: String, user_id: String },
    /// Stop the attempt of this cancelled job, if it runs here.
    CancelJob { job_id: uuid::Uuid },
    /// The sender now has this many sockets on a channel.
    Sockets {
        app: String,
        channel: String,
        count: usize,
    },
    /// A presence user's first socket on the sender joined a channel.
    MemberJoined {
        app: String,
        channel: String,
        user_id: String,
        user_info: Value,
    },
    /// A presence user's last socket on the sender left a channel.
    MemberLeft {
        app: String,
        channel: String,
        user_id: String,
    },
    /// A user's first socket on the sender signed in.
    UserOnline { app: String, user_id: String },
    /// A user's last signed-in socket on the sender went.
    UserOffline { app: String, user_id: String },
    /// The sender is alive.
    Heartbeat,
    /// The sender (re)joined: every node answers with a snapshot.
    SyncRequest,
    /// Everything the sender holds, replacing what others knew of it.
    Snapshot(Snapshot),
    /// The sender is shutting down: it no longer speaks for the cluster, and its
    /// sockets are about to leave.
    Resign,
    /// The sender has shut down; its sockets are gone.
    Bye,
}

/// One node's whole state as the others need it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub channels: Vec<ChannelPart>,
    /// Signed-in users, as (app, user id).
    pub users: Vec<(String, String)>,
    /// Cache channels' kept events.
    pub cached: Vec<Cached>,
}

/// One node's part of one channel.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChannelPart {
    pub app: String,
    pub channel: String,
    pub sockets: usize,
    /// Presence users, with their `user_info`.
    pub members: HashMap<String, Value>,
}

/// A cache channel's kept event.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Cached {
    pub app: String,
    pub channel: String,
    pub frame: String,
    /// Time it has left, in milliseconds.
    pub ttl_ms: u64,
}
