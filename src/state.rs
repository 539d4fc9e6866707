//! What every request handler and socket task shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::Apps;
use crate::config::Config;
use crate::delivery::Sender;
use crate::delivery::pusher_webhooks::Notifier;
use crate::hub::Hub;
use crate::jobs::JobRuntime;
use crate::users::Users;

/// The server's shared state, behind one `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// The apps served.
    pub apps: Apps,
    /// Channels and subscribers, merged with the other nodes' parts.
    pub hub: Hub,
    /// Signed-in users and their watchers.
    pub users: Users,
    /// The job store, file storage and workers' wake-ups.
    pub jobs: JobRuntime,
    /// Delivery of results to callback URLs.
    pub delivery: Sender,
    /// Cancelled when the server begins to shut down; sockets then close with 4200.
    pub shutdown: CancellationToken,
    /// Every socket task, so that shutdown can wait for them to finish.
    pub tracker: TaskTracker,
    /// False once shutdown has begun, so `/readyz` turns traffic away first.
    ready: AtomicBool,
}

impl Shared {
    /// Shared state for `config`, around an opened job runtime and sender; the hub
    /// reports channel events to `webhooks`.
    pub fn new(
        config: Config,
        jobs: JobRuntime,
        delivery: Sender,
        webhooks: Notifier,
        bus: Option<Arc<crate::cluster::Bus>>,
    ) -> Self {
        Shared {
            apps: Apps::new(&config.apps),
            config,
            hub: Hub::with_webhooks(webhooks).with_bus(bus.clone()),
            users: Users::new().with_bus(bus),
            jobs,
            delivery,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(true),
        }
    }

    /// Whether the server takes new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Stops taking new work and tells every socket to reconnect elsewhere. In a
    /// cluster, first hands the cluster's webhooks to another node, which then
    /// reports the departures of this node's sockets.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        if let Some(bus) = self.hub.bus() {
            bus.resign();
        }
        self.shutdown.cancel();
    }
}
