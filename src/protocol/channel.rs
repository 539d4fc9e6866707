//! Channel names and the kinds their prefixes select.

use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted, prefix included (the limit of Pusher's SDKs).
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

/// Prefix of the channel that carries events to one signed-in user: the only names
/// that may hold `#`, and only here.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// A validated channel name: 1 to 200 characters from `A-Z a-z 0-9 _ - = @ , . ;`.
///
/// Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChannelName {
    /// The name is the empty string.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`].
    #[error("channel name is {0} characters long; the limit is 200")]
    TooLong(usize),
    /// The name holds a character outside the allowed set.
    #[error("channel name contains {0:?}; allowed are A-Z a-z 0-9 _ - = @ , . ;")]
    BadCharacter(char),
}

/// What a channel's prefix makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// No prefix: anyone may subscribe.
    Public,
    /// `private-`: a subscription needs a signature from the app's server.
    Private,
    /// `presence-`: signed like private channels, and members are tracked.
    Presence,
}

impl ChannelName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// The first rule the name breaks.
    pub fn parse(name: &str) -> Result<Self, InvalidChannelName> {
        if name.is_empty() {
            return Err(InvalidChannelName::Empty);
        }
        // Characters first: once they are all ASCII, bytes and characters agree.
        let checked = name.strip_prefix(USER_CHANNEL_PREFIX).unwrap_or(name);
        if let Some(bad) = checked.chars().find(|c| !is_channel_char(*c)) {
            return Err(InvalidChannelName::BadCharacter(bad));
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(InvalidChannelName::TooLong(name.len()));
        }
        Ok(ChannelName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `private-encrypted-` channels: end-to-end encrypted by clients; the server
    /// authorizes them as private channels and relays their data untouched.
    pub fn is_encrypted(&self) -> bool {
        self.0.starts_with("private-encrypted-")
    }

    /// Cache channels (`cache-`, `private-cache-`, `private-encrypted-cache-`,
    /// `presence-cache-`) keep their last event for new subscribers.
    pub fn is_cache(&self) -> bool {
        [
            "cache-",
            "private-cache-",
            "private-encrypted-cache-",
            "presence-cache-",
        ]
        .iter()
        .any(|prefix| self.0.starts_with(prefix))
    }

    /// For `#server-to-user-{id}`, the user it belongs to.
    pub fn user_channel_owner(&self) -> Option<&str> {
        self.0.strip_prefix(USER_CHANNEL_PREFIX)
    }

    /// The kind the name's prefix selects. Prefixes match from the first character
    /// and include their dash, so `my-private-x` and `privateroom` are public.
    pub fn kind(&self) -> ChannelKind {
        if self.0.starts_with("private-") {
            ChannelKind::Private
        } else if self.0.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@,.;".contains(c)
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_matched_exactly() {
        let kind = |name: &str| ChannelName::parse(name).unwrap().kind();
        assert_eq!(kind("private-a"), ChannelKind::Private);
        assert_eq!(kind("presence-a"), ChannelKind::Presence);
        assert_eq!(kind("my-private-x"), ChannelKind::Public);
        assert_eq!(kind("privateroom"), ChannelKind::Public);
        assert_eq!(kind("presenceroom"), ChannelKind::Public);
    }

    #[test]
    fn encrypted_cache_and_user_channels_are_recognised() {
        let name = |text: &str| ChannelName::parse(text).unwrap();
        assert!(name("private-encrypted-x").is_encrypted());
        assert_eq!(name("private-encrypted-x").kind(), ChannelKind::Private);
        for cache in [
            "cache-a",
            "private-cache-a",
            "private-encrypted-cache-a",
            "presence-cache-a",
        ] {
            assert!(name(cache).is_cache(), "{cache}");
        }
        assert!(!name("my-cache-a").is_cache());
        assert_eq!(name("presence-cache-a").kind(), ChannelKind::Presence);
        assert_eq!(name("#server-to-user-7").user_channel_owner(), Some("7"));
        assert_eq!(name("user-7").user_channel_owner(), None);
    }

    #[test]
    fn names_are_checked_for_length_and_characters() {
        assert!(ChannelName::parse(&"a".repeat(200)).is_ok());
        assert_eq!(
            ChannelName::parse(&"a".repeat(201)),
            Err(InvalidChannelName::TooLong(201))
        );
        assert!(ChannelName::parse("A-Za-z0-9_-=@,.;").is_ok());
        assert_eq!(
            ChannelName::parse("a b"),
            Err(InvalidChannelName::BadCharacter(' '))
        );
        assert_eq!(
            ChannelName::parse("é"),
            Err(InvalidChannelName::BadCharacter('é'))
        );
        assert_eq!(ChannelName::parse(""), Err(InvalidChannelName::Empty));
        assert!(ChannelName::parse("#server-to-user-42").is_ok());
        assert_eq!(
            ChannelName::parse("room#1"),
            Err(InvalidChannelName::BadCharacter('#'))
        );
        let long_accented = format!("{}é", "a".repeat(199));
        assert_eq!(
            ChannelName::parse(&long_accented),
            Err(InvalidChannelName::BadCharacter('é'))
        );
    }
}
