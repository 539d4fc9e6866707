//! Presence members: who is on a presence channel, counted by socket so that a user
//! with several tabs joins once and leaves once.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// A user as their app's server described them in `channel_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// `user_id`, numbers turned into their decimal text.
    pub user_id: Arc<str>,
    /// `user_info`, any JSON value (`null` when absent).
    pub user_info: Value,
}

/// Why `channel_data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMember {
    /// Not a JSON object.
    #[error("channel_data must be a JSON object")]
    NotAnObject,
    /// No usable `user_id`.
    #[error("channel_data must hold a user_id that is a non-empty string or a whole number")]
    MissingUserId,
    /// `user_id` longer than 128 characters.
    #[error("user_id is longer than 128 characters")]
    UserIdTooLong,
    /// `user_info` larger than the app allows.
    #[error("user_info is {size} bytes; the limit is {limit}")]
    UserInfoTooLarge {
        /// Bytes of the `user_info` JSON.
        size: usize,
        /// The app's limit.
        limit: usize,
    },
}

const MAX_USER_ID_LEN: usize = 128;

impl Member {
    /// Reads the member out of the `channel_data` string a client sent.
    ///
    /// # Errors
    ///
    /// When the data is not an object with a usable `user_id`, or its `user_info`
    /// is larger than `max_info_bytes`.
    pub fn from_channel_data(text: &str, max_info_bytes: usize) -> Result<Member, InvalidMember> {
        let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(text) else {
            return Err(InvalidMember::NotAnObject);
        };
        let user_id: Arc<str> = match data.remove("user_id") {
            Some(Value::String(id)) if !id.is_empty() => id.into(),
            // Whole numbers only: a float's text ("1000.0") would not match the id
            // the app's server meant.
            Some(Value::Number(id)) if id.is_i64() || id.is_u64() => id.to_string().into(),
            _ => return Err(InvalidMember::MissingUserId),
        };
        if user_id.chars().count() > MAX_USER_ID_LEN {
            return Err(InvalidMember::UserIdTooLong);
        }
        let user_info = data.remove("user_info").unwrap_or(Value::Null);
        let size = user_info.to_string().len();
        if size > max_info_bytes {
            return Err(InvalidMember::UserInfoTooLarge {
                size,
                limit: max_info_bytes,
            });
        }
        Ok(Member { user_id, user_info })
    }

    /// The `{user_id, user_info}` text of `member_added`.
    pub fn added_data(&self) -> String {
        json!({"user_id": &*self.user_id, "user_info": self.user_info}).to_string()
    }
}

/// The members of one presence channel.
#[derive(Debug, Default)]
pub struct Roster {
    /// Each user with their info and how many of their sockets are subscribed.
    members: HashMap<Arc<str>, (Value, usize)>,
}

impl Roster {
    /// Distinct users.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is on the channel.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether the user has a socket on the channel.
    pub fn contains(&self, user_id: &str) -> bool {
        self.members.contains_key(user_id)
    }

    /// Counts one more socket for `member`; true when it is the user's first.
    pub fn join(&mut self, member: &Member) -> bool {
        let entry = self
            .members
            .entry(Arc::clone(&member.user_id))
            .or_insert_with(|| (member.user_info.clone(), 0));
        entry.1 += 1;
        entry.1 == 1
    }

    /// Counts one socket fewer for `user_id`; true when it was the user's last.
    pub fn leave(&mut self, user_id: &str) -> bool {
        let Some(entry) = self.members.get_mut(user_id) else {
            return false;
        };
        entry.1 -= 1;
        if entry.1 == 0 {
            self.members.remove(user_id);
            return true;
        }
        false
    }

    /// Each user with their `user_info`.
    pub fn members(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        self.members.iter().map(|(id, (info, _))| (id, info))
    }

    /// The info the user joined with.
    pub fn info_of(&self, user_id: &str) -> Option<&Value> {
        self.members.get(user_id).map(|(info, _)| info)
    }
}

/// The `{"presence":{ids, hash, count}}` text of `subscription_succeeded`, for
/// `members` given as (id, info); a user listed twice counts once.
pub(super) fn succeeded_data<'a>(
    members: impl Iterator<Item = (&'a Arc<str>, &'a Value)>,
) -> String {
    let mut hash = Map::new();
    for (id, info) in members {
        hash.entry(id.to_string()).or_insert_with(|| info.clone());
    }
    let ids: Vec<&String> = hash.keys().collect();
    json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_user_ids_become_text() {
        let member = Member::from_channel_data(r#"{"user_id":42}"#, 1024).unwrap();
        assert_eq!(&*member.user_id, "42");
        assert_eq!(member.user_info, Value::Null);
    }

    #[test]
    fn bad_channel_data_is_refused() {
        let cases = [
            ("nope", InvalidMember::NotAnObject),
            ("{}", InvalidMember::MissingUserId),
            (r#"{"user_id":""}"#, InvalidMember::MissingUserId),
            (r#"{"user_id":1e3}"#, InvalidMember::MissingUserId),
        ];
        for (text, error) in cases {
            assert_eq!(Member::from_channel_data(text, 1024), Err(error));
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(129));
        assert_eq!(
            Member::from_channel_data(&long, 1024),
            Err(InvalidMember::UserIdTooLong)
        );
        let big = format!(r#"{{"user_id":"u","user_info":"{}"}}"#, "x".repeat(1023));
        assert!(matches!(
            Member::from_channel_data(&big, 1024),
            Err(InvalidMember::UserInfoTooLarge { size: 1025, .. })
        ));
    }

    #[test]
    fn a_user_joins_on_the_first_socket_and_leaves_on_the_last() {
        let member = Member::from_channel_data(r#"{"user_id":"u"}"#, 1024).unwrap();
        let mut roster = Roster::default();
        assert!(roster.join(&member));
        assert!(!roster.join(&member));
        assert!(!roster.leave("u"));
        assert!(roster.leave("u"));
        assert_eq!(roster.len(), 0);
    }
}
