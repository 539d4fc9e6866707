//! The hub: which sockets are on which channel of which app, and the presence
//! rosters, on this node; in a cluster, merged with what the other nodes report of
//! the same channels, so that counts, rosters and member events are cluster-wide.
//!
//! Channels live in a `DashMap`, so operations on different channels rarely contend.
//! Everything that must happen together for one channel (adding a subscriber, telling
//! it that it succeeded, telling the others a member joined) happens under that
//! channel's entry lock, which is why a subscriber never sees an event of a channel
//! before that channel's `subscription_succeeded`. Frames are queued with a
//! non-blocking send, so no lock is ever held across an `.await`.

mod peer;
mod presence;
mod remote;
mod unspoken;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::Value;
use tokio::time::Instant;

pub use peer::{Frame, Outgoing, Peer};
pub use presence::{InvalidMember, Member, Roster};
pub use remote::{NodeId, RemoteChange, Share};

use remote::Remote;
use unspoken::{Observed, Unspoken};

use crate::delivery::pusher_webhooks::Notifier;
use crate::protocol::{ChannelKind, ChannelName, SocketId, frame};

/// Identifies a channel across apps.
type ChannelKey = (Arc<str>, ChannelName);

/// Sockets and members of one channel.
#[derive(Debug, Default)]
struct Channel {
    /// Each subscribed socket here, with the presence user it joined as.
    subscribers: HashMap<SocketId, Subscriber>,
    /// This node's members; present on presence channels only.
    roster: Option<Roster>,
    /// What the other nodes of a cluster hold of the channel, once one reports
    /// anything.
    remote: Option<Box<Remote>>,
}

impl Channel {
    /// Sockets subscribed anywhere in the cluster.
    fn total(&self) -> usize {
        self.subscribers.len() + self.remote.as_ref().map_or(0, |remote| remote.sockets())
    }

    /// Whether the user has a socket on the channel on any node.
    fn is_present(&self, user_id: &str) -> bool {
        self.roster.as_ref().is_some_and(|r| r.contains(user_id))
            || self.remote.as_ref().is_some_and(|r| r.has_user(user_id))
    }

    /// The info a user joined with, here or elsewhere.
    fn info_of(&self, user_id: &str) -> Value {
        let here = self.roster.as_ref().and_then(|r| r.info_of(user_id));
        let there = || self.remote.as_ref().and_then(|r| r.info_of(user_id));
        here.or_else(there).cloned().unwrap_or(Value::Null)
    }

    /// Every member anywhere, a user on several nodes more than once.
    fn members(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        let here = self.roster.iter().flat_map(Roster::members);
        here.chain(self.remote.iter().flat_map(|remote| remote.members()))
    }

    /// Distinct presence users anywhere.
    fn user_count(&self) -> usize {
        match &self.remote {
            None => self.roster.as_ref().map_or(0, Roster::len),
            Some(_) => self
                .members()
                .map(|(id, _)| id)
                .collect::<HashSet<_>>()
                .len(),
        }
    }

    /// Whether nothing here or on another node keeps the channel alive.
    fn is_unused(&self) -> bool {
        self.subscribers.is_empty() && self.remote.as_ref().is_none_or(|r| r.is_empty())
    }

    /// The `subscription_succeeded` frame, with the roster of the whole cluster on a
    /// presence channel.
    fn succeeded(&self, channel: &ChannelName) -> Frame {
        let data = match self.roster {
            Some(_) => presence::succeeded_data(self.members()),
            None => "{}".to_owned(),
        };
        Frame::from(frame::subscription_succeeded(channel.as_str(), &data))
    }

    fn tell(&self, frame: &Frame) {
        for subscriber in self.subscribers.values() {
            subscriber.peer.send(frame.clone());
        }
    }

    /// Queues the channel's cluster-wide `subscription_count` to its sockets here.
    fn tell_count(&self, channel: &ChannelName) {
        let count = frame::subscription_count(channel.as_str(), self.total());
        self.tell(&Frame::from(count));
    }
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

/// One node's part of one channel, as a snapshot for the other nodes carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelShare {
    /// The app the channel belongs to.
    pub app: Arc<str>,
    /// The channel.
    pub channel: ChannelName,
    /// The node's sockets and members there.
    pub share: Share,
}

