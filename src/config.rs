//! Typed, layered, validated configuration. The layers, each overriding the one before: the
//! shipped `config.toml` (compiled in, so every key always has its default), then the file given
//! with `--config` (or `./config.toml` when present), then `TOMATO_<SECTION>__<KEY>` variables.
//! The loader takes the environment as an argument, so tests never touch the process's own.
//! Unknown keys and invalid values fail with one line naming the key.
//!
//! The loader is ours (about 100 lines: merge tables, apply variables) rather than `figment`,
//! which does the same layering and `__` splitting, for three reasons: figment's environment
//! provider guesses a variable's type from its text, so `TOMATO_INTERNAL__KEY=12345` becomes an
//! integer and a string key fails to load (the known workaround is a deserializer per field),
//! where ours reads the text as the type the key has in the shipped defaults; figment reads the
//! process environment, so tests would serialise on a jail, where ours takes the variables as an
//! argument and tests run in parallel; and an unknown key is refused naming the layer it came
//! from, which figment leaves to `deny_unknown_fields` on every section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tomato_domain::{Email, Pricing};

/// The shipped defaults: the repository's `config.toml`, every key with a comment.
pub const DEFAULTS: &str = include_str!("../config.toml");

/// The prefix of environment overrides.
const ENV_PREFIX: &str = "TOMATO_";
/// The most threads `server.workers` or `shards.arbiters` may ask for: far past any host's
/// cores, and short of what a typo (an extra zero or two) would make the node spawn.
const MAX_THREADS: usize = 1024;

/// Why the configuration could not be loaded. Each variant renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("unknown setting {key} in {origin}")]
    UnknownKey { origin: String, key: String },
    #[error("{0}")]
    Invalid(String),
    /// `server.profile = "production"` with settings only fit for development, one per line.
    #[error("{}", .0.join("\n"))]
    Unsafe(Vec<String>),
}

/// Every setting of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub store: StoreSettings,
    pub auth: AuthSettings,
    pub payments: PaymentSettings,
    pub internal: InternalSettings,
    pub cluster: ClusterSettings,
    pub dispatch: DispatchSettings,
    pub orders: OrderSettings,
    pub pricing: Pricing,
    pub shards: ShardSettings,
    pub riders: RiderSettings,
    pub uploads: UploadSettings,
    pub admin: AdminSettings,
    pub ops: OpsSettings,
    pub limits: LimitSettings,
    pub testing: TestingSettings,
}

/// The HTTP edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub profile: Profile,
    pub bind: String,
    pub body_limit_bytes: usize,
    pub upload_limit_bytes: usize,
    pub request_timeout_s: u64,
    pub cors_origins: Vec<String>,
    pub shutdown_grace_s: u64,
    /// Threads of the async runtime; 0 means one per CPU core.
    pub workers: usize,
}

/// What the node is run as: `production` refuses the development conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Development,
    Production,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Persistence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub data_dir: PathBuf,
    pub scylla: ScyllaSettings,
}

/// Which store backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Scylla,
}

/// The ScyllaDB backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaSettings {
    pub nodes: Vec<String>,
    pub keyspace: String,
    pub replication_factor: u32,
    pub consistency: ScyllaConsistency,
    pub username: String,
    pub password: SecretString,
}

/// The consistency of the ScyllaDB backend's reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    LocalQuorum,
    Quorum,
    One,
}

impl ScyllaSettings {
    /// The backend's own settings.
    pub fn backend_config(&self) -> tomato_store_scylla::ScyllaConfig {
        tomato_store_scylla::ScyllaConfig {
            nodes: self.nodes.clone(),
            keyspace: self.keyspace.clone(),
            replication_factor: self.replication_factor,
            consistency: match self.consistency {
                ScyllaConsistency::LocalQuorum => tomato_store_scylla::Consistency::LocalQuorum,
                ScyllaConsistency::Quorum => tomato_store_scylla::Consistency::Quorum,
                ScyllaConsistency::One => tomato_store_scylla::Consistency::One,
            },
            username: self.username.clone(),
            password: self.password.expose_secret().to_owned(),
        }
    }
}

