//! The Pusher Channels protocol, version 7: the vocabulary shared by sockets and the
//! HTTP API. Event names, close codes, channel names, socket ids, the frames that go
//! over the wire and the HMAC signatures that authorize them live here and nowhere
//! else. Nothing in this module does I/O.

mod channel;
mod codes;
pub mod frame;
mod signature;
mod socket_id;

pub use channel::{
    ChannelKind, ChannelName, InvalidChannelName, MAX_CHANNEL_NAME_LEN, USER_CHANNEL_PREFIX,
};
pub use codes::{CloseCode, ErrorCode};
pub use frame::{ClientFrame, FrameError, SubscribeRequest, event};
pub use signature::{channel_auth_matches, hex_signature_matches, hmac_sha256_hex};
pub use socket_id::{InvalidSocketId, SocketId};

/// The protocol versions Herald speaks; pusher-js sends 7.
pub const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u8> = 5..=7;
