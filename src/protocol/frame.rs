//! The frames that cross a socket: parsing what clients send, writing what the
//! server sends.
//!
//! Server frames carry `data` as a JSON *string*, even for `pusher:` events, because
//! that is what Pusher clients decode. Every writer here returns the finished text so
//! that a frame is serialized once and its bytes shared by every socket it goes to.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Every event name of the protocol.
pub mod event {
    /// First frame on a socket: its id and the activity timeout.
    pub const CONNECTION_ESTABLISHED: &str = "pusher:connection_established";
    /// An error report; fatal ones are followed by a close frame.
    pub const ERROR: &str = "pusher:error";
    /// Liveness check, either way.
    pub const PING: &str = "pusher:ping";
    /// Answer to a ping.
    pub const PONG: &str = "pusher:pong";
    /// A client joins a channel.
    pub const SUBSCRIBE: &str = "pusher:subscribe";
    /// A client leaves a channel.
    pub const UNSUBSCRIBE: &str = "pusher:unsubscribe";
    /// The subscription was refused.
    pub const SUBSCRIPTION_ERROR: &str = "pusher:subscription_error";
    /// The subscription was accepted.
    pub const SUBSCRIPTION_SUCCEEDED: &str = "pusher_internal:subscription_succeeded";
    /// A user joined a presence channel.
    pub const MEMBER_ADDED: &str = "pusher_internal:member_added";
    /// A user left a presence channel.
    pub const MEMBER_REMOVED: &str = "pusher_internal:member_removed";
    /// Prefix of events that clients relay to each other.
    pub const CLIENT_PREFIX: &str = "client-";
    /// A client signs in as a user.
    pub const SIGNIN: &str = "pusher:signin";
    /// The sign-in was accepted.
    pub const SIGNIN_SUCCESS: &str = "pusher:signin_success";
    /// Users on the signed-in user's watchlist came online or went offline.
    pub const WATCHLIST_EVENTS: &str = "pusher_internal:watchlist_events";
    /// A cache channel was subscribed with nothing cached.
    pub const CACHE_MISS: &str = "pusher:cache_miss";
    /// The number of sockets on a channel changed.
    pub const SUBSCRIPTION_COUNT: &str = "pusher_internal:subscription_count";
}

/// A frame a client sent, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `pusher:ping`: answer with `pusher:pong`.
    Ping,
    /// `pusher:pong`: the answer to the server's ping.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(SubscribeRequest),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel to leave, as sent (it may not be a valid name).
        channel: String,
    },
    /// `pusher:signin`: the socket signs in as a user.
    Signin {
        /// `key:signature` over `socket_id::user::user_data`.
        auth: String,
        /// The user, as the exact JSON text the app's server signed.
        user_data: String,
    },
    /// A `client-` event to relay to the channel's other subscribers.
    ClientEvent {
        /// The event name, starting with `client-`.
        event: String,
        /// The channel, as sent.
        channel: String,
        /// The data as sent: any JSON value, or nothing.
        data: Option<Value>,
    },
}

/// The fields of `pusher:subscribe`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeRequest {
    /// The channel, as sent (checked later).
    pub channel: String,
    /// `key:signature`, for private and presence channels.
    pub auth: Option<String>,
    /// For presence channels: the exact JSON string the app's server signed.
    pub channel_data: Option<String>,
}

/// Why a client frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON at all.
    #[error("frame is not valid JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("frame must be a JSON object")]
    NotAnObject,
    /// No `event`, or not a string.
    #[error("frame has no string `event` field")]
    EventNotString,
    /// `data` absent, null or empty where the event needs it.
    #[error("{0} needs a `data` object")]
    MissingData(&'static str),
    /// `data` present but of the wrong shape.
    #[error("{0}")]
    InvalidData(String),
    /// A `pusher:` event (or other name) the server does not take from clients.
    #[error("unsupported event {0:?}")]
    UnknownEvent(String),
}

