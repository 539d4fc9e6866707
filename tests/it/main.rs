//! Integration tests: the real server on port 0, driven by real clients.

#![allow(
    unreachable_pub,
    reason = "a test binary has no public API to keep small"
)]

mod channels;
mod cli;
mod cluster;
mod cluster_state;
mod connection;
mod delivery;
mod delivery_kit;
mod extras_kit;
mod http_api;
mod interop;
mod jobs;
mod jobs_handlers;
mod jobs_kit;
mod jobs_pipeline;
mod kit;
mod node_kill;
mod postgres_store;
mod presence;
mod pusher_extras;
mod pusher_webhooks;
mod slow_clients;
mod support;
