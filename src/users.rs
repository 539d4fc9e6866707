//! Signed-in users on this node: which sockets each user has, and who watches whom.
//!
//! A socket becomes a user's with `pusher:signin`. The registry answers three
//! questions: which sockets to close when the app terminates a user's connections,
//! whether a user is online, and which sockets watch a user, so that they hear
//! `online` when the user's first socket signs in and `offline` when the last goes.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::hub::{Frame, Peer};
use crate::protocol::{CloseCode, SocketId, frame};

/// Identifies a user across apps.
type UserKey = (Arc<str>, Arc<str>);

/// Users and watchers of every app on this node.
#[derive(Debug, Default)]
pub struct Users {
    /// Each online user's sockets.
    sockets: DashMap<UserKey, HashMap<SocketId, Arc<Peer>>>,
    /// For each watched user, the sockets whose watchlist names them.
    watchers: DashMap<UserKey, HashMap<SocketId, Arc<Peer>>>,
}

impl Users {
    /// An empty registry.
    pub fn new() -> Self {
        Users::default()
    }

    /// Records `peer` as one of `user_id`'s sockets, watching `watchlist`. Tells the
    /// user's watchers it is online if this is its first socket, and returns which
    /// of the watched users are online now.
    pub fn sign_in(
        &self,
        app: &Arc<str>,
        user_id: &Arc<str>,
        peer: &Arc<Peer>,
        watchlist: &[Arc<str>],
    ) -> Vec<Arc<str>> {
        let key = (Arc::clone(app), Arc::clone(user_id));
        let first = {
            let mut sockets = self.sockets.entry(key.clone()).or_default();
            let first = sockets.is_empty();
            sockets.insert(peer.socket_id.clone(), Arc::clone(peer));
            first
        };
        if first {
            self.tell_watchers(&key, &[user_id], &[]);
        }
        for watched in watchlist {
            let watched_key = (Arc::clone(app), Arc::clone(watched));
            let mut watchers = self.watchers.entry(watched_key).or_default();
            watchers.insert(peer.socket_id.clone(), Arc::clone(peer));
        }
        watchlist
            .iter()
            .filter(|watched| {
                self.sockets
                    .contains_key(&(Arc::clone(app), Arc::clone(watched)))
            })
            .cloned()
            .collect()
    }

    /// Forgets a socket that was signed in; tells the user's watchers it is offline
    /// if this was its last socket.
    pub fn sign_out(
        &self,
        app: &Arc<str>,
        user_id: &Arc<str>,
        socket_id: &SocketId,
        watchlist: &[Arc<str>],
    ) {
        let key = (Arc::clone(app), Arc::clone(user_id));
        let last = self
            .sockets
            .remove_if_mut(&key, |_, sockets| {
                sockets.remove(socket_id);
                sockets.is_empty()
            })
            .is_some();
        if last {
            self.tell_watchers(&key, &[], &[user_id]);
        }
        for watched in watchlist {
            let watched_key = (Arc::clone(app), Arc::clone(watched));
            self.watchers.remove_if_mut(&watched_key, |_, watchers| {
                watchers.remove(socket_id);
                watchers.is_empty()
            });
        }
    }

    /// Closes every socket of a user with 4009. Returns how many there were.
    pub fn terminate(&self, app: &Arc<str>, user_id: &str) -> usize {
        let key = (Arc::clone(app), Arc::from(user_id));
        let Some(sockets) = self.sockets.get(&key) else {
            return 0;
        };
        for peer in sockets.values() {
            peer.close(CloseCode::Unauthorized);
        }
        sockets.len()
    }

    fn tell_watchers(&self, user: &UserKey, online: &[&Arc<str>], offline: &[&Arc<str>]) {
        let Some(watchers) = self.watchers.get(user) else {
            return;
        };
        let online: Vec<&str> = online.iter().map(|id| &***id).collect();
        let offline: Vec<&str> = offline.iter().map(|id| &***id).collect();
        let events = Frame::from(frame::watchlist_events(&online, &offline));
        for peer in watchers.values() {
            peer.send(events.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Outgoing;

    fn peer() -> Arc<Peer> {
        Arc::new(Peer::new(SocketId::random(), 16))
    }

    fn frames(peer: &Peer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Outgoing::Frame(frame)) = peer.try_next() {
            out.push(frame.as_str().to_owned());
        }
        out
    }

    #[test]
    fn watchers_hear_the_first_socket_online_and_the_last_offline() {
        let users = Users::new();
        let app: Arc<str> = "a".into();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let watcher = peer();
        assert!(
            users
                .sign_in(&app, &alice, &watcher, &[Arc::clone(&bob)])
                .is_empty()
        );

        let (tab1, tab2) = (peer(), peer());
        users.sign_in(&app, &bob, &tab1, &[]);
        users.sign_in(&app, &bob, &tab2, &[]);
        users.sign_out(&app, &bob, &tab1.socket_id, &[]);
        users.sign_out(&app, &bob, &tab2.socket_id, &[]);

        let heard = frames(&watcher);
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(heard[0].contains("online") && heard[0].contains("bob"));
        assert!(heard[1].contains("offline"));
    }

    #[test]
    fn sign_in_reports_watched_users_already_online() {
        let users = Users::new();
        let app: Arc<str> = "a".into();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        users.sign_in(&app, &bob, &peer(), &[]);
        let online = users.sign_in(&app, &alice, &peer(), &[Arc::clone(&bob)]);
        assert_eq!(online, vec![bob]);
    }

    #[test]
    fn terminate_closes_every_socket_of_the_user() {
        let users = Users::new();
        let app: Arc<str> = "a".into();
        let bob: Arc<str> = "bob".into();
        let (tab1, tab2) = (peer(), peer());
        users.sign_in(&app, &bob, &tab1, &[]);
        users.sign_in(&app, &bob, &tab2, &[]);
        assert_eq!(users.terminate(&app, "bob"), 2);
        for tab in [tab1, tab2] {
            assert!(matches!(
                tab.try_next(),
                Some(Outgoing::Close(CloseCode::Unauthorized))
            ));
        }
        assert_eq!(users.terminate(&app, "nobody"), 0);
    }
}
