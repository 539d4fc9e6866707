//! `GET /channels`, `GET /channels/{name}` and `GET /channels/{name}/users`: what
//! is occupied, by how many, and who is on a presence channel.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{Map, Value, json};

use super::ApiError;
use crate::apps::App;
use crate::protocol::{ChannelKind, ChannelName};
use crate::state::Shared;

/// `GET /apps/{app_id}/channels?filter_by_prefix=…&info=user_count`: occupied
/// channels only. `user_count` needs a `presence-` prefix, since other channels have
/// no users.
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = query.get("filter_by_prefix").map_or("", String::as_str);
    let mut user_count = false;
    for attribute in info_list(&query) {
        match attribute {
            "user_count" if prefix.starts_with("presence-") => user_count = true,
            "user_count" => {
                let message = "info=user_count needs filter_by_prefix=presence- (only presence \
                               channels have users)";
                return Err(ApiError::bad_request("invalid_info", message));
            }
            other => return Err(unknown_attribute(other)),
        }
    }

    let mut channels = Map::new();
    for (name, stats) in shared.hub.occupied(&app.id, prefix) {
        let attributes = if user_count {
            json!({ "user_count": stats.user_count })
        } else {
            json!({})
        };
        channels.insert(name.to_string(), attributes);
    }
    Ok(Json(json!({ "channels": channels })))
}

/// `GET /apps/{app_id}/channels/{name}?info=user_count,subscription_count,cache`.
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, channel)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(&channel)?;
    let stats = shared.hub.stats(&app.id, &channel);
    let mut answer = Map::new();
    answer.insert("occupied".into(), (stats.subscription_count > 0).into());
    for attribute in info_list(&query) {
        match attribute {
            "user_count" if channel.kind() == ChannelKind::Presence => {
                answer.insert("user_count".into(), stats.user_count.into());
            }
            "user_count" => {
                let message = "user_count is only available on presence channels";
                return Err(ApiError::bad_request("invalid_info", message));
            }
            "subscription_count" => {
                answer.insert("subscription_count".into(), stats.subscription_count.into());
            }
            "cache" if channel.is_cache() => {
                if let Some((data, left)) = shared.hub.cached(&app.id, &channel) {
                    let cache = json!({"data": data, "ttl": left.as_secs()});
                    answer.insert("cache".into(), cache);
                }
            }
            "cache" => {
                let message = "cache is only available on cache channels";
                return Err(ApiError::bad_request("invalid_info", message));
            }
            other => return Err(unknown_attribute(other)),
        }
    }
    Ok(Json(Value::Object(answer)))
}

/// `GET /apps/{app_id}/channels/{name}/users`: presence channels only.
pub(super) async fn users(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    Path((_, channel)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let channel = channel_name(&channel)?;
    if channel.kind() != ChannelKind::Presence {
        let message = format!("{channel} is not a presence channel; only those have users");
        return Err(ApiError::bad_request("not_a_presence_channel", message));
    }
    let users: Vec<Value> = shared
        .hub
        .user_ids(&app.id, &channel)
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

fn channel_name(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|error| {
        ApiError::bad_request("invalid_channel_name", format!("{name:?}: {error}"))
    })
}

fn info_list(query: &HashMap<String, String>) -> impl Iterator<Item = &str> {
    let info = query.get("info").map_or("", String::as_str);
    info.split(',').filter(|attribute| !attribute.is_empty())
}

fn unknown_attribute(name: &str) -> ApiError {
    let message = format!("info: unknown attribute {name:?}");
    ApiError::bad_request("invalid_info", message)
}
