//! The other nodes this node hears: when each joined and when it last spoke, to
//! tell which are gone and which one speaks for the cluster.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::hub::NodeId;

/// What is known of one other node.
#[derive(Debug)]
struct Seen {
    /// When it joined the cluster, in milliseconds since the Unix epoch.
    since: u64,
    /// When it was last heard.
    last: Instant,
    /// From when its silence counts: its last word, or later if this node could
    /// not listen meanwhile.
    judged_from: Instant,
    /// It is shutting down and no longer speaks for the cluster.
    retired: bool,
}

/// What hearing from a node told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// Nothing new.
    Known,
    /// A node not known before (or taken for dead meanwhile).
    New,
    /// A known node that joined again, after a pause; it was last heard before
    /// that at `last_word`.
    Rejoined {
        /// When it was heard before this message.
        last_word: Instant,
    },
}

/// The other live nodes.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    nodes: HashMap<NodeId, Seen>,
}

impl Nodes {
    /// Notes that `node`, which joined at `since`, just spoke. Returns what changed.
    pub(super) fn heard(&mut self, node: &str, since: u64, now: Instant) -> Heard {
        match self.nodes.get_mut(node) {
            Some(seen) => {
                let last_word = std::mem::replace(&mut seen.last, now);
                seen.judged_from = now;
                if seen.since == since {
                    return Heard::Known;
                }
                seen.since = since;
                Heard::Rejoined { last_word }
            }
            None => {
                let seen = Seen {
                    since,
                    last: now,
                    judged_from: now,
                    retired: false,
                };
                self.nodes.insert(node.into(), seen);
                Heard::New
            }
        }
    }

    /// Notes that a node is shutting down: it no longer speaks for the cluster.
    pub(super) fn retire(&mut self, node: &str) {
        if let Some(seen) = self.nodes.get_mut(node) {
            seen.retired = true;
        }
    }

    /// Whether another node could speak for the cluster.
    pub(super) fn any_eligible(&self) -> bool {
        self.nodes.values().any(|seen| !seen.retired)
    }

    /// Forgets a node.
    pub(super) fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// Judges every node's silence from now on: after this node could not listen
    /// for a while, the others get a full timeout to speak again before they are
    /// declared gone. When each was last heard is kept.
    pub(super) fn refresh_all(&mut self, now: Instant) {
        for seen in self.nodes.values_mut() {
            seen.judged_from = now;
        }
    }

    /// Removes and returns the nodes silent for longer than `timeout`, each with
    /// when it was last heard.
    pub(super) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(NodeId, Instant)> {
        let gone: Vec<(NodeId, Instant)> = self
            .nodes
            .iter()
            .filter(|(_, seen)| now.duration_since(seen.judged_from) > timeout)
            .map(|(node, seen)| (NodeId::clone(node), seen.last))
            .collect();
        for (node, _) in &gone {
            self.nodes.remove(node);
        }
        gone
    }

    /// Whether a node that started at `since` with id `me` is the oldest live node
    /// that has not retired (ties broken by id), and so speaks for the cluster.
    pub(super) fn is_oldest(&self, me: &str, since: u64) -> bool {
        self.nodes
            .iter()
            .filter(|(_, seen)| !seen.retired)
            .all(|(node, seen)| (since, me) < (seen.since, &**node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_live_node_speaks_and_silent_nodes_expire() {
        let start = Instant::now();
        let mut nodes = Nodes::default();
        assert!(nodes.is_oldest("b", 20));
        assert_eq!(nodes.heard("a", 10, start), Heard::New);
        assert_eq!(nodes.heard("a", 10, start), Heard::Known);
        assert!(!nodes.is_oldest("b", 20));
        nodes.heard("c", 20, start + Duration::from_secs(5));
        assert!(!nodes.is_oldest("b", 20), "a is older still");

        let gone = nodes.expire(start + Duration::from_secs(6), Duration::from_secs(3));
        assert_eq!(gone, [(NodeId::from("a"), start)]);
        assert!(nodes.is_oldest("b", 20), "same start, b sorts before c");
        assert!(!nodes.is_oldest("d", 30));
        nodes.retire("c");
        assert!(nodes.is_oldest("d", 30), "a retiring node no longer speaks");
    }

    #[test]
    fn silence_is_judged_from_a_refresh_but_the_last_word_is_kept() {
        let start = Instant::now();
        let mut nodes = Nodes::default();
        nodes.heard("a", 10, start);
        nodes.refresh_all(start + Duration::from_secs(5));
        assert!(
            nodes
                .expire(start + Duration::from_secs(7), Duration::from_secs(3))
                .is_empty()
        );
        let gone = nodes.expire(start + Duration::from_secs(9), Duration::from_secs(3));
        assert_eq!(gone, [(NodeId::from("a"), start)]);

        nodes.heard("b", 10, start);
        let later = start + Duration::from_secs(1);
        assert_eq!(
            nodes.heard("b", 50, later),
            Heard::Rejoined { last_word: start }
        );
        assert!(nodes.is_oldest("c", 20), "b joined again after c");
    }
}
