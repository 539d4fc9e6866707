//! The hub: which sockets are on which channel of which app, and the presence
//! rosters, on this node.
//!
//! Channels live in a `DashMap`, so operations on different channels rarely contend.
//! Everything that must happen together for one channel (adding a subscriber, telling
//! it that it succeeded, telling the others a member joined) happens under that
//! channel's entry lock, which is why a subscriber never sees an event of a channel
//! before that channel's `subscription_succeeded`. Frames are queued with a
//! non-blocking send, so no lock is ever held across an `.await`.

mod peer;
mod presence;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

pub use peer::{Frame, Outgoing, Peer};
pub use presence::{InvalidMember, Member, Roster};

use crate::delivery::pusher_webhooks::Notifier;
use crate::protocol::{ChannelKind, ChannelName, SocketId, frame};

/// Identifies a channel across apps.
type ChannelKey = (Arc<str>, ChannelName);

/// Sockets and members of one channel.
#[derive(Debug, Default)]
struct Channel {
    /// Each subscribed socket, with the presence user it joined as.
    subscribers: HashMap<SocketId, Subscriber>,
    /// Present on presence channels only.
    roster: Option<Roster>,
}

#[derive(Debug)]
struct Subscriber {
    peer: Arc<Peer>,
    user_id: Option<Arc<str>>,
}

/// Counts that the HTTP API reports for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    /// Subscribed sockets.
    pub subscription_count: usize,
    /// Distinct presence users (0 on other channels).
    pub user_count: usize,
}

/// Why the hub refused a subscription that was otherwise authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// The presence channel already holds as many users as the app allows.
    #[error("presence channel is full ({0} members)")]
    PresenceFull(usize),
}

/// A frame replayed to each new subscriber of a channel until it expires.
#[derive(Debug)]
struct Retained {
    frame: Frame,
    until: Instant,
}

/// Channels and their subscribers on this node.
#[derive(Debug, Default)]
pub struct Hub {
    channels: DashMap<ChannelKey, Channel>,
    /// Frames kept for late subscribers, such as a job's outcome. Always locked
    /// after `channels` when both are, never before.
    retained: DashMap<ChannelKey, Retained>,
    /// Told when a channel is occupied or vacated and when a member joins or
    /// leaves, under the channel's lock so that its events keep their order.
    webhooks: Notifier,
    /// The other nodes, when there are any: what is published here goes there too.
    bus: Option<Arc<crate::cluster::Bus>>,
}

impl Hub {
    /// An empty hub that reports nothing to webhooks.
    pub fn new() -> Self {
        Hub::default()
    }

    /// An empty hub that reports channel and member events to `webhooks`.
    pub fn with_webhooks(webhooks: Notifier) -> Self {
        Hub {
            webhooks,
            ..Hub::default()
        }
    }

    /// Also sends what is published to the other nodes on `bus`.
    pub fn with_bus(mut self, bus: Option<Arc<crate::cluster::Bus>>) -> Self {
        self.bus = bus;
        self
    }

    /// The bus to the other nodes, if this node has one.
    pub fn bus(&self) -> Option<&Arc<crate::cluster::Bus>> {
        self.bus.as_ref()
    }

    /// Where channel events are reported, for events the hub does not see itself
    /// (client events).
    pub fn webhooks(&self) -> &Notifier {
        &self.webhooks
    }

