//! One WebSocket: the handshake checks, then a single task that reads the client's
//! frames, writes queued frames, and keeps the activity clock.
//!
//! One task per socket, not a reader and a writer: an idle socket then costs one
//! small future, and every frame of a socket is handled in the order it came, so
//! `subscribe, unsubscribe, subscribe` always ends subscribed.

mod signin;
mod subscribe;

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures::SinkExt;
use serde_json::Value;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, debug_span};

use crate::apps::{App, ConnectionSlot};
use crate::hub::{Frame, Outgoing, Peer};
use crate::protocol::{
    ChannelKind, ChannelName, ClientFrame, CloseCode, ErrorCode, SUPPORTED_PROTOCOLS, SocketId,
    frame,
};
use crate::state::Shared;

/// Bytes tungstenite reads from the socket at a time. Small, because every idle
/// socket holds this buffer; it grows on its own for a large frame.
const READ_BUFFER: usize = 128;

/// How long the close frame may take to write before the socket is dropped anyway.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// How long a socket closed over an oversized frame waits before it goes, so that
/// the close frame is sent before the connection is reset.
const UNREAD_CLOSE_DELAY: Duration = Duration::from_millis(200);

/// `GET /app/{key}`: checks the app and protocol version, then upgrades. A refused
/// socket is still upgraded, because Pusher clients learn why only from the close
/// code.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let limits = &shared.config.server;
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(limits.max_frame_size)
        .max_frame_size(limits.max_frame_size);
    let admission = admit(&shared, &key, &params);
    let tracker = shared.tracker.clone();
    upgrade.on_upgrade(move |socket| {
        tracker.track_future(async move {
            match admission {
                Ok((app, slot)) => Connection::start(shared, app, slot, socket).await,
                Err(code) => refuse(socket, code).await,
            }
        })
    })
}

/// Decides whether a socket may open: known and enabled app, a protocol version
/// Herald speaks, room under the app's quota.
fn admit(
    shared: &Shared,
    key: &str,
    params: &HashMap<String, String>,
) -> Result<(Arc<App>, ConnectionSlot), CloseCode> {
    let app = shared.apps.by_key(key).ok_or(CloseCode::UnknownApp)?;
    if !app.config.enabled {
        return Err(CloseCode::AppDisabled);
    }
    let version = params.get("protocol").ok_or(CloseCode::NoProtocolVersion)?;
    let version: u8 = version.parse().map_err(|_| CloseCode::InvalidVersion)?;
    if !SUPPORTED_PROTOCOLS.contains(&version) {
        return Err(CloseCode::UnsupportedProtocol);
    }
    let slot = app.try_connect().ok_or(CloseCode::OverConnectionQuota)?;
    Ok((Arc::clone(app), slot))
}

