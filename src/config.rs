//! Typed settings, layered from files and environment variables, validated at start.
//!
//! Layers, later ones winning: the built-in copy of `config/default.toml` (or the file
//! itself when present), `config/<GATEHOUSE_ENV>.toml`, the file named by `--config`,
//! then `GATEHOUSE__SECTION__KEY` environment variables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};

use crate::actors::balancer::ServerAddress;

/// The built-in defaults: a copy of `config/default.toml` taken at build time.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment variables that override settings (`GATEHOUSE__SERVER__BIND`).
pub const ENV_PREFIX: &str = "GATEHOUSE__";

/// Every setting of a Gatehouse instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub api: ApiSettings,
    pub database: DatabaseSettings,
    #[serde(rename = "static")]
    pub static_files: StaticSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub auth: AuthSettings,
    /// What answers each request, by host and path prefix, first match winning.
    pub routes: Vec<RouteSettings>,
    /// Named pools of upstream servers that `proxy` routes forward to.
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub proxy: ProxySettings,
    pub cache: CacheSettings,
    pub tls: TlsSettings,
    pub limits: LimitSettings,
    pub mail: MailSettings,
    pub redis: RedisSettings,
    pub maintenance: MaintenanceSettings,
    pub batch: BatchSettings,
    pub realtime: RealtimeSettings,
    pub webhooks: WebhooksSettings,
}

/// `POST /api/batch`: many record writes in one transaction, all or nothing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Off answers 403, as PocketBase does until its settings enable batches.
    pub enabled: bool,
    /// Most requests in one batch.
    pub max_requests: usize,
    /// The whole batch (its password hashing and its transaction) must finish within this.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest batch body (JSON or multipart), in bytes (413 beyond).
    pub max_body_bytes: usize,
}

/// Server-sent events (`/api/realtime`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    /// Messages queued for one client at most before it is disconnected.
    pub client_buffer: usize,
    /// Record changes waiting for the realtime actor at most; one more is dropped and
    /// the clients that could have received it are disconnected.
    pub hub_queue: usize,
    /// A connection with nothing sent for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// Periodic cleanup, run by one instance of a cluster at a time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Sessions expired or revoked longer ago than this are deleted.
    #[serde(with = "humantime_serde")]
    pub session_retention: Duration,
}

/// The Redis server instances of a cluster share; none when `url` is empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: ConnectionUrl,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub public_url: String,
    pub workers: usize,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub request_head_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// Addresses or CIDR ranges whose `X-Forwarded-For`/`Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: ConnectionUrl,
    pub schema: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub auto_migrate: bool,
    pub actors: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSettings {
    pub root: PathBuf,
    pub index: String,
    pub spa_fallback: bool,
    pub precompressed: bool,
    pub cache_control: String,
    pub mounts: Vec<StaticMount>,
}

/// A further folder served under its own URL prefix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMount {
    pub prefix: String,
    pub root: PathBuf,
    #[serde(default)]
    pub cache_control: String,
    #[serde(default)]
    pub spa_fallback: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
}

/// One entry of the route table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// `example.com`, `*.example.com`, or absent for any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// URL path prefix, matched on segment boundaries (`/app` matches `/app` and `/app/x`).
    pub path: String,
    pub handler: RouteHandler,
    /// `static`: the folder to serve (default: the `[static]` site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// `proxy`: the name of an `[upstreams.NAME]` pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `proxy`: remove the route's path prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// `proxy`: keep cacheable GET/HEAD responses in the response cache.
    #[serde(default)]
    pub cache: bool,
    /// `redirect`: the target; `{uri}` stands for the request's path and query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `redirect`: 301, 302, 303, 307 or 308 (default 308).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Largest request body on this route (default `limits.max_body_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

/// What a route does with the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteHandler {
    Static,
    Proxy,
    Api,
    Redirect,
}

/// A pool of upstream servers and how to balance and watch them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub servers: Vec<UpstreamServer>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub health_check: HealthCheckSettings,
    /// Consecutive failed requests that take a server out of rotation (0 = never).
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a server stays out after `max_fails`.
    #[serde(default = "default_fail_timeout", with = "humantime_serde")]
    pub fail_timeout: Duration,
    /// Attempts per request, each on another server (1 = no retries).
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// No retry starts after this much time since the first attempt.
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// PEM certificates trusted for `https://` servers besides the webpki roots
    /// (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name `https://` servers' certificates are checked against and sent as SNI,
    /// instead of each server's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

