//! `POST /events` and `POST /batch_events`: events from the app's servers to
//! channels.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::ApiError;
use crate::apps::App;
use crate::hub::Frame;
use crate::protocol::{ChannelKind, ChannelName, SocketId, frame};
use crate::state::Shared;

/// Most channels one event may name (Pusher's limit).
const MAX_CHANNELS: usize = 100;
/// Most events in one batch (Pusher's limit on shared clusters).
const MAX_BATCH: usize = 10;
/// Longest event name (the limit of Pusher's SDKs).
const MAX_EVENT_NAME_LEN: usize = 200;

/// The body of `POST /events`, and one item of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    name: String,
    /// A string, as the SDKs send it; other JSON is accepted and sent as its text.
    data: Value,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
    info: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    batch: Vec<EventBody>,
}

/// An event that passed every check, ready to publish.
#[derive(Debug)]
pub(super) struct Event {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    except: Option<SocketId>,
    info: Vec<Attribute>,
}

/// An `info` attribute the answer should carry per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    UserCount,
    SubscriptionCount,
}

/// `POST /apps/{app_id}/events`.
pub(super) async fn trigger(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: EventBody = parse_json(&body)?;
    let event = Event::check(&app, body, "")?;
    publish(&shared, &app, &event);
    let answer = match info_of(&shared, &app, &event) {
        Some(channels) => json!({ "channels": channels }),
        None => json!({}),
    };
    Ok(Json(answer))
}

/// `POST /apps/{app_id}/batch_events`. Every event is checked before any is sent,
/// so a batch is published whole or not at all.
pub(super) async fn trigger_batch(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: BatchBody = parse_json(&body)?;
    if body.batch.len() > MAX_BATCH {
        let message = format!(
            "a batch holds at most {MAX_BATCH} events, not {}",
            body.batch.len()
        );
        return Err(ApiError::bad_request("too_many_events", message));
    }
    let events = body
        .batch
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("batch[{i}].");
            if item.channels.is_some() {
                let message = format!("{at}channels: a batch event takes one `channel`");
                return Err(ApiError::bad_request("invalid_body", message));
            }
            Event::check(&app, item, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;

    for event in &events {
        publish(&shared, &app, event);
    }
    if events.iter().all(|event| event.info.is_empty()) {
        return Ok(Json(json!({})));
    }
    let answers: Vec<Value> = events
        .iter()
        .map(|event| {
            let channels = info_of(&shared, &app, event).unwrap_or_default();
            let attributes = channels.into_values().next();
            attributes.unwrap_or_else(|| json!({}))
        })
        .collect();
    Ok(Json(json!({ "batch": answers })))
}

/// Reads a JSON body, naming the field at fault when it does not fit.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|error| {
        let path = error.path().to_string();
        let message = match path.as_str() {
            "." | "" => format!("body is not the expected JSON: {}", error.inner()),
            field => format!("{field}: {}", error.inner()),
        };
        ApiError::bad_request("invalid_body", message)
    })
}

impl Event {
    /// Applies every rule of the HTTP API to one event; `at` prefixes field names in
    /// messages (`batch[2].`).
    pub(super) fn check(app: &App, body: EventBody, at: &str) -> Result<Event, ApiError> {
        let name = body.name;
        if name.is_empty() || name.chars().count() > MAX_EVENT_NAME_LEN {
            let message = format!("{at}name must be 1 to {MAX_EVENT_NAME_LEN} characters");
            return Err(ApiError::bad_request("invalid_event_name", message));
        }
        let data = match body.data {
            Value::String(text) => text,
            other => other.to_string(),
        };
        let limit = app.config.max_message_size;
        if data.len() > limit {
            let message = format!(
                "{at}data is {} bytes (UTF-8); the limit for this app is {limit} bytes",
                data.len()
            );
            return Err(ApiError::too_large("event_too_large", message));
        }
        let channels = channels_of(body.channel, body.channels, at)?;
        let except = body
            .socket_id
            .map(|id| SocketId::parse(&id))
            .transpose()
            .map_err(|error| ApiError::bad_request("invalid_socket_id", format!("{at}{error}")))?;
        let info = attributes(body.info.as_deref().unwrap_or_default(), at)?;
        Ok(Event {
            name,
            data,
            channels,
            except,
            info,
        })
    }

