//! Delivery of job results to subscribed callback URLs: subscriptions, the signed
//! request, the retry schedule, the check of where a callback may go, and the
//! sender that works the outbox.
//!
//! - `model`: subscriptions, deliveries, attempts.
//! - `signing`: Standard Webhooks and Pusher webhook signatures, and secrets.
//! - `schedule`: when a failed delivery is tried again.
//! - `target`: which addresses a callback may reach.
//! - `sender`: claims due deliveries and sends them.
//! - `pusher_webhooks`: Pusher's webhooks about channels and members, batched into
//!   the outbox.

mod model;
pub mod pusher_webhooks;
mod schedule;
mod sender;
mod signing;
pub mod target;

pub use model::{Attempt, Delivery, DeliveryFilter, DeliveryKind, DeliveryStatus, Subscription};
pub use schedule::{RetrySchedule, retry_after};
pub use sender::{Sender, spawn_sender};
pub use signing::{new_secret, pusher_signature, standard_signatures};
