//! The load balancer actor: owns the upstream pools' health and publishes, per pool, a
//! snapshot of the healthy servers with a ready-built [`Selector`].
//!
//! Requests never wait in this actor's mailbox. HTTP workers load a pool's snapshot
//! through an `ArcSwap` (a lock-free pointer read) and keep per-server counters
//! (in flight, requests, failures, passive ejection) in atomics. The actor does the
//! slow, rare work: probing servers, applying thresholds, rebuilding selectors (hash
//! rings, weighted cycles) when the healthy set changes, and answering status queries.

pub mod health;
pub mod selection;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, Arbiter, AsyncContext, Context, Handler, Message,
    Supervised, Supervisor, WrapFuture,
};
use arc_swap::ArcSwap;
use serde::Serialize;
use utoipa::ToSchema;

use super::supervisor::{contain, Crashed};
use crate::config::{Strategy, UpstreamSettings};
use crate::telemetry::Metrics;
use health::HealthState;
use selection::Selector;

const NAME: &str = "balancer";

/// How a pool names one of the instance's in-process backend workers: `backend://N`.
pub const BACKEND_SCHEME: &str = "backend://";

/// The most in-process backend workers one instance runs (`backend://1` to this).
pub const MAX_BACKEND_WORKERS: u16 = 32;

/// A pool member as configured: a server's URL, or an in-process backend worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddress {
    Url(UpstreamUrl),
    /// `backend://N`: the instance's backend worker number N (from 1).
    Worker(u16),
}

impl ServerAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(number) = raw.strip_prefix(BACKEND_SCHEME) else {
            return UpstreamUrl::parse(raw).map(Self::Url);
        };
        let digits = !number.is_empty()
            && !number.starts_with('0')
            && number.bytes().all(|b| b.is_ascii_digit());
        match number.parse::<u16>() {
            Ok(n) if digits && n <= MAX_BACKEND_WORKERS => Ok(Self::Worker(n)),
            _ => Err(format!(
                "{raw:?}: an in-process backend worker is backend://N, N a number from 1 to {MAX_BACKEND_WORKERS}"
            )),
        }
    }
}

/// An upstream server's address: `http://` or `https://`, host, port and an optional
/// base path; for an in-process backend worker, its loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `Some(N)` for the backend worker `backend://N`.
    worker: Option<u16>,
    https: bool,
    /// The host without brackets or port: what a TLS certificate names.
    host: String,
    /// `host:port`, as sent in the request line's authority.
    authority: String,
    /// A path prefix put before every forwarded path, without trailing slash.
    base_path: String,
}

impl UpstreamUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|err| format!("{raw:?}: {err}"))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => {
                return Err(format!(
                    "{raw:?}: a pool member is http://, https:// or {BACKEND_SCHEME}N"
                ))
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            None => return Err(format!("{raw:?}: has no host")),
        };
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!(
                "{raw:?}: only scheme, host, port and path are allowed"
            ));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            worker: None,
            https,
            authority: format!("{}:{port}", url.host_str().unwrap_or(&host)),
            host,
            base_path: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// The backend worker `backend://number`, listening on `addr`.
    pub fn backend_worker(number: u16, addr: SocketAddr) -> Self {
        Self {
            worker: Some(number),
            https: false,
            host: addr.ip().to_string(),
            authority: addr.to_string(),
            base_path: String::new(),
        }
    }

    /// The backend worker's number, for `backend://N` members.
    pub fn worker(&self) -> Option<u16> {
        self.worker
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether the server is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The path to request on this server for `path_and_query`.
    pub fn path_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_path, path_and_query)
    }

    /// The same as [`Self::path_for`] for the proxy: without a base path the target is
    /// `path_and_query` itself, shared, not copied.
    pub fn target_for(&self, path_and_query: &bytes::Bytes) -> bytes::Bytes {
        if self.base_path.is_empty() {
            return path_and_query.clone();
        }
        let mut target =
            bytes::BytesMut::with_capacity(self.base_path.len() + path_and_query.len());
        target.extend_from_slice(self.base_path.as_bytes());
        target.extend_from_slice(path_and_query);
        target.freeze()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(number) = self.worker {
            return write!(f, "{BACKEND_SCHEME}{number}");
        }
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// Milliseconds since the first call: a monotonic clock that fits in an atomic.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One server of a pool and its live counters, shared by every HTTP worker.
#[derive(Debug)]
pub struct Member {
    /// Unique in the process: the key of this server's idle connections.
    pub id: u64,
    pub url: UpstreamUrl,
    pub weight: u32,
    /// For `https://` servers.
    pub tls: Option<tls::MemberTls>,
    in_flight: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Passively ejected until this [`now_ms`] instant (0: never ejected).
    ejected_until: AtomicU64,
}

/// Counts a request as in flight on a pool's server until dropped (which may be long
/// after the handler returned: when the response body has been streamed).
#[must_use]
pub struct InFlight {
    pool: Arc<Pool>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.members[self.index].end_request();
    }
}

