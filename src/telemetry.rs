//! Logging: `tracing` to standard output, filtered by `RUST_LOG` or `[log] filter`.
//!
//! Levels: info for lifecycle (start, listen address, shutdown), debug for each
//! socket and subscription, never a line per message above debug.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber.
///
/// # Errors
///
/// When the filter does not parse.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(from_env),
        _ => EnvFilter::try_new(&config.filter),
    }
    .map_err(|error| format!("log.filter: {error}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init()
        .map_err(|error| error.to_string())
}