/// Sign-in and tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub token_ttl_s: u64,
    pub dev_login: bool,
    pub admin_emails: Vec<Email>,
    pub google: GoogleSettings,
}

impl AuthSettings {
    /// Whether the signing secret is still the public one shipped in `config.toml`.
    pub fn uses_shipped_secret(&self) -> bool {
        shipped()
            .map(|shipped| {
                shipped.auth.jwt_secret.expose_secret() == self.jwt_secret.expose_secret()
            })
            .unwrap_or(false)
    }
}

/// Google sign-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    pub client_ids: Vec<String>,
    pub jwks_url: String,
    pub issuers: Vec<String>,
    pub jwks_cache_s: u64,
}

/// Payment providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    pub test_provider: bool,
    pub razorpay: RazorpaySettings,
    pub stripe: StripeSettings,
}

/// Razorpay; off while `key_id` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RazorpaySettings {
    pub key_id: String,
    pub key_secret: SecretString,
    pub webhook_secret: SecretString,
    pub api_base: String,
}

/// Stripe; off while `secret_key` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    pub secret_key: SecretString,
    pub webhook_secret: SecretString,
    pub api_base: String,
    pub success_url: String,
    pub cancel_url: String,
    pub tolerance_s: u64,
}

/// Service-to-service calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalSettings {
    pub key: SecretString,
}

/// Multi-node coordination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub redis_url: SecretString,
    pub node_id: String,
}

impl ClusterSettings {
    /// Whether this node takes part in a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.expose_secret().is_empty()
    }
}

/// Dispatch tuning (docs/api.md, "Riders and dispatch").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    pub search_radius_m: u32,
    pub offer_batch: u32,
    pub offer_ttl_s: u64,
    pub stale_after_s: u64,
    pub max_delivery_km: f64,
    pub mode: DispatchMode,
    pub batch_window_ms: u64,
    pub candidates: u32,
    pub batch_hold_m: u32,
}

/// How ready orders find riders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchMode {
    /// Each order offered to its nearest riders in waves.
    Greedy,
    /// The waiting orders matched with riders together every window.
    Batched,
}

/// Order lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSettings {
    pub payment_timeout_s: u64,
}

/// Location sharding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSettings {
    pub zone_resolution: u8,
    pub region_resolution: u8,
    pub count: u32,
    pub arbiters: usize,
}

/// Where uploads are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    pub store: UploadStore,
    pub s3: S3Settings,
}

/// The upload backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStore {
    Local,
    S3,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

/// The admin statistics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub timezone: String,
}

impl AdminSettings {
    /// The zone whose day is "today": the configured one, or UTC.
    pub fn zone(&self) -> jiff::tz::TimeZone {
        if self.timezone.is_empty() {
            return jiff::tz::TimeZone::UTC;
        }
        jiff::tz::TimeZone::get(&self.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

/// The operations page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    pub resolution: u8,
    pub interval_ms: u64,
    pub max_riders: usize,
    pub tile_url: String,
}

/// Riders' soft state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiderSettings {
    pub snapshot_every_s: u64,
}

/// Rate limits (docs/api.md): what one client or user may do, per node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub sign_in_per_minute: u32,
    pub client_address_header: String,
    pub positions_per_second: u32,
    pub positions_burst: u32,
    pub orders_per_minute: u32,
    pub payments_per_minute: u32,
    pub uploads_per_day: u32,
    pub upload_bytes_per_day: u32,
    pub upload_min_free_bytes: u64,
    pub sockets_per_user: u32,
}

/// Switches for drills and tests; all off in production.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingSettings {
    pub fault_injection: bool,
}

fn shipped() -> Option<Settings> {
    let table: toml::Table = toml::from_str(DEFAULTS).ok()?;
    Settings::deserialize(toml::Value::Table(table)).ok()
}

