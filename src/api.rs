//! The HTTP side: Pusher's HTTP API under `/apps/{app_id}`, the WebSocket endpoint,
//! health checks and the demo page.

mod auth;
mod channels;
mod demo;
mod error;
mod events;
mod health;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{any, get, post};

pub use auth::{RequestToVerify, verify_request};
pub use error::ApiError;

use crate::state::Shared;

/// Every route Herald serves.
pub fn router(shared: Arc<Shared>) -> Router {
    let pusher_api = Router::new()
        .route("/apps/{app_id}/events", post(events::trigger))
        .route("/apps/{app_id}/batch_events", post(events::trigger_batch))
        .route("/apps/{app_id}/channels", get(channels::list))
        .route("/apps/{app_id}/channels/{channel}", get(channels::show))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(channels::users),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::signed_request,
        ));

    let mut router = Router::new()
        .merge(pusher_api)
        .route("/app/{key}", any(crate::connection::upgrade))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready));
    if shared.config.demo.enabled {
        router = router.merge(demo::routes());
    }

    // Bodies are read whole by the signature check, which applies its own limit.
    router.layer(DefaultBodyLimit::disable()).with_state(shared)
}
