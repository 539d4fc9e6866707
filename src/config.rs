//! Typed configuration, loaded once at start-up and validated as a whole.
//!
//! Three layers, each over the one before: the `config.toml` shipped with Herald
//! (compiled into the binary, so the server runs with no file at all), an optional
//! file, and `HERALD_*` environment variables. Every problem found is reported with
//! the dotted key it concerns, all of them at once, before anything binds.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The configuration shipped with Herald; every option is written out there.
pub const EMBEDDED: &str = include_str!("../config.toml");

/// Prefix of the environment variables that override options.
pub const ENV_PREFIX: &str = "HERALD_";

/// Everything Herald needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener, WebSocket and shutdown settings.
    pub server: ServerConfig,
    /// Tracing filter.
    pub log: LogConfig,
    /// The demo page.
    pub demo: DemoConfig,
    /// Where jobs are kept.
    pub store: StoreConfig,
    /// Where uploaded files are kept.
    pub files: FilesConfig,
    /// How jobs run.
    pub jobs: JobsConfig,
    /// How results are delivered to callback URLs.
    pub webhooks: WebhooksConfig,
    /// Several nodes sharing channel traffic through Redis.
    pub cluster: ClusterConfig,
    /// The apps served, each with its own credentials and limits.
    pub apps: Vec<AppConfig>,
}

/// `[store]`: the database of jobs, subscriptions and deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file, created with its directory on first run; unused
    /// when `url` is set.
    pub path: PathBuf,
    /// A PostgreSQL database (`postgres://…`) shared by several nodes, used instead
    /// of the SQLite file.
    #[serde(default)]
    pub url: Option<String>,
    /// The PostgreSQL schema that holds Herald's tables, created if missing, so that
    /// several deployments can share one database.
    #[serde(default)]
    pub schema: Option<String>,
}

impl StoreConfig {
    /// Where the store is, for messages: the SQLite file, or the PostgreSQL URL
    /// without its password, and the schema.
    pub fn location(&self) -> String {
        let Some(url) = &self.url else {
            return self.path.display().to_string();
        };
        let shown = match reqwest::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                // Only a URL that cannot have a password fails to lose it.
                let _ = parsed.set_password(None);
                parsed.to_string()
            }
            Ok(_) => url.clone(),
            Err(_) => "an invalid PostgreSQL URL".to_owned(),
        };
        match &self.schema {
            Some(schema) => format!("{shown} (schema {schema})"),
            None => shown,
        }
    }
}

/// `[files]`: content-addressed storage for uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory, created on first run.
    pub dir: PathBuf,
}

/// `[jobs]`: settings shared by every event type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// How long a finished job's outcome is replayed to new subscribers of its
    /// channel.
    #[serde(with = "humantime_serde")]
    pub retain_results: Duration,
    /// Largest answer an `http` worker may give, in bytes; a larger one fails the
    /// attempt, so that one result cannot flood memory, sockets and callbacks.
    #[serde(default = "default_max_result_size")]
    pub max_result_size: usize,
    /// How much longer than its attempt's timeout a claimed job stays reserved for
    /// its node; when that has passed, another node sharing the store takes it.
    #[serde(with = "humantime_serde")]
    pub lease_margin: Duration,
}

fn default_max_result_size() -> usize {
    1024 * 1024
}

/// `[cluster]`: several Herald nodes behind one load balancer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Share channel events with the other nodes through Redis.
    pub enabled: bool,
    /// The Redis server the nodes share.
    pub redis_url: String,
    /// Put before every Redis key and channel, so that several deployments can
    /// share one Redis.
    pub prefix: String,
    /// How often a node tells the others it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node silent this long is taken for dead: the others drop its sockets and
    /// presence members.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