impl Settings {
    /// Loads the layers and validates the result. `file` is the `--config` file; without it,
    /// `config.toml` in the working directory is read when it exists. `env` is the environment
    /// to take `TOMATO_*` overrides from.
    pub fn load<I, K, V>(file: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut merged = parse_toml(DEFAULTS, "the shipped defaults")?;
        let local = Path::new("config.toml");
        let file = file.or_else(|| local.is_file().then_some(local));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let origin = path.display().to_string();
            let overlay = parse_toml(&text, &origin)?;
            merge(&mut merged, overlay, "", &origin)?;
        }
        // Sorted, so that of two bad variables the same one is always reported.
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .filter(|(k, _)| is_override(k))
            .collect();
        for (var, raw) in &overrides {
            apply_env(&mut merged, var, raw)?;
        }
        let settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(merged))
            .map_err(|err| {
                // toml appends "in `key`" on a second line; the path already says where.
                let inner = err.inner().to_string();
                let reason = inner.lines().next().unwrap_or_default();
                ConfigError::Invalid(format!("{}: {reason}", err.path()))
            })?;
        settings.validate()?;
        Ok(settings)
    }

    /// The listen address, parsed.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "server.bind must be an address like 127.0.0.1:8080, not {:?}",
                self.server.bind
            ))
        })
    }

    /// Checks every rule a value must meet beyond its type, section by section; the first
    /// broken rule is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        let unsafe_settings = self.unsafe_for_production();
        if !unsafe_settings.is_empty() {
            return Err(ConfigError::Unsafe(unsafe_settings));
        }
        self.check_server()?;
        self.check_log_and_store()?;
        self.check_auth()?;
        self.check_payments()?;
        self.check_cluster()?;
        self.check_dispatch_and_orders()?;
        self.check_pricing_and_admin()?;
        self.check_ops_and_uploads()?;
        self.check_limits()?;
        self.check_riders_and_shards()?;
        Ok(())
    }

    /// The rules of `[server]`.
    fn check_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.body_limit_bytes < 1024 {
            return fail("server.body_limit_bytes must be at least 1024".into());
        }
        if server.upload_limit_bytes < server.body_limit_bytes {
            return fail(
                "server.upload_limit_bytes must be at least server.body_limit_bytes".into(),
            );
        }
        if server.request_timeout_s == 0 {
            return fail("server.request_timeout_s must be at least 1".into());
        }
        threads("server.workers", server.workers)?;
        for origin in &server.cors_origins {
            let valid = origin == "*"
                || (reqwest::Url::parse(origin).is_ok_and(|url| url.has_host())
                    && !origin.ends_with('/'));
            if !valid {
                return fail(format!(
                    "server.cors_origins: {origin:?} is not an origin like https://app.example.com or \"*\""
                ));
            }
        }
        Ok(())
    }

    /// The rules of `[log] and [store]`.
    fn check_log_and_store(&self) -> Result<(), ConfigError> {
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return fail(format!(
                "log.filter {:?} is not a valid filter: {err}",
                self.log.filter
            ));
        }
        if self.store.data_dir.as_os_str().is_empty() {
            return fail("store.data_dir must not be empty".into());
        }
        if self.store.backend == StoreBackend::Scylla {
            let scylla = &self.store.scylla;
            if scylla.nodes.is_empty() {
                return fail("store.scylla.nodes must name at least one host:port".into());
            }
            if let Some(bad) = scylla.nodes.iter().find(|node| {
                node.rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            }) {
                return fail(format!("store.scylla.nodes: {bad:?} is not host:port"));
            }
            if !tomato_store_scylla::schema::valid_keyspace(&scylla.keyspace) {
                return fail(format!(
                    "store.scylla.keyspace {:?} must be 1 to 48 letters, digits and _, starting \
                     with a letter",
                    scylla.keyspace
                ));
            }
            if scylla.replication_factor == 0 {
                return fail("store.scylla.replication_factor must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The rules of `[auth]`.
    fn check_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.jwt_secret.expose_secret().len() < 32 {
            return fail("auth.jwt_secret must be at least 32 bytes".into());
        }
        if !(60..=30 * 24 * 3600).contains(&auth.token_ttl_s) {
            return fail("auth.token_ttl_s must be between 60 and 2592000 (30 days)".into());
        }
        if !auth.google.client_ids.is_empty() {
            check_url("auth.google.jwks_url", &auth.google.jwks_url)?;
            if auth.google.issuers.is_empty() {
                return fail(
                    "auth.google.issuers must not be empty while client_ids are set".into(),
                );
            }
        }
        if auth.google.jwks_cache_s == 0 {
            return fail("auth.google.jwks_cache_s must be at least 1".into());
        }
        Ok(())
    }

    /// The rules of `[payments]`.
    fn check_payments(&self) -> Result<(), ConfigError> {
        check_url(
            "payments.razorpay.api_base",
            &self.payments.razorpay.api_base,
        )?;
        check_url("payments.stripe.api_base", &self.payments.stripe.api_base)?;
        check_url(
            "payments.stripe.success_url",
            &self.payments.stripe.success_url,
        )?;
        check_url(
            "payments.stripe.cancel_url",
            &self.payments.stripe.cancel_url,
        )?;
        Ok(())
    }

    /// The rules of `[cluster]`.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        let redis = self.cluster.redis_url.expose_secret();
        if !(redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://")) {
            return fail("cluster.redis_url must start with redis:// or rediss://".into());
        }
        if self.cluster.enabled() && self.store.backend == StoreBackend::Embedded {
            return fail(
                "cluster.redis_url needs store.backend = \"scylla\": the nodes of a cluster share one store"
                    .into(),
            );
        }
        if self.cluster.node_id.contains('/') || self.cluster.node_id.len() > 200 {
            return fail("cluster.node_id must be at most 200 characters, without '/'".into());
        }
        Ok(())
    }

    /// The rules of `[dispatch] and [orders]`.
    fn check_dispatch_and_orders(&self) -> Result<(), ConfigError> {
        let dispatch = &self.dispatch;
        if !(1..=50_000).contains(&dispatch.search_radius_m) {
            return fail("dispatch.search_radius_m must be between 1 and 50000".into());
        }
        if !(1..=100).contains(&dispatch.offer_batch) {
            return fail("dispatch.offer_batch must be between 1 and 100".into());
        }
        if dispatch.offer_ttl_s == 0 || dispatch.stale_after_s == 0 {
            return fail(
                "dispatch.offer_ttl_s and dispatch.stale_after_s must be at least 1".into(),
            );
        }
        if !(50..=60_000).contains(&dispatch.batch_window_ms) {
            return fail("dispatch.batch_window_ms must be between 50 and 60000".into());
        }
        if !(1..=64).contains(&dispatch.candidates) {
            return fail("dispatch.candidates must be between 1 and 64".into());
        }
        if dispatch.batch_hold_m > 50_000 {
            return fail("dispatch.batch_hold_m must be between 0 and 50000".into());
        }
        if !(dispatch.max_delivery_km.is_finite() && dispatch.max_delivery_km > 0.0) {
            return fail("dispatch.max_delivery_km must be a positive number".into());
        }
        if self.orders.payment_timeout_s == 0 {
            return fail("orders.payment_timeout_s must be at least 1".into());
        }
        Ok(())
    }

    /// The rules of `[pricing] and [admin]`.
    fn check_pricing_and_admin(&self) -> Result<(), ConfigError> {
        let pricing = &self.pricing;
        if pricing.currency.len() != 3 || !pricing.currency.chars().all(|c| c.is_ascii_uppercase())
        {
            return fail("pricing.currency must be a 3-letter ISO 4217 code like INR".into());
        }
        if [
            pricing.delivery_fee,
            pricing.free_delivery_from,
            pricing.platform_fee,
            pricing.rider_per_km,
        ]
        .iter()
        .any(|amount| *amount < 0)
        {
            return fail("pricing amounts must not be negative".into());
        }
        if !self.admin.timezone.is_empty() && jiff::tz::TimeZone::get(&self.admin.timezone).is_err()
        {
            return fail(format!(
                "admin.timezone {:?} is not an IANA time zone like Asia/Kolkata",
                self.admin.timezone
            ));
        }
        Ok(())
    }

    /// The rules of `[ops] and [uploads]`.
    fn check_ops_and_uploads(&self) -> Result<(), ConfigError> {
        if !(5..=10).contains(&self.ops.resolution) {
            return fail("ops.resolution must be between 5 and 10".into());
        }
        if !(250..=10_000).contains(&self.ops.interval_ms) {
            return fail("ops.interval_ms must be between 250 and 10000".into());
        }
        if !(1..=20_000).contains(&self.ops.max_riders) {
            return fail("ops.max_riders must be between 1 and 20000".into());
        }
        if !self.ops.tile_url.is_empty() {
            check_url("ops.tile_url", &self.ops.tile_url)?;
        }
        if self.uploads.store == UploadStore::S3 {
            if self.uploads.s3.bucket.is_empty() {
                return fail("uploads.s3.bucket must be set when uploads.store = \"s3\"".into());
            }
            if !self.uploads.s3.endpoint.is_empty() {
                check_url("uploads.s3.endpoint", &self.uploads.s3.endpoint)?;
            }
        }
        Ok(())
    }

    /// The rules of `[limits]`.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if [
            limits.sign_in_per_minute,
            limits.positions_per_second,
            limits.positions_burst,
            limits.orders_per_minute,
            limits.payments_per_minute,
            limits.uploads_per_day,
            limits.upload_bytes_per_day,
            limits.sockets_per_user,
        ]
        .contains(&0)
        {
            return fail("limits: every rate and count must be at least 1".into());
        }
        if !limits.client_address_header.is_empty()
            && axum::http::HeaderName::try_from(limits.client_address_header.as_str()).is_err()
        {
            return fail(format!(
                "limits.client_address_header {:?} is not a header name",
                limits.client_address_header
            ));
        }
        if (limits.upload_bytes_per_day as usize) < self.server.upload_limit_bytes {
            return fail(
                "limits.upload_bytes_per_day must be at least server.upload_limit_bytes".into(),
            );
        }
        Ok(())
    }

    /// The rules of `[riders] and [shards]`.
    fn check_riders_and_shards(&self) -> Result<(), ConfigError> {
        if self.riders.snapshot_every_s == 0 {
            return fail("riders.snapshot_every_s must be at least 1".into());
        }
        if let Err(err) = tomato_shards::ShardMap::new(
            self.shards.zone_resolution,
            self.shards.region_resolution,
            self.shards.count,
        ) {
            return fail(err.to_string());
        }
        threads("shards.arbiters", self.shards.arbiters)
    }
}