/// Channels and their subscribers on this node, and what the other nodes of a
/// cluster hold of the same channels.
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
    /// Changes seen while another node speaks for the cluster.
    unspoken: Unspoken,
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

    /// Reports a change of occupancy or membership to Pusher webhooks if this node
    /// speaks for the cluster (a single node always does). Otherwise it is kept
    /// for a while: should the node that speaks die, the one that takes over sends
    /// what that node can no longer have sent.
    fn observed(&self, change: Observed) {
        match &self.bus {
            Some(bus) if !bus.speaks_for_cluster() => {
                if self.webhooks.reports_channels_of(&change.key().0) {
                    self.unspoken.keep(change, bus.unspoken_window());
                }
            }
            _ => change.report(&self.webhooks),
        }
    }

    /// Makes this node the one that speaks for the cluster: the changes it saw
    /// since `since` are reported now (none without `since`), as the node that
    /// spoke before may not have.
    pub fn speak_from(&self, since: Option<Instant>) {
        let again = self.webhooks.replaying();
        for change in self.unspoken.take_since(since) {
            change.report(&again);
        }
    }

    /// Adds `peer` to `channel` and queues `subscription_succeeded` to it. On a
    /// presence channel `member` is the user it joins as; the others hear
    /// `member_added` if this is the user's first socket there on any node.
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
            peer.send(state.succeeded(channel));
            return Ok(());
        }
        let member = member.filter(|_| state.roster.is_some());
        if let Some(member) = &member
            && !state.is_present(&member.user_id)
            && state.user_count() >= max_members
        {
            drop(entry);
            self.remove_if_unused(&key);
            return Err(SubscribeRefusal::PresenceFull(max_members));
        }

        let was_empty = state.total() == 0;
        let first_anywhere = member
            .as_ref()
            .is_some_and(|member| !state.is_present(&member.user_id));
        let first_here = match (&mut state.roster, &member) {
            (Some(roster), Some(member)) => roster.join(member),
            _ => false,
        };
        if was_empty {
            self.observed(Observed::Occupied(key.clone()));
        }
        if let Some(member) = member.as_ref().filter(|_| first_anywhere) {
            let user_id = Arc::clone(&member.user_id);
            self.observed(Observed::Added(key.clone(), user_id));
        }
        peer.send(state.succeeded(channel));
        self.replay(&key, peer);
        if let Some(member) = member.as_ref().filter(|_| first_anywhere) {
            let added = frame::member_added(channel.as_str(), &member.added_data());
            state.tell(&Frame::from(added));
        }
        let user_id = member.as_ref().map(|member| Arc::clone(&member.user_id));
        let subscriber = Subscriber {
            peer: Arc::clone(peer),
            user_id,
        };
        state.subscribers.insert(peer.socket_id.clone(), subscriber);
        if counts && state.roster.is_none() {
            state.tell_count(channel);
        }
        if let Some(bus) = &self.bus {
            if let Some(member) = member.as_ref().filter(|_| first_here) {
                bus.member_joined(app, channel, member);
            }
            bus.sockets(app, channel, state.subscribers.len());
        }
        Ok(())
    }

    /// Removes a socket from a channel; on a presence channel the others hear
    /// `member_removed` if it was the user's last socket there on any node. Returns
    /// whether the socket was subscribed. With `counts`, the sockets left on a
    /// non-presence channel hear its new `subscription_count`.
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
        let last_here = match (state.roster.as_mut(), gone.user_id.as_ref()) {
            (Some(roster), Some(user_id)) => roster.leave(user_id).then_some(user_id),
            _ => None,
        };
        if let Some(bus) = &self.bus {
            if let Some(user_id) = last_here {
                bus.member_left(app, channel, user_id);
            }
            bus.sockets(app, channel, state.subscribers.len());
        }
        if let Some(user_id) = last_here.filter(|id| !state.is_present(id)) {
            let removed = frame::member_removed(channel.as_str(), user_id);
            state.tell(&Frame::from(removed));
            self.observed(Observed::Removed(key.clone(), Arc::clone(user_id)));
        }
        if state.total() == 0 {
            self.observed(Observed::Vacated(key.clone()));
        } else if counts && state.roster.is_none() {
            state.tell_count(channel);
        }
        let unused = state.is_unused();
        drop(state);
        if unused {
            self.remove_if_unused(&key);
        }
        true
    }

    /// Applies what another node reports of its part of a channel: the sockets here
    /// hear `member_added`, `member_removed` and (with `counts`) the new
    /// `subscription_count` where the cluster-wide picture changed, and webhooks
    /// hear of it if this node speaks for the cluster.
    pub fn apply_remote(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        node: &NodeId,
        change: RemoteChange,
        counts: bool,
    ) {
        let key = (Arc::clone(app), channel.clone());
        // Under the channel's lock, so that a socket subscribing meanwhile sees
        // either the old roster and then the change, or the new roster.
        let mut entry = self.channels.entry(key.clone()).or_default();
        let state = entry.value_mut();
        let total_before = state.total();
        let members_before: Vec<(Arc<str>, bool)> = touched_users(state, node, &change)
            .into_iter()
            .map(|id| {
                let present = state.is_present(&id);
                (id, present)
            })
            .collect();
        let remote = state.remote.get_or_insert_default();
        remote.apply(node, change);
        if remote.is_empty() {
            state.remote = None;
        }

        let total_after = state.total();
        if total_before == 0 && total_after > 0 {
            self.observed(Observed::Occupied(key.clone()));
        }
        for (user_id, was_present) in members_before {
            match (was_present, state.is_present(&user_id)) {
                (false, true) if channel.kind() == ChannelKind::Presence => {
                    let member = Member {
                        user_id: Arc::clone(&user_id),
                        user_info: state.info_of(&user_id),
                    };
                    let added = frame::member_added(channel.as_str(), &member.added_data());
                    state.tell(&Frame::from(added));
                    self.observed(Observed::Added(key.clone(), user_id));
                }
                (true, false) => {
                    let removed = frame::member_removed(channel.as_str(), &user_id);
                    state.tell(&Frame::from(removed));
                    self.observed(Observed::Removed(key.clone(), user_id));
                }
                _ => {}
            }
        }
        if total_before > 0 && total_after == 0 {
            self.observed(Observed::Vacated(key.clone()));
        }
        if counts && state.roster.is_none() && total_before != total_after {
            state.tell_count(channel);
        }
        let unused = state.is_unused();
        drop(entry);
        if unused {
            self.remove_if_unused(&key);
        }
    }

    /// Replaces everything `node` holds with `shares`, as its snapshot says; with
    /// no shares, forgets the node. `counts` tells whether an app's sockets hear
    /// `subscription_count`.
    pub fn replace_node(
        &self,
        node: &NodeId,
        shares: Vec<ChannelShare>,
        counts: impl Fn(&str) -> bool,
    ) {
        let mut stale: HashSet<ChannelKey> = self
            .channels
            .iter()
            .filter(|entry| {
                let remote = entry.value().remote.as_ref();
                remote.is_some_and(|remote| remote.share(node).is_some())
            })
            .map(|entry| entry.key().clone())
            .collect();
        for ChannelShare {
            app,
            channel,
            share,
        } in shares
        {
            stale.remove(&(Arc::clone(&app), channel.clone()));
            let counts = counts(&app);
            self.apply_remote(&app, &channel, node, RemoteChange::Replace(share), counts);
        }
        for (app, channel) in stale {
            let empty = RemoteChange::Replace(Share::default());
            self.apply_remote(&app, &channel, node, empty, counts(&app));
        }
    }

    /// This node's part of every channel it has subscribers on, for a snapshot.
    pub fn local_shares(&self) -> Vec<ChannelShare> {
        self.channels
            .iter()
            .filter(|entry| !entry.value().subscribers.is_empty())
            .map(|entry| {
                let ((app, channel), state) = (entry.key(), entry.value());
                let members = state.roster.iter().flat_map(Roster::members);
                let share = Share {
                    sockets: state.subscribers.len(),
                    members: members
                        .map(|(id, info)| (Arc::clone(id), info.clone()))
                        .collect(),
                };
                ChannelShare {
                    app: Arc::clone(app),
                    channel: channel.clone(),
                    share,
                }
            })
            .collect()
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
        self.retained.insert(key.clone(), retained);
        for (socket_id, subscriber) in &state.subscribers {
            if Some(socket_id) != except {
                subscriber.peer.send(frame.clone());
            }
        }
        let unused = state.is_unused();
        drop(state);
        if unused {
            self.remove_if_unused(&key);
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

    /// Every cache channel's kept frame with the time it has left, for another
    /// node that starts without them.
    pub fn cached_frames(&self) -> Vec<(Arc<str>, ChannelName, Frame, Duration)> {
        let now = Instant::now();
        self.retained
            .iter()
            .filter(|entry| entry.key().1.is_cache())
            .filter_map(|entry| {
                let left = entry.value().until.checked_duration_since(now)?;
                let (app, channel) = entry.key();
                Some((
                    Arc::clone(app),
                    channel.clone(),
                    entry.value().frame.clone(),
                    left,
                ))
            })
            .collect()
    }

    /// Keeps a frame another node had cached, unless the one kept here expires
    /// later: with one `cache_ttl` per app, that one was set later.
    pub fn keep_latest(&self, app: &Arc<str>, channel: &ChannelName, frame: Frame, keep: Duration) {
        let key = (Arc::clone(app), channel.clone());
        let until = Instant::now() + keep;
        let mut kept = self.retained.entry(key).or_insert_with(|| Retained {
            frame: frame.clone(),
            until,
        });
        if kept.until < until {
            *kept = Retained { frame, until };
        }
    }

    /// The counts of one channel; zero when nobody is subscribed.
    pub fn stats(&self, app: &Arc<str>, channel: &ChannelName) -> ChannelStats {
        let key = (Arc::clone(app), channel.clone());
        self.channels
            .get(&key)
            .map(|state| stats_of(&state))
            .unwrap_or_default()
    }

    /// Every channel of `app` occupied on any node whose name starts with `prefix`.
    pub fn occupied(&self, app: &str, prefix: &str) -> Vec<(ChannelName, ChannelStats)> {
        self.channels
            .iter()
            .filter(|entry| &*entry.key().0 == app && entry.key().1.as_str().starts_with(prefix))
            .filter(|entry| entry.value().total() > 0)
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

    /// The user ids on a presence channel, on every node.
    pub fn user_ids(&self, app: &Arc<str>, channel: &ChannelName) -> Vec<String> {
        let key = (Arc::clone(app), channel.clone());
        let Some(state) = self.channels.get(&key) else {
            return Vec::new();
        };
        let ids: HashSet<&Arc<str>> = state.members().map(|(id, _)| id).collect();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    /// Drops a channel's entry once nothing here or elsewhere keeps it, so that
    /// empty channels cost nothing.
    fn remove_if_unused(&self, key: &ChannelKey) {
        self.channels.remove_if(key, |_, state| state.is_unused());
    }
}

/// The users a remote change may bring or take away.
fn touched_users(state: &Channel, node: &str, change: &RemoteChange) -> Vec<Arc<str>> {
    change.touched(state.remote.as_ref().and_then(|remote| remote.share(node)))
}

fn stats_of(state: &Channel) -> ChannelStats {
    ChannelStats {
        subscription_count: state.total(),
        user_count: state.user_count(),
    }
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

    #[test]
    fn members_on_other_nodes_join_and_leave_once_for_the_cluster() {
        let hub = Hub::new();
        let app: Arc<str> = "a".into();
        let channel = ChannelName::parse("presence-room").unwrap();
        let (east, west): (NodeId, NodeId) = ("east".into(), "west".into());
        let watcher = peer("1.1");
        hub.subscribe(&app, &channel, &watcher, member("w"), 100, false)
            .unwrap();

        let joined = || RemoteChange::Joined("u".into(), serde_json::json!({"n": 1}));
        hub.apply_remote(&app, &channel, &east, joined(), false);
        hub.apply_remote(&app, &channel, &west, joined(), false);
        hub.apply_remote(&app, &channel, &east, RemoteChange::Sockets(2), false);
        assert_eq!(hub.stats(&app, &channel).user_count, 2);
        assert_eq!(hub.stats(&app, &channel).subscription_count, 3);

        // A local socket of the same user is no news either.
        let tab = peer("2.1");
        hub.subscribe(&app, &channel, &tab, member("u"), 100, false)
            .unwrap();
        hub.unsubscribe(&app, &channel, &tab.socket_id, false);
        hub.apply_remote(&app, &channel, &east, RemoteChange::Left("u".into()), false);
        hub.replace_node(&west, Vec::new(), |_| false);
        assert_eq!(
            names(&watcher),
            [
                "pusher_internal:subscription_succeeded",
                "pusher_internal:member_added",
                "pusher_internal:member_removed"
            ]
        );
        let mut ids = hub.user_ids(&app, &channel);
        ids.sort();
        assert_eq!(ids, ["w"]);
    }

    #[test]
    fn a_channel_occupied_only_elsewhere_is_listed_until_that_node_empties_it() {
        let hub = Hub::new();
        let app: Arc<str> = "a".into();
        let channel = ChannelName::parse("news").unwrap();
        let node: NodeId = "east".into();
        hub.apply_remote(&app, &channel, &node, RemoteChange::Sockets(4), false);
        let listed = hub.occupied("a", "");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.subscription_count, 4);
        hub.apply_remote(&app, &channel, &node, RemoteChange::Sockets(0), false);
        assert!(hub.occupied("a", "").is_empty());
        assert!(hub.channels.is_empty(), "no entry left behind");
    }
}