    /// Adds `peer` to `channel` and queues `subscription_succeeded` to it. On a
    /// presence channel `member` is the user it joins as; the others hear
    /// `member_added` if this is the user's first socket there.
    ///
    /// Subscribing a socket that is already subscribed changes nothing but sends
    /// `subscription_succeeded` again. With `counts`, the sockets of a non-presence
    /// channel hear its new `subscription_count`.
    ///
    /// # Errors
    ///
    /// When a presence channel is full (`max_members` users) and the user is new.
    pub fn subscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        peer: &Arc<Peer>,
        member: Option<Member>,
        max_members: usize,
        counts: bool,
    ) -> Result<(), SubscribeRefusal> {
        let key = (Arc::clone(app), channel.clone());
        let mut entry = self.channels.entry(key.clone()).or_default();
        let state = entry.value_mut();
        if channel.kind() == ChannelKind::Presence && state.roster.is_none() {
            state.roster = Some(Roster::default());
        }

        // A repeated subscribe is answered again but not counted twice.
        if state.subscribers.contains_key(&peer.socket_id) {
            let data = state.roster.as_ref().map(Roster::succeeded_data);
            peer.send(succeeded(channel, data.as_deref()));
            return Ok(());
        }
        let first_subscriber = state.subscribers.is_empty();

        let (Some(roster), Some(member)) = (state.roster.as_mut(), member) else {
            state.subscribers.insert(
                peer.socket_id.clone(),
                Subscriber {
                    peer: Arc::clone(peer),
                    user_id: None,
                },
            );
            if first_subscriber {
                self.webhooks.channel_occupied(app, channel);
            }
            peer.send(succeeded(channel, None));
            self.replay(&key, peer);
            if counts {
                tell_count(channel, state);
            }
            return Ok(());
        };

        if !roster.contains(&member.user_id) && roster.len() >= max_members {
            drop(entry);
            self.remove_if_empty(app, channel);
            return Err(SubscribeRefusal::PresenceFull(max_members));
        }
        let first_socket = roster.join(&member);
        if first_subscriber {
            self.webhooks.channel_occupied(app, channel);
        }
        if first_socket {
            self.webhooks.member_added(app, channel, &member.user_id);
        }
        peer.send(succeeded(channel, Some(&roster.succeeded_data())));
        self.replay(&key, peer);
        if first_socket {
            let added = Frame::from(frame::member_added(channel.as_str(), &member.added_data()));
            for subscriber in state.subscribers.values() {
                subscriber.peer.send(added.clone());
            }
        }
        state.subscribers.insert(
            peer.socket_id.clone(),
            Subscriber {
                peer: Arc::clone(peer),
                user_id: Some(member.user_id),
            },
        );
        Ok(())
    }

    /// Removes a socket from a channel; on a presence channel the others hear
    /// `member_removed` if it was the user's last socket there. Returns whether the
    /// socket was subscribed. With `counts`, the sockets left on a non-presence
    /// channel hear its new `subscription_count`.
    pub fn unsubscribe(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        socket_id: &SocketId,
        counts: bool,
    ) -> bool {
        let key = (Arc::clone(app), channel.clone());
        let Some(mut state) = self.channels.get_mut(&key) else {
            return false;
        };
        let Some(gone) = state.subscribers.remove(socket_id) else {
            return false;
        };
        let last_socket = match (state.roster.as_mut(), gone.user_id.as_ref()) {
            (Some(roster), Some(user_id)) => roster.leave(user_id).then_some(user_id),
            _ => None,
        };
        if let Some(user_id) = last_socket {
            let removed = Frame::from(frame::member_removed(channel.as_str(), user_id));
            for subscriber in state.subscribers.values() {
                subscriber.peer.send(removed.clone());
            }
            self.webhooks.member_removed(app, channel, user_id);
        }
        let empty = state.subscribers.is_empty();
        if empty {
            self.webhooks.channel_vacated(app, channel);
        } else if counts && state.roster.is_none() {
            tell_count(channel, &state);
        }
        drop(state);
        if empty {
            self.remove_if_empty(app, channel);
        }
        true
    }

    /// Queues `frame` to every socket on the channel except `except`, on this node
    /// and, through the bus, on the others. Returns how many sockets here it was
    /// queued to.
    pub fn publish(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        frame: &Frame,
        except: Option<&SocketId>,
    ) -> usize {
        if let Some(bus) = &self.bus {
            bus.forward(app, channel, frame, except, None);
        }
        self.publish_here(app, channel, frame, except)
    }

    /// Like [`Hub::publish`], for this node's sockets only: for what came from
    /// another node.
    pub fn publish_here(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        frame: &Frame,
        except: Option<&SocketId>,
    ) -> usize {
        let key = (Arc::clone(app), channel.clone());
        let Some(state) = self.channels.get(&key) else {
            return 0;
        };
        let mut sent = 0;
        for (socket_id, subscriber) in &state.subscribers {
            if Some(socket_id) != except {
                subscriber.peer.send(frame.clone());
                sent += 1;
            }
        }
        sent
    }

    /// Like [`Hub::publish`] to everyone, and keeps the frame for `keep`: each socket
    /// that subscribes to the channel meanwhile gets it right after its
    /// `subscription_succeeded`. Done under the channel's lock, so a subscriber gets
    /// the frame exactly once, live or replayed.
    pub fn publish_retained(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        frame: &Frame,
        except: Option<&SocketId>,
        keep: Duration,
    ) {
        if let Some(bus) = &self.bus {
            bus.forward(app, channel, frame, except, Some(keep));
        }
        self.retain_here(app, channel, frame, except, keep);
    }

    /// Like [`Hub::publish_retained`], on this node only: for what came from
    /// another node.
    pub fn retain_here(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        frame: &Frame,
        except: Option<&SocketId>,
        keep: Duration,
    ) {
        let key = (Arc::clone(app), channel.clone());
        let state = self.channels.entry(key.clone()).or_default();
        let retained = Retained {
            frame: frame.clone(),
            until: Instant::now() + keep,
        };
        self.retained.insert(key, retained);
        for (socket_id, subscriber) in &state.subscribers {
            if Some(socket_id) != except {
                subscriber.peer.send(frame.clone());
            }
        }
        let empty = state.subscribers.is_empty();
        drop(state);
        if empty {
            self.remove_if_empty(app, channel);
        }
    }

    /// Keeps a frame for later subscribers without sending it to anyone now, here or
    /// on other nodes: for outcomes rebuilt from the store at start-up.
    pub fn keep(&self, app: &Arc<str>, channel: &ChannelName, frame: &Frame, keep: Duration) {
        let retained = Retained {
            frame: frame.clone(),
            until: Instant::now() + keep,
        };
        self.retained
            .insert((Arc::clone(app), channel.clone()), retained);
    }

    /// Drops retained frames that have expired.
    pub fn forget_expired(&self) {
        let now = Instant::now();
        self.retained.retain(|_, retained| retained.until > now);
    }

    /// Sends a new subscriber the channel's retained frame, if it has one; on a
    /// cache channel with nothing kept, `pusher:cache_miss` (and the webhook).
    fn replay(&self, key: &ChannelKey, peer: &Peer) {
        let kept = self
            .retained
            .get(key)
            .filter(|retained| retained.until > Instant::now())
            .map(|retained| retained.frame.clone());
        match kept {
            Some(frame) => peer.send(frame),
            None if key.1.is_cache() => {
                peer.send(Frame::from(frame::cache_miss(key.1.as_str())));
                self.webhooks.cache_miss(&key.0, &key.1);
            }
            None => {}
        }
    }

    /// A cache channel's kept event: its `data` and the time it has left.
    pub fn cached(&self, app: &Arc<str>, channel: &ChannelName) -> Option<(String, Duration)> {
        let key = (Arc::clone(app), channel.clone());
        let retained = self.retained.get(&key)?;
        let left = retained.until.checked_duration_since(Instant::now())?;
        let event: serde_json::Value = serde_json::from_str(retained.frame.as_str()).ok()?;
        let data = event.get("data")?.as_str()?.to_owned();
        Some((data, left))
    }

    /// The counts of one channel; zero when nobody is subscribed.
    pub fn stats(&self, app: &Arc<str>, channel: &ChannelName) -> ChannelStats {
        let key = (Arc::clone(app), channel.clone());
        self.channels
            .get(&key)
            .map(|state| stats_of(&state))
            .unwrap_or_default()
    }

    /// Every occupied channel of `app` whose name starts with `prefix`.
    pub fn occupied(&self, app: &str, prefix: &str) -> Vec<(ChannelName, ChannelStats)> {
        self.channels
            .iter()
            .filter(|entry| &*entry.key().0 == app && entry.key().1.as_str().starts_with(prefix))
            .map(|entry| (entry.key().1.clone(), stats_of(entry.value())))
            .collect()
    }

    /// The presence user a socket joined a channel as.
    pub fn user_of(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        socket_id: &SocketId,
    ) -> Option<Arc<str>> {
        let key = (Arc::clone(app), channel.clone());
        let state = self.channels.get(&key)?;
        state.subscribers.get(socket_id)?.user_id.clone()
    }

    /// The user ids on a presence channel.
    pub fn user_ids(&self, app: &Arc<str>, channel: &ChannelName) -> Vec<String> {
        let key = (Arc::clone(app), channel.clone());
        let Some(state) = self.channels.get(&key) else {
            return Vec::new();
        };
        let ids = state
            .roster
            .as_ref()
            .map(|r| r.user_ids().map(str::to_owned));
        ids.into_iter().flatten().collect()
    }

    /// Drops a channel's entry once its last subscriber has left, so that empty
    /// channels cost nothing.
    fn remove_if_empty(&self, app: &Arc<str>, channel: &ChannelName) {
        let key = (Arc::clone(app), channel.clone());
        self.channels
            .remove_if(&key, |_, state| state.subscribers.is_empty());
    }
}