/// Tells the client why, then closes with the code.
async fn refuse(mut socket: WebSocket, code: CloseCode) {
    debug!(code = code.code(), "socket refused");
    close_with(&mut socket, code).await;
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// How a write ended.
enum Written {
    Done,
    Failed,
    Interrupted(CloseCode),
}

/// What woke the socket's task.
enum Wake {
    Outgoing(Outgoing),
    ShuttingDown,
    Incoming(Option<Result<Message, axum::Error>>),
    Quiet,
}

/// The state of one open socket.
struct Connection {
    shared: Arc<Shared>,
    app: Arc<App>,
    peer: Arc<Peer>,
    /// Channels this socket is subscribed to, to leave them when it goes.
    channels: HashSet<ChannelName>,
    /// The user the socket signed in as.
    user: Option<signin::SignedIn>,
    /// Client events sent in the current one-second window, and when it began.
    client_events: (u32, Instant),
    /// Signed in, or joined a private or presence channel: what an app that requires
    /// authorized connections waits for.
    authorized: bool,
    /// Holds the app's connection slot for as long as the socket is open.
    _slot: ConnectionSlot,
}

impl Connection {
    async fn start(shared: Arc<Shared>, app: Arc<App>, slot: ConnectionSlot, socket: WebSocket) {
        let socket_id = SocketId::random();
        let span = debug_span!("ws_conn", app_id = %app.id, %socket_id);
        let peer = Peer::new(socket_id, shared.config.server.outbound_queue);
        let connection = Connection {
            shared,
            app,
            peer: Arc::new(peer),
            channels: HashSet::new(),
            user: None,
            authorized: false,
            client_events: (0, Instant::now()),
            _slot: slot,
        };
        connection.run(socket).instrument(span).await;
    }

    async fn run(mut self, mut socket: WebSocket) {
        debug!("socket open");
        let server = &self.shared.config.server;
        let (activity, pong_wait) = (server.activity_timeout, server.pong_timeout);
        let shutdown = self.shared.shutdown.clone();

        let hello = frame::connection_established(self.peer.socket_id.as_str(), activity.as_secs());
        self.peer.send(hello.into());

        // The client must show a sign of life within `activity`; after that the
        // server pings and waits `pong_wait` more before giving up on it.
        let mut deadline = Instant::now() + activity;
        let mut pinged = false;
        // An app may require the socket to sign in or join a private or presence
        // channel in time; that deadline shares the one timer with activity.
        let authorize_by = self
            .app
            .config
            .user_authentication_timeout
            .map(|t| Instant::now() + t);
        let close_code = loop {
            let wake_at = match authorize_by {
                Some(by) if !self.authorized => deadline.min(by),
                _ => deadline,
            };
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => Wake::ShuttingDown,
                outgoing = self.peer.next() => Wake::Outgoing(outgoing),
                incoming = socket.recv() => Wake::Incoming(incoming),
                () = sleep_until(wake_at) => Wake::Quiet,
            };
            match wake {
                Wake::ShuttingDown => break Some(CloseCode::ReconnectNow),
                Wake::Outgoing(Outgoing::Close(code)) => break Some(code),
                Wake::Outgoing(Outgoing::Frame(frame)) => {
                    // Boxed: the write future is the largest this loop awaits, and
                    // unboxed it would make every idle socket's task that much bigger.
                    match Box::pin(self.write(&mut socket, frame, pong_wait)).await {
                        Written::Done => {}
                        Written::Failed => break None,
                        Written::Interrupted(code) => break Some(code),
                    }
                }
                Wake::Incoming(Some(Ok(message))) => {
                    deadline = Instant::now() + activity;
                    pinged = false;
                    self.receive(message);
                }
                Wake::Incoming(Some(Err(error))) => break read_failure(error),
                Wake::Incoming(None) => break None,
                Wake::Quiet => {
                    let now = Instant::now();
                    if !self.authorized && authorize_by.is_some_and(|by| now >= by) {
                        break Some(CloseCode::Unauthorized);
                    }
                    if now < deadline {
                        continue;
                    }
                    if pinged {
                        break Some(CloseCode::PongTimeout);
                    }
                    pinged = true;
                    deadline = now + pong_wait;
                    self.peer.send(frame::ping().into());
                }
            }
        };

        self.leave_all();
        let code = close_code.map(CloseCode::code);
        if let Some(code) = close_code {
            // A client that stopped reading may never take the close frame either.
            let closing = Box::pin(close_with(&mut socket, code));
            let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, closing).await;
            if code == CloseCode::FrameTooLarge {
                // The refused frame's rest is still unread, and closing a socket with
                // unread data discards what is not yet sent. Give the close frame a
                // moment to leave first.
                tokio::time::sleep(UNREAD_CLOSE_DELAY).await;
            }
        }
        debug!(close_code = code, "socket closed");
    }

    /// Writes a frame and those queued behind it. A client that stops reading makes
    /// the write wait on TCP back-pressure; meanwhile a close request, shutdown, or
    /// `stall_limit` without progress ends the wait, so such a socket is closed (with
    /// 4100 after the stall) rather than holding its slot and presence for ever.
    async fn write(&self, socket: &mut WebSocket, frame: Frame, stall_limit: Duration) -> Written {
        tokio::select! {
            written = write_queued(socket, frame, &self.peer) => match written {
                Ok(()) => Written::Done,
                Err(_) => Written::Failed,
            },
            code = self.peer.closing() => Written::Interrupted(code),
            () = self.shared.shutdown.cancelled() => Written::Interrupted(CloseCode::ReconnectNow),
            () = tokio::time::sleep(stall_limit) => Written::Interrupted(CloseCode::OverCapacity),
        }
    }

    /// Handles one message from the client.
    fn receive(&mut self, message: Message) {
        match message {
            Message::Text(text) if text.len() > self.app.config.max_message_size => {
                let message = format!(
                    "frame is {} bytes; the limit for this app is {}",
                    text.len(),
                    self.app.config.max_message_size
                );
                self.send_error(ErrorCode::MessageTooLarge, &message);
                // A client waits for the answer to a subscribe; refusing it only with
                // `pusher:error` would leave the subscription pending for ever.
                if let Ok(ClientFrame::Subscribe(request)) = ClientFrame::parse(&text) {
                    let refused =
                        frame::subscription_error(&request.channel, "LimitReached", &message, 413);
                    self.peer.send(refused.into());
                }
            }
            Message::Text(text) => match ClientFrame::parse(&text) {
                Ok(frame) => self.handle(frame),
                Err(error) => self.send_error(ErrorCode::InvalidMessage, &error.to_string()),
            },
            Message::Binary(_) => {
                let message = "binary frames are not supported; send JSON text";
                self.send_error(ErrorCode::InvalidMessage, message);
            }
            // Pings are answered by the WebSocket layer; a close is answered there too
            // and ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }

    fn handle(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Ping => self.peer.send(frame::pong().into()),
            ClientFrame::Pong => {}
            ClientFrame::Subscribe(request) => self.subscribe(request),
            ClientFrame::Signin { auth, user_data } => self.signin(&auth, &user_data),
            ClientFrame::Unsubscribe { channel } => self.unsubscribe(&channel),
            ClientFrame::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(&event, &channel, data),
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        // Leaving a channel one never joined, or one with an invalid name, is a no-op.
        let Ok(channel) = ChannelName::parse(channel) else {
            return;
        };
        if self.channels.remove(&channel) {
            let hub = &self.shared.hub;
            let counts = self.app.config.subscription_count;
            hub.unsubscribe(&self.app.id, &channel, &self.peer.socket_id, counts);
            debug!(%channel, "unsubscribed");
        }
    }

    /// Relays a `client-` event to the channel's other subscribers.
    fn client_event(&mut self, event: &str, channel: &str, data: Option<Value>) {
        if !self.app.config.client_events {
            let message = "client events are not enabled for this app";
            return self.send_error(ErrorCode::ClientEventRejected, message);
        }
        if !self.within_client_event_rate() {
            let message = format!(
                "more than {} client events in a second; this one was not sent",
                self.app.config.client_event_rate
            );
            return self.send_error(ErrorCode::ClientEventRateLimited, &message);
        }
        let joined = ChannelName::parse(channel)
            .ok()
            .filter(|name| self.channels.contains(name));
        let Some(channel) = joined.filter(|name| name.kind() != ChannelKind::Public) else {
            let message = "client events go only to private and presence channels you joined";
            return self.send_error(ErrorCode::ClientEventRejected, message);
        };
        let data = match data {
            Some(Value::String(text)) => text,
            Some(value) => value.to_string(),
            None => String::new(),
        };
        let user_id = self
            .shared
            .hub
            .user_of(&self.app.id, &channel, &self.peer.socket_id);
        let relayed = frame::channel_event(channel.as_str(), event, &data, user_id.as_deref());
        let hub = &self.shared.hub;
        hub.publish(
            &self.app.id,
            &channel,
            &relayed.into(),
            Some(&self.peer.socket_id),
        );
        let socket_id = &self.peer.socket_id;
        hub.webhooks().client_event(
            &self.app.id,
            &channel,
            event,
            &data,
            socket_id,
            user_id.as_ref(),
        );
    }

    /// Counts a client event against the app's per-second allowance.
    fn within_client_event_rate(&mut self) -> bool {
        let (sent, since) = &mut self.client_events;
        let now = Instant::now();
        if now.duration_since(*since) >= Duration::from_secs(1) {
            *sent = 0;
            *since = now;
        }
        *sent += 1;
        *sent <= self.app.config.client_event_rate
    }

    fn send_error(&self, code: ErrorCode, message: &str) {
        debug!(code = code.code(), message, "client error");
        self.peer
            .send(frame::error(Some(code.code()), message).into());
    }

    /// Leaves every channel, so that presence members are removed at once.
    fn leave_all(&mut self) {
        let counts = self.app.config.subscription_count;
        for channel in self.channels.drain() {
            self.shared
                .hub
                .unsubscribe(&self.app.id, &channel, &self.peer.socket_id, counts);
        }
        self.sign_out();
    }
}

/// Writes `first` and the frames queued behind it, then flushes once. A close
/// request met on the way is left for the main loop to see.
async fn write_queued(
    socket: &mut WebSocket,
    first: Frame,
    peer: &Peer,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    while let Some(frame) = peer.try_next_frame() {
        socket.feed(Message::Text(frame)).await?;
    }
    socket.flush().await
}

/// The close code owed to a client whose frame could not be read, if the socket
/// can still carry one.
///
/// A frame over `server.max_frame_size` is refused from its header, and the rest of
/// it is never read, because the WebSocket stream ends at its first error. Closing
/// with that rest unread resets the TCP connection; the close frame is sent first,
/// but a client on a slow link may see the reset before it reads the frame.
fn read_failure(error: axum::Error) -> Option<CloseCode> {
    let error = error.into_inner().downcast::<tungstenite::Error>().ok()?;
    debug!(%error, "socket read failed");
    match *error {
        tungstenite::Error::Capacity(_) => Some(CloseCode::FrameTooLarge),
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
            Some(CloseCode::ProtocolViolation)
        }
        _ => None,
    }
}

/// Sends the `pusher:error` and the close frame for `code`.
async fn close_with(socket: &mut WebSocket, code: CloseCode) {
    let error = frame::error(Some(code.code()), code.reason());
    let _ = socket.send(Message::Text(error.into())).await;
    let _ = socket.send(close_message(code.code(), code.reason())).await;
}
