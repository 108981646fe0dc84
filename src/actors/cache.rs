//! The response cache: a concurrent, byte-bounded store (moka) that HTTP workers read
//! and fill directly, and the cache actor that maintains it (purges, housekeeping).
//!
//! Lookups never pass through the actor's mailbox: every worker holds a clone of
//! [`ResponseCache`] (shared internals) and reads it lock-free. The actor handles the
//! rare, whole-cache operations — purge by key or prefix, periodic eviction work —
//! so they run on one thread away from request handling.
//!
//! In a cluster a Redis tier sits behind the memory ([`RedisTier`]): a memory miss
//! looks there and a hit fills memory; stores go to both. Purges delete in both and are
//! announced on the cluster bus so that every instance drops its memory copy. Redis
//! trouble only costs hits: lookups fall back to memory, never to errors.
//!
//! Concurrent misses of one key are coalesced: the first becomes the leader and fetches;
//! the others wait for it ([`ResponseCache::begin_fetch`]) and then read the cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, Addr, Arbiter, AsyncContext, Context, Handler, Message, ResponseFuture,
    Supervised, Supervisor,
};
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::http::StatusCode;
use bytes::Bytes;
use foldhash::fast::RandomState;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Equivalent;
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::supervisor::Crashed;
use crate::cache_policy::StoragePolicy;
use crate::cluster::bus::{BusMessage, ClusterBus};
use crate::cluster::cache_tier::{RedisTier, TierError};
use crate::telemetry::Metrics;

const NAME: &str = "cache";

/// How often the actor lets moka finish pending evictions and expirations.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Where a cached response lives: host, path with query, and — for responses with
/// `Vary` — the values of the request headers it varies on. Lookups use a
/// `CacheKey<&str>`, borrowing the request's: a hit copies nothing into a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey<S = Arc<str>> {
    host: S,
    path: S,
    variant: S,
}

impl CacheKey {
    /// The key of a URL, before any `Vary` is known.
    pub fn primary(host: &str, path_and_query: &str) -> Self {
        CacheKey::lookup(host, path_and_query).stored()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path with its query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request header values that select this variant; empty for a primary key.
    pub fn variant_id(&self) -> &str {
        &self.variant
    }

    /// The key of the variant that `request` selects among responses varying on `names`.
    pub fn variant(&self, names: &[HeaderName], request: &HeaderMap) -> Self {
        Self {
            host: self.host.clone(),
            path: self.path.clone(),
            variant: variant_id(names, request).into(),
        }
    }

    /// This key, borrowed, for lookups.
    pub fn borrowed(&self) -> CacheKey<&str> {
        CacheKey {
            host: &self.host,
            path: &self.path,
            variant: &self.variant,
        }
    }
}

impl<'a> CacheKey<&'a str> {
    /// The key of a URL for a lookup, before any `Vary` is known.
    pub fn lookup(host: &'a str, path_and_query: &'a str) -> Self {
        Self {
            host,
            path: path_and_query,
            variant: "",
        }
    }

    /// The key as stored.
    pub fn stored(&self) -> CacheKey {
        CacheKey {
            host: self.host.into(),
            path: self.path.into(),
            variant: self.variant.into(),
        }
    }
}

/// Hashes as the stored key does: `&str` and `Arc<str>` both hash as `str`.
impl Equivalent<CacheKey> for CacheKey<&str> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.host == &*key.host && self.path == &*key.path && self.variant == &*key.variant
    }
}

/// The request header values that select a variant among responses varying on `names`.
fn variant_id(names: &[HeaderName], request: &HeaderMap) -> String {
    let mut variant = String::new();
    for name in names {
        variant.push_str(name.as_str());
        variant.push('=');
        for value in request.get_all(name) {
            variant.push_str(&String::from_utf8_lossy(value.as_bytes()));
            variant.push('\u{1f}');
        }
        variant.push('\u{1e}');
    }
    variant
}

/// A stored response.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: StatusCode,
    /// End-to-end headers as received (hop-by-hop ones already removed).
    pub headers: HeaderMap,
    pub body: Bytes,
    received: Instant,
    policy: StoragePolicy,
}

/// What a cached response may be used for, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it and refresh it in the background (`stale-while-revalidate`).
    StaleWhileRevalidate,
    /// Revalidate before serving; it may still answer if the upstream fails
    /// (`stale_if_error` says whether that window is still open).
    Stale { stale_if_error: bool },
}

