//! The apps a server serves, found by id (HTTP API) or by key (WebSocket path), and
//! the count of sockets each holds against its quota.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::AppConfig;

/// One app: its configuration and its live connection count.
#[derive(Debug)]
pub struct App {
    /// The app's id, shared with every channel key that names it.
    pub id: Arc<str>,
    /// Credentials, switches and limits, as configured.
    pub config: AppConfig,
    /// Sockets open now on this node.
    connections: AtomicUsize,
}

/// Holds one of an app's connection slots; the slot is given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<App>);

impl App {
    /// Takes a connection slot, or `None` when the app is at `max_connections`.
    pub fn try_connect(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let limit = self.config.max_connections;
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            });
        taken.ok().map(|_| ConnectionSlot(Arc::clone(self)))
    }

    /// Sockets open now on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every configured app, indexed both ways.
#[derive(Debug, Default)]
pub struct Apps {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
}

impl Apps {
    /// Indexes the configured apps. Ids and keys are unique: the config checks it.
    pub fn new(configs: &[AppConfig]) -> Self {
        let mut apps = Apps::default();
        for config in configs {
            let app = Arc::new(App {
                id: config.id.as_str().into(),
                config: config.clone(),
                connections: AtomicUsize::new(0),
            });
            apps.by_id.insert(config.id.clone(), Arc::clone(&app));
            apps.by_key.insert(config.key.clone(), app);
        }
        apps
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    /// The app with this key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }
}
