//! Pusher's own webhooks: the hub reports what happens on channels, and one
//! background task turns those reports into signed, batched requests in the outbox.
//!
//! The hub never waits for this module. It hands each event to a bounded queue with
//! a non-blocking send, under the channel's lock, so events of one channel reach the
//! queue in the order they happened. Apps with no `[[apps.webhooks]]` create no
//! events at all, and a server where no app has webhooks has no queue.
//!
//! The batcher task owns everything after the queue:
//! - `channel_vacated` and `member_removed` are held for `webhooks.leave_delay`. If
//!   the channel or the member is back meanwhile, both the held event and the
//!   `channel_occupied` or `member_added` of the return are dropped, so a page
//!   reload is invisible to the receiver.
//! - Events go to each of the app's URLs that lists their kind, gathered per (app,
//!   URL) into one `{"time_ms", "events"}` body of at most `webhooks.batch_max`
//!   events, written once it is full or `webhooks.batch_window` after its first
//!   event.
//! - Each body is written to the outbox as a `pusher` delivery, so the sender signs
//!   it (`X-Pusher-Key`, `X-Pusher-Signature`), retries it, and lists it in
//!   `GET /deliveries` like any other.
//!
//! In a cluster, the hub reports occupancy and membership only on the node that
//! speaks for the cluster, from its merged view of every node, so each event is
//! sent once; client events and cache misses come from the node where they happen.
//!
//! What this module does not do:
//! - Events held in memory (a batch not yet written, a leave not yet due) are lost if
//!   the process dies; a graceful shutdown writes them first.
//! - Batches to one URL may arrive out of order: the sender runs several deliveries
//!   to a URL at once, and a retried batch arrives after later ones.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use serde::{Serialize, Serializer};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, debug_span, error, warn};

use super::DeliveryKind;
use crate::config::{AppConfig, Config, PusherEventKind};
use crate::protocol::{ChannelName, SocketId};
use crate::state::Shared;

/// Events that may wait for the batcher. Past this the hub drops new events (and
/// logs it) rather than wait: the batcher only falls this far behind when the
/// outbox's database stalls, and sockets must not stall with it. At a few hundred
/// bytes an event, a full queue holds a few MiB.
const QUEUE_CAPACITY: usize = 10_000;

/// At shutdown, sockets leave their channels as they close; the batcher keeps
/// taking events until none has come for this long, so those departures are
/// written too.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(100);

/// The longest the batcher takes events at shutdown, however busy the queue.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// The hub's handle: reports channel events of apps that have webhooks. Cheap to
/// clone; the default reports nothing.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    queue: Option<Arc<Queue>>,
    /// Whether what it reports is sent again by a node taking over the cluster's
    /// webhooks.
    replayed: bool,
}

#[derive(Debug)]
struct Queue {
    sender: mpsc::Sender<HubEvent>,
    /// Which events each app with webhooks needs; apps absent here need none.
    interest: HashMap<Arc<str>, Interest>,
    /// Events dropped since the queue was last found full, to log a burst once.
    dropped: AtomicU64,
}

/// The events an app's webhooks need. A leave and its arrival go together: a held
/// `channel_vacated` is needed to drop the `channel_occupied` of a quick return even
/// when only the latter is wanted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Interest {
    channels: bool,
    members: bool,
    client_events: bool,
    cache_misses: bool,
}

impl Interest {
    fn of(app: &AppConfig) -> Self {
        let wants = |kinds: &[PusherEventKind]| {
            app.webhooks
                .iter()
                .any(|hook| hook.events.iter().any(|kind| kinds.contains(kind)))
        };
        Interest {
            channels: wants(&[
                PusherEventKind::ChannelOccupied,
                PusherEventKind::ChannelVacated,
            ]),
            members: wants(&[PusherEventKind::MemberAdded, PusherEventKind::MemberRemoved]),
            client_events: wants(&[PusherEventKind::ClientEvent]),
            cache_misses: wants(&[PusherEventKind::CacheMiss]),
        }
    }
}

/// One event of one app, on its way to the batcher.
#[derive(Debug)]
struct HubEvent {
    app: Arc<str>,
    event: WebhookEvent,
    /// Sent again after a change of sender: the receiver may have had it.
    replayed: bool,
}