impl CachedResponse {
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes, policy: StoragePolicy) -> Self {
        Self {
            status,
            headers,
            body,
            received: Instant::now(),
            policy,
        }
    }

    /// A copy received `age` ago (read back from the Redis tier).
    pub fn aged(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        policy: StoragePolicy,
        age: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            status,
            headers,
            body,
            received: now.checked_sub(age).unwrap_or(now),
            policy,
        }
    }

    /// How it may be used.
    pub fn policy(&self) -> &StoragePolicy {
        &self.policy
    }

    /// Seconds since it was received, for the `Age` header.
    pub fn age(&self) -> Duration {
        self.received.elapsed()
    }

    pub fn freshness(&self) -> Freshness {
        let age = self.age();
        let fresh = self.policy.fresh_for;
        if age < fresh {
            Freshness::Fresh
        } else if age < fresh + self.policy.stale_while_revalidate {
            Freshness::StaleWhileRevalidate
        } else {
            Freshness::Stale {
                stale_if_error: age < fresh + self.policy.stale_if_error,
            }
        }
    }

    /// The same response refreshed by a `304 Not Modified` carrying `update` headers
    /// and the new `policy`.
    pub fn revalidated(&self, update: &HeaderMap, policy: StoragePolicy) -> Self {
        let mut headers = self.headers.clone();
        for name in update.keys() {
            headers.remove(name);
        }
        for (name, value) in update {
            headers.append(name.clone(), value.clone());
        }
        Self::new(self.status, headers, self.body.clone(), policy)
    }

    /// Asks an upstream request (hyper's headers) to revalidate it: `If-None-Match` /
    /// `If-Modified-Since` from its `ETag` / `Last-Modified`.
    pub fn ask_with_validators(&self, request: &mut http::HeaderMap) {
        use actix_web::http::header;
        for (validator, condition) in [
            (header::ETAG, http::header::IF_NONE_MATCH),
            (header::LAST_MODIFIED, http::header::IF_MODIFIED_SINCE),
        ] {
            if let Some(value) = self
                .headers
                .get(validator)
                .and_then(|value| http::HeaderValue::from_bytes(value.as_bytes()).ok())
            {
                request.insert(condition, value);
            }
        }
    }

    /// Bytes it occupies, roughly, for the cache's byte bound.
    fn weight(&self, key: &CacheKey) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let total = self.body.len() + headers + key.path.len() + key.variant.len() + 128;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Response(Arc<CachedResponse>),
    /// The URL's responses vary on these request headers; each variant has its own key.
    Vary(Arc<[HeaderName]>),
}

/// Where a cached copy was found, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Redis,
    /// Not from the cache (fetched, or not cacheable).
    None,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::None => "none",
        }
    }
}

/// The shared, concurrent response store. Cloning is cheap; clones share everything.
#[derive(Clone)]
pub struct ResponseCache {
    /// Hashed with foldhash: std's SipHash was a third of each lookup, and foldhash's
    /// per-process random seed still keeps colliding keys hard to choose.
    entries: Cache<CacheKey, Slot, RandomState>,
    tier: Option<RedisTier>,
    metrics: Arc<Metrics>,
    hits: Arc<HitCounters>,
    /// Counts purges and invalidations, so that an answer computed before one of them
    /// is not stored after it.
    generation: Arc<AtomicU64>,
    /// Fetches in progress, by primary key: followers wait for the sender to drop.
    in_flight: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
    /// Keys being refreshed in the background, so that only one refresh runs.
    refreshing: Arc<Mutex<HashSet<CacheKey>>>,
    max_object_bytes: usize,
}

/// The counters every hit from memory moves, resolved on first use instead of by
/// `with_label_values`, which hashes its labels on every call.
#[derive(Default)]
struct HitCounters {
    lookup_memory_hit: OnceLock<IntCounter>,
    lookup_memory_miss: OnceLock<IntCounter>,
    response_hit_memory: OnceLock<IntCounter>,
}

/// The outcome of [`ResponseCache::begin_fetch`].
pub enum Fetch {
    /// Fetch it; followers wake when the guard drops (after storing, or not).
    Leader(FetchGuard),
    /// Another request is fetching it: wait, then look again.
    Follower(watch::Receiver<()>),
}