impl Member {
    pub fn new(url: UpstreamUrl, weight: u32) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            url,
            weight,
            tls: None,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks the start of a request to this server; [`Member::end_request`] ends it.
    pub(crate) fn begin_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// A named pool of servers, its strategy and its current snapshot.
pub struct Pool {
    pub name: String,
    pub settings: UpstreamSettings,
    members: Vec<Member>,
    snapshot: ArcSwap<Snapshot>,
}

/// The servers the balancer last found healthy, with the selector built over them.
struct Snapshot {
    healthy: Vec<usize>,
    selector: Box<dyn Selector>,
}

impl Pool {
    /// The pool `name`; `workers` says where the instance's backend workers listen.
    pub fn new(
        name: &str,
        settings: &UpstreamSettings,
        workers: &BTreeMap<u16, SocketAddr>,
    ) -> Result<Self, String> {
        let mut client_config = None;
        let members = settings
            .servers
            .iter()
            .map(|server| {
                let url = match ServerAddress::parse(&server.url)? {
                    ServerAddress::Url(url) => url,
                    ServerAddress::Worker(number) => {
                        let addr = workers.get(&number).ok_or_else(|| {
                            format!("{}: no such backend worker was started", server.url)
                        })?;
                        UpstreamUrl::backend_worker(number, *addr)
                    }
                };
                let secure = url.is_https();
                let mut member = Member::new(url, server.weight);
                if secure {
                    let config = match &client_config {
                        Some(config) => config,
                        None => {
                            client_config.insert(tls::client_config(settings.ca_file.as_deref())?)
                        }
                    };
                    member.tls = Some(tls::member_tls(
                        config,
                        &member.url.host,
                        settings.tls_server_name.as_deref(),
                    )?);
                }
                Ok(member)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let healthy: Vec<usize> = (0..members.len()).collect();
        let snapshot = Snapshot {
            selector: selection::build(settings.strategy, &members, healthy.clone()),
            healthy,
        };
        Ok(Self {
            name: name.to_string(),
            settings: settings.clone(),
            members,
            snapshot: ArcSwap::from_pointee(snapshot),
        })
    }

    pub fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// Counts a request to server `index` as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>, index: usize) -> InFlight {
        self.members[index].begin_request();
        InFlight {
            pool: self.clone(),
            index,
        }
    }

    /// Servers to try for one request, best first: healthy by the last checks and not
    /// passively ejected. `key` is the client's hash, for `ip_hash`.
    pub fn candidates(&self, key: u64) -> Vec<usize> {
        let now = now_ms();
        let mut order = self.snapshot.load().selector.candidates(&self.members, key);
        order.retain(|&i| !self.members[i].is_ejected(now));
        order
    }

    /// Records that a request to server `index` succeeded.
    pub fn record_success(&self, index: usize) {
        self.members[index]
            .consecutive_failures
            .store(0, Ordering::Relaxed);
    }

    /// Records a failed request (connection error, timeout, 5xx of a retryable
    /// request); after `max_fails` in a row the server sits out `fail_timeout`.
    pub fn record_failure(&self, index: usize) {
        let member = &self.members[index];
        member.failures.fetch_add(1, Ordering::Relaxed);
        let fails = member.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.settings.max_fails > 0 && fails >= self.settings.max_fails {
            member.consecutive_failures.store(0, Ordering::Relaxed);
            let until = now_ms() + self.settings.fail_timeout.as_millis() as u64;
            member.ejected_until.store(until, Ordering::Relaxed);
            tracing::warn!(
                pool = %self.name,
                server = %member.url,
                fails,
                cool_down = ?self.settings.fail_timeout,
                "upstream server ejected after consecutive failures"
            );
        }
    }

    /// Publishes a new healthy set; workers see it on their next request.
    fn publish(&self, healthy: Vec<usize>) {
        let selector = selection::build(self.settings.strategy, &self.members, healthy.clone());
        self.snapshot
            .store(Arc::new(Snapshot { healthy, selector }));
    }

    fn status(&self, health: &[HealthState]) -> PoolStatus {
        let now = now_ms();
        let snapshot = self.snapshot.load();
        PoolStatus {
            name: self.name.clone(),
            strategy: self.settings.strategy,
            servers: self
                .members
                .iter()
                .enumerate()
                .map(|(i, member)| {
                    let healthy = snapshot.healthy.contains(&i);
                    let ejected = member.is_ejected(now);
                    ServerStatus {
                        url: member.url.to_string(),
                        weight: member.weight,
                        state: match (healthy, ejected) {
                            (false, _) => ServerState::Unhealthy,
                            (true, true) => ServerState::Ejected,
                            (true, false) => ServerState::Healthy,
                        },
                        in_flight: member.in_flight(),
                        requests: member.requests.load(Ordering::Relaxed),
                        failures: member.failures.load(Ordering::Relaxed),
                        health_checked: health.get(i).is_some()
                            && !self.settings.health_check.path.is_empty(),
                    }
                })
                .collect(),
        }
    }
}

/// Every pool of an instance, by name.
pub struct Upstreams {
    pools: BTreeMap<String, Arc<Pool>>,
}

impl Upstreams {
    /// Every configured pool; `workers` says where the backend workers listen.
    pub fn new(
        settings: &BTreeMap<String, UpstreamSettings>,
        workers: &BTreeMap<u16, SocketAddr>,
    ) -> Result<Self, String> {
        let pools = settings
            .iter()
            .map(|(name, pool)| Ok((name.clone(), Arc::new(Pool::new(name, pool, workers)?))))
            .collect::<Result<_, String>>()?;
        Ok(Self { pools })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }
}

/// A pool's state as shown by `GET /api/admin/upstreams`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    #[schema(example = "app")]
    pub name: String,
    #[schema(value_type = String, example = "round_robin")]
    pub strategy: Strategy,
    pub servers: Vec<ServerStatus>,
}

/// One server's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The configured address: `http://10.0.0.5:3000`, or `backend://1` for an
    /// in-process backend worker.
    #[schema(example = "http://10.0.0.5:3000")]
    pub url: String,
    pub weight: u32,
    pub state: ServerState,
    /// Requests being forwarded to it right now.
    pub in_flight: u32,
    /// Requests forwarded since start.
    pub requests: u64,
    /// Failed requests since start (connection errors, timeouts, 502/503/504).
    pub failures: u64,
    /// Whether active health checks watch it.
    pub health_checked: bool,
}