impl Settings {
    /// What `server.profile = "production"` refuses, one line each (nothing in development).
    fn unsafe_for_production(&self) -> Vec<String> {
        if self.server.profile != Profile::Production {
            return Vec::new();
        }
        let why = "refused by server.profile = \"production\"";
        let mut problems = Vec::new();
        if self.auth.uses_shipped_secret() {
            problems.push(format!(
                "auth.jwt_secret is the public value shipped in config.toml ({why}): set your own secret"
            ));
        }
        if self.auth.dev_login {
            problems.push(format!(
                "auth.dev_login = true lets anyone sign in as any e-mail ({why})"
            ));
        }
        if self.payments.test_provider {
            problems.push(format!(
                "payments.test_provider = true marks orders paid without money ({why})"
            ));
        }
        if self.internal.key.expose_secret().is_empty() {
            problems.push(format!(
                "internal.key is empty ({why}): set the shared secret of the internal routes"
            ));
        }
        problems
    }
}

/// A broken rule of the configuration, said in one line.
/// The rule of a thread count (`key` names the setting): 0 (one per core) up to [`MAX_THREADS`].
fn threads(key: &str, count: usize) -> Result<(), ConfigError> {
    if count > MAX_THREADS {
        return fail(format!(
            "{key} must be between 0 (one per core) and {MAX_THREADS}"
        ));
    }
    Ok(())
}