/// Held by the request that fetches a key; dropping it wakes the followers.
pub struct FetchGuard {
    key: CacheKey,
    in_flight: Arc<Mutex<HashMap<CacheKey, watch::Receiver<()>>>>,
    _done: watch::Sender<()>,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .expect("in-flight map is never poisoned")
            .remove(&self.key);
    }
}

/// Held while a key is refreshed in the background.
pub struct RefreshGuard {
    key: CacheKey,
    refreshing: Arc<Mutex<HashSet<CacheKey>>>,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.refreshing
            .lock()
            .expect("refresh set is never poisoned")
            .remove(&self.key);
    }
}

impl ResponseCache {
    pub fn new(max_bytes: u64, max_object_bytes: usize, metrics: Arc<Metrics>) -> Self {
        let evictions = metrics.cache_evictions.clone();
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, slot: &Slot| match slot {
                Slot::Response(response) => response.weight(key),
                Slot::Vary(names) => 64 + names.len() as u32 * 32,
            })
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .support_invalidation_closures()
            .build_with_hasher(RandomState::default());
        Self {
            entries,
            tier: None,
            metrics,
            hits: Arc::default(),
            generation: Arc::default(),
            in_flight: Arc::default(),
            refreshing: Arc::default(),
            max_object_bytes,
        }
    }

    /// The same cache with a Redis tier behind the memory.
    pub fn with_redis(mut self, tier: RedisTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Changes with every purge and invalidation here (and those announced by other
    /// instances): take it before computing an answer, and store the answer only if
    /// [`ResponseCache::insert_unless_invalidated`] still sees the same value.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// [`ResponseCache::insert`], unless something was purged or invalidated since
    /// `generation` was taken (the answer may predate that change); says whether it
    /// stored.
    pub fn insert_unless_invalidated(
        &self,
        generation: u64,
        primary: &CacheKey,
        request: &HeaderMap,
        response: CachedResponse,
    ) -> bool {
        let current = self.generation() == generation;
        if current {
            self.insert(primary, request, response);
        }
        current
    }

    /// Counts an answer of a caching route (`X-Cache` label and where the copy was).
    pub fn count_response(&self, label: &str, tier: Tier) {
        let counter = |label: &str, tier: Tier| {
            self.metrics
                .cache_responses
                .with_label_values(&[label, tier.label()])
        };
        match (label, tier) {
            ("HIT", Tier::Memory) => self
                .hits
                .response_hit_memory
                .get_or_init(|| counter(label, tier))
                .inc(),
            _ => counter(label, tier).inc(),
        }
    }

    /// The stored response for a request to `primary`: from memory, else from the
    /// Redis tier (which then fills memory). Redis errors and unreadable values are
    /// logged and counted, and answer as a miss.
    pub async fn lookup(
        &self,
        primary: &CacheKey<&str>,
        request: &HeaderMap,
    ) -> Option<(Arc<CachedResponse>, Tier)> {
        let lookups = &self.metrics.cache_lookups;
        if let Some(found) = self.get(primary, request) {
            self.hits
                .lookup_memory_hit
                .get_or_init(|| lookups.with_label_values(&["memory", "hit"]))
                .inc();
            return Some((found, Tier::Memory));
        }
        self.hits
            .lookup_memory_miss
            .get_or_init(|| lookups.with_label_values(&["memory", "miss"]))
            .inc();
        let tier = self.tier.as_ref()?;
        let primary = primary.stored();
        match tier.get(&primary, request).await {
            Ok(Some(response)) => {
                lookups.with_label_values(&["redis", "hit"]).inc();
                Some((self.fill_memory(&primary, request, response), Tier::Redis))
            }
            Ok(None) => {
                lookups.with_label_values(&["redis", "miss"]).inc();
                None
            }
            Err(TierError::Garbled(reason)) => {
                lookups.with_label_values(&["redis", "garbled"]).inc();
                tracing::warn!(
                    host = primary.host(),
                    path = primary.path(),
                    reason,
                    "ignoring an unreadable cache entry in Redis"
                );
                None
            }
            Err(err) => {
                lookups.with_label_values(&["redis", "error"]).inc();
                tracing::debug!(%err, "the cache's Redis tier is unavailable");
                None
            }
        }
    }

    /// Responses larger than this are not stored.
    pub fn max_object_bytes(&self) -> usize {
        self.max_object_bytes
    }

    /// The stored response for a request to `primary`, choosing the variant by the
    /// request's headers when the URL has `Vary`.
    pub fn get(
        &self,
        primary: &CacheKey<&str>,
        request: &HeaderMap,
    ) -> Option<Arc<CachedResponse>> {
        match self.entries.get(primary)? {
            Slot::Response(response) => Some(response),
            Slot::Vary(names) => {
                let id = variant_id(&names, request);
                let variant = CacheKey {
                    variant: id.as_str(),
                    ..*primary
                };
                match self.entries.get(&variant)? {
                    Slot::Response(response) => Some(response),
                    Slot::Vary(_) => None,
                }
            }
        }
    }

    /// Stores `response` for requests like `request` to `primary`, in memory and (in
    /// the background) in the Redis tier.
    pub fn insert(&self, primary: &CacheKey, request: &HeaderMap, response: CachedResponse) {
        if let Some(tier) = &self.tier {
            tier.store(primary, request, &response);
        }
        self.fill_memory(primary, request, response);
    }

    /// Stores `response` in memory only; returns it as stored.
    fn fill_memory(
        &self,
        primary: &CacheKey,
        request: &HeaderMap,
        response: CachedResponse,
    ) -> Arc<CachedResponse> {
        let vary = response.policy.vary.clone();
        let stored = Arc::new(response);
        let response = Slot::Response(stored.clone());
        if vary.is_empty() {
            self.entries.insert(primary.clone(), response);
        } else {
            let key = primary.variant(&vary, request);
            self.entries
                .insert(primary.clone(), Slot::Vary(vary.into()));
            self.entries.insert(key, response);
        }
        stored
    }

    /// Starts fetching `primary`, or joins the fetch already under way.
    pub fn begin_fetch(&self, primary: &CacheKey) -> Fetch {
        let mut in_flight = self
            .in_flight
            .lock()
            .expect("in-flight map is never poisoned");
        if let Some(receiver) = in_flight.get(primary) {
            return Fetch::Follower(receiver.clone());
        }
        let (done, receiver) = watch::channel(());
        in_flight.insert(primary.clone(), receiver);
        Fetch::Leader(FetchGuard {
            key: primary.clone(),
            in_flight: self.in_flight.clone(),
            _done: done,
        })
    }

    /// Claims the background refresh of `key`; `None` when one is already running.
    pub fn begin_refresh(&self, key: &CacheKey) -> Option<RefreshGuard> {
        let mut refreshing = self
            .refreshing
            .lock()
            .expect("refresh set is never poisoned");
        refreshing.insert(key.clone()).then(|| RefreshGuard {
            key: key.clone(),
            refreshing: self.refreshing.clone(),
        })
    }

    /// Removes the entries whose path is `key` (exactly) or starts with `prefix`, on
    /// `host` or every host, from memory; returns how many were removed.
    fn purge(&self, target: &PurgeTarget, host: Option<&str>) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let doomed: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .map(|(key, _)| key)
            .filter(|key| host.is_none_or(|host| host.eq_ignore_ascii_case(&key.host)))
            .filter(|key| target.matches(&key.path))
            .collect();
        for key in &doomed {
            self.entries.invalidate(key.as_ref());
        }
        doomed.iter().filter(|key| key.variant.is_empty()).count() as u64
    }

    /// Drops the entries matching any of `targets` from memory at once (later lookups
    /// no longer see them; the memory is reclaimed by housekeeping).
    pub fn invalidate(&self, targets: &[PurgeTarget], host: Option<&str>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let targets = targets.to_vec();
        let host = host.map(str::to_string);
        let registered = self.entries.invalidate_entries_if(move |key, _| {
            host.as_deref()
                .is_none_or(|host| host.eq_ignore_ascii_case(&key.host))
                && targets.iter().any(|target| target.matches(&key.path))
        });
        if let Err(err) = registered {
            // Only possible without support_invalidation_closures, which new() sets.
            tracing::error!(%err, "cache invalidation not registered");
        }
    }

    /// Deletes the entries matching `targets` from the Redis tier, then tells the other
    /// instances to drop their memory copies (in that order, so that none refills its
    /// memory from Redis with what was just purged). Answers with the URLs removed from
    /// Redis.
    async fn purge_shared(
        &self,
        bus: Option<&ClusterBus>,
        targets: Vec<PurgeTarget>,
        host: Option<String>,
    ) -> u64 {
        let removed = match &self.tier {
            Some(tier) => match tier.purge(&targets, host.as_deref()).await {
                Ok(removed) => removed,
                Err(err) => {
                    tracing::warn!(%err, "could not purge the cache's Redis tier");
                    0
                }
            },
            None => 0,
        };
        if let Some(bus) = bus {
            bus.publish(BusMessage::CachePurged { targets, host });
        }
        removed
    }

    /// Entries and bytes held, after pending housekeeping.
    fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

/// The cache actor: maintains the shared [`ResponseCache`] and announces purges on the
/// cluster bus.
pub struct CacheActor {
    cache: ResponseCache,
    bus: Option<ClusterBus>,
    metrics: Arc<Metrics>,
}

impl CacheActor {
    /// Starts the supervised actor on its own arbiter.
    pub fn start(
        cache: ResponseCache,
        bus: Option<ClusterBus>,
        metrics: Arc<Metrics>,
    ) -> (Addr<Self>, Arbiter) {
        let arbiter = Arbiter::new();
        let actor = Self {
            cache,
            bus,
            metrics,
        };
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        (addr, arbiter)
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HOUSEKEEPING_INTERVAL, |act, _| {
            let (entries, bytes) = act.cache.usage();
            act.metrics.cache_entries.set(entries as i64);
            act.metrics.cache_bytes.set(bytes as i64);
        });
    }
}