/// A webhook event, serialized as Pusher sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
enum WebhookEvent {
    ChannelOccupied {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
    },
    ChannelVacated {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
    },
    MemberAdded {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
        #[serde(serialize_with = "text")]
        user_id: Arc<str>,
    },
    MemberRemoved {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
        #[serde(serialize_with = "text")]
        user_id: Arc<str>,
    },
    ClientEvent {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
        event: String,
        data: String,
        #[serde(serialize_with = "text")]
        socket_id: SocketId,
        #[serde(
            serialize_with = "optional_text",
            skip_serializing_if = "Option::is_none"
        )]
        user_id: Option<Arc<str>>,
    },
    CacheMiss {
        #[serde(serialize_with = "text")]
        channel: ChannelName,
    },
}

fn text<S: Serializer>(value: &impl Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn optional_text<S: Serializer>(
    value: &Option<impl Display>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

impl WebhookEvent {
    fn kind(&self) -> PusherEventKind {
        match self {
            WebhookEvent::ChannelOccupied { .. } => PusherEventKind::ChannelOccupied,
            WebhookEvent::ChannelVacated { .. } => PusherEventKind::ChannelVacated,
            WebhookEvent::MemberAdded { .. } => PusherEventKind::MemberAdded,
            WebhookEvent::MemberRemoved { .. } => PusherEventKind::MemberRemoved,
            WebhookEvent::ClientEvent { .. } => PusherEventKind::ClientEvent,
            WebhookEvent::CacheMiss { .. } => PusherEventKind::CacheMiss,
        }
    }
}

/// Creates the hub's [`Notifier`] and the [`Batcher`] that [`spawn`] runs. When no
/// app has webhooks, the notifier reports nothing and the batcher does nothing.
pub fn new(config: &Config) -> (Notifier, Batcher) {
    let interest: HashMap<Arc<str>, Interest> = config
        .apps
        .iter()
        .map(|app| (Arc::from(app.id.as_str()), Interest::of(app)))
        .filter(|(_, interest)| *interest != Interest::default())
        .collect();
    let pending = Pending::new(config);
    if interest.is_empty() {
        return (
            Notifier::default(),
            Batcher {
                receiver: None,
                pending,
            },
        );
    }
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let queue = Queue {
        sender,
        interest,
        dropped: AtomicU64::new(0),
    };
    let batcher = Batcher {
        receiver: Some(receiver),
        pending,
    };
    let notifier = Notifier {
        queue: Some(Arc::new(queue)),
        replayed: false,
    };
    (notifier, batcher)
}

impl Notifier {
    /// A notifier for events sent again by a node taking over the cluster's
    /// webhooks. Their leaves are not held: the receiver may have had them from the
    /// node that sent before, so a return must not cancel them.
    pub fn replaying(&self) -> Notifier {
        Notifier {
            queue: self.queue.clone(),
            replayed: true,
        }
    }

    /// `channel` got its first subscriber (in the cluster).
    pub fn channel_occupied(&self, app: &Arc<str>, channel: &ChannelName) {
        if let Some(queue) = self.wanting(app, |i| i.channels) {
            let channel = channel.clone();
            queue.push(
                app,
                WebhookEvent::ChannelOccupied { channel },
                self.replayed,
            );
        }
    }

    /// `channel` lost its last subscriber (in the cluster).
    pub fn channel_vacated(&self, app: &Arc<str>, channel: &ChannelName) {
        if let Some(queue) = self.wanting(app, |i| i.channels) {
            let channel = channel.clone();
            queue.push(app, WebhookEvent::ChannelVacated { channel }, self.replayed);
        }
    }

    /// `user_id` opened its first socket on the presence `channel` (in the cluster).
    pub fn member_added(&self, app: &Arc<str>, channel: &ChannelName, user_id: &Arc<str>) {
        if let Some(queue) = self.wanting(app, |i| i.members) {
            let (channel, user_id) = (channel.clone(), Arc::clone(user_id));
            queue.push(
                app,
                WebhookEvent::MemberAdded { channel, user_id },
                self.replayed,
            );
        }
    }

    /// `user_id` closed its last socket on the presence `channel` (in the cluster).
    pub fn member_removed(&self, app: &Arc<str>, channel: &ChannelName, user_id: &Arc<str>) {
        if let Some(queue) = self.wanting(app, |i| i.members) {
            let (channel, user_id) = (channel.clone(), Arc::clone(user_id));
            queue.push(
                app,
                WebhookEvent::MemberRemoved { channel, user_id },
                self.replayed,
            );
        }
    }

    /// A socket sent the client event `event` on `channel`; `user_id` is its
    /// presence user, on presence channels.
    pub fn client_event(
        &self,
        app: &Arc<str>,
        channel: &ChannelName,
        event: &str,
        data: &str,
        socket_id: &SocketId,
        user_id: Option<&Arc<str>>,
    ) {
        if let Some(queue) = self.wanting(app, |i| i.client_events) {
            let event = WebhookEvent::ClientEvent {
                channel: channel.clone(),
                event: event.to_owned(),
                data: data.to_owned(),
                socket_id: socket_id.clone(),
                user_id: user_id.cloned(),
            };
            queue.push(app, event, self.replayed);
        }
    }

    /// A cache channel was subscribed with nothing cached.
    pub fn cache_miss(&self, app: &Arc<str>, channel: &ChannelName) {
        if let Some(queue) = self.wanting(app, |i| i.cache_misses) {
            let channel = channel.clone();
            queue.push(app, WebhookEvent::CacheMiss { channel }, self.replayed);
        }
    }

    /// Whether `app` wants channel or member events at all.
    pub fn reports_channels_of(&self, app: &str) -> bool {
        self.wanting(app, |i| i.channels || i.members).is_some()
    }

    /// The queue, if `app` wants events of this interest; checked before any event
    /// is built, so that apps without webhooks cost a lookup and nothing more.
    fn wanting(&self, app: &str, wanted: fn(&Interest) -> bool) -> Option<&Queue> {
        let queue = self.queue.as_deref()?;
        queue.interest.get(app).is_some_and(wanted).then_some(queue)
    }
}

impl Queue {
    /// Queues an event without waiting: when the queue is full the event is dropped.
    fn push(&self, app: &Arc<str>, event: WebhookEvent, replayed: bool) {
        let app = Arc::clone(app);
        match self.sender.try_send(HubEvent {
            app,
            event,
            replayed,
        }) {
            Ok(()) => {
                if self.dropped.load(Ordering::Relaxed) > 0 {
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    warn!(dropped, "webhook event queue has room again");
                }
            }
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        capacity = QUEUE_CAPACITY,
                        "webhook event queue full; dropping channel events until it drains"
                    );
                }
            }
            // The batcher has stopped: the server is shutting down.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// The batcher's state before [`spawn`] starts it.
#[derive(Debug)]
pub struct Batcher {
    receiver: Option<mpsc::Receiver<HubEvent>>,
    pending: Pending,
}

/// Starts the batcher task, if any app has webhooks. It stops at shutdown, after
/// writing every event it holds.
pub fn spawn(shared: &Arc<Shared>, batcher: Batcher) {
    let Some(receiver) = batcher.receiver else {
        return;
    };
    let span = debug_span!("pusher_webhooks");
    let task = run(Arc::clone(shared), receiver, batcher.pending);
    shared.tracker.spawn(task.instrument(span));
}

async fn run(shared: Arc<Shared>, mut receiver: mpsc::Receiver<HubEvent>, mut pending: Pending) {
    let shutdown = shared.shutdown.clone();
    let mut ready = Vec::new();
    loop {
        let wake = pending.next_wake();
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            received = receiver.recv() => match received {
                Some(event) => Some(event),
                // Cannot happen while the hub lives, and the hub outlives this task.
                None => break,
            },
            () = sleep_until_some(wake) => None,
        };
        let now = Instant::now();
        if let Some(event) = received {
            pending.accept(event, now, &mut ready);
        }
        // Also after an event: under a steady stream the timer branch may never win.
        pending.tick(now, &mut ready);
        write(&shared, &mut ready).await;
    }

    // Sockets are closing now and leaving their channels; take those events while
    // they come, then write everything held, leaves included, at once.
    let drain_until = Instant::now() + SHUTDOWN_DRAIN;
    loop {
        let quiet_until = (Instant::now() + SHUTDOWN_QUIET).min(drain_until);
        match tokio::time::timeout_at(quiet_until, receiver.recv()).await {
            Ok(Some(event)) => pending.accept(event, Instant::now(), &mut ready),
            Ok(None) | Err(_) => break,
        }
    }
    receiver.close();
    pending.flush_all(&mut ready);
    write(&shared, &mut ready).await;
}

async fn sleep_until_some(wake: Option<Instant>) {
    match wake {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes finished batches to the outbox and wakes the sender.
async fn write(shared: &Shared, ready: &mut Vec<Ready>) {
    if ready.is_empty() {
        return;
    }
    let outbox = &shared.jobs.outbox;
    for batch in ready.drain(..) {
        let written = outbox
            .enqueue(
                &batch.app,
                DeliveryKind::Pusher,
                &batch.url,
                &batch.body,
                None,
                None,
            )
            .await;
        match written {
            Ok(delivery) => debug!(
                app_id = %batch.app,
                delivery = %delivery.id,
                events = batch.events,
                "webhook batch written"
            ),
            Err(error) => error!(
                %error,
                app_id = %batch.app,
                url = batch.url,
                events = batch.events,
                "cannot write a webhook batch; its events are lost"
            ),
        }
    }
    shared.delivery.deliveries_written();
}

/// A batch ready for the outbox.
#[derive(Debug)]
struct Ready {
    app: Arc<str>,
    url: String,
    body: String,
    /// How many events the body holds.
    events: usize,
}

/// The request body Pusher sends.
#[derive(Serialize)]
struct Body<'a> {
    time_ms: i64,
    events: &'a [WebhookEvent],
}

/// One of an app's webhook URLs and the batch being gathered for it.
#[derive(Debug)]
struct Target {
    url: String,
    /// The kinds of every `[[apps.webhooks]]` entry with this URL.
    kinds: Vec<PusherEventKind>,
    batch: Vec<WebhookEvent>,
    /// When the batch must be written; set by its first event.
    due: Option<Instant>,
}

/// Identifies what a held leave is about: a channel, or a user on a channel.
type LeaveKey = (Arc<str>, ChannelName, Option<Arc<str>>);

/// A `channel_vacated` or `member_removed` waiting out the leave delay.
#[derive(Debug)]
struct Held {
    due: Instant,
    key: LeaveKey,
    /// Matches `Pending::held` while this leave still stands.
    ticket: u64,
    event: WebhookEvent,
}

/// Held leaves and gathering batches: the batcher's state, free of I/O so that its
/// rules can be tested on their own.
#[derive(Debug)]
struct Pending {
    /// Each app's targets; apps with no webhooks are absent.
    targets: HashMap<Arc<str>, Vec<Target>>,
    /// The standing leave of each channel or member, by ticket.
    held: HashMap<LeaveKey, u64>,
    /// Leaves in the order they come due (the delay is the same for all). Entries
    /// whose ticket no longer stands are skipped when they come due.
    queue: VecDeque<Held>,
    next_ticket: u64,
    batch_max: usize,
    batch_window: Duration,
    leave_delay: Duration,
}

impl Pending {
    fn new(config: &Config) -> Self {
        let targets = config
            .apps
            .iter()
            .filter(|app| !app.webhooks.is_empty())
            .map(|app| (Arc::from(app.id.as_str()), targets_of(app)))
            .collect();
        Pending {
            targets,
            held: HashMap::new(),
            queue: VecDeque::new(),
            next_ticket: 0,
            batch_max: config.webhooks.batch_max,
            batch_window: config.webhooks.batch_window,
            leave_delay: config.webhooks.leave_delay,
        }
    }

    /// Takes one event from the hub: holds a leave, cancels a held leave and drops
    /// the return that cancels it, or adds the event to its batches.
    fn accept(&mut self, hub_event: HubEvent, now: Instant, ready: &mut Vec<Ready>) {
        let HubEvent {
            app,
            event,
            replayed,
        } = hub_event;
        match &event {
            WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberRemoved { channel, .. }
                if !self.leave_delay.is_zero() && !replayed =>
            {
                let key = leave_key(&app, channel, &event);
                self.next_ticket += 1;
                self.held.insert(key.clone(), self.next_ticket);
                self.queue.push_back(Held {
                    due: now + self.leave_delay,
                    key,
                    ticket: self.next_ticket,
                    event,
                });
            }
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::MemberAdded { channel, .. } => {
                let key = leave_key(&app, channel, &event);
                if self.held.remove(&key).is_none() {
                    self.add(&app, event, now, ready);
                }
            }
            _ => self.add(&app, event, now, ready),
        }
    }

    /// Releases the leaves that came due and the batches whose window has passed.
    fn tick(&mut self, now: Instant, ready: &mut Vec<Ready>) {
        while self.queue.front().is_some_and(|held| held.due <= now) {
            if let Some(held) = self.queue.pop_front() {
                self.release(held, now, ready);
            }
        }
        for (app, targets) in &mut self.targets {
            for target in targets.iter_mut() {
                if target.due.is_some_and(|due| due <= now) {
                    ready.push(take_batch(app, target));
                }
            }
        }
    }

    /// Releases every held leave and writes every batch, as at shutdown.
    fn flush_all(&mut self, ready: &mut Vec<Ready>) {
        let now = Instant::now();
        while let Some(held) = self.queue.pop_front() {
            self.release(held, now, ready);
        }
        for (app, targets) in &mut self.targets {
            for target in targets.iter_mut().filter(|t| !t.batch.is_empty()) {
                ready.push(take_batch(app, target));
            }
        }
    }

    /// When the next leave comes due or the next batch must be written.
    fn next_wake(&self) -> Option<Instant> {
        let leave = self.queue.front().map(|held| held.due);
        let batches = self.targets.values().flatten().filter_map(|t| t.due);
        leave.into_iter().chain(batches).min()
    }

    /// Adds a held leave to its batches if it still stands.
    fn release(&mut self, held: Held, now: Instant, ready: &mut Vec<Ready>) {
        if self.held.get(&held.key) == Some(&held.ticket) {
            self.held.remove(&held.key);
            let app = Arc::clone(&held.key.0);
            self.add(&app, held.event, now, ready);
        }
    }

    /// Adds an event to the batch of each of the app's URLs that wants its kind; a
    /// batch that becomes full is ready at once.
    fn add(&mut self, app: &Arc<str>, event: WebhookEvent, now: Instant, ready: &mut Vec<Ready>) {
        let Some(targets) = self.targets.get_mut(app) else {
            return;
        };
        let kind = event.kind();
        for target in targets.iter_mut().filter(|t| t.kinds.contains(&kind)) {
            target.batch.push(event.clone());
            target.due.get_or_insert(now + self.batch_window);
            if target.batch.len() >= self.batch_max {
                ready.push(take_batch(app, target));
            }
        }
    }
}

/// The app's distinct URLs, each with every kind listed for it.
fn targets_of(app: &AppConfig) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    for hook in &app.webhooks {
        let found = targets.iter().position(|t| t.url == hook.url);
        let i = found.unwrap_or_else(|| {
            targets.push(Target {
                url: hook.url.clone(),
                kinds: Vec::new(),
                batch: Vec::new(),
                due: None,
            });
            targets.len() - 1
        });
        let target = &mut targets[i];
        for kind in &hook.events {
            if !target.kinds.contains(kind) {
                target.kinds.push(*kind);
            }
        }
    }
    targets
}

fn leave_key(app: &Arc<str>, channel: &ChannelName, event: &WebhookEvent) -> LeaveKey {
    let user = match event {
        WebhookEvent::MemberAdded { user_id, .. } | WebhookEvent::MemberRemoved { user_id, .. } => {
            Some(Arc::clone(user_id))
        }
        _ => None,
    };
    (Arc::clone(app), channel.clone(), user)
}

/// Empties a target's batch into a request body.
fn take_batch(app: &Arc<str>, target: &mut Target) -> Ready {
    let events = std::mem::take(&mut target.batch);
    target.due = None;
    let body = Body {
        time_ms: Utc::now().timestamp_millis(),
        events: &events,
    };
    // Strings and a number only: serializing cannot fail.
    let body = serde_json::to_string(&body).unwrap_or_default();
    Ready {
        app: Arc::clone(app),
        url: target.url.clone(),
        body,
        events: events.len(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const APP: &str = "a";

    fn config(webhooks: &str) -> Config {
        let toml = format!(
            r#"
            [demo]
            enabled = false
            [webhooks]
            batch_max = 3
            batch_window = "100ms"
            leave_delay = "1s"
            [[apps]]
            id = "{APP}"
            key = "k"
            secret = "s"
            {webhooks}"#
        );
        Config::load(Some(&toml), Vec::new()).unwrap()
    }

    fn hook(url: &str, events: &str) -> String {
        format!("[[apps.webhooks]]\nurl = \"{url}\"\nevents = [{events}]\n")
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    fn hub_event(event: WebhookEvent) -> HubEvent {
        HubEvent {
            app: APP.into(),
            event,
            replayed: false,
        }
    }

    fn occupied(name: &str) -> HubEvent {
        hub_event(WebhookEvent::ChannelOccupied {
            channel: channel(name),
        })
    }

    fn vacated(name: &str) -> HubEvent {
        hub_event(WebhookEvent::ChannelVacated {
            channel: channel(name),
        })
    }

    fn events_of(ready: &Ready) -> Vec<Value> {
        let body: Value = serde_json::from_str(&ready.body).unwrap();
        assert!(body["time_ms"].as_i64().unwrap() > 0);
        body["events"].as_array().unwrap().clone()
    }

    #[test]
    fn events_serialize_as_pusher_sends_them() {
        let event = WebhookEvent::ClientEvent {
            channel: channel("presence-room"),
            event: "client-typing".into(),
            data: "{\"x\":1}".into(),
            socket_id: SocketId::parse("1.2").unwrap(),
            user_id: Some("u".into()),
        };
        let expected = json!({
            "name": "client_event", "channel": "presence-room", "event": "client-typing",
            "data": "{\"x\":1}", "socket_id": "1.2", "user_id": "u"
        });
        assert_eq!(serde_json::to_value(&event).unwrap(), expected);

        let anonymous = WebhookEvent::ClientEvent {
            channel: channel("private-room"),
            event: "client-x".into(),
            data: String::new(),
            socket_id: SocketId::parse("1.2").unwrap(),
            user_id: None,
        };
        assert!(
            serde_json::to_value(&anonymous)
                .unwrap()
                .get("user_id")
                .is_none()
        );

        let miss = WebhookEvent::CacheMiss {
            channel: channel("cache-room"),
        };
        assert_eq!(
            serde_json::to_value(&miss).unwrap(),
            json!({"name": "cache_miss", "channel": "cache-room"})
        );
    }

    #[test]
    fn apps_without_webhooks_get_no_queue() {
        let (notifier, batcher) = new(&config(""));
        assert!(notifier.queue.is_none());
        assert!(batcher.receiver.is_none());
    }

    #[test]
    fn only_wanted_kinds_are_reported() {
        let (notifier, batcher) = new(&config(&hook("http://h/1", "\"client_event\"")));
        let mut receiver = batcher.receiver.unwrap();
        let app: Arc<str> = APP.into();
        let other: Arc<str> = "other".into();
        let room = channel("private-room");
        notifier.channel_occupied(&app, &room);
        notifier.member_added(&app, &room, &"u".into());
        let socket = SocketId::parse("1.1").unwrap();
        notifier.client_event(&other, &room, "client-x", "", &socket, None);
        notifier.client_event(&app, &room, "client-x", "", &socket, None);
        let reported = receiver.try_recv().unwrap();
        assert_eq!(reported.event.kind(), PusherEventKind::ClientEvent);
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn a_full_batch_is_ready_at_once_and_a_partial_one_after_the_window() {
        let mut pending = Pending::new(&config(&hook("http://h/1", "\"channel_occupied\"")));
        let now = Instant::now();
        let mut ready = Vec::new();
        for i in 0..4 {
            pending.accept(occupied(&format!("c{i}")), now, &mut ready);
        }
        assert_eq!(ready.len(), 1);
        assert_eq!(events_of(&ready[0]).len(), 3);

        let window = now + Duration::from_millis(100);
        assert_eq!(pending.next_wake(), Some(window));
        pending.tick(window - Duration::from_millis(1), &mut ready);
        assert_eq!(ready.len(), 1);
        pending.tick(window, &mut ready);
        assert_eq!(
            events_of(&ready[1]),
            [json!({"name": "channel_occupied", "channel": "c3"})]
        );
        assert_eq!(pending.next_wake(), None);
    }

    #[test]
    fn a_quick_return_hides_both_the_leave_and_the_return() {
        let kinds = "\"channel_occupied\", \"channel_vacated\"";
        let mut pending = Pending::new(&config(&hook("http://h/1", kinds)));
        let now = Instant::now();
        let mut ready = Vec::new();
        pending.accept(vacated("room"), now, &mut ready);
        pending.accept(
            occupied("room"),
            now + Duration::from_millis(500),
            &mut ready,
        );
        pending.tick(now + Duration::from_secs(5), &mut ready);
        assert!(ready.is_empty(), "{ready:?}");

        // A leave that stands is released after the delay.
        pending.accept(vacated("room"), now, &mut ready);
        pending.tick(now + Duration::from_millis(999), &mut ready);
        assert!(pending.targets[APP][0].batch.is_empty());
        pending.tick(now + Duration::from_secs(1), &mut ready);
        pending.tick(now + Duration::from_millis(1100), &mut ready);
        assert_eq!(
            events_of(&ready[0]),
            [json!({"name": "channel_vacated", "channel": "room"})]
        );
    }

    #[test]
    fn a_leave_sent_again_is_not_held_nor_cancelled_by_a_return() {
        let kinds = "\"channel_occupied\", \"channel_vacated\"";
        let mut pending = Pending::new(&config(&hook("http://h/1", kinds)));
        let now = Instant::now();
        let mut ready = Vec::new();
        let again = HubEvent {
            replayed: true,
            ..vacated("room")
        };
        pending.accept(again, now, &mut ready);
        pending.accept(occupied("room"), now, &mut ready);
        pending.tick(now + Duration::from_secs(1), &mut ready);
        assert_eq!(
            events_of(&ready[0]),
            [
                json!({"name": "channel_vacated", "channel": "room"}),
                json!({"name": "channel_occupied", "channel": "room"})
            ]
        );
    }

    #[test]
    fn members_are_held_per_user() {
        let kinds = "\"member_added\", \"member_removed\"";
        let mut pending = Pending::new(&config(&hook("http://h/1", kinds)));
        let now = Instant::now();
        let mut ready = Vec::new();
        let member = |user: &str, added: bool| {
            let (channel, user_id) = (channel("presence-room"), user.into());
            hub_event(if added {
                WebhookEvent::MemberAdded { channel, user_id }
            } else {
                WebhookEvent::MemberRemoved { channel, user_id }
            })
        };
        pending.accept(member("u", false), now, &mut ready);
        pending.accept(member("v", true), now, &mut ready);
        pending.tick(now + Duration::from_secs(2), &mut ready);
        let names: Vec<Value> = ready.iter().flat_map(events_of).collect();
        assert_eq!(
            names,
            [
                json!({"name": "member_added", "channel": "presence-room", "user_id": "v"}),
                json!({"name": "member_removed", "channel": "presence-room", "user_id": "u"}),
            ]
        );
    }

    #[test]
    fn urls_get_only_their_kinds_and_shutdown_releases_everything() {
        let hooks = hook("http://h/1", "\"channel_occupied\"")
            + &hook("http://h/2", "\"channel_vacated\"")
            + &hook("http://h/1", "\"channel_vacated\"");
        let mut pending = Pending::new(&config(&hooks));
        let now = Instant::now();
        let mut ready = Vec::new();
        pending.accept(occupied("room"), now, &mut ready);
        pending.accept(vacated("room"), now, &mut ready);
        pending.flush_all(&mut ready);
        let by_url = |url: &str| -> Vec<Value> {
            ready
                .iter()
                .filter(|r| r.url == url)
                .flat_map(events_of)
                .collect()
        };
        assert_eq!(
            by_url("http://h/1"),
            [
                json!({"name": "channel_occupied", "channel": "room"}),
                json!({"name": "channel_vacated", "channel": "room"}),
            ]
        );
        assert_eq!(
            by_url("http://h/2"),
            [json!({"name": "channel_vacated", "channel": "room"})]
        );
    }
}
