//! Socket ids: the `\d+\.\d+` names the server gives each connection.

use std::fmt;
use std::sync::Arc;

/// A socket id such as `123.456`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SocketId(Arc<str>);

/// A string that is not of the form `digits.digits`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket_id {0:?} is not of the form 1234.5678")]
pub struct InvalidSocketId(pub String);

impl SocketId {
    /// A fresh random id. Two random 32-bit halves make a clash between two live
    /// sockets vanishingly unlikely, even across nodes.
    pub fn random() -> Self {
        let (a, b): (u32, u32) = (rand::random(), rand::random());
        SocketId(format!("{a}.{b}").into())
    }

    /// Checks the form of an id sent by a client or an SDK.
    ///
    /// # Errors
    ///
    /// When `text` is not `digits.digits`.
    pub fn parse(text: &str) -> Result<Self, InvalidSocketId> {
        let valid = text.split_once('.').is_some_and(|(a, b)| {
            let digits =
                |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit());
            digits(a) && digits(b)
        });
        if valid {
            Ok(SocketId(text.into()))
        } else {
            Err(InvalidSocketId(text.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_the_pusher_form() {
        let id = SocketId::random();
        assert!(SocketId::parse(id.as_str()).is_ok(), "{id}");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["", "1", "1.", ".1", "1.2.3", "a.1", "1.b", " 1.2"] {
            assert!(SocketId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