impl Supervised for CacheActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
        tracing::warn!(actor = NAME, "actor restarted by its supervisor");
    }
}

impl Handler<Crashed> for CacheActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// What to purge: one path (with its query) or every path under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PurgeTarget {
    Key(String),
    Prefix(String),
}

impl PurgeTarget {
    /// Whether a cached path (with its query) is purged.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Key(key) => path == key,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// Removes cached responses here, in Redis and on every other instance; answers with
/// the number of URLs removed.
#[derive(Message)]
#[rtype(result = "PurgeResult")]
pub struct Purge {
    pub target: PurgeTarget,
    /// Only this host's entries; all hosts when `None`.
    pub host: Option<String>,
}

/// URLs removed (from this instance's memory and from Redis) and what this instance's
/// memory holds afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeResult {
    pub purged: u64,
    pub redis_purged: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl Handler<Purge> for CacheActor {
    type Result = ResponseFuture<PurgeResult>;

    fn handle(&mut self, msg: Purge, _: &mut Context<Self>) -> Self::Result {
        let purged = self.cache.purge(&msg.target, msg.host.as_deref());
        let (entries, bytes) = self.cache.usage();
        let (cache, bus) = (self.cache.clone(), self.bus.clone());
        Box::pin(async move {
            let redis_purged = cache
                .purge_shared(bus.as_ref(), vec![msg.target.clone()], msg.host.clone())
                .await;
            tracing::info!(target = ?msg.target, host = ?msg.host, purged, redis_purged, "cache purged");
            PurgeResult {
                purged,
                redis_purged,
                entries,
                bytes,
            }
        })
    }
}

/// Data behind cached answers changed (records written): drops the entries matching
/// `targets` on every host, here at once, then in Redis and on the other instances.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Invalidate {
    pub targets: Vec<PurgeTarget>,
}

