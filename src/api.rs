//! The HTTP side: Pusher's HTTP API and the jobs API under `/apps/{app_id}`, the
//! WebSocket endpoint, health checks and the demo page.

mod auth;
mod channels;
mod demo;
mod error;
mod events;
mod health;
mod jobs;
mod subscriptions;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
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
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(users::terminate_connections),
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
        .route(
            "/apps/{app_id}/jobs/{id}/redeliver",
            post(subscriptions::redeliver),
        )
        .route(
            "/apps/{app_id}/subscriptions",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/apps/{app_id}/subscriptions/{id}",
            get(subscriptions::show)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/apps/{app_id}/subscriptions/{id}/rotate-secret",
            post(subscriptions::rotate_secret),
        )
        .route("/apps/{app_id}/deliveries", get(subscriptions::deliveries))
        .route(
            "/apps/{app_id}/deliveries/{id}/retry",
            post(subscriptions::retry),
        )
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
    router
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(json_errors))
        .with_state(shared)
}

/// Default and largest page of the API's lists.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// A list's `limit`: 50 when absent, 1 to 200 when given.
fn page_limit(asked: Option<u32>) -> Result<u32, ApiError> {
    match asked.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        )),
    }
}

/// Gives every refusal the API's `{"code", "message"}` form, including those made
/// by the framework before a handler runs (no such route, wrong method, a path that
/// does not decode), which come as plain text or empty.
async fn json_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", format!("no route for {path}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("{path} does not take this method"),
        ),
        _ if status.is_server_error() => ("server_error", status.to_string()),
        _ if text.is_empty() => ("bad_request", status.to_string()),
        _ => ("bad_request", text),
    };
    ApiError::new(status, code, message).into_response()
}