impl ClientFrame {
    /// Parses one text frame.
    ///
    /// # Errors
    ///
    /// What is wrong with the frame, to be reported to the client.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        let Value::Object(mut frame) = value else {
            return Err(FrameError::NotAnObject);
        };
        let Some(Value::String(name)) = frame.remove("event") else {
            return Err(FrameError::EventNotString);
        };
        match name.as_str() {
            event::PING => Ok(ClientFrame::Ping),
            event::PONG => Ok(ClientFrame::Pong),
            event::SUBSCRIBE => parse_subscribe(frame.remove("data")),
            event::SIGNIN => {
                let mut data = data_object(frame.remove("data"), event::SIGNIN)?;
                let auth = required_string(&mut data, "auth")?;
                let user_data = required_string(&mut data, "user_data")?;
                Ok(ClientFrame::Signin { auth, user_data })
            }
            event::UNSUBSCRIBE => {
                let mut data = data_object(frame.remove("data"), event::UNSUBSCRIBE)?;
                let channel = required_string(&mut data, "channel")?;
                Ok(ClientFrame::Unsubscribe { channel })
            }
            _ if name.starts_with(event::CLIENT_PREFIX) => {
                let channel = required_string(&mut frame, "channel")?;
                let data = frame.remove("data");
                Ok(ClientFrame::ClientEvent {
                    event: name,
                    channel,
                    data,
                })
            }
            _ => Err(FrameError::UnknownEvent(name)),
        }
    }
}

fn parse_subscribe(data: Option<Value>) -> Result<ClientFrame, FrameError> {
    let mut data = data_object(data, event::SUBSCRIBE)?;
    let channel = required_string(&mut data, "channel")?;
    let auth = optional_string(&mut data, "auth")?;
    let channel_data = optional_string(&mut data, "channel_data")?;
    Ok(ClientFrame::Subscribe(SubscribeRequest {
        channel,
        auth,
        channel_data,
    }))
}

/// `data` as an object. pusher-js sends an object; other clients send the object
/// as a JSON string, which is accepted the same.
fn data_object(data: Option<Value>, event: &'static str) -> Result<Map<String, Value>, FrameError> {
    match data {
        None | Some(Value::Null) => Err(FrameError::MissingData(event)),
        Some(Value::String(text)) if text.is_empty() => Err(FrameError::MissingData(event)),
        Some(Value::String(text)) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(FrameError::InvalidData(format!(
                "{event} data must be an object or a JSON string of one"
            ))),
        },
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(FrameError::InvalidData(format!(
            "{event} data must be an object"
        ))),
    }
}

fn required_string(map: &mut Map<String, Value>, field: &str) -> Result<String, FrameError> {
    match map.remove(field) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(FrameError::InvalidData(format!(
            "`{field}` must be a string"
        ))),
    }
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, FrameError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(FrameError::InvalidData(format!(
            "`{field}` must be a string"
        ))),
    }
}

/// The shape of every server frame.
#[derive(Serialize)]
struct Wire<'a> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn write(event: &str, channel: Option<&str>, data: &str, user_id: Option<&str>) -> String {
    let wire = Wire {
        event,
        channel,
        data,
        user_id,
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// `pusher:connection_established`.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout_secs});
    write(event::CONNECTION_ESTABLISHED, None, &data.to_string(), None)
}

/// `pusher:error`; `code` is `None` for errors that have no number.
pub fn error(code: Option<u16>, message: &str) -> String {
    let data = json!({"code": code, "message": message});
    write(event::ERROR, None, &data.to_string(), None)
}

/// `pusher:ping`.
pub fn ping() -> String {
    write(event::PING, None, "{}", None)
}

/// `pusher:pong`.
pub fn pong() -> String {
    write(event::PONG, None, "{}", None)
}

/// `pusher_internal:subscription_succeeded`; `data` is `{}` or the presence roster.
pub fn subscription_succeeded(channel: &str, data: &str) -> String {
    write(event::SUBSCRIPTION_SUCCEEDED, Some(channel), data, None)
}

/// `pusher:subscription_error` with the `{type, error, status}` pusher-js reads.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    let data = json!({"type": kind, "error": error, "status": status});
    write(
        event::SUBSCRIPTION_ERROR,
        Some(channel),
        &data.to_string(),
        None,
    )
}

