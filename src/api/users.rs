//! `POST /users/{user_id}/terminate_connections`: closes every socket of a user.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::ApiError;
use crate::apps::App;
use crate::state::Shared;

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`: each socket signed
/// in as the user, on every node, is closed with 4009, which tells Pusher clients
/// not to reconnect.
pub(super) async fn terminate_connections(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let closed = shared.users.terminate(&app.id, &user_id);
    if let Some(bus) = shared.hub.bus() {
        bus.terminate_user(&app.id, &user_id);
    }
    tracing::debug!(%user_id, closed, "user's connections terminated");
    Ok(Json(json!({})))
}