fn default_max_fails() -> u32 {
    3
}

fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_tries() -> u32 {
    3
}

fn default_retry_timeout() -> Duration {
    Duration::from_secs(10)
}

/// One pool member: `http://host:port`, `https://host:port` or an in-process backend
/// worker `backend://N`, and its weight.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How a pool picks the server for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    Weighted,
    LeastConnections,
    IpHash,
    RandomTwoChoices,
}

/// Active health checks: `GET path` on every server each `interval`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckSettings {
    /// Path to probe; empty disables active checks.
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passing probes that bring a server back.
    pub healthy_threshold: u32,
    /// Consecutive failing probes that take a server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Timeouts of the upstream client, shared by every pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the response head, and between two chunks of the response body.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
}

/// The in-memory response cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Memory for cached responses (headers and bodies), in bytes.
    pub max_bytes: u64,
    /// Larger responses are passed through without being stored.
    pub max_object_bytes: usize,
    /// Memory for hot static files, in bytes (0 = read every file from disk).
    pub static_max_bytes: u64,
    /// Static files up to this size are kept in memory.
    pub static_max_file_bytes: u64,
    /// The shared tier in Redis behind the memory (used when `redis.url` is set).
    pub redis: CacheRedisSettings,
    /// Collections whose public record lists and views are cached, by name.
    #[serde(default)]
    pub collections: BTreeMap<String, CollectionCacheSettings>,
}

/// The response cache's Redis tier, shared by the instances of a cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRedisSettings {
    pub enabled: bool,
    /// No entry stays in Redis longer than this, whatever its freshness.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Larger responses stay in memory only.
    pub max_entry_bytes: usize,
}

/// How a collection's public record answers are cached.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionCacheSettings {
    /// How long an answer is served without asking the database (writes drop it sooner).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

/// HTTPS listener and certificates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// One entry per certificate: `{ hosts = ["example.com"], cert = "x.pem", key = "x.key" }`.
    /// The first is used for clients that send no (or an unknown) server name.
    pub certificates: Vec<CertificateSettings>,
    /// Answer plain HTTP requests with a redirect to HTTPS.
    pub redirect_http: bool,
    /// `Strict-Transport-Security` value for HTTPS responses; empty sends none.
    pub hsts: String,
    /// `"1.2"` or `"1.3"`.
    pub min_version: String,
}

/// A certificate chain and key (PEM files) and the host names it serves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSettings {
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Request size and time limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Total size of request header names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body of proxy routes unless the route sets its own (413 beyond).
    pub max_body_bytes: usize,
    /// Longest pause while a client sends a request body (408 beyond).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub token_secret: Secret,
    pub secret_file: PathBuf,
    pub unverified_login: UnverifiedLogin,
    pub verify_email_on_register: bool,
    #[serde(with = "humantime_serde")]
    pub session_cache_ttl: Duration,
    pub session_cache_capacity: u64,
    pub actors: usize,
    pub password_hash: PasswordHashSettings,
    pub cookie: CookieSettings,
    pub rate_limits: AuthRateLimits,
    pub oauth2: OAuth2Settings,
    pub links: AuthLinks,
}

/// Where the links in account mails lead; `{token}` is replaced by the token. A path
/// is taken relative to `server.public_url`; a full URL (a front end of your own) is
/// used as it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthLinks {
    pub verification: String,
    pub password_reset: String,
    pub email_change: String,
}

/// Whether an account whose email is not verified may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnverifiedLogin {
    Allow,
    Deny,
}

/// argon2id cost parameters and the size of the hashing thread pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordHashSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSettings {
    pub enabled: bool,
    pub name: String,
    pub trusted_origins: Vec<String>,
}

/// Token buckets: `requests` per `per`, refilled steadily; 0 requests disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRateLimits {
    pub login_per_ip: RateLimit,
    pub login_per_account: RateLimit,
    pub register_per_ip: RateLimit,
    pub request_per_ip: RateLimit,
    pub request_per_account: RateLimit,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Settings {
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, OAuth2Provider>,
}

/// One OAuth2 provider; `kind` presets fill in URLs and field names left empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Provider {
    pub kind: OAuth2Kind,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub auth_url: String,
    #[serde(default)]
    pub token_url: String,
    #[serde(default)]
    pub userinfo_url: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub id_field: String,
    #[serde(default)]
    pub email_field: String,
    #[serde(default)]
    pub name_field: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OAuth2Kind {
    Generic,
    Github,
    Google,
    Gitlab,
}

