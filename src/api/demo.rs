//! The demo page on `/` and its unsigned trigger and job routes. Both exist only while
//! `[demo] enabled` is true: the trigger lets anyone who reaches the server send
//! events on the demo app, which is fine on a laptop and wrong in production.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::events::{Event, parse_json, publish};
use crate::state::Shared;

/// The page, compiled in so that the binary alone serves it.
const PAGE: &str = include_str!("../../static/index.html");

/// The demo routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(page))
        .route("/demo/config", get(config))
        .route("/demo/events", post(trigger))
        .route("/demo/jobs", post(job))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The public half of the demo app's credentials, for the page to connect with.
async fn config(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let app = demo_app(&shared)?;
    Ok(Json(json!({"app_id": &*app.id, "key": app.config.key})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoEvent {
    channel: String,
    event: String,
    data: Value,
}

/// `POST /demo/events {channel, event, data}`: sends an event on the demo app
/// without a signature.
async fn trigger(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = demo_app(&shared)?;
    let body: DemoEvent = parse_json(&body)?;
    let event = Event::demo(&app, body.channel, body.event, body.data)?;
    publish(&shared, &app, &event);
    Ok(Json(json!({})))
}

/// `POST /demo/jobs`: a job for the demo app, JSON or multipart, without a
/// signature or token.
async fn job(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let app = demo_app(&shared)?;
    super::jobs::accept(&shared, &app, request).await
}

fn demo_app(shared: &Shared) -> Result<Arc<crate::apps::App>, ApiError> {
    shared
        .apps
        .by_id(&shared.config.demo.app)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_app",
                "the demo app is not configured",
            )
        })
}
