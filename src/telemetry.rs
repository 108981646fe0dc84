//! Logging (tracing) and the Prometheus metrics registry of one Gatehouse instance.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global tracing subscriber once; later calls are ignored.
pub fn init_tracing(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The metrics of one instance. Each instance has its own registry, so several
/// instances in one process (the test suite) do not mix their counts.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub actor_restarts: IntCounterVec,
    pub maintenance_runs: prometheus::IntCounter,
    /// Open realtime (SSE) streams.
    pub realtime_clients: prometheus::IntGauge,
    /// Realtime clients disconnected for falling behind.
    pub realtime_dropped: prometheus::IntCounter,
    /// Record changes dropped because the realtime queue was full.
    pub realtime_events_dropped: prometheus::IntCounter,
    /// Proxied requests by upstream pool and the status the upstream answered
    /// (`error` when none answered).
    pub proxy_requests: IntCounterVec,
    /// Time from sending a request to an upstream server to its response head.
    pub proxy_upstream_duration: HistogramVec,
    /// Attempts sent to another server after one failed.
    pub proxy_retries: IntCounterVec,
    /// Answers of caching routes by `X-Cache` result and the tier that held the copy.
    pub cache_responses: IntCounterVec,
    /// Lookups per tier: `hit`, `miss`, `garbled` (unreadable value), `error` (tier down).
    pub cache_lookups: IntCounterVec,
    /// Bytes and entries held in memory (updated by the cache's housekeeping).
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    /// Entries evicted from memory to stay within `cache.max_bytes`.
    pub cache_evictions: IntCounter,
    /// Purges other instances announced on the cluster bus.
    pub cache_invalidations_received: IntCounter,
    pub webhook_attempts: IntCounterVec,
    /// Argon2id runs of the password hasher, by operation (`hash`, `verify`).
    pub password_hashing: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("gatehouse".into()), None).expect("valid metrics prefix");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request head to response head, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let actor_restarts = IntCounterVec::new(
            Opts::new("actor_restarts_total", "Actor restarts by their supervisor"),
            &["actor"],
        )
        .expect("valid metric");
        let maintenance_runs = prometheus::IntCounter::new(
            "maintenance_runs_total",
            "Cleanup rounds this instance ran",
        )
        .expect("valid metric");
        let realtime_clients =
            prometheus::IntGauge::new("realtime_clients", "Open realtime (SSE) streams")
                .expect("valid metric");
        let realtime_dropped = prometheus::IntCounter::new(
            "realtime_dropped_total",
            "Realtime clients disconnected because their queue was full",
        )
        .expect("valid metric");
        let realtime_events_dropped = prometheus::IntCounter::new(
            "realtime_events_dropped_total",
            "Record changes dropped because the realtime queue was full",
        )
        .expect("valid metric");
        let proxy_requests = IntCounterVec::new(
            Opts::new(
                "proxy_requests_total",
                "Proxied requests by upstream pool and upstream status",
            ),
            &["upstream", "status"],
        )
        .expect("valid metric");
        let proxy_upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "proxy_upstream_duration_seconds",
                "Time from sending to an upstream server to its response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["upstream"],
        )
        .expect("valid metric");
        let proxy_retries = IntCounterVec::new(
            Opts::new(
                "proxy_retries_total",
                "Requests sent again to another server of the pool",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let cache_responses = IntCounterVec::new(
            Opts::new(
                "cache_responses_total",
                "Answers of caching routes by X-Cache result and tier",
            ),
            &["result", "tier"],
        )
        .expect("valid metric");
        let cache_lookups = IntCounterVec::new(
            Opts::new("cache_lookups_total", "Cache lookups by tier and outcome"),
            &["tier", "outcome"],
        )
        .expect("valid metric");
        let cache_bytes =
            IntGauge::new("cache_bytes", "Bytes of cached responses in memory").expect("valid");
        let cache_entries =
            IntGauge::new("cache_entries", "Cached responses in memory").expect("valid metric");
        let cache_evictions = IntCounter::new(
            "cache_evictions_total",
            "Responses evicted from memory by the byte bound",
        )
        .expect("valid metric");
        let cache_invalidations_received = IntCounter::new(
            "cache_invalidations_received_total",
            "Cache purges announced by other instances",
        )
        .expect("valid metric");
        let webhook_attempts = IntCounterVec::new(
            Opts::new(
                "webhook_attempts_total",
                "Webhook delivery attempts by outcome (delivered, retrying, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let password_hashing = IntCounterVec::new(
            Opts::new(
                "password_hashing_total",
                "Argon2id runs of the password hasher by operation (hash, verify)",
            ),
            &["operation"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(actor_restarts.clone()),
            Box::new(maintenance_runs.clone()),
            Box::new(realtime_clients.clone()),
            Box::new(realtime_dropped.clone()),
            Box::new(realtime_events_dropped.clone()),
            Box::new(proxy_requests.clone()),
            Box::new(proxy_upstream_duration.clone()),
            Box::new(proxy_retries.clone()),
            Box::new(cache_responses.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_evictions.clone()),
            Box::new(cache_invalidations_received.clone()),
            Box::new(webhook_attempts.clone()),
            Box::new(password_hashing.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            actor_restarts,
            maintenance_runs,
            realtime_clients,
            realtime_dropped,
            realtime_events_dropped,
            proxy_requests,
            proxy_upstream_duration,
            proxy_retries,
            cache_responses,
            cache_lookups,
            cache_bytes,
            cache_entries,
            cache_evictions,
            cache_invalidations_received,
            webhook_attempts,
            password_hashing,
        }
    }

    /// All metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