/// Outbound webhooks (delivery, retries, SSRF allow-list, endpoints declared here) and
/// inbound signed hooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// How often the webhook actor looks for due deliveries without being woken.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Due deliveries claimed per round, and posted at the same time.
    pub batch_size: u32,
    pub concurrency: usize,
    /// How long a claim holds a delivery before another instance may take it over.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for one whole attempt (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// An endpoint whose every delivery failed for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// The longest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// How much of each answer's body the attempt log keeps.
    pub response_excerpt_bytes: usize,
    /// Host names, addresses or CIDR networks admitted although they are loopback,
    /// private, link-local or otherwise not public.
    pub allow: Vec<String>,
    pub retry: RetrySettings,
    /// Endpoints declared here rather than through the admin API.
    pub endpoints: Vec<WebhookEndpointSettings>,
    pub inbound: InboundSettings,
}

/// An endpoint declared in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointSettings {
    /// Unique among the declared endpoints.
    pub name: String,
    pub url: String,
    /// `*`, event types (`user.registered`), or `record.created:posts`.
    pub events: Vec<String>,
    /// `whsec_<base64 key>`.
    pub secret: Secret,
    #[serde(default)]
    pub description: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Inbound signed hooks, `POST /api/hooks/{name}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSettings {
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// How far a Standard Webhooks timestamp may be from now.
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    pub hooks: Vec<InboundHookSettings>,
}

/// One external service that may call `POST /api/hooks/{name}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundHookSettings {
    pub name: String,
    pub scheme: InboundScheme,
    /// `whsec_<base64 key>` for `standard`; the shared secret as it is for `github`.
    pub secret: Secret,
    /// The collection each event creates a record in.
    pub collection: String,
    /// JSON pointer to the object in the payload that becomes the record (e.g. `/data`);
    /// empty for the whole payload.
    #[serde(default)]
    pub data_pointer: String,
}

/// How an inbound hook is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// GitHub: `X-Hub-Signature-256`, the event id in `X-GitHub-Delivery`.
    Github,
}

/// Outgoing mail: transport, sender, delivery and retry policy, templates, newsletters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    pub transport: MailTransportKind,
    pub from: String,
    /// The product name templates show (`app_name`).
    pub app_name: String,
    /// Folder of operator templates; a file missing there falls back to the built-in one.
    pub templates_dir: PathBuf,
    /// Mails sent at the same time.
    pub concurrency: usize,
    /// Due mails claimed per round; the claim's lease must outlast sending them all.
    pub batch_size: u32,
    /// How often the mailer looks for due mails without being woken.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claim holds a mail before another sender may take it over.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    pub retry: RetrySettings,
    pub file: MailFileSettings,
    pub smtp: SmtpSettings,
    pub newsletter: NewsletterSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransportKind {
    Smtp,
    File,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts before a transiently failing mail is marked `failed`.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailFileSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// PEM file of CA certificates trusted for the server besides the built-in
    /// (Mozilla) roots, e.g. a company CA; empty for the built-in roots only.
    pub ca_file: PathBuf,
    pub username: String,
    pub password: Secret,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open to the server.
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text; only for a relay on the same host or network.
    None,
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewsletterSettings {
    /// How long a confirmation link works.
    #[serde(with = "humantime_serde")]
    pub confirm_ttl: Duration,
    /// A pending subscriber who subscribes again gets a new confirmation mail only after
    /// this long, so the endpoint cannot be used to flood someone's inbox.
    #[serde(with = "humantime_serde")]
    pub resend_after: Duration,
    /// How long a campaign's `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
}

/// A secret setting: never shown by `Debug`, redacted by `gatehouse config`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// A database or Redis URL; its password never appears in `Debug` output or in
/// `gatehouse config`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.starts_with("sqlite:")
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }

    /// The file of a SQLite URL (`sqlite://data/x.db?mode=rwc` → `data/x.db`), if any.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.0.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("redacted"));
                parsed.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for ConnectionUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Where settings come from: the environment name, the config folder and an extra file.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    pub env: String,
    pub dir: PathBuf,
    pub file: Option<PathBuf>,
}