/// `healthy`; `unhealthy` (failing active checks); `ejected` (cooling down after
/// consecutive failed requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Healthy,
    Unhealthy,
    Ejected,
}

/// The load balancer actor.
pub struct BalancerActor {
    upstreams: Arc<Upstreams>,
    /// Active-check state per pool, one entry per server.
    health: BTreeMap<String, Vec<HealthState>>,
    metrics: Arc<Metrics>,
}

impl BalancerActor {
    /// Starts the supervised actor on its own arbiter.
    pub fn start(upstreams: Arc<Upstreams>, metrics: Arc<Metrics>) -> (Addr<Self>, Arbiter) {
        let arbiter = Arbiter::new();
        let health = upstreams
            .pools
            .iter()
            .map(|(name, pool)| {
                (
                    name.clone(),
                    vec![HealthState::default(); pool.members.len()],
                )
            })
            .collect();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| Self {
            upstreams,
            health,
            metrics,
        });
        (addr, arbiter)
    }

    fn probe_pool(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(pool) = self.upstreams.get(name).cloned() else {
            return;
        };
        let check = &pool.settings.health_check;
        let states = self.health.get_mut(name).expect("state exists per pool");
        let due: Vec<usize> = states
            .iter_mut()
            .enumerate()
            .filter(|(_, state)| !state.probing)
            .map(|(index, state)| {
                state.probing = true;
                index
            })
            .collect();
        for index in due {
            let pool = pool.clone();
            let (path, timeout) = (check.path.clone(), check.timeout);
            let probe = async move { health::probe(pool.member(index), &path, timeout).await };
            let name = name.to_string();
            let work = contain(NAME, ctx.address(), probe);
            ctx.spawn(work.into_actor(self).map(move |result, act, _| {
                let passed = matches!(result, Ok(Ok(())));
                if let Ok(Err(reason)) = &result {
                    tracing::debug!(pool = %name, server = index, %reason, "health probe failed");
                }
                act.observe(&name, index, passed);
            }));
        }
    }

    fn observe(&mut self, name: &str, index: usize, passed: bool) {
        let (Some(pool), Some(states)) = (self.upstreams.get(name), self.health.get_mut(name))
        else {
            return;
        };
        let check = &pool.settings.health_check;
        let state = &mut states[index];
        state.probing = false;
        let Some(healthy) =
            state.observe(passed, check.healthy_threshold, check.unhealthy_threshold)
        else {
            return;
        };
        let server = &pool.member(index).url;
        if healthy {
            tracing::info!(pool = %name, %server, "upstream server passed its health checks");
        } else {
            tracing::warn!(pool = %name, %server, "upstream server failed its health checks");
        }
        let healthy_set = states
            .iter()
            .enumerate()
            .filter(|(_, state)| state.is_healthy())
            .map(|(i, _)| i)
            .collect();
        pool.publish(healthy_set);
    }
}

