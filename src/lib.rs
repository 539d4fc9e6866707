//! Herald: a self-hosted real-time push server that speaks the Pusher Channels
//! protocol and HTTP API, so `pusher-js`, Laravel Echo and the Pusher server SDKs
//! work against it unchanged.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration, from `config.toml` and `HERALD_*` variables.
//! - [`protocol`]: the Pusher wire vocabulary: frames, names, codes, signatures.
//! - [`apps`]: the apps served, looked up by id or key, with their connection quota.
//! - [`hub`]: channels, subscribers and presence rosters, cluster-wide.
//! - [`cluster`]: the bus between nodes (Redis): events, shared state, heartbeats.
//! - [`connection`]: one WebSocket's task.
//! - [`users`]: signed-in users, their sockets and watchlists.
//! - [`jobs`]: the event pipeline: jobs, handlers, workers, uploaded files.
//! - [`delivery`]: results to callback URLs: subscriptions, signing, retries.
//! - [`store`]: durable storage of jobs (SQLite).
//! - [`api`]: the HTTP routes: Pusher's API, jobs, health, the demo page.
//! - [`state`]: what handlers and socket tasks share.
//! - [`telemetry`]: logging set-up.
//!
//! [`run`] serves a configuration on a bound listener until a shutdown signal.

pub mod api;
pub mod apps;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod hub;
pub mod jobs;
pub mod protocol;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod users;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::Config;
use state::Shared;

/// Serves `config` on `listener` until `shutdown` completes, then closes every
/// socket with 4200 (reconnect at once) and waits up to `server.shutdown_grace` for
/// the socket tasks to end.
///
/// # Errors
///
/// When the store cannot be opened, or the listener fails.
pub async fn run<F>(config: Config, listener: TcpListener, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let jobs = jobs::JobRuntime::open(&config).await?;
    let sender = delivery::Sender::new(Arc::clone(&jobs.outbox), &config.webhooks)
        .map_err(RunError::HttpClient)?;
    let (webhooks, batcher) = delivery::pusher_webhooks::new(&config);
    let (bus, bus_tasks) = match config.cluster.enabled {
        true => {
            let (bus, tasks) = cluster::new(&config.cluster, &config.webhooks);
            (Some(bus), Some(tasks))
        }
        false => (None, None),
    };
    let shared = Arc::new(Shared::new(config, jobs, sender, webhooks, bus));
    let publisher = bus_tasks.and_then(|tasks| cluster::spawn(&shared, tasks));
    let router = api::router(Arc::clone(&shared));
    jobs::spawn_workers(&shared).await;
    delivery::spawn_sender(&shared).await;
    delivery::pusher_webhooks::spawn(&shared, batcher);
    shared
        .tracker
        .spawn(forget_expired_frames(Arc::clone(&shared)));

    let addr = listener.local_addr()?;
    let apps: Vec<&str> = shared.config.apps.iter().map(|a| a.id.as_str()).collect();
    info!(%addr, apps = %apps.join(","), "herald listening");

    let stopping = Arc::clone(&shared);
    let serve = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutting down");
            stopping.begin_shutdown();
        })
        .into_future();

    // Requests still open when shutdown begins get the grace period to finish; a
    // client that never completes its request must not hold the process up.
    let grace = shared.config.server.shutdown_grace;
    let begun = shared.shutdown.clone();
    tokio::select! {
        served = serve => served?,
        () = async { begun.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!("HTTP requests still open after the grace period; stopping without them");
        }
    }

    // Sockets were told to close when shutdown began; give them time to finish.
    shared.tracker.close();
    let finished = tokio::time::timeout(grace, shared.tracker.wait()).await;
    if finished.is_err() {
        warn!(
            open = shared.tracker.len(),
            "tasks still running after the grace period"
        );
        shared.jobs.hand_back().await;
    }
    // Only now that its sockets have left their channels: the other nodes then
    // drop whatever of this node they still hold.
    if let Some(publisher) = publisher {
        cluster::leave(&shared, publisher).await;
    }
    info!("herald stopped");
    Ok(())
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job store or file directory could not be opened.
    #[error(transparent)]
    Start(#[from] jobs::StartError),
    /// The HTTP client for callbacks could not be built.
    #[error("cannot build the HTTP client for callbacks")]
    HttpClient(#[source] reqwest::Error),
    /// The listener failed.
    #[error("the listener failed")]
    Listener(#[from] std::io::Error),
}

/// Drops expired retained frames once a minute, until shutdown.
async fn forget_expired_frames(shared: Arc<Shared>) {
    let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every_minute.tick() => shared.hub.forget_expired(),
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