impl ConfigSources {
    /// `GATEHOUSE_ENV` (default `development`) and the `config/` folder of the working
    /// directory (or `GATEHOUSE_CONFIG_DIR`).
    pub fn from_env(file: Option<PathBuf>) -> Self {
        Self {
            env: std::env::var("GATEHOUSE_ENV").unwrap_or_else(|_| "development".into()),
            dir: std::env::var_os("GATEHOUSE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            file,
        }
    }
}

/// Settings that could not be loaded; the message names the source, the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Settings together with the layers they were read from, for `gatehouse config`.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    pub settings: Settings,
    pub layers: Vec<String>,
}

impl Settings {
    /// Loads and validates settings from every layer.
    pub fn load(sources: &ConfigSources) -> Result<LoadedSettings, ConfigError> {
        let mut layers = Vec::new();
        let default_file = sources.dir.join("default.toml");
        let mut figment = if default_file.is_file() {
            layers.push(default_file.display().to_string());
            Figment::from(Toml::file_exact(&default_file))
        } else {
            layers.push("built-in defaults".to_string());
            Figment::from(Toml::string(DEFAULT_TOML))
        };
        let env_file = sources.dir.join(format!("{}.toml", sources.env));
        if env_file.is_file() {
            layers.push(env_file.display().to_string());
            figment = figment.merge(Toml::file_exact(&env_file));
        } else if !matches!(sources.env.as_str(), "development" | "test" | "production") {
            return Err(ConfigError(format!(
                "GATEHOUSE_ENV={}: no such config file {}",
                sources.env,
                env_file.display()
            )));
        }
        if let Some(file) = &sources.file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "{}: --config file does not exist",
                    file.display()
                )));
            }
            layers.push(file.display().to_string());
            figment = figment.merge(Toml::file_exact(file));
        }
        if std::env::vars().any(|(key, _)| key.starts_with(ENV_PREFIX)) {
            layers.push(format!("{ENV_PREFIX}* environment variables"));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let settings: Settings = figment
            .extract()
            .map_err(|err| describe_figment_error(&figment, err))?;
        settings.validate()?;
        Ok(LoadedSettings { settings, layers })
    }

    /// Settings from the built-in defaults only, for tests and tools.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("built-in defaults are valid")
    }

    /// Checks that serde's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !url.is_sqlite() && !url.is_postgres() {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.schema.is_empty()
            || !self
                .database
                .schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                "database.schema",
                "must be a plain identifier ([A-Za-z0-9_])",
            ));
        }
        if let Err(reason) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", &reason.to_string()));
        }
        if self.static_files.index.contains('/') {
            return Err(invalid("static.index", "must be a file name, not a path"));
        }
        for (i, mount) in self.static_files.mounts.iter().enumerate() {
            if !mount.prefix.starts_with('/') || mount.prefix.len() < 2 {
                return Err(invalid(
                    &format!("static.mounts[{i}].prefix"),
                    "must start with / and name a folder, like /assets",
                ));
            }
            if mount.prefix == "/api" || mount.prefix.starts_with("/api/") {
                return Err(invalid(
                    &format!("static.mounts[{i}].prefix"),
                    "/api is reserved for the API",
                ));
            }
        }
        self.trusted_proxy_ranges()?;
        crate::routing::RouteTable::validate(self)?;
        for (name, pool) in &self.upstreams {
            if pool.servers.is_empty() {
                return Err(invalid(
                    &format!("upstreams.{name}.servers"),
                    "needs at least one server",
                ));
            }
            let mut workers = BTreeSet::new();
            for (i, server) in pool.servers.iter().enumerate() {
                let key = format!("upstreams.{name}.servers[{i}].url");
                match ServerAddress::parse(&server.url) {
                    Err(reason) => return Err(invalid(&key, &reason)),
                    Ok(ServerAddress::Worker(number)) if !workers.insert(number) => {
                        return Err(invalid(
                            &key,
                            &format!(
                                "backend://{number} is already a member of this pool (give it a weight instead)"
                            ),
                        ));
                    }
                    Ok(_) => {}
                }
                if server.weight == 0 {
                    return Err(invalid(
                        &format!("upstreams.{name}.servers[{i}].weight"),
                        "must be at least 1",
                    ));
                }
            }
            if pool.tries == 0 {
                return Err(invalid(
                    &format!("upstreams.{name}.tries"),
                    "must be at least 1",
                ));
            }
            let check = &pool.health_check;
            if !check.path.is_empty() {
                if !check.path.starts_with('/') {
                    return Err(invalid(
                        &format!("upstreams.{name}.health_check.path"),
                        "must start with /",
                    ));
                }
                if check.interval.is_zero()
                    || check.healthy_threshold == 0
                    || check.unhealthy_threshold == 0
                {
                    return Err(invalid(
                        &format!("upstreams.{name}.health_check"),
                        "interval and thresholds must be above zero",
                    ));
                }
            }
        }
        if self.tls.enabled && self.tls.certificates.is_empty() {
            return Err(invalid(
                "tls.certificates",
                "TLS is enabled but no certificate is configured",
            ));
        }
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            return Err(invalid("tls.min_version", "must be \"1.2\" or \"1.3\""));
        }
        if !self.tls.hsts.is_empty()
            && actix_web::http::header::HeaderValue::from_str(&self.tls.hsts).is_err()
        {
            return Err(invalid("tls.hsts", "is not a valid header value"));
        }
        if url::Url::parse(&self.server.public_url)
            .map_or(true, |url| !matches!(url.scheme(), "http" | "https"))
        {
            return Err(invalid(
                "server.public_url",
                "must be an http:// or https:// URL, like https://example.com",
            ));
        }
        for origin in &self.auth.cookie.trusted_origins {
            let canonical = url::Url::parse(origin).map(|url| url.origin().ascii_serialization());
            if canonical.as_deref() != Ok(origin.as_str()) {
                return Err(invalid(
                    "auth.cookie.trusted_origins",
                    &format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        for (name, provider) in &self.auth.oauth2.providers {
            if provider.client_id.is_empty() {
                return Err(invalid(
                    &format!("auth.oauth2.providers.{name}.client_id"),
                    "must not be empty",
                ));
            }
            if provider.kind == OAuth2Kind::Generic
                && [
                    &provider.auth_url,
                    &provider.token_url,
                    &provider.userinfo_url,
                ]
                .iter()
                .any(|url| url.is_empty())
            {
                return Err(invalid(
                    &format!("auth.oauth2.providers.{name}"),
                    "a generic provider needs auth_url, token_url and userinfo_url",
                ));
            }
        }
        for (key, link) in [
            ("auth.links.verification", &self.auth.links.verification),
            ("auth.links.password_reset", &self.auth.links.password_reset),
            ("auth.links.email_change", &self.auth.links.email_change),
        ] {
            let shaped = link.starts_with('/')
                || link.starts_with("http://")
                || link.starts_with("https://");
            if !shaped || !link.contains("{token}") {
                return Err(invalid(
                    key,
                    "must be a path or an http(s) URL containing {token}",
                ));
            }
        }
        if self.auth.password_hash.memory_kib < 8 * self.auth.password_hash.parallelism.max(1)
            || self.auth.password_hash.iterations == 0
            || self.auth.password_hash.parallelism == 0
        {
            return Err(invalid(
                "auth.password_hash",
                "needs iterations >= 1, parallelism >= 1 and memory_kib >= 8 * parallelism",
            ));
        }
        let redis = &self.redis.url;
        if !redis.is_empty()
            && !redis.expose().starts_with("redis://")
            && !redis.expose().starts_with("rediss://")
        {
            return Err(invalid(
                "redis.url",
                "must be empty or start with redis:// or rediss://",
            ));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis.key_prefix", "must be a non-empty word"));
        }
        if self.realtime.client_buffer == 0 {
            return Err(invalid("realtime.client_buffer", "must be at least 1"));
        }
        if self.realtime.hub_queue == 0 {
            return Err(invalid("realtime.hub_queue", "must be at least 1"));
        }
        if self.realtime.idle_timeout.is_zero() {
            return Err(invalid("realtime.idle_timeout", "must be above zero"));
        }
        if self.cache.redis.max_ttl.is_zero() {
            return Err(invalid("cache.redis.max_ttl", "must be longer than 0s"));
        }
        for (name, collection) in &self.cache.collections {
            if collection.ttl.is_zero() {
                return Err(invalid(
                    &format!("cache.collections.{name}.ttl"),
                    "must be longer than 0s",
                ));
            }
        }
        for origin in &self.api.cors_origins {
            let canonical = url::Url::parse(origin).map(|url| url.origin().ascii_serialization());
            if origin != "*" && canonical.as_deref() != Ok(origin.as_str()) {
                return Err(invalid(
                    "api.cors_origins",
                    &format!("{origin:?} is not \"*\" or an origin like https://example.com"),
                ));
            }
        }
        self.validate_mail()?;
        self.validate_webhooks()
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let hooks = &self.webhooks;
        if hooks.concurrency == 0 {
            return Err(invalid("webhooks.concurrency", "must be at least 1"));
        }
        if hooks.batch_size == 0 {
            return Err(invalid("webhooks.batch_size", "must be at least 1"));
        }
        if hooks.retry.max_attempts == 0 {
            return Err(invalid("webhooks.retry.max_attempts", "must be at least 1"));
        }
        if hooks.retry.initial_delay > hooks.retry.max_delay {
            return Err(invalid(
                "webhooks.retry.initial_delay",
                "must not exceed webhooks.retry.max_delay",
            ));
        }
        // A claim must not expire while its batch is still being posted.
        let concurrency = u32::try_from(hooks.concurrency).unwrap_or(u32::MAX);
        let needed = hooks
            .timeout
            .saturating_mul(hooks.batch_size.div_ceil(concurrency));
        if hooks.lease <= needed {
            return Err(invalid(
                "webhooks.lease",
                &format!(
                    "must be longer than webhooks.timeout × batch_size / concurrency ({needed:?})"
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, endpoint) in hooks.endpoints.iter().enumerate() {
            let key = |field: &str| format!("webhooks.endpoints[{i}].{field}");
            if endpoint.name.is_empty() || !names.insert(endpoint.name.as_str()) {
                return Err(invalid(&key("name"), "must be set and unique"));
            }
            crate::webhooks::endpoints::parse_url(&endpoint.url)
                .map_err(|reason| invalid(&key("url"), &reason))?;
            crate::webhooks::endpoints::parse_events(&endpoint.events)
                .map_err(|reason| invalid(&key("events"), &reason))?;
            crate::webhooks::signing::secret_key(endpoint.secret.expose())
                .map_err(|reason| invalid(&key("secret"), &reason))?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, hook) in hooks.inbound.hooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks.inbound.hooks[{i}].{field}");
            let url_safe = !hook.name.is_empty()
                && hook
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !url_safe || !names.insert(hook.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    "must be unique, of letters, digits, - and _",
                ));
            }
            match hook.scheme {
                InboundScheme::Standard => {
                    crate::webhooks::signing::secret_key(hook.secret.expose())
                        .map_err(|reason| invalid(&key("secret"), &reason))?;
                }
                InboundScheme::Github if hook.secret.is_empty() => {
                    return Err(invalid(&key("secret"), "must be set"));
                }
                InboundScheme::Github => {}
            }
            if hook.collection.is_empty() {
                return Err(invalid(&key("collection"), "must name a collection"));
            }
            if !hook.data_pointer.is_empty() && !hook.data_pointer.starts_with('/') {
                return Err(invalid(
                    &key("data_pointer"),
                    "must be empty or a JSON pointer starting with /",
                ));
            }
        }
        Ok(())
    }

    fn validate_mail(&self) -> Result<(), ConfigError> {
        let mail = &self.mail;
        if let Err(err) = mail.from.parse::<lettre::message::Mailbox>() {
            return Err(invalid(
                "mail.from",
                &format!("{:?} is not a mail address: {err}", mail.from),
            ));
        }
        if mail.concurrency == 0 {
            return Err(invalid("mail.concurrency", "must be at least 1"));
        }
        if mail.batch_size == 0 {
            return Err(invalid("mail.batch_size", "must be at least 1"));
        }
        if mail.retry.max_attempts == 0 {
            return Err(invalid("mail.retry.max_attempts", "must be at least 1"));
        }
        if mail.retry.initial_delay > mail.retry.max_delay {
            return Err(invalid(
                "mail.retry.initial_delay",
                "must not exceed mail.retry.max_delay",
            ));
        }
        if mail.transport == MailTransportKind::Smtp {
            if mail.smtp.host.is_empty() {
                return Err(invalid(
                    "mail.smtp.host",
                    "must be set for the smtp transport",
                ));
            }
            if mail.smtp.password.is_empty() != mail.smtp.username.is_empty() {
                return Err(invalid(
                    "mail.smtp.username",
                    "username and password are set together or not at all",
                ));
            }
            if mail.smtp.pool_size == 0 {
                return Err(invalid("mail.smtp.pool_size", "must be at least 1"));
            }
            if !mail.smtp.ca_file.as_os_str().is_empty() {
                crate::mail::transport::trusted_certificates(&mail.smtp.ca_file)
                    .map_err(|reason| invalid("mail.smtp.ca_file", &reason))?;
            }
            // A claim must not expire while its batch is still being sent, or another
            // sender would take over mails that are about to be delivered.
            let concurrency = u32::try_from(mail.concurrency).unwrap_or(u32::MAX);
            let needed = mail
                .smtp
                .timeout
                .saturating_mul(mail.batch_size.div_ceil(concurrency));
            if mail.lease <= needed {
                return Err(invalid(
                    "mail.lease",
                    &format!(
                        "must be longer than mail.smtp.timeout × batch_size / concurrency ({needed:?})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective settings as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("settings serialize to TOML")
    }

    /// The in-process backend workers the pools name (`backend://N`), by number; each
    /// is started once however many pools name it.
    pub fn backend_workers(&self) -> BTreeSet<u16> {
        self.upstreams
            .values()
            .flat_map(|pool| &pool.servers)
            .filter_map(|server| match ServerAddress::parse(&server.url) {
                Ok(ServerAddress::Worker(number)) => Some(number),
                _ => None,
            })
            .collect()
    }

    /// HTTP worker threads, resolving 0 to the number of cores.
    pub fn http_workers(&self) -> usize {
        resolve_count(self.server.workers)
    }

    /// `server.trusted_proxies` as address ranges; a bare address is a range of one.
    pub fn trusted_proxy_ranges(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "server.trusted_proxies",
                            &format!("{entry:?} is not an IP address or CIDR range"),
                        )
                    })
            })
            .collect()
    }

    /// Password hashing threads, resolving 0 to the number of cores.
    pub fn password_hash_workers(&self) -> usize {
        resolve_count(self.auth.password_hash.workers)
    }

    /// Auth actor instances, resolving 0 to the number of cores.
    pub fn auth_actors(&self) -> usize {
        resolve_count(self.auth.actors)
    }

    /// Database actor instances, resolving 0 to the number of cores.
    pub fn database_actors(&self) -> usize {
        resolve_count(self.database.actors)
    }
}

fn resolve_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// A configuration error about `key`.
pub fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError(format!("invalid config: key `{key}`: {reason}"))
}

/// Turns figment's error into "SOURCE: key `a.b`: reason", naming the file or the
/// environment variable that holds the offending key.
fn describe_figment_error(figment: &Figment, error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|err| {
            let mut path = err.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &err.kind {
                path.push(field.clone());
            }
            let key = path.join(".");
            let metadata = figment.find_metadata(&key).or(err.metadata.as_ref());
            let source =
                metadata.map_or_else(|| "config".to_string(), |meta| describe_source(meta, &path));
            format!("invalid config: {source}: key `{key}`: {}", err.kind)
        })
        .collect();
    ConfigError(lines.join("\n"))
}

