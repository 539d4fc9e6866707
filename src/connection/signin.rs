//! `pusher:signin`: the socket becomes a user's, joins that user's channel, and
//! hears about the users on its watchlist.

use std::sync::Arc;

use serde_json::Value;
use tracing::debug;

use super::Connection;
use crate::protocol::{ChannelName, CloseCode, USER_CHANNEL_PREFIX, channel_auth_matches, frame};

/// Most users one watchlist may name.
const MAX_WATCHLIST: usize = 100;

/// The user a socket signed in as.
#[derive(Debug)]
pub(super) struct SignedIn {
    /// `user_data.id`.
    pub(super) id: Arc<str>,
    /// `user_data.watchlist`.
    pub(super) watchlist: Vec<Arc<str>>,
}

impl Connection {
    /// Checks a sign-in and makes the socket that user's; a bad one closes the socket
    /// with 4009, as Pusher does.
    pub(super) fn signin(&mut self, auth: &str, user_data: &str) {
        let user = match self.check_signin(auth, user_data) {
            Ok(user) => user,
            Err(reason) => {
                debug!(reason, "sign-in refused");
                self.peer.close(CloseCode::Unauthorized);
                return;
            }
        };
        // Signing in again as the same user changes nothing; as another user, the
        // socket first stops being the old one's, its channel included.
        if self
            .user
            .as_ref()
            .is_some_and(|current| current.id == user.id)
        {
            self.peer.send(frame::signin_success(user_data).into());
            return;
        }
        self.sign_out();
        let users = &self.shared.users;
        let online = users.sign_in(&self.app.id, &user.id, &self.peer, &user.watchlist);
        debug!(user_id = %user.id, "signed in");
        self.peer.send(frame::signin_success(user_data).into());
        if !online.is_empty() {
            let online: Vec<&str> = online.iter().map(|id| &**id).collect();
            self.peer.send(frame::watchlist_events(&online, &[]).into());
        }
        self.user = Some(user);
        self.authorized = true;
    }

    /// The user of a valid sign-in: the signature covers `socket_id::user::user_data`
    /// and `user_data` holds a non-empty string `id`.
    fn check_signin(&self, auth: &str, user_data: &str) -> Result<SignedIn, &'static str> {
        let config = &self.app.config;
        let signed = format!("{}::user::{user_data}", self.peer.socket_id);
        if !channel_auth_matches(&config.key, &config.secret, auth, &signed) {
            return Err("bad signature");
        }
        let Ok(Value::Object(data)) = serde_json::from_str::<Value>(user_data) else {
            return Err("user_data is not a JSON object");
        };
        let id = match data.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Arc::from(id.as_str()),
            _ => return Err("user_data has no non-empty string id"),
        };
        let watchlist = match data.get("watchlist") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) if ids.len() <= MAX_WATCHLIST => ids
                .iter()
                .map(|id| {
                    id.as_str()
                        .map(Arc::from)
                        .ok_or("watchlist ids must be strings")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("watchlist must be a list of at most 100 user ids"),
        };
        Ok(SignedIn { id, watchlist })
    }

    /// Forgets the socket's user, if it signed in, and leaves that user's channel.
    pub(super) fn sign_out(&mut self) {
        let Some(user) = self.user.take() else {
            return;
        };
        let users = &self.shared.users;
        users.sign_out(
            &self.app.id,
            &user.id,
            &self.peer.socket_id,
            &user.watchlist,
        );
        let own = ChannelName::parse(&format!("{USER_CHANNEL_PREFIX}{}", user.id)).ok();
        if let Some(own) = own.filter(|channel| self.channels.remove(channel)) {
            let counts = self.app.config.subscription_count;
            let hub = &self.shared.hub;
            hub.unsubscribe(&self.app.id, &own, &self.peer.socket_id, counts);
        }
    }
}
