//! Signed-in users: which sockets each user has on this node, on which other nodes
//! of a cluster they are signed in, and who watches whom.
//!
//! A socket becomes a user's with `pusher:signin`. The registry answers three
//! questions: which sockets to close when the app terminates a user's connections,
//! whether a user is online anywhere, and which sockets watch a user, so that they
//! hear `online` when the user's first socket anywhere signs in and `offline` when
//! the last one goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;

use crate::cluster::Bus;
use crate::hub::{Frame, NodeId, Peer};
use crate::protocol::{CloseCode, SocketId, frame};

/// Identifies a user across apps.
type UserKey = (Arc<str>, Arc<str>);

/// Where one online user is signed in.
#[derive(Debug, Default)]
struct Online {
    /// Their sockets on this node.
    sockets: HashMap<SocketId, Arc<Peer>>,
    /// The other nodes where they have a socket.
    elsewhere: Vec<NodeId>,
}

impl Online {
    fn is_empty(&self) -> bool {
        self.sockets.is_empty() && self.elsewhere.is_empty()
    }
}

/// Users and watchers of every app.
#[derive(Debug, Default)]
pub struct Users {
    /// Each user online anywhere. Locked before `watchers` when both are.
    online: DashMap<UserKey, Online>,
    /// For each watched user, the sockets whose watchlist names them.
    watchers: DashMap<UserKey, HashMap<SocketId, Arc<Peer>>>,
    /// The other nodes, told when a user's first socket here signs in and when
    /// the last one goes.
    bus: Option<Arc<Bus>>,
}

impl Users {
    /// An empty registry.
    pub fn new() -> Self {
        Users::default()
    }

    /// Also tells the other nodes on `bus` who is online here.
    pub fn with_bus(mut self, bus: Option<Arc<Bus>>) -> Self {
        self.bus = bus;
        self
    }

    /// Records `peer` as one of `user_id`'s sockets, watching `watchlist`. Tells the
    /// user's watchers it is online if this is its first socket anywhere, and
    /// returns which of the watched users are online now.
    pub fn sign_in(
        &self,
        app: &Arc<str>,
        user_id: &Arc<str>,
        peer: &Arc<Peer>,
        watchlist: &[Arc<str>],
    ) -> Vec<Arc<str>> {
        let key = (Arc::clone(app), Arc::clone(user_id));
        {
            let mut online = self.online.entry(key.clone()).or_default();
            let first_anywhere = online.is_empty();
            let first_here = online.sockets.is_empty();
            online
                .sockets
                .insert(peer.socket_id.clone(), Arc::clone(peer));
            if first_here && let Some(bus) = &self.bus {
                bus.user_online(app, user_id);
            }
            if first_anywhere {
                self.tell_watchers(&key, &[user_id], &[]);
            }
        }
        for watched in watchlist {
            let watched_key = (Arc::clone(app), Arc::clone(watched));
            let mut watchers = self.watchers.entry(watched_key).or_default();
            watchers.insert(peer.socket_id.clone(), Arc::clone(peer));
        }
        watchlist
            .iter()
            .filter(|watched| {
                self.online
                    .contains_key(&(Arc::clone(app), Arc::clone(watched)))
            })
            .cloned()
            .collect()
    }

    /// Forgets a socket that was signed in; tells the user's watchers it is offline
    /// if this was its last socket anywhere.
    pub fn sign_out(
        &self,
        app: &Arc<str>,
        user_id: &Arc<str>,
        socket_id: &SocketId,
        watchlist: &[Arc<str>],
    ) {
        let key = (Arc::clone(app), Arc::clone(user_id));
        if let Some(mut online) = self.online.get_mut(&key)
            && online.sockets.remove(socket_id).is_some()
            && online.sockets.is_empty()
        {
            if let Some(bus) = &self.bus {
                bus.user_offline(app, user_id);
            }
            if online.elsewhere.is_empty() {
                self.tell_watchers(&key, &[], &[user_id]);
            }
        }
        self.online.remove_if(&key, |_, online| online.is_empty());
        for watched in watchlist {
            let watched_key = (Arc::clone(app), Arc::clone(watched));
            self.watchers.remove_if_mut(&watched_key, |_, watchers| {
                watchers.remove(socket_id);
                watchers.is_empty()
            });
        }
    }

    /// Records whether a user has a socket on another node; watchers here hear
    /// when that makes the user online or offline anywhere.
    pub fn set_remote(&self, app: &Arc<str>, user_id: &Arc<str>, node: &NodeId, online: bool) {
        let key = (Arc::clone(app), Arc::clone(user_id));
        let mut entry = self.online.entry(key.clone()).or_default();
        let was_online = !entry.is_empty();
        entry.elsewhere.retain(|other| other != node);
        if online {
            entry.elsewhere.push(Arc::clone(node));
        }
        match (was_online, !entry.is_empty()) {
            (false, true) => self.tell_watchers(&key, &[user_id], &[]),
            (true, false) => self.tell_watchers(&key, &[], &[user_id]),
            _ => {}
        }
        let gone = entry.is_empty();
        drop(entry);
        if gone {
            self.online.remove_if(&key, |_, online| online.is_empty());
        }
    }

    /// Replaces the users signed in on `node` with `users`, as its snapshot says;
    /// with none, forgets the node.
    pub fn replace_node(&self, node: &NodeId, users: Vec<(Arc<str>, Arc<str>)>) {
        let now: HashSet<UserKey> = users.into_iter().collect();
        let before: Vec<UserKey> = self
            .online
            .iter()
            .filter(|entry| entry.value().elsewhere.contains(node))
            .map(|entry| entry.key().clone())
            .collect();
        for (app, user_id) in before.into_iter().filter(|key| !now.contains(key)) {
            self.set_remote(&app, &user_id, node, false);
        }
        for (app, user_id) in &now {
            self.set_remote(app, user_id, node, true);
        }
    }

    /// Every user with a socket signed in on this node, for a snapshot.
    pub fn local_users(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.online
            .iter()
            .filter(|entry| !entry.value().sockets.is_empty())
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Closes every socket of a user with 4009. Returns how many there were.
    pub fn terminate(&self, app: &Arc<str>, user_id: &str) -> usize {
        let key = (Arc::clone(app), Arc::from(user_id));
        let Some(online) = self.online.get(&key) else {
            return 0;
        };
        for peer in online.sockets.values() {
            peer.close(CloseCode::Unauthorized);
        }
        online.sockets.len()
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

    #[test]
    fn a_user_on_another_node_is_online_until_their_last_node_lets_go() {
        let users = Users::new();
        let app: Arc<str> = "a".into();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let (east, west): (NodeId, NodeId) = ("east".into(), "west".into());
        let watcher = peer();
        users.sign_in(&app, &alice, &watcher, &[Arc::clone(&bob)]);

        users.set_remote(&app, &bob, &east, true);
        users.set_remote(&app, &bob, &west, true);
        users.set_remote(&app, &bob, &east, false);
        let late = users.sign_in(&app, &alice, &peer(), &[Arc::clone(&bob)]);
        assert_eq!(late, vec![Arc::clone(&bob)], "still online on west");
        users.replace_node(&west, Vec::new());

        let heard = frames(&watcher);
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(heard[0].contains("online") && heard[1].contains("offline"));
        assert_eq!(users.terminate(&app, "bob"), 0, "no socket of bob here");
    }
}
