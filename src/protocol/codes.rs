//! Close codes and error codes, as the protocol defines them.
//!
//! Pusher clients read the range of a close code: 4000–4099 means do not reconnect,
//! 4100–4199 reconnect after a back-off, 4200–4299 reconnect at once. Codes in
//! 4300–4399 are sent only inside `pusher:error` on a socket that stays open, never
//! as close codes, because a client that sees one as a close code gives up.

/// Why the server closes a socket. Each variant carries its code and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// No app has the key in the URL.
    UnknownApp,
    /// The app exists but is switched off.
    AppDisabled,
    /// The app already holds as many sockets as it may.
    OverConnectionQuota,
    /// The `protocol` parameter is not a number.
    InvalidVersion,
    /// The `protocol` parameter names a version Herald does not speak.
    UnsupportedProtocol,
    /// The URL has no `protocol` parameter.
    NoProtocolVersion,
    /// The socket could not keep up with what was sent to it.
    OverCapacity,
    /// The server is going away; reconnect at once (to another node).
    ReconnectNow,
    /// The client did not answer a ping in time.
    PongTimeout,
    /// The socket was refused as a user: a bad sign-in, no sign-in in time, or its
    /// user's connections were terminated.
    Unauthorized,
    /// The client sent a frame larger than the server reads at all (a WebSocket
    /// code, not a Pusher one).
    FrameTooLarge,
    /// The client broke the WebSocket protocol itself.
    ProtocolViolation,
}

impl CloseCode {
    /// The numeric code sent in the close frame and the `pusher:error`.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::UnknownApp => 4001,
            CloseCode::AppDisabled => 4003,
            CloseCode::OverConnectionQuota => 4004,
            CloseCode::InvalidVersion => 4006,
            CloseCode::UnsupportedProtocol => 4007,
            CloseCode::NoProtocolVersion => 4008,
            CloseCode::OverCapacity => 4100,
            CloseCode::ReconnectNow => 4200,
            CloseCode::PongTimeout => 4201,
            CloseCode::Unauthorized => 4009,
            CloseCode::FrameTooLarge => 1009,
            CloseCode::ProtocolViolation => 1002,
        }
    }

    /// A short reason for the close frame and the `pusher:error` message.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::UnknownApp => "Application does not exist",
            CloseCode::AppDisabled => "Application is disabled",
            CloseCode::OverConnectionQuota => "Application is over its connection quota",
            CloseCode::InvalidVersion => "Invalid protocol version",
            CloseCode::UnsupportedProtocol => "Unsupported protocol version",
            CloseCode::NoProtocolVersion => "No protocol version supplied",
            CloseCode::OverCapacity => "Socket could not keep up; reconnect later",
            CloseCode::ReconnectNow => "Server is shutting down; reconnect",
            CloseCode::PongTimeout => "Pong reply not received",
            CloseCode::Unauthorized => "Connection not authorized",
            CloseCode::FrameTooLarge => "Frame too large",
            CloseCode::ProtocolViolation => "WebSocket protocol error",
        }
    }
}

/// Errors reported with `pusher:error` on a socket that stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame could not be understood.
    InvalidMessage,
    /// The frame is larger than the app allows.
    MessageTooLarge,
    /// A `client-` event the socket may not send.
    ClientEventRejected,
    /// Client events sent faster than the app allows.
    ClientEventRateLimited,
}

impl ErrorCode {
    /// The numeric code sent in `pusher:error`.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::InvalidMessage => 4300,
            ErrorCode::MessageTooLarge => 4302,
            ErrorCode::ClientEventRejected => 4303,
            ErrorCode::ClientEventRateLimited => 4301,
        }
    }
}
