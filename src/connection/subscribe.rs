//! `pusher:subscribe`: the channel name, the signature, the presence member, and the
//! answer the client expects when any of them is wrong.

use tracing::debug;

use super::Connection;
use crate::hub::{Member, SubscribeRefusal};
use crate::protocol::{ChannelKind, ChannelName, SubscribeRequest, channel_auth_matches, frame};

/// A refused subscription, in the `{type, error, status}` terms pusher-js reads.
struct Refusal {
    kind: &'static str,
    error: String,
    status: u16,
}

impl Refusal {
    fn auth(error: impl Into<String>) -> Self {
        Refusal {
            kind: "AuthError",
            error: error.into(),
            status: 401,
        }
    }

    fn bad_channel_data(error: impl ToString) -> Self {
        Refusal {
            kind: "InvalidChannelData",
            error: error.to_string(),
            status: 400,
        }
    }
}

impl Connection {
    /// Checks and performs a subscription, answering with
    /// `subscription_succeeded` (queued by the hub) or `subscription_error`.
    pub(super) fn subscribe(&mut self, request: SubscribeRequest) {
        let outcome = ChannelName::parse(&request.channel)
            .map_err(|error| Refusal {
                kind: "InvalidChannel",
                error: error.to_string(),
                status: 400,
            })
            .and_then(|channel| {
                let member = self.authorize(&channel, &request)?;
                self.join(&channel, member)?;
                Ok(channel)
            });
        match outcome {
            Ok(channel) => {
                debug!(%channel, "subscribed");
                if channel.kind() != ChannelKind::Public {
                    self.authorized = true;
                }
                self.channels.insert(channel);
            }
            Err(refusal) => {
                debug!(
                    channel = request.channel,
                    error = refusal.error,
                    "subscription refused"
                );
                let answer = frame::subscription_error(
                    &request.channel,
                    refusal.kind,
                    &refusal.error,
                    refusal.status,
                );
                self.peer.send(answer.into());
            }
        }
    }

    fn join(&self, channel: &ChannelName, member: Option<Member>) -> Result<(), Refusal> {
        let max_members = self.app.config.max_presence_members;
        let hub = &self.shared.hub;
        let counts = self.app.config.subscription_count;
        hub.subscribe(
            &self.app.id,
            channel,
            &self.peer,
            member,
            max_members,
            counts,
        )
        .map_err(|SubscribeRefusal::PresenceFull(limit)| Refusal {
            kind: "LimitReached",
            error: format!("presence channel already has {limit} members"),
            status: 403,
        })
    }

    /// Checks the signature a private or presence channel needs; on a presence
    /// channel, returns the member the socket joins as.
    fn authorize(
        &self,
        channel: &ChannelName,
        request: &SubscribeRequest,
    ) -> Result<Option<Member>, Refusal> {
        // A user's own channel is open only to sockets signed in as that user.
        if let Some(owner) = channel.user_channel_owner() {
            return match &self.user {
                Some(user) if &*user.id == owner => Ok(None),
                _ => Err(Refusal::auth(format!(
                    "{channel} is only for sockets signed in (pusher:signin) as user {owner}"
                ))),
            };
        }
        let kind = channel.kind();
        if kind == ChannelKind::Public {
            return Ok(None);
        }
        let auth = request.auth.as_deref().ok_or_else(|| {
            Refusal::auth(format!(
                "subscribing to {channel} needs an `auth` signature"
            ))
        })?;
        let plain = format!("{}:{channel}", self.peer.socket_id);
        let with_data = request
            .channel_data
            .as_ref()
            .map(|d| format!("{plain}:{d}"));

        // Presence signatures always cover channel_data. Private ones usually do not,
        // but some server SDKs sign it when present, so both forms are accepted.
        let signed = match (kind, with_data) {
            (ChannelKind::Presence, None) => {
                return Err(Refusal::auth(
                    "presence channels need `channel_data` signed with the socket id",
                ));
            }
            (ChannelKind::Presence, Some(with_data)) => vec![with_data],
            (_, with_data) => std::iter::once(plain).chain(with_data).collect(),
        };
        let config = &self.app.config;
        let valid = signed
            .iter()
            .any(|message| channel_auth_matches(&config.key, &config.secret, auth, message));
        if !valid {
            return Err(Refusal::auth(format!(
                "Invalid signature: expected the HMAC SHA256 hex digest of {:?}, signed with \
                 the secret of app key {:?}",
                signed[0], config.key
            )));
        }

        if kind != ChannelKind::Presence {
            return Ok(None);
        }
        let data = request.channel_data.as_deref().unwrap_or_default();
        Member::from_channel_data(data, config.max_presence_user_info)
            .map(Some)
            .map_err(Refusal::bad_channel_data)
    }
}