/// `[webhooks]`: delivery of results to callback URLs, and Pusher's webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Address ranges callbacks may reach besides global addresses (CIDRs).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Longest wait for a receiver's TCP (and TLS) connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for a receiver's whole answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Waits before each retry; a delivery gets one attempt more than this list has
    /// entries, then it is dead.
    #[serde(deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
    /// Each wait is varied by up to this fraction either way.
    pub jitter: f64,
    /// The longest `Retry-After` (on 429 and 503) that is honoured.
    #[serde(with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// A subscription whose deliveries have only failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// After a secret rotation, deliveries are signed with the old secret too for
    /// this long.
    #[serde(with = "humantime_serde")]
    pub secret_grace: Duration,
    /// Deliveries in flight at once, in all.
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one subscription (or one Pusher webhook URL).
    pub max_in_flight_per_target: usize,
    /// How long a claimed delivery is reserved for its sender; after that another
    /// sender may take it.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// The channel each app's delivery events (a subscription failing, disabled,
    /// recovered) are pushed on.
    pub operations_channel: String,
    /// Pusher webhooks: most events in one request.
    pub batch_max: usize,
    /// Pusher webhooks: longest wait to fill a batch.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
    /// Pusher webhooks: `channel_vacated` and `member_removed` wait this long, and
    /// are dropped if the channel or member is back by then.
    #[serde(with = "humantime_serde")]
    pub leave_delay: Duration,
}

/// The built-in handlers an event type can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// Stores an uploaded file and reports what it is.
    FileUpload,
    /// Analyses a chat transcript.
    ChatAnalysis,
    /// Delivers the payload as the result.
    Relay,
    /// POSTs the event to a worker URL and takes its answer as the result.
    Http,
}

/// One `[[apps.event_types]]` entry: an event type and how its jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    /// The `eventType` clients send.
    pub name: String,
    /// The handler that runs its jobs.
    pub handler: HandlerKind,
    /// The channel results are pushed to when the request names none; may use
    /// `{jobId}`, `{eventType}` and `{metadata.FIELD}`.
    #[serde(default = "default_job_channel")]
    pub channel: String,
    /// How long one attempt may run.
    #[serde(default = "default_job_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts in all, the first included.
    #[serde(default = "default_job_attempts")]
    pub attempts: u32,
    /// Wait before the second attempt; it doubles for each one after.
    #[serde(default = "default_job_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Jobs of this type that may run at once on this node.
    #[serde(default = "default_job_concurrency")]
    pub concurrency: usize,
    /// For the `http` handler: the worker URL the event is POSTed to.
    #[serde(default)]
    pub url: Option<String>,
}

fn default_job_channel() -> String {
    "job-{jobId}".into()
}

fn default_job_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_job_attempts() -> u32 {
    3
}

fn default_job_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_job_concurrency() -> usize {
    4
}

/// `[server]`: the listener and the WebSocket connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Silence a client may keep before it should ping, announced on connect.
    #[serde(with = "humantime_serde")]
    pub activity_timeout: Duration,
    /// How long the server waits for any sign of life after its own ping.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// Largest WebSocket frame read at all; larger ones close the socket with 1009.
    pub max_frame_size: usize,
    /// Largest HTTP request body accepted.
    pub max_request_size: usize,
    /// Frames that may queue for one socket before it is closed as too slow.
    pub outbound_queue: usize,
    /// How long shutdown waits for sockets and tasks to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[log]`: what is logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

/// `[demo]`: the demo page and its unsigned trigger route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve `/` and `POST /demo/events`.
    pub enabled: bool,
    /// The app id the demo page connects to and triggers on.
    pub app: String,
}