fn fail(msg: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(msg))
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{key} must be an http(s) URL, not {value:?}"
        ))),
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::Syntax {
        origin: origin.to_owned(),
        // toml's message spans several lines with a source excerpt; keep its first line.
        message: err.message().lines().next().unwrap_or_default().to_owned(),
    })
}

/// Lays `overlay` over `base`. Every key must already exist in `base`, which holds the complete
/// shipped defaults, so a typo in a file is caught here rather than silently ignored.
fn merge(
    base: &mut toml::Table,
    overlay: toml::Table,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_owned(),
                    key: path,
                });
            }
            (Some(toml::Value::Table(base)), toml::Value::Table(overlay)) => {
                merge(base, overlay, &path, origin)?;
            }
            (Some(toml::Value::Table(_)), _) => {
                return Err(ConfigError::Invalid(format!(
                    "{path} in {origin} must be a section, not a value"
                )));
            }
            (Some(slot), value) => *slot = value,
        }
    }
    Ok(())
}

/// `TOMATO_<SECTION>__<KEY>`: other `TOMATO_*` variables (test switches, say) are not settings.
fn is_override(var: &str) -> bool {
    var.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.contains("__"))
}

/// Sets the key a `TOMATO_*` variable names. The raw text is read as the type the key has in
/// the defaults, so `TOMATO_INTERNAL__KEY=12345` stays a string and `..._S=abc` is refused.
fn apply_env(merged: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
    let dotted = path.join(".");
    let unknown = || ConfigError::UnknownKey {
        origin: "the environment".into(),
        key: format!("{dotted} ({var})"),
    };
    let (last, sections) = path.split_last().ok_or_else(unknown)?;
    let mut table = merged;
    for section in sections {
        table = match table.get_mut(section) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return Err(unknown()),
        };
    }
    let slot = table.get_mut(last).ok_or_else(unknown)?;
    let bad = |expected: &str| {
        ConfigError::Invalid(format!(
            "{var} must be {expected} for {dotted}, not {raw:?}"
        ))
    };
    let value = match slot {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
        }
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        toml::Value::Array(_) => parse_list(raw).ok_or_else(|| bad("a list"))?,
        toml::Value::Table(_) => {
            return Err(ConfigError::Invalid(format!(
                "{var} names the section {dotted}, not a key"
            )));
        }
        toml::Value::Datetime(_) => return Err(bad("a date")),
    };
    *slot = value;
    Ok(())
}