/// `pusher_internal:member_added`; `member` is `{"user_id":…,"user_info":…}`.
pub fn member_added(channel: &str, member: &str) -> String {
    write(event::MEMBER_ADDED, Some(channel), member, None)
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = json!({ "user_id": user_id });
    write(
        event::MEMBER_REMOVED,
        Some(channel),
        &data.to_string(),
        None,
    )
}

/// `pusher:signin_success` with the user data as signed.
pub fn signin_success(user_data: &str) -> String {
    let data = json!({ "user_data": user_data });
    write(event::SIGNIN_SUCCESS, None, &data.to_string(), None)
}

/// `pusher_internal:watchlist_events`: `online` and `offline` lists of user ids.
pub fn watchlist_events(online: &[&str], offline: &[&str]) -> String {
    let mut events = Vec::new();
    if !online.is_empty() {
        events.push(json!({"name": "online", "user_ids": online}));
    }
    if !offline.is_empty() {
        events.push(json!({"name": "offline", "user_ids": offline}));
    }
    let data = json!({ "events": events });
    write(event::WATCHLIST_EVENTS, None, &data.to_string(), None)
}

/// `pusher:cache_miss` on a cache channel with nothing cached.
pub fn cache_miss(channel: &str) -> String {
    write(event::CACHE_MISS, Some(channel), "{}", None)
}

/// `pusher_internal:subscription_count`.
pub fn subscription_count(channel: &str, count: usize) -> String {
    let data = json!({ "subscription_count": count });
    write(
        event::SUBSCRIPTION_COUNT,
        Some(channel),
        &data.to_string(),
        None,
    )
}

/// An app event on a channel. `user_id` is set only for client events relayed on
/// presence channels.
pub fn channel_event(channel: &str, name: &str, data: &str, user_id: Option<&str>) -> String {
    write(name, Some(channel), data, user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_data_may_be_an_object_or_a_json_string() {
        let expected = ClientFrame::Subscribe(SubscribeRequest {
            channel: "private-a".into(),
            auth: Some("k:s".into()),
            channel_data: None,
        });
        let object = r#"{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"k:s"}}"#;
        let string =
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"private-a\",\"auth\":\"k:s\"}"}"#;
        assert_eq!(ClientFrame::parse(object), Ok(expected.clone()));
        assert_eq!(ClientFrame::parse(string), Ok(expected));
    }

    #[test]
    fn malformed_frames_are_told_apart() {
        let cases = [
            ("nope", FrameError::NotJson),
            ("[1]", FrameError::NotAnObject),
            (r#"{"event":5}"#, FrameError::EventNotString),
            (
                r#"{"event":"pusher:subscribe"}"#,
                FrameError::MissingData(event::SUBSCRIBE),
            ),
            (
                r#"{"event":"pusher:subscribe","data":null}"#,
                FrameError::MissingData(event::SUBSCRIBE),
            ),
            (
                r#"{"event":"pusher:subscribe","data":""}"#,
                FrameError::MissingData(event::SUBSCRIBE),
            ),
            (
                r#"{"event":"pusher:launch","data":{}}"#,
                FrameError::UnknownEvent("pusher:launch".into()),
            ),
        ];
        for (text, error) in cases {
            assert_eq!(ClientFrame::parse(text), Err(error), "{text}");
        }
    }

    #[test]
    fn signin_carries_auth_and_the_exact_user_data() {
        let text =
            r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"7\"}"}}"#;
        let expected = ClientFrame::Signin {
            auth: "k:s".into(),
            user_data: r#"{"id":"7"}"#.into(),
        };
        assert_eq!(ClientFrame::parse(text), Ok(expected));
    }

    #[test]
    fn server_frames_carry_data_as_a_string() {
        let frame: Value = serde_json::from_str(&connection_established("1.2", 120)).unwrap();
        assert_eq!(frame["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"socket_id": "1.2", "activity_timeout": 120}));
    }
}