/// One `[[apps]]` entry: credentials, switches and limits of one app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The id used in HTTP API paths.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// The public key used by clients to connect and to sign requests.
    #[serde(deserialize_with = "text")]
    pub key: String,
    /// The secret that signs channel authorizations and API requests.
    #[serde(deserialize_with = "text")]
    pub secret: String,
    /// A disabled app refuses sockets (4003) and API calls (403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether sockets may send `client-` events.
    #[serde(default = "yes")]
    pub client_events: bool,
    /// Sockets the app may hold open at once on this node; 0 for no limit.
    #[serde(default)]
    pub max_connections: usize,
    /// Largest event data (HTTP) or client frame (WebSocket), in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Distinct users one presence channel may hold.
    #[serde(default = "default_max_presence_members")]
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes of its JSON text.
    #[serde(default = "default_max_presence_user_info")]
    pub max_presence_user_info: usize,
    /// A token that authorizes jobs API calls as `Authorization: Bearer …`, for
    /// clients that cannot sign requests; empty turns token access off.
    #[serde(default)]
    pub api_token: String,
    /// Largest JSON body of `POST /jobs`, in bytes.
    #[serde(default = "default_max_job_size")]
    pub max_job_size: usize,
    /// Largest uploaded file, in bytes.
    #[serde(default = "default_max_upload_size")]
    pub max_upload_size: u64,
    /// The event types the app's jobs may have.
    #[serde(default)]
    pub event_types: Vec<EventTypeConfig>,
    /// Close sockets that neither sign in nor join a private or presence channel
    /// within this time, with 4009. Absent: sign-in is not required.
    #[serde(default, with = "humantime_serde::option")]
    pub user_authentication_timeout: Option<Duration>,
    /// Client events one socket may send per second; past it they get 4301.
    #[serde(default = "default_client_event_rate")]
    pub client_event_rate: u32,
    /// Send `pusher_internal:subscription_count` on non-presence channels when
    /// their number of sockets changes.
    #[serde(default)]
    pub subscription_count: bool,
    /// How long a cache channel keeps its last event.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Pusher's own webhooks: URLs told about channels and members.
    #[serde(default)]
    pub webhooks: Vec<PusherWebhookConfig>,
}

/// One `[[apps.webhooks]]` entry: a URL and the Pusher webhook events it wants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherWebhookConfig {
    /// Where the batched events are POSTed.
    pub url: String,
    /// The kinds of event it wants.
    pub events: Vec<PusherEventKind>,
}

/// The kinds of Pusher webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PusherEventKind {
    /// A channel got its first subscriber.
    ChannelOccupied,
    /// A channel lost its last subscriber (after `leave_delay`).
    ChannelVacated,
    /// A user joined a presence channel.
    MemberAdded,
    /// A user left a presence channel (after `leave_delay`).
    MemberRemoved,
    /// A client sent a `client-` event.
    ClientEvent,
    /// A cache channel was subscribed with nothing cached.
    CacheMiss,
}

impl AppConfig {
    /// The event type named `name`.
    pub fn event_type(&self, name: &str) -> Option<&EventTypeConfig> {
        self.event_types.iter().find(|t| t.name == name)
    }
}

