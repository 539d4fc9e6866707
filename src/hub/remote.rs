//! What the other nodes of a cluster hold of one channel: how many sockets each has
//! subscribed, and which presence users have at least one socket there.
//!
//! Each node reports its own share as absolute values (a count, a user present or
//! not), so a report received twice, or a full snapshot received after the changes
//! it already contains, leaves the same state.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// Names one node of the cluster.
pub type NodeId = Arc<str>;

/// One node's part of a channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// Sockets subscribed on that node.
    pub sockets: usize,
    /// Presence users with a socket on that node, with their `user_info`.
    pub members: HashMap<Arc<str>, Value>,
}

impl Share {
    fn is_empty(&self) -> bool {
        self.sockets == 0 && self.members.is_empty()
    }
}

/// A change one node reports about its part of a channel.
#[derive(Debug, Clone)]
pub enum RemoteChange {
    /// It now has this many sockets on the channel.
    Sockets(usize),
    /// The user now has a socket there (its first on that node).
    Joined(Arc<str>, Value),
    /// The user's last socket there left.
    Left(Arc<str>),
    /// Its whole part is now this (from a snapshot; empty when the node is gone).
    Replace(Share),
}

impl RemoteChange {
    /// The users whose presence anywhere the change may alter, given the node's
    /// share before it.
    pub(super) fn touched(&self, old: Option<&Share>) -> Vec<Arc<str>> {
        match self {
            RemoteChange::Sockets(_) => Vec::new(),
            RemoteChange::Joined(user_id, _) | RemoteChange::Left(user_id) => {
                vec![Arc::clone(user_id)]
            }
            RemoteChange::Replace(new) => {
                let old = old.into_iter().flat_map(|share| share.members.keys());
                old.chain(new.members.keys()).cloned().collect()
            }
        }
    }
}

/// The other nodes' parts of one channel.
#[derive(Debug, Default)]
pub(super) struct Remote {
    nodes: HashMap<NodeId, Share>,
}

impl Remote {
    /// Sockets subscribed on the other nodes together.
    pub(super) fn sockets(&self) -> usize {
        self.nodes.values().map(|share| share.sockets).sum()
    }

    /// Whether the user has a socket on another node.
    pub(super) fn has_user(&self, user_id: &str) -> bool {
        self.nodes
            .values()
            .any(|share| share.members.contains_key(user_id))
    }

    /// Each user on another node with their info; a user on several nodes appears
    /// once per node.
    pub(super) fn members(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        self.nodes.values().flat_map(|share| share.members.iter())
    }

    /// The info a user joined with on another node.
    pub(super) fn info_of(&self, user_id: &str) -> Option<&Value> {
        self.nodes
            .values()
            .find_map(|share| share.members.get(user_id))
    }

    /// Whether no other node holds anything of the channel.
    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The share `node` holds now.
    pub(super) fn share(&self, node: &str) -> Option<&Share> {
        self.nodes.get(node)
    }

    /// Applies a node's change.
    pub(super) fn apply(&mut self, node: &NodeId, change: RemoteChange) {
        let share = self.nodes.entry(Arc::clone(node)).or_default();
        match change {
            RemoteChange::Sockets(count) => share.sockets = count,
            RemoteChange::Joined(user_id, info) => {
                share.members.insert(user_id, info);
            }
            RemoteChange::Left(user_id) => {
                share.members.remove(&user_id);
            }
            RemoteChange::Replace(new) => *share = new,
        }
        if share.is_empty() {
            self.nodes.remove(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_several_nodes_add_up_and_empty_ones_are_dropped() {
        let (a, b): (NodeId, NodeId) = ("a".into(), "b".into());
        let mut remote = Remote::default();
        remote.apply(&a, RemoteChange::Sockets(2));
        remote.apply(&b, RemoteChange::Sockets(3));
        remote.apply(&b, RemoteChange::Joined("u".into(), Value::Null));
        assert_eq!(remote.sockets(), 5);
        assert!(remote.has_user("u"));

        remote.apply(&b, RemoteChange::Replace(Share::default()));
        assert_eq!(remote.sockets(), 2);
        assert!(!remote.has_user("u"));
        remote.apply(&a, RemoteChange::Sockets(0));
        assert!(remote.is_empty());
    }

    #[test]
    fn a_replacement_touches_the_users_before_and_after() {
        let node: NodeId = "a".into();
        let mut remote = Remote::default();
        remote.apply(&node, RemoteChange::Joined("old".into(), Value::Null));
        let new = Share {
            sockets: 1,
            members: HashMap::from([("new".into(), Value::Null)]),
        };
        let mut touched = RemoteChange::Replace(new).touched(remote.share(&node));
        touched.sort();
        assert_eq!(touched, [Arc::from("new"), Arc::from("old")]);
    }
}
