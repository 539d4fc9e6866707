//! `GET /healthz` (the process answers) and `GET /readyz` (it takes new work).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::Shared;

/// Always 200 while the process serves HTTP at all.
pub(super) async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 while the server takes new sockets and requests; 503 once it shuts down,
/// and while a node of a cluster cannot hear the others or is still learning
/// their state.
pub(super) async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    if !shared.is_ready() {
        let body = json!({"status": "shutting_down"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    match shared.hub.bus() {
        Some(bus) if !bus.is_connected() => {
            let body = json!({"status": "cluster_unreachable", "unpublished": bus.unpublished()});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
        // Just connected: the other nodes' state is still arriving.
        Some(bus) if !bus.is_ready() => {
            let body = json!({"status": "cluster_joining"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
        Some(bus) => {
            let body = json!({"status": "ready", "unpublished": bus.unpublished()});
            (StatusCode::OK, Json(body))
        }
        _ => (StatusCode::OK, Json(json!({"status": "ready"}))),
    }
}