fn default_client_event_rate() -> u32 {
    10
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_max_job_size() -> usize {
    256 * 1024
}

fn default_max_upload_size() -> u64 {
    100 * 1024 * 1024
}

/// A string, or a whole number taken as its text: an app id such as 424242 set
/// through an environment variable arrives as a number.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(i64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

/// A list of human-readable durations.
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let list = Vec::<humantime_serde::Serde<Duration>>::deserialize(deserializer)?;
    Ok(list
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

fn yes() -> bool {
    true
}

fn default_max_message_size() -> usize {
    10 * 1024
}

fn default_max_presence_members() -> usize {
    100
}

fn default_max_presence_user_info() -> usize {
    1024
}

impl Config {
    /// The address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.host, self.server.port)
    }

    /// The embedded defaults alone, with no file and no environment.
    ///
    /// # Panics
    ///
    /// Never in a released build: the embedded file is checked by the test suite.
    pub fn embedded() -> Config {
        #[expect(clippy::expect_used, reason = "the shipped config.toml is tested")]
        load_layers(None, std::iter::empty()).expect("the embedded config.toml is valid")
    }

    /// Loads the embedded defaults, then `file` (TOML text) over them, then the
    /// `HERALD_*` variables found in `env`.
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its key.
    pub fn load<I>(file: Option<&str>, env: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        load_layers(file, env)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem, at one key.
#[derive(Debug)]
pub struct ConfigError {
    /// The dotted path of the option, such as `apps[0].secret`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigErrors {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.0.len() == 1 { "" } else { "s" };
        writeln!(
            f,
            "invalid configuration ({} problem{plural}):",
            self.0.len()
        )?;
        for error in &self.0 {
            writeln!(f, "  {}: {}", error.key, error.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn load_layers<I>(file: Option<&str>, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut errors = ConfigErrors::default();

    // Build one TOML table: embedded defaults, then the file, then the environment.
    let mut table: Table = parse_toml(EMBEDDED, "embedded config.toml", &mut errors);
    if let Some(text) = file {
        merge(&mut table, parse_toml(text, "config file", &mut errors));
    }
    for (name, value) in env {
        if let Some(path) = name.strip_prefix(ENV_PREFIX) {
            apply_env(&mut table, &name, path, &value, &mut errors);
        }
    }

    // Read each section on its own so that a mistake in one does not hide the others.
    let mut take = |key: &str| table.remove(key).unwrap_or(Value::Table(Table::new()));
    let server = section::<ServerConfig>(take("server"), "server", &mut errors);
    let log = section::<LogConfig>(take("log"), "log", &mut errors);
    let demo = section::<DemoConfig>(take("demo"), "demo", &mut errors);
    let store = section::<StoreConfig>(take("store"), "store", &mut errors);
    let files = section::<FilesConfig>(take("files"), "files", &mut errors);
    let jobs = section::<JobsConfig>(take("jobs"), "jobs", &mut errors);
    let webhooks = section::<WebhooksConfig>(take("webhooks"), "webhooks", &mut errors);
    let cluster = section::<ClusterConfig>(take("cluster"), "cluster", &mut errors);
    let apps = apps(take("apps"), &mut errors);
    for key in table.keys() {
        errors.push(key.as_str(), "unknown section");
    }

    // Cross-field checks run on whatever did parse, so their problems are listed too.
    validate_apps(&apps, server.as_ref(), &mut errors);
    let (Some(server), Some(log), Some(demo)) = (server, log, demo) else {
        return Err(errors);
    };
    let (Some(store), Some(files), Some(jobs), Some(webhooks), Some(cluster)) =
        (store, files, jobs, webhooks, cluster)
    else {
        return Err(errors);
    };
    let config = Config {
        server,
        log,
        demo,
        store,
        files,
        jobs,
        webhooks,
        cluster,
        apps,
    };
    validate(&config, &mut errors);
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

fn parse_toml(text: &str, what: &str, errors: &mut ConfigErrors) -> Table {
    text.parse::<Table>().unwrap_or_else(|error| {
        errors.push(what, error.to_string().trim_end().to_owned());
        Table::new()
    })
}

/// Lays `over` on `base`: tables merge key by key, anything else (arrays included)
/// replaces what was there, so a file's `[[apps]]` list replaces the demo app.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base)), Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets the option named by an environment variable such as `HERALD_APPS__0__KEY`.
///
/// The value is read as a TOML value when it parses as one (numbers, booleans) and as
/// a string otherwise.
fn apply_env(table: &mut Table, name: &str, path: &str, raw: &str, errors: &mut ConfigErrors) {
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let typed = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));

    let mut slot = Some(table);
    let mut node: Option<&mut Value> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        // A list not yet in the file (an app's first webhook) starts empty.
        let list_follows = parts.get(i + 1).is_some_and(|p| p.parse::<usize>().is_ok());
        let next = match (slot.take(), node.take()) {
            (Some(t), _) => step_table(t, part, last, list_follows),
            (None, Some(Value::Table(t))) => step_table(t, part, last, list_follows),
            (None, Some(Value::Array(items))) => part.parse::<usize>().ok().and_then(|index| {
                if index == items.len() && !last {
                    items.push(Value::Table(Table::new()));
                }
                items.get_mut(index)
            }),
            _ => None,
        };
        match next {
            Some(next) => node = Some(next),
            None => return errors.push(name, "names no option"),
        }
    }
    // An option that holds text keeps the text as given, so that a numeric app id
    // or secret stays a string.
    if let Some(node) = node {
        *node = match typed {
            Some(value) if !node.is_str() => value,
            _ => Value::String(raw.to_owned()),
        };
    }
}

fn step_table<'a>(
    table: &'a mut Table,
    part: &str,
    last: bool,
    list_follows: bool,
) -> Option<&'a mut Value> {
    if last {
        // A placeholder for a new option, replaced by the value from the variable.
        Some(table.entry(part).or_insert(Value::Boolean(false)))
    } else if list_follows {
        Some(table.entry(part).or_insert(Value::Array(Vec::new())))
    } else {
        table.get_mut(part)
    }
}

/// Reads one section, collecting every field-level problem: after each error the
/// offending key is dropped and the section read again, so one bad value does not
/// hide the next.
fn section<T: DeserializeOwned>(value: Value, key: &str, errors: &mut ConfigErrors) -> Option<T> {
    let Value::Table(mut table) = value else {
        errors.push(key, "must be a table");
        return None;
    };
    let mut reported: Vec<String> = Vec::new();
    for _ in 0..64 {
        let attempt = Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, T>(attempt) {
            // Read without the bad keys, the rest still gets its cross-field checks;
            // the problems already listed keep the configuration from being used.
            Ok(parsed) => return Some(parsed),
            Err(error) => {
                let message = error.inner().message().to_owned();
                let field = error
                    .path()
                    .iter()
                    .next()
                    .map(ToString::to_string)
                    .or_else(|| quoted_field(&message));
                match field {
                    // A field dropped after an earlier error is now reported missing.
                    Some(field) if reported.contains(&field) => return None,
                    Some(field) if table.remove(&field).is_some() => {
                        errors.push(format!("{key}.{field}"), message);
                        reported.push(field);
                    }
                    Some(field) => {
                        errors.push(format!("{key}.{field}"), message);
                        return None;
                    }
                    None => {
                        errors.push(key, message);
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// The field named in serde's "unknown field `x`" and "missing field `x`" messages,
/// which carry no path of their own.
fn quoted_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next().map(str::to_owned)
}

fn apps(value: Value, errors: &mut ConfigErrors) -> Vec<AppConfig> {
    let Value::Array(items) = value else {
        errors.push("apps", "must be a list of [[apps]] tables");
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| section::<AppConfig>(item, &format!("apps[{i}]"), errors))
        .collect()
}

/// Checks that hold between fields and across apps.
fn validate(config: &Config, errors: &mut ConfigErrors) {
    let server = &config.server;
    if server.activity_timeout < Duration::from_secs(1) {
        errors.push("server.activity_timeout", "must be at least 1s");
    }
    if server.pong_timeout.is_zero() {
        errors.push("server.pong_timeout", "must be more than 0s");
    }
    if server.outbound_queue == 0 {
        errors.push("server.outbound_queue", "must be at least 1");
    }
    if server.max_frame_size < 1024 {
        errors.push("server.max_frame_size", "must be at least 1024 bytes");
    }
    if config.jobs.lease_margin < Duration::from_secs(1) {
        // Less would let a node take over an attempt whose own timeout is still
        // being handled, and leaves nothing for clocks that differ a little.
        errors.push("jobs.lease_margin", "must be at least 1s");
    }
    validate_webhooks(&config.webhooks, errors);
    if config.cluster.enabled && config.store.url.is_none() {
        errors.push(
            "cluster.enabled",
            "several nodes need a shared PostgreSQL store: set store.url (the SQLite file \
             serves one node only)",
        );
    }
    if config.cluster.enabled && !config.cluster.redis_url.starts_with("redis://") {
        errors.push(
            "cluster.redis_url",
            "must be a redis:// URL (TLS is not supported)",
        );
    } else if config.cluster.enabled
        && let Err(error) = redis::Client::open(config.cluster.redis_url.as_str())
    {
        errors.push(
            "cluster.redis_url",
            format!("is not a usable Redis URL: {error}"),
        );
    }
    if config.cluster.heartbeat < Duration::from_millis(100) {
        let message = "must be at least 100ms: every node handles every other node's \
                       heartbeats";
        errors.push("cluster.heartbeat", message);
    }
    if config.cluster.prefix.is_empty() {
        errors.push("cluster.prefix", "must not be empty");
    }
    if config.cluster.node_timeout < config.cluster.heartbeat * 2 {
        let message = "must be at least twice cluster.heartbeat, or a node that is only \
                       a little late is taken for dead";
        errors.push("cluster.node_timeout", message);
    }
    validate_store(&config.store, errors);
    if config.demo.enabled && !config.apps.iter().any(|a| a.id == config.demo.app) {
        errors.push(
            "demo.app",
            format!(
                "no app has the id {:?}; name one of your apps here, or set \
                 demo.enabled = false",
                config.demo.app
            ),
        );
    }
}

fn validate_store(store: &StoreConfig, errors: &mut ConfigErrors) {
    let postgres =
        |url: &String| url.starts_with("postgres://") || url.starts_with("postgresql://");
    if store.url.as_ref().is_some_and(|url| !postgres(url)) {
        errors.push("store.url", "must be a postgres:// or postgresql:// URL");
    }
    if let Some(schema) = &store.schema {
        if store.url.is_none() {
            errors.push("store.schema", "is for PostgreSQL only; set store.url too");
        }
        if let Err(problem) = crate::store::check_schema_name(schema) {
            errors.push("store.schema", problem);
        }
    }
}

fn validate_webhooks(webhooks: &WebhooksConfig, errors: &mut ConfigErrors) {
    if !(0.0..=0.5).contains(&webhooks.jitter) {
        errors.push("webhooks.jitter", "must be between 0 and 0.5");
    }
    if webhooks.timeout >= webhooks.lease {
        errors.push("webhooks.lease", "must be longer than webhooks.timeout");
    }
    if webhooks.max_in_flight == 0 || webhooks.max_in_flight_per_target == 0 {
        errors.push(
            "webhooks.max_in_flight",
            "both in-flight limits must be at least 1",
        );
    }
    if webhooks.batch_max == 0 {
        errors.push("webhooks.batch_max", "must be at least 1");
    }
    if crate::protocol::ChannelName::parse(&webhooks.operations_channel).is_err() {
        errors.push(
            "webhooks.operations_channel",
            "must be a valid channel name",
        );
    }
}

/// Checks each app, and that ids and keys are unique; `server` is `None` when that
/// section itself failed to parse.
fn validate_apps(apps: &[AppConfig], server: Option<&ServerConfig>, errors: &mut ConfigErrors) {
    if apps.is_empty() {
        errors.push("apps", "at least one app is needed");
    }
    for (i, app) in apps.iter().enumerate() {
        validate_app(&apps[..i], i, app, server, errors);
    }
}

fn validate_app(
    earlier: &[AppConfig],
    i: usize,
    app: &AppConfig,
    server: Option<&ServerConfig>,
    errors: &mut ConfigErrors,
) {
    let key = |field: &str| format!("apps[{i}].{field}");
    for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
        if value.is_empty() {
            errors.push(key(field), "must not be empty");
        }
    }
    if !app
        .id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(key("id"), "may hold only letters, digits, '-', '_' and '.'");
    }
    if earlier.iter().any(|other| other.id == app.id) {
        errors.push(key("id"), format!("{:?} is used by an earlier app", app.id));
    }
    if earlier.iter().any(|other| other.key == app.key) {
        errors.push(
            key("key"),
            format!("{:?} is used by an earlier app", app.key),
        );
    }
    if app.max_message_size == 0 {
        errors.push(key("max_message_size"), "must be at least 1 byte");
    }
    if server.is_some_and(|server| app.max_message_size > server.max_request_size) {
        errors.push(
            key("max_message_size"),
            "must not exceed server.max_request_size",
        );
    }
    if app.max_presence_members == 0 {
        errors.push(key("max_presence_members"), "must be at least 1");
    }
    for (j, webhook) in app.webhooks.iter().enumerate() {
        let url = &webhook.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(
                format!("apps[{i}].webhooks[{j}].url"),
                "must be an http:// or https:// URL",
            );
        }
        if webhook.events.is_empty() {
            errors.push(
                format!("apps[{i}].webhooks[{j}].events"),
                "must name at least one event",
            );
        }
    }
    for (j, event_type) in app.event_types.iter().enumerate() {
        let at = |field: &str| format!("apps[{i}].event_types[{j}].{field}");
        let earlier = &app.event_types[..j];
        validate_event_type(event_type, earlier, at, errors);
    }
}

fn validate_event_type(
    event_type: &EventTypeConfig,
    earlier: &[EventTypeConfig],
    at: impl Fn(&str) -> String,
    errors: &mut ConfigErrors,
) {
    let name = &event_type.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(
            at("name"),
            "must be letters, digits, '-', '_' or '.', not empty",
        );
    }
    if earlier.iter().any(|other| &other.name == name) {
        errors.push(at("name"), format!("{name:?} is declared twice"));
    }
    if event_type.attempts == 0 {
        errors.push(at("attempts"), "must be at least 1");
    }
    if event_type.concurrency == 0 {
        errors.push(at("concurrency"), "must be at least 1");
    }
    if event_type.timeout.is_zero() {
        errors.push(at("timeout"), "must be more than 0s");
    }
    if let Err(problem) = crate::jobs::check_channel_template(&event_type.channel) {
        errors.push(at("channel"), problem);
    }
    let is_http = event_type.handler == HandlerKind::Http;
    match &event_type.url {
        Some(url) if is_http && !(url.starts_with("http://") || url.starts_with("https://")) => {
            errors.push(at("url"), "must be an http:// or https:// URL");
        }
        None if is_http => errors.push(at("url"), "the http handler needs a worker url"),
        Some(_) if !is_http => errors.push(at("url"), "only the http handler takes a url"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn embedded_config_is_valid_and_serves_the_demo_app() {
        let config = Config::embedded();
        assert_eq!(config.listen_addr().to_string(), "127.0.0.1:6001");
        assert_eq!(config.apps[0].id, "demo-app");
        assert_eq!(config.apps[0].max_message_size, 10240);
    }

    #[test]
    fn environment_overrides_nested_and_indexed_options() {
        let config = Config::load(
            None,
            env(&[
                ("HERALD_SERVER__PORT", "7000"),
                ("HERALD_APPS__0__SECRET", "s3cret"),
                ("HERALD_APPS__0__ID", "424242"),
                ("HERALD_DEMO__APP", "424242"),
                ("HERALD_APPS__1__ID", "77"),
                ("HERALD_APPS__1__KEY", "k77"),
                ("HERALD_APPS__1__SECRET", "12345"),
                (
                    "HERALD_APPS__1__WEBHOOKS__0__URL",
                    "http://127.0.0.1:9/hooks",
                ),
                (
                    "HERALD_APPS__1__WEBHOOKS__0__EVENTS",
                    r#"["channel_occupied"]"#,
                ),
                ("HERALD_DEMO__ENABLED", "false"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.apps[0].secret, "s3cret");
        assert_eq!(config.apps[0].id, "424242", "numeric text stays text");
        assert_eq!(config.apps[1].id, "77", "a new app may have a numeric id");
        assert_eq!(config.apps[1].secret, "12345");
        assert_eq!(config.apps[1].webhooks[0].url, "http://127.0.0.1:9/hooks");
        assert!(!config.demo.enabled);
    }

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
        let config = Config::embedded();
        assert_eq!(config.store.url, None);
        assert_eq!(config.store.location(), "data/herald.db");

        let url = "postgres://herald:hunter2@127.0.0.1:5432/herald";
        let config = Config::load(
            None,
            env(&[
                ("HERALD_STORE__URL", url),
                ("HERALD_STORE__SCHEMA", "herald_eu"),
            ]),
        )
        .unwrap();
        assert_eq!(config.store.url.as_deref(), Some(url));
        assert_eq!(config.store.schema.as_deref(), Some("herald_eu"));
        let location = config.store.location();
        assert!(!location.contains("hunter2"), "{location}");
        assert!(location.contains("127.0.0.1:5432/herald"), "{location}");
    }

    #[test]
    fn store_url_and_schema_are_checked() {
        let file = r#"
            [store]
            url = "mysql://127.0.0.1/herald"
            schema = "Herald-EU"
        "#;
        let errors = Config::load(Some(file), env(&[])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["store.url", "store.schema"]);

        let errors = Config::load(Some("[store]\nschema = \"herald\""), env(&[])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["store.schema"], "a schema needs a PostgreSQL url");
    }

    #[test]
    fn the_job_lease_margin_is_at_least_a_second() {
        assert_eq!(
            Config::embedded().jobs.lease_margin,
            Duration::from_secs(30)
        );
        let errors = Config::load(Some("[jobs]\nlease_margin = \"500ms\""), env(&[])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["jobs.lease_margin"]);
    }

    #[test]
    fn cluster_settings_that_cannot_work_are_refused() {
        let file = r#"
            [store]
            url = "postgres://127.0.0.1/herald"
            [cluster]
            enabled = true
            redis_url = "redis://127.0.0.1/notanumber"
            prefix = ""
            heartbeat = "1ns"
            node_timeout = "1ns"
        "#;
        let errors = Config::load(Some(file), env(&[])).unwrap_err();
        let mut keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cluster.heartbeat",
                "cluster.node_timeout",
                "cluster.prefix",
                "cluster.redis_url"
            ]
        );
    }

    #[test]
    fn a_file_replaces_the_app_list() {
        let file = r#"
            [demo]
            app = "a"
            [[apps]]
            id = "a"
            key = "ka"
            secret = "sa"
            [[apps]]
            id = "b"
            key = "kb"
            secret = "sb"
            client_events = false
        "#;
        let config = Config::load(Some(file), env(&[])).unwrap();
        assert_eq!(config.apps.len(), 2);
        assert!(!config.apps[1].client_events);
        assert_eq!(
            config.server.port, 6001,
            "unset options keep their defaults"
        );
    }

    #[test]
    fn every_problem_is_listed_by_key() {
        let file = r#"
            [server]
            port = "high"
            activity_timeout = "soon"
            colour = "blue"
            [[apps]]
            id = "x"
            key = ""
            secret = "s"
            [[apps]]
            id = "x"
            key = "k2"
        "#;
        let errors = Config::load(Some(file), env(&[("HERALD_NOPE__X", "1")])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        for expected in [
            "server.port",
            "server.activity_timeout",
            "server.colour",
            "apps[0].key",
            "apps[1].secret",
            "HERALD_NOPE__X",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }

    #[test]
    fn cross_field_problems_are_listed_together() {
        let file = r#"
            [demo]
            app = "nobody"
            [[apps]]
            id = "a"
            key = ""
            secret = "s"
            [[apps]]
            id = "a"
            key = "k"
            secret = "s"
            max_presence_members = 0
        "#;
        let errors = Config::load(Some(file), env(&[])).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "apps[0].key",
                "apps[1].id",
                "apps[1].max_presence_members",
                "demo.app"
            ]
        );
    }
}
