//! Changes of occupancy and membership that this node saw while another node spoke
//! for the cluster, kept for a while in case that node dies before it reported
//! them: the node that takes over sends them then.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::ChannelKey;
use crate::delivery::pusher_webhooks::Notifier;

/// Changes kept at most; past this the oldest are forgotten.
const MAX_KEPT: usize = 10_000;

/// One change that a Pusher webhook reports.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Observed {
    Occupied(ChannelKey),
    Vacated(ChannelKey),
    Added(ChannelKey, Arc<str>),
    Removed(ChannelKey, Arc<str>),
}

impl Observed {
    /// The app and channel it is about.
    pub(super) fn key(&self) -> &ChannelKey {
        match self {
            Observed::Occupied(key)
            | Observed::Vacated(key)
            | Observed::Added(key, _)
            | Observed::Removed(key, _) => key,
        }
    }

    /// Hands it to the webhooks.
    pub(super) fn report(&self, webhooks: &Notifier) {
        match self {
            Observed::Occupied((app, channel)) => webhooks.channel_occupied(app, channel),
            Observed::Vacated((app, channel)) => webhooks.channel_vacated(app, channel),
            Observed::Added((app, channel), user) => webhooks.member_added(app, channel, user),
            Observed::Removed((app, channel), user) => {
                webhooks.member_removed(app, channel, user);
            }
        }
    }
}

/// The changes seen lately, oldest first.
#[derive(Debug, Default)]
pub(super) struct Unspoken {
    kept: Mutex<VecDeque<(Instant, Observed)>>,
}

impl Unspoken {
    /// Keeps a change seen now, forgetting those older than `window`, which no
    /// node taking over can need.
    pub(super) fn keep(&self, change: Observed, window: Duration) {
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        while kept
            .front()
            .is_some_and(|(seen, _)| now.duration_since(*seen) > window)
            || kept.len() >= MAX_KEPT
        {
            kept.pop_front();
        }
        kept.push_back((now, change));
    }

    /// Empties the store, returning the changes seen at or after `since` (none
    /// without it).
    pub(super) fn take_since(&self, since: Option<Instant>) -> Vec<Observed> {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = std::mem::take(&mut *kept);
        let Some(since) = since else {
            return Vec::new();
        };
        kept.into_iter()
            .filter(|(seen, _)| *seen >= since)
            .map(|(_, change)| change)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChannelName;

    fn occupied(name: &str) -> Observed {
        Observed::Occupied(("a".into(), ChannelName::parse(name).unwrap()))
    }

    #[test]
    fn only_changes_since_the_given_time_are_handed_over() {
        let unspoken = Unspoken::default();
        unspoken.keep(occupied("before"), Duration::from_secs(10));
        let since = Instant::now();
        unspoken.keep(occupied("after"), Duration::from_secs(10));
        assert_eq!(unspoken.take_since(Some(since)), [occupied("after")]);
        assert!(
            unspoken.take_since(Some(since)).is_empty(),
            "handed over once"
        );

        unspoken.keep(occupied("dropped"), Duration::from_secs(10));
        assert!(unspoken.take_since(None).is_empty());
        assert!(unspoken.take_since(Some(since)).is_empty());
    }
}
