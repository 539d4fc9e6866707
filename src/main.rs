//! The `herald` binary: reads the configuration, sets up logging, binds, serves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use herald::Config;

/// Exit code for a configuration that cannot be used (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;

/// A self-hosted real-time push server speaking the Pusher Channels protocol.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file laid over the built-in defaults [default: ./config.toml
    /// when it exists]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config) {
        Ok(config) => config,
        Err(problems) => {
            eprint!("{problems}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Err(error) = herald::telemetry::init(&config.log) {
        eprintln!("invalid configuration: {error}");
        return ExitCode::from(EX_USAGE);
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "server failed");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| Some(PathBuf::from("config.toml")).filter(|p| p.exists()));
    let text = match &path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}\n", path.display()))?,
        ),
        None => None,
    };
    Config::load(text.as_deref(), std::env::vars()).map_err(|errors| errors.to_string())
}

#[tokio::main]
async fn serve(config: Config) -> Result<(), herald::RunError> {
    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    })?;
    herald::run(config, listener, herald::shutdown_signal()).await
}

/// An error and its causes, joined with ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}
