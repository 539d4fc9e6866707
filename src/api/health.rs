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

/// 200 while the server takes new sockets and requests, 503 once it shuts down.
pub(super) async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<Value>) {
    if shared.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        let body = json!({"status": "shutting_down"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}
