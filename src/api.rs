//! The HTTP side: Pusher's HTTP API and the jobs API under `/apps/{app_id}`, the
//! WebSocket endpoint, health checks and the demo page.

mod auth;
mod channels;
mod demo;
mod error;
mod events;
mod health;
mod jobs;

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

    let jobs_api = Router::new()
        .route("/apps/{app_id}/jobs", post(jobs::create).get(jobs::list))
        .route("/apps/{app_id}/jobs/{id}", get(jobs::show))
        .route("/apps/{app_id}/jobs/{id}/cancel", post(jobs::cancel))
        .route("/apps/{app_id}/files/{sha256}", get(jobs::file))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth::signed_or_token,
        ));

    let mut router = Router::new()
        .merge(pusher_api)
        .merge(jobs_api)
        .route("/app/{key}", any(crate::connection::upgrade))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready));
    if shared.config.demo.enabled {
        router = router.merge(demo::routes());
    }

    // Bodies are read whole by the signature check, which applies its own limit.
    router.layer(DefaultBodyLimit::disable()).with_state(shared)
}