/// A TOML array (`["a", "b"]`) or plain comma-separated strings (`a, b`).
fn parse_list(raw: &str) -> Option<toml::Value> {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') {
        let mut table: toml::Table = toml::from_str(&format!("v = {trimmed}")).ok()?;
        return table.remove("v");
    }
    Some(toml::Value::Array(
        trimmed
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| toml::Value::String(item.to_owned()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        // A file that changes nothing, so a config.toml in the working directory is not read.
        let file = tempfile::NamedTempFile::new().expect("temp file");
        Settings::load(Some(file.path()), vars.iter().copied())
    }

    #[test]
    fn shipped_defaults_are_valid_and_match_the_design() {
        let settings = load_env(&[]).expect("defaults load");
        assert_eq!(settings.server.bind, "127.0.0.1:8080");
        assert_eq!(settings.store.backend, StoreBackend::Embedded);
        assert_eq!(settings.store.data_dir, PathBuf::from("data"));
        assert!(settings.auth.dev_login);
        assert!(settings.auth.admin_emails.is_empty());
        assert!(settings.payments.test_provider);
        assert_eq!(
            settings.payments.razorpay.api_base,
            "https://api.razorpay.com"
        );
        assert_eq!(settings.payments.stripe.api_base, "https://api.stripe.com");
        assert!(settings.internal.key.expose_secret().is_empty());
        assert!(settings.cluster.redis_url.expose_secret().is_empty());
        assert_eq!(settings.dispatch.search_radius_m, 5000);
        assert_eq!(settings.dispatch.offer_batch, 3);
        assert_eq!(settings.dispatch.offer_ttl_s, 15);
        assert_eq!(settings.dispatch.stale_after_s, 30);
        assert_eq!(settings.dispatch.max_delivery_km, 15.0);
        assert_eq!(settings.dispatch.batch_window_ms, 1000);
        assert_eq!(settings.dispatch.candidates, 8);
        assert_eq!(settings.dispatch.batch_hold_m, 0);
        assert_eq!(settings.server.workers, 0);
        assert_eq!(settings.orders.payment_timeout_s, 900);
        assert_eq!(settings.pricing, Pricing::default());
        assert!(!settings.testing.fault_injection);
        assert!(settings.auth.uses_shipped_secret());
    }

    #[test]
    fn env_overrides_are_typed_by_the_default() {
        let settings = load_env(&[
            ("TOMATO_SERVER__BIND", "0.0.0.0:9000"),
            ("TOMATO_SERVER__WORKERS", "1"),
            ("TOMATO_INTERNAL__KEY", "12345"),
            ("TOMATO_DISPATCH__OFFER_BATCH", "5"),
            ("TOMATO_DISPATCH__MAX_DELIVERY_KM", "7"),
            ("TOMATO_AUTH__DEV_LOGIN", "false"),
            ("TOMATO_AUTH__ADMIN_EMAILS", "Boss@X.com, ops@x.com"),
            (
                "TOMATO_AUTH__GOOGLE__ISSUERS",
                r#"["https://accounts.google.com"]"#,
            ),
            ("TOMATO_PAYMENTS__RAZORPAY__KEY_ID", "rzp_test_1"),
            ("TOMATO_TEST_SCYLLA", "not a setting, ignored"),
            ("PATH", "/usr/bin"),
        ])
        .expect("overrides load");
        assert_eq!(settings.server.bind, "0.0.0.0:9000");
        assert_eq!(settings.server.workers, 1);
        assert_eq!(settings.internal.key.expose_secret(), "12345");
        assert_eq!(settings.dispatch.offer_batch, 5);
        assert_eq!(settings.dispatch.max_delivery_km, 7.0);
        assert!(!settings.auth.dev_login);
        let admins: Vec<&str> = settings
            .auth
            .admin_emails
            .iter()
            .map(Email::as_str)
            .collect();
        assert_eq!(admins, ["boss@x.com", "ops@x.com"]);
        assert_eq!(
            settings.auth.google.issuers,
            ["https://accounts.google.com"]
        );
        assert_eq!(settings.payments.razorpay.key_id, "rzp_test_1");
    }

    #[test]
    fn env_wins_over_the_file_which_wins_over_defaults() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "[server]\nbind = \"127.0.0.1:7000\"\nshutdown_grace_s = 3\n[dispatch]\noffer_ttl_s = 20"
        )
        .expect("write");
        let settings = Settings::load(Some(file.path()), [("TOMATO_DISPATCH__OFFER_TTL_S", "25")])
            .expect("load");
        assert_eq!(settings.server.bind, "127.0.0.1:7000");
        assert_eq!(settings.server.shutdown_grace_s, 3);
        assert_eq!(settings.dispatch.offer_ttl_s, 25);
        assert_eq!(settings.dispatch.offer_batch, 3);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "[server]\nbindd = \"x\"").expect("write");
        let err = Settings::load(Some(file.path()), no_env()).expect_err("unknown key");
        assert!(
            err.to_string()
                .starts_with("unknown setting server.bindd in "),
            "{err}"
        );

        let err = load_env(&[("TOMATO_SERVER__PORT", "1")]).expect_err("unknown env key");
        assert_eq!(
            err.to_string(),
            "unknown setting server.port (TOMATO_SERVER__PORT) in the environment"
        );
        let err = load_env(&[("TOMATO_NOPE__X", "1")]).expect_err("unknown section");
        assert!(err.to_string().contains("nope.x"), "{err}");
    }

    #[test]
    fn invalid_values_stop_with_one_clear_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "TOMATO_AUTH__JWT_SECRET",
                "short",
                "auth.jwt_secret must be at least 32 bytes",
            ),
            (
                "TOMATO_SERVER__BIND",
                "nowhere",
                "server.bind must be an address",
            ),
            (
                "TOMATO_SERVER__REQUEST_TIMEOUT_S",
                "soon",
                "must be an integer",
            ),
            (
                "TOMATO_SERVER__REQUEST_TIMEOUT_S",
                "-1",
                "server.request_timeout_s",
            ),
            ("TOMATO_AUTH__DEV_LOGIN", "yes", "must be true or false"),
            (
                "TOMATO_AUTH__ADMIN_EMAILS",
                "not-an-email",
                "auth.admin_emails",
            ),
            ("TOMATO_STORE__BACKEND", "postgres", "store.backend"),
            ("TOMATO_LOG__FORMAT", "xml", "log.format"),
            ("TOMATO_DISPATCH__OFFER_BATCH", "0", "dispatch.offer_batch"),
            ("TOMATO_DISPATCH__MODE", "fastest", "dispatch.mode"),
            (
                "TOMATO_DISPATCH__BATCH_WINDOW_MS",
                "10",
                "dispatch.batch_window_ms",
            ),
            ("TOMATO_DISPATCH__CANDIDATES", "0", "dispatch.candidates"),
            (
                "TOMATO_DISPATCH__MAX_DELIVERY_KM",
                "NaN",
                "dispatch.max_delivery_km",
            ),
            (
                "TOMATO_CLUSTER__REDIS_URL",
                "localhost",
                "cluster.redis_url",
            ),
            (
                "TOMATO_SERVER__CORS_ORIGINS",
                "not a url",
                "server.cors_origins",
            ),
            ("TOMATO_PRICING__CURRENCY", "rupees", "pricing.currency"),
            ("TOMATO_PRICING__PLATFORM_FEE", "-1", "pricing amounts"),
            ("TOMATO_SHARDS__COUNT", "0", "shards.count"),
            ("TOMATO_SHARDS__ARBITERS", "100000", "shards.arbiters"),
            ("TOMATO_SERVER__WORKERS", "5000", "server.workers"),
            (
                "TOMATO_SHARDS__ZONE_RESOLUTION",
                "4",
                "shards.zone_resolution",
            ),
            (
                "TOMATO_SHARDS__ZONE_RESOLUTION",
                "10",
                "shards.zone_resolution",
            ),
            (
                "TOMATO_SHARDS__REGION_RESOLUTION",
                "12",
                "shards.region_resolution",
            ),
            (
                "TOMATO_RIDERS__SNAPSHOT_EVERY_S",
                "0",
                "riders.snapshot_every_s",
            ),
            (
                "TOMATO_ADMIN__TIMEZONE",
                "Mars/Olympus_Mons",
                "admin.timezone",
            ),
            ("TOMATO_OPS__RESOLUTION", "11", "ops.resolution"),
            ("TOMATO_OPS__INTERVAL_MS", "100", "ops.interval_ms"),
            ("TOMATO_OPS__MAX_RIDERS", "0", "ops.max_riders"),
            ("TOMATO_OPS__TILE_URL", "tiles", "ops.tile_url"),
            (
                "TOMATO_PAYMENTS__STRIPE__SUCCESS_URL",
                "nope",
                "payments.stripe.success_url",
            ),
            ("TOMATO_UPLOADS__STORE", "s3", "uploads.s3.bucket"),
            ("TOMATO_UPLOADS__STORE", "ftp", "uploads.store"),
            ("TOMATO_AUTH", "x", ""),
        ];
        for (var, value, expected) in cases {
            match load_env(&[(var, value)]) {
                Err(err) => {
                    let line = err.to_string();
                    assert!(line.contains(expected), "{var}={value}: {line}");
                    assert!(!line.contains('\n'), "one line: {line}");
                }
                // `TOMATO_AUTH` has no `__`, so it is not an override at all.
                Ok(_) => assert!(expected.is_empty(), "{var}={value} should be refused"),
            }
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let settings =
            load_env(&[("TOMATO_INTERNAL__KEY", "super-secret-internal-key")]).expect("load");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("super-secret-internal-key"));
        assert!(!debug.contains("tomato-dev-secret"));
    }
}