fn describe_source(meta: &Metadata, path: &[String]) -> String {
    match &meta.source {
        Some(Source::File(file)) => file.display().to_string(),
        Some(Source::Code(_)) => "built-in defaults".to_string(),
        _ if meta.name.contains("environment") => format!(
            "environment variable {ENV_PREFIX}{}",
            path.join("__").to_uppercase()
        ),
        _ => meta.name.to_string(),
    }
}

/// A SQLite URL for a database file, created when missing.
pub fn sqlite_url_for(path: &Path) -> ConnectionUrl {
    ConnectionUrl::new(format!("sqlite://{}?mode=rwc", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_match_the_documented_keys() {
        let settings = Settings::defaults();
        assert_eq!(settings.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.static_files.root, PathBuf::from("public"));
        assert_eq!(settings.log.format, LogFormat::Pretty);
        assert_eq!(
            settings.database.url.sqlite_path(),
            Some(PathBuf::from("data/gatehouse.db"))
        );
        settings.validate().unwrap();
    }

    #[test]
    fn database_password_is_redacted_everywhere_it_could_be_printed() {
        let url = ConnectionUrl::new("postgres://app:s3cret@db.internal:5432/app");
        assert!(!format!("{url:?}").contains("s3cret"));
        let mut settings = Settings::defaults();
        settings.database.url = url.clone();
        assert!(!settings.to_redacted_toml().contains("s3cret"));
        assert!(settings.to_redacted_toml().contains("db.internal"));
        assert_eq!(url.expose(), "postgres://app:s3cret@db.internal:5432/app");
    }

    #[test]
    fn smtp_password_is_redacted_everywhere_it_could_be_printed() {
        let mut settings = Settings::defaults();
        settings.mail.smtp.username = "mailer".into();
        settings.mail.smtp.password = Secret::new("p4ssw0rd");
        assert!(!format!("{settings:?}").contains("p4ssw0rd"));
        let toml = settings.to_redacted_toml();
        assert!(!toml.contains("p4ssw0rd"), "{toml}");
        assert!(toml.contains("password = \"[redacted]\""), "{toml}");
        assert_eq!(settings.mail.smtp.password.expose(), "p4ssw0rd");
    }

    #[test]
    fn webhook_settings_are_checked_and_secrets_redacted() {
        let endpoint = WebhookEndpointSettings {
            name: "crm".into(),
            url: "https://crm.example.com/hooks".into(),
            events: vec!["record.created:orders".into()],
            secret: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            description: String::new(),
            enabled: true,
        };
        let mut settings = Settings::defaults();
        settings.webhooks.endpoints = vec![endpoint.clone()];
        settings.validate().unwrap();
        let toml = settings.to_redacted_toml();
        assert!(!toml.contains("MfKQ9r8G"), "{toml}");

        let broken = |change: &dyn Fn(&mut WebhookEndpointSettings)| {
            let mut settings = Settings::defaults();
            let mut endpoint = endpoint.clone();
            change(&mut endpoint);
            settings.webhooks.endpoints = vec![endpoint];
            settings.validate().unwrap_err().0
        };
        assert!(broken(&|e| e.url = "ftp://x".into()).contains("endpoints[0].url"));
        assert!(broken(&|e| e.events = vec!["nope".into()]).contains("endpoints[0].events"));
        assert!(broken(&|e| e.secret = Secret::new("plain")).contains("endpoints[0].secret"));

        let mut settings = Settings::defaults();
        settings.webhooks.inbound.hooks = vec![InboundHookSettings {
            name: "bad name".into(),
            scheme: InboundScheme::Github,
            secret: Secret::new("s"),
            collection: "c".into(),
            data_pointer: String::new(),
        }];
        assert!(settings.validate().unwrap_err().0.contains("hooks[0].name"));
        let mut settings = Settings::defaults();
        settings.webhooks.timeout = Duration::from_secs(3600);
        assert!(settings
            .validate()
            .unwrap_err()
            .0
            .contains("webhooks.lease"));
    }

    #[test]
    fn mail_settings_are_checked() {
        let mut settings = Settings::defaults();
        assert_eq!(settings.mail.transport, MailTransportKind::File);
        settings.mail.from = "not an address".into();
        assert!(settings.validate().unwrap_err().0.contains("mail.from"));

        let mut settings = Settings::defaults();
        settings.mail.transport = MailTransportKind::Smtp;
        settings.mail.smtp.username = "only-a-name".into();
        assert!(settings
            .validate()
            .unwrap_err()
            .0
            .contains("mail.smtp.username"));

        let mut settings = Settings::defaults();
        settings.mail.transport = MailTransportKind::Smtp;
        settings.mail.lease = Duration::from_secs(1);
        assert!(settings.validate().unwrap_err().0.contains("mail.lease"));
    }

    #[test]
    fn an_smtp_ca_file_must_hold_a_usable_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let check = |contents: Option<&str>| {
            let path = dir.path().join("ca.pem");
            match contents {
                Some(contents) => std::fs::write(&path, contents).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let mut settings = Settings::defaults();
            settings.mail.transport = MailTransportKind::Smtp;
            settings.mail.smtp.ca_file = path;
            settings.validate().map_err(|err| err.0)
        };
        let missing = check(None).unwrap_err();
        assert!(missing.contains("mail.smtp.ca_file"), "{missing}");
        assert!(missing.contains("cannot read"), "{missing}");

        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let no_certificate = check(Some(&key_only)).unwrap_err();
        assert!(
            no_certificate.contains("no PEM certificate"),
            "{no_certificate}"
        );

        let garbage = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let unusable = check(Some(garbage)).unwrap_err();
        assert!(
            unusable.contains("not a usable CA certificate"),
            "{unusable}"
        );

        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        check(Some(&ca.pem())).unwrap();
    }

    #[test]
    fn sqlite_paths_are_read_from_urls() {
        let path = |url: &str| ConnectionUrl::new(url).sqlite_path();
        assert_eq!(
            path("sqlite://a/b.db?mode=rwc"),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(path("sqlite:///abs/b.db"), Some(PathBuf::from("/abs/b.db")));
        assert_eq!(path("sqlite::memory:"), None);
        assert_eq!(path("postgres://x@y/z"), None);
    }
}