impl Handler<Invalidate> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: Invalidate, ctx: &mut Context<Self>) {
        self.cache.invalidate(&msg.targets, None);
        let (cache, bus) = (self.cache.clone(), self.bus.clone());
        ctx.spawn(actix::fut::wrap_future(async move {
            cache.purge_shared(bus.as_ref(), msg.targets, None).await;
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{self, HeaderValue};

    fn store(max_bytes: u64) -> ResponseCache {
        ResponseCache::new(max_bytes, max_bytes as usize, Arc::new(Metrics::new()))
    }

    fn response(body: &str, vary: &[&'static str]) -> CachedResponse {
        CachedResponse::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(body.to_string()),
            StoragePolicy {
                fresh_for: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                vary: vary.iter().map(|n| HeaderName::from_static(n)).collect(),
            },
        )
    }

    fn request(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn variants_are_chosen_by_the_vary_headers() {
        let cache = store(1 << 20);
        let key = CacheKey::primary("h", "/x");
        let en = request(&[(header::ACCEPT_LANGUAGE, "en")]);
        let de = request(&[(header::ACCEPT_LANGUAGE, "de")]);
        cache.insert(&key, &en, response("hello", &["accept-language"]));
        cache.insert(&key, &de, response("hallo", &["accept-language"]));
        let key = key.borrowed();
        assert_eq!(cache.get(&key, &en).unwrap().body, "hello");
        assert_eq!(cache.get(&key, &de).unwrap().body, "hallo");
        assert!(cache.get(&key, &request(&[])).is_none());
    }

    #[test]
    fn purge_by_key_and_prefix_and_host() {
        let cache = store(1 << 20);
        let empty = HeaderMap::new();
        for (host, path) in [
            ("a", "/img/1"),
            ("a", "/img/2"),
            ("b", "/img/1"),
            ("a", "/doc"),
        ] {
            cache.insert(&CacheKey::primary(host, path), &empty, response(path, &[]));
        }
        assert_eq!(cache.purge(&PurgeTarget::Key("/doc".into()), None), 1);
        assert_eq!(
            cache.purge(&PurgeTarget::Prefix("/img/".into()), Some("a")),
            2
        );
        assert!(cache
            .get(&CacheKey::lookup("b", "/img/1"), &empty)
            .is_some());
        assert!(cache
            .get(&CacheKey::lookup("a", "/img/1"), &empty)
            .is_none());
    }

    #[test]
    fn invalidated_entries_are_gone_at_once() {
        let cache = store(1 << 20);
        let empty = HeaderMap::new();
        for path in [
            "/api/collections/posts/records?page=1",
            "/api/collections/postsx/records",
            "/other",
        ] {
            cache.insert(&CacheKey::primary("h", path), &empty, response(path, &[]));
        }
        cache.invalidate(
            &[
                PurgeTarget::Prefix("/api/collections/posts/".into()),
                PurgeTarget::Key("/other".into()),
            ],
            None,
        );
        let present = |path| cache.get(&CacheKey::lookup("h", path), &empty).is_some();
        assert!(!present("/api/collections/posts/records?page=1"));
        assert!(!present("/other"));
        assert!(present("/api/collections/postsx/records"));
        // Entries stored afterwards are not affected.
        let path = "/api/collections/posts/records?page=1";
        cache.insert(&CacheKey::primary("h", path), &empty, response(path, &[]));
        assert!(present(path));
        // An answer computed before an invalidation is not stored after it.
        let before = cache.generation();
        cache.invalidate(&[PurgeTarget::Key("/unrelated".into())], None);
        let late = "/api/collections/posts/records?page=2";
        let key = CacheKey::primary("h", late);
        assert!(!cache.insert_unless_invalidated(before, &key, &empty, response(late, &[])));
        assert!(!present(late));
        assert!(cache.insert_unless_invalidated(
            cache.generation(),
            &key,
            &empty,
            response(late, &[])
        ));
        assert!(present(late));
    }

    #[test]
    fn the_byte_bound_evicts() {
        let cache = store(4096);
        let empty = HeaderMap::new();
        for i in 0..20 {
            let key = CacheKey::primary("h", &format!("/{i}"));
            cache.insert(&key, &empty, response(&"x".repeat(1000), &[]));
        }
        let (_, bytes) = cache.usage();
        assert!(bytes <= 4096, "{bytes}");
    }

    #[test]
    fn only_one_fetch_leads_and_followers_wake_when_it_ends() {
        let cache = store(1 << 20);
        let key = CacheKey::primary("h", "/x");
        let Fetch::Leader(guard) = cache.begin_fetch(&key) else {
            panic!("first fetch leads");
        };
        let Fetch::Follower(follower) = cache.begin_fetch(&key) else {
            panic!("second fetch follows");
        };
        drop(guard);
        assert!(
            follower.has_changed().is_err(),
            "the leader's end is visible"
        );
        assert!(matches!(cache.begin_fetch(&key), Fetch::Leader(_)));
    }

    #[test]
    fn freshness_moves_through_the_stale_windows() {
        let mut cached = response("x", &[]);
        cached.policy.fresh_for = Duration::ZERO;
        cached.policy.stale_while_revalidate = Duration::from_secs(60);
        assert_eq!(cached.freshness(), Freshness::StaleWhileRevalidate);
        cached.policy.stale_while_revalidate = Duration::ZERO;
        cached.policy.stale_if_error = Duration::from_secs(60);
        assert_eq!(
            cached.freshness(),
            Freshness::Stale {
                stale_if_error: true
            }
        );
    }
}