impl Actor for BalancerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for (name, pool) in &self.upstreams.pools {
            let check = &pool.settings.health_check;
            if check.path.is_empty() {
                continue;
            }
            let name = name.clone();
            ctx.run_interval(check.interval, move |act, ctx| act.probe_pool(&name, ctx));
        }
    }
}

impl Supervised for BalancerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
        // Probes of the stopped instance were cancelled with it.
        for states in self.health.values_mut() {
            for state in states {
                state.probing = false;
            }
        }
        tracing::warn!(actor = NAME, "actor restarted by its supervisor");
    }
}

impl Handler<Crashed> for BalancerActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Asks for every pool's state.
#[derive(Message)]
#[rtype(result = "Vec<PoolStatus>")]
pub struct UpstreamStatus;

impl Handler<UpstreamStatus> for BalancerActor {
    type Result = Vec<PoolStatus>;

    fn handle(&mut self, _: UpstreamStatus, _: &mut Context<Self>) -> Vec<PoolStatus> {
        self.upstreams
            .pools
            .iter()
            .map(|(name, pool)| pool.status(self.health.get(name).map_or(&[], Vec::as_slice)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_fails: u32) -> Pool {
        let settings: UpstreamSettings = toml::from_str(&format!(
            "servers = [{{ url = \"http://127.0.0.1:1\" }}, {{ url = \"http://127.0.0.1:2/base/\" }}]\nmax_fails = {max_fails}\nfail_timeout = \"1h\""
        ))
        .unwrap();
        Pool::new("app", &settings, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn upstream_urls_are_http_or_https_with_an_optional_base_path() {
        let url = UpstreamUrl::parse("http://localhost:3000/base/").unwrap();
        assert_eq!(url.authority(), "localhost:3000");
        assert_eq!(url.path_for("/x?y=1"), "/base/x?y=1");
        assert_eq!(
            url.target_for(&bytes::Bytes::from_static(b"/x?y=1")),
            "/base/x?y=1"
        );
        assert!(!url.is_https());
        assert_eq!(UpstreamUrl::parse("http://h").unwrap().authority(), "h:80");
        let secure = UpstreamUrl::parse("https://h").unwrap();
        assert!(secure.is_https());
        assert_eq!(secure.authority(), "h:443");
        assert_eq!(secure.to_string(), "https://h:443");
        let v6 = UpstreamUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!((v6.authority(), v6.host.as_str()), ("[::1]:8443", "::1"));
        assert!(UpstreamUrl::parse("ftp://h").is_err());
        assert!(UpstreamUrl::parse("http://h/?q=1").is_err());
        assert!(UpstreamUrl::parse("nonsense").is_err());
    }

    #[test]
    fn backend_workers_are_numbered_from_one_and_shown_by_name() {
        assert_eq!(
            ServerAddress::parse("backend://2"),
            Ok(ServerAddress::Worker(2))
        );
        for bad in [
            "backend://0",
            "backend://01",
            "backend://",
            "backend://one",
            "backend://1/api",
            "backend://1:80",
            "backend://33",
        ] {
            let err = ServerAddress::parse(bad).unwrap_err();
            assert!(err.contains("backend://N"), "{bad}: {err}");
        }
        let worker = UpstreamUrl::backend_worker(2, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(worker.to_string(), "backend://2");
        assert_eq!(worker.authority(), "127.0.0.1:4000");
        assert_eq!(worker.path_for("/api/health"), "/api/health");
        let settings: UpstreamSettings =
            toml::from_str("servers = [{ url = \"backend://1\" }]").unwrap();
        assert!(Pool::new("app", &settings, &BTreeMap::new()).is_err());
    }

    #[test]
    fn consecutive_failures_eject_a_server_and_a_success_resets_the_count() {
        let pool = pool(2);
        pool.record_failure(0);
        pool.record_success(0);
        pool.record_failure(0);
        assert_eq!(pool.candidates(0).len(), 2);
        pool.record_failure(0);
        assert_eq!(pool.candidates(0), [1]);
    }

    #[test]
    fn max_fails_zero_never_ejects() {
        let pool = pool(0);
        for _ in 0..10 {
            pool.record_failure(1);
        }
        assert_eq!(pool.candidates(0).len(), 2);
    }

    #[test]
    fn published_snapshots_change_the_candidates() {
        let pool = pool(3);
        pool.publish(vec![1]);
        assert_eq!(pool.candidates(0), [1]);
        let status = pool.status(&[]);
        assert_eq!(status.servers[0].state, ServerState::Unhealthy);
        assert_eq!(status.servers[1].state, ServerState::Healthy);
    }

    #[test]
    fn in_flight_requests_are_counted_until_dropped() {
        let pool = Arc::new(pool(3));
        let guard = pool.start_request(0);
        assert_eq!(pool.member(0).in_flight(), 1);
        drop(guard);
        assert_eq!(pool.member(0).in_flight(), 0);
        assert_eq!(pool.member(0).requests.load(Ordering::Relaxed), 1);
    }
}