    /// An event for the demo route: one channel, no exclusion, no info.
    pub(super) fn demo(
        app: &App,
        channel: String,
        name: String,
        data: Value,
    ) -> Result<Event, ApiError> {
        let body = EventBody {
            name,
            data,
            channel: Some(channel),
            channels: None,
            socket_id: None,
            info: None,
        };
        Event::check(app, body, "")
    }
}

fn channels_of(
    channel: Option<String>,
    channels: Option<Vec<String>>,
    at: &str,
) -> Result<Vec<ChannelName>, ApiError> {
    let names = match (channel, channels) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() => many,
        _ => {
            let message = format!("{at}give either `channel` or a non-empty `channels` list");
            return Err(ApiError::bad_request("missing_channel", message));
        }
    };
    // A channel named twice gets the event once.
    let mut seen = std::collections::HashSet::new();
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    if names.len() > MAX_CHANNELS {
        let message = format!(
            "{at}channels lists {} channels; the limit is {MAX_CHANNELS}",
            names.len()
        );
        return Err(ApiError::bad_request("too_many_channels", message));
    }
    let channels: Vec<ChannelName> = names
        .iter()
        .map(|name| {
            ChannelName::parse(name).map_err(|error| {
                ApiError::bad_request("invalid_channel_name", format!("{at}{name:?}: {error}"))
            })
        })
        .collect::<Result<_, _>>()?;
    // Each encrypted channel has its own key, so one payload cannot serve several.
    if channels.len() > 1 && channels.iter().any(ChannelName::is_encrypted) {
        let message = format!(
            "{at}channels: an event for a private-encrypted- channel must name that channel alone"
        );
        return Err(ApiError::bad_request(
            "encrypted_channel_with_others",
            message,
        ));
    }
    Ok(channels)
}

fn attributes(info: &str, at: &str) -> Result<Vec<Attribute>, ApiError> {
    info.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            "user_count" => Ok(Attribute::UserCount),
            "subscription_count" => Ok(Attribute::SubscriptionCount),
            other => Err(ApiError::bad_request(
                "invalid_info",
                format!(
                    "{at}info: unknown attribute {other:?}; use user_count or subscription_count"
                ),
            )),
        })
        .collect()
}

/// Sends an event to each of its channels: one frame per channel, serialized once
/// and shared by every socket on it.
pub(super) fn publish(shared: &Shared, app: &App, event: &Event) {
    for channel in &event.channels {
        let text = frame::channel_event(channel.as_str(), &event.name, &event.data, None);
        let frame = Frame::from(text);
        let except = event.except.as_ref();
        if channel.is_cache() {
            // A cache channel keeps its last event for those who subscribe later.
            let keep = app.config.cache_ttl;
            shared
                .hub
                .publish_retained(&app.id, channel, &frame, except, keep);
        } else {
            shared.hub.publish(&app.id, channel, &frame, except);
        }
    }
}

/// The `info` attributes of each channel: `user_count` on presence channels,
/// `subscription_count` on the others. `None` when none were asked for.
fn info_of(shared: &Shared, app: &App, event: &Event) -> Option<Map<String, Value>> {
    if event.info.is_empty() {
        return None;
    }
    let channels = event.channels.iter().map(|channel| {
        let stats = shared.hub.stats(&app.id, channel);
        let presence = channel.kind() == ChannelKind::Presence;
        let mut attributes = Map::new();
        for attribute in &event.info {
            match attribute {
                Attribute::UserCount if presence => {
                    attributes.insert("user_count".into(), stats.user_count.into());
                }
                Attribute::SubscriptionCount if !presence => {
                    let count = stats.subscription_count.into();
                    attributes.insert("subscription_count".into(), count);
                }
                _ => {}
            }
        }
        (channel.to_string(), Value::Object(attributes))
    });
    Some(channels.collect())
}