/// Queues a channel's `subscription_count` to its sockets.
fn tell_count(channel: &ChannelName, state: &Channel) {
    let count = Frame::from(frame::subscription_count(
        channel.as_str(),
        state.subscribers.len(),
    ));
    for subscriber in state.subscribers.values() {
        subscriber.peer.send(count.clone());
    }
}

fn stats_of(state: &Channel) -> ChannelStats {
    ChannelStats {
        subscription_count: state.subscribers.len(),
        user_count: state.roster.as_ref().map_or(0, Roster::len),
    }
}

fn succeeded(channel: &ChannelName, data: Option<&str>) -> Frame {
    Frame::from(frame::subscription_succeeded(
        channel.as_str(),
        data.unwrap_or("{}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> Arc<Peer> {
        Arc::new(Peer::new(SocketId::parse(id).unwrap(), 16))
    }

    fn member(id: &str) -> Option<Member> {
        Some(Member::from_channel_data(&format!(r#"{{"user_id":"{id}"}}"#), 1024).unwrap())
    }

    fn names(peer: &Peer) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(Outgoing::Frame(frame)) = peer.try_next() {
            let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
            names.push(value["event"].as_str().unwrap().to_owned());
        }
        names
    }

    #[test]
    fn presence_members_join_once_and_leave_once() {
        let hub = Hub::new();
        let app: Arc<str> = "a".into();
        let channel = ChannelName::parse("presence-room").unwrap();
        let watcher = peer("1.1");
        let tab1 = peer("2.1");
        let tab2 = peer("2.2");

        hub.subscribe(&app, &channel, &watcher, member("w"), 100, false)
            .unwrap();
        hub.subscribe(&app, &channel, &tab1, member("u"), 100, false)
            .unwrap();
        hub.subscribe(&app, &channel, &tab2, member("u"), 100, false)
            .unwrap();
        assert_eq!(hub.stats(&app, &channel).user_count, 2);
        assert_eq!(hub.stats(&app, &channel).subscription_count, 3);

        hub.unsubscribe(&app, &channel, &tab1.socket_id, false);
        hub.unsubscribe(&app, &channel, &tab2.socket_id, false);
        assert_eq!(
            names(&watcher),
            [
                "pusher_internal:subscription_succeeded",
                "pusher_internal:member_added",
                "pusher_internal:member_removed"
            ]
        );
    }

    #[test]
    fn a_full_presence_channel_refuses_new_users_only() {
        let hub = Hub::new();
        let app: Arc<str> = "a".into();
        let channel = ChannelName::parse("presence-room").unwrap();
        let first = peer("1.1");
        let second_tab = peer("1.2");
        let other = peer("1.3");
        hub.subscribe(&app, &channel, &first, member("u"), 1, false)
            .unwrap();
        hub.subscribe(&app, &channel, &second_tab, member("u"), 1, false)
            .unwrap();
        assert_eq!(
            hub.subscribe(&app, &channel, &other, member("v"), 1, false),
            Err(SubscribeRefusal::PresenceFull(1))
        );
    }

    #[test]
    fn empty_channels_are_forgotten() {
        let hub = Hub::new();
        let app: Arc<str> = "a".into();
        let channel = ChannelName::parse("room").unwrap();
        let p = peer("1.1");
        hub.subscribe(&app, &channel, &p, None, 100, false).unwrap();
        assert_eq!(hub.occupied("a", "").len(), 1);
        assert!(hub.unsubscribe(&app, &channel, &p.socket_id, false));
        assert!(hub.occupied("a", "").is_empty());
    }
}
