//! In-process backend workers: Gatehouse's own API, each served by a single-thread
//! HTTP server on a loopback port, as members (`backend://N`) of the front end's pools.
//!
//! Workers share the instance's backend actors and state (database, auth, realtime hub,
//! caches) through the same [`AppState`]; only the HTTP serving is theirs. The front
//! end's proxy reaches them over loopback like any other server, and on that hop adds
//! the instance's [`HopKey`] and the address of its client connection. A worker believes
//! a request's forwarding headers only when the connection comes from loopback and the
//! key matches: the client's address then becomes the request's peer address and the
//! forwarded scheme its scheme, so rate limits, sessions and cookies see the real
//! client. Anything else reaching the port (another local process) is its own client:
//! its forwarding headers are removed before any handler sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, Error, HttpMessage, HttpRequest, HttpServer};
use rand::RngCore;

use super::forwarded::{FORWARDED, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::middleware::RequestTelemetry;
use super::AppState;
use super::{api_not_found, api_routes, auth_pages, cors, health, json_config, query_config};
use crate::config::Settings;

/// The header carrying the instance's key on the hop from its proxy to its backend workers.
pub const HOP_HEADER: &str = "x-gatehouse-hop";
/// The header carrying the front end's client connection (`ip:port`), on the same hop.
pub const PEER_HEADER: &str = "x-gatehouse-peer";
const X_GATEHOUSE_HOP: HeaderName = HeaderName::from_static(HOP_HEADER);
const X_GATEHOUSE_PEER: HeaderName = HeaderName::from_static(PEER_HEADER);

/// A random secret made at start, known only inside the process: what tells a backend
/// worker that a request comes from this instance's own front end.
#[derive(Clone)]
pub struct HopKey(Arc<str>);

impl HopKey {
    /// 32 random bytes, hex-encoded.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(hex.into())
    }

    /// The key as the proxy sends it.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("hex is a valid header value")
    }

    /// Compares in constant time, so that timing tells a guesser nothing.
    fn matches(&self, presented: &[u8]) -> bool {
        let key = self.0.as_bytes();
        key.len() == presented.len()
            && key
                .iter()
                .zip(presented)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for HopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HopKey([redacted])")
    }
}

/// The scheme the client used at the front end, for a request a backend worker got
/// from it.
#[derive(Debug, Clone, Copy)]
struct ForwardedScheme {
    secure: bool,
}

/// Whether the client's request came over TLS: to this listener, or — on a backend
/// worker — to the front end that forwarded it.
pub fn is_secure(req: &HttpRequest) -> bool {
    req.extensions()
        .get::<ForwardedScheme>()
        .map_or_else(|| req.app_config().secure(), |scheme| scheme.secure)
}

/// The front end's client connection, when `headers` come from this instance's own
/// proxy: a loopback `peer` presenting `key`.
fn front_end_client(
    key: &HopKey,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    if !peer?.ip().is_loopback() {
        return None;
    }
    let presented = headers.get(&X_GATEHOUSE_HOP)?;
    if !key.matches(presented.as_bytes()) {
        return None;
    }
    headers.get(&X_GATEHOUSE_PEER)?.to_str().ok()?.parse().ok()
}

/// Takes the client's identity from a request of the front end, and removes every
/// claim about it from anyone else.
async fn front_hop(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("the app state is app data")
        .clone();
    let client = front_end_client(&state.hop_key, req.peer_addr(), req.headers());
    let head = req.head_mut();
    head.headers.remove(&X_GATEHOUSE_HOP);
    head.headers.remove(&X_GATEHOUSE_PEER);
    match client {
        Some(client) => {
            head.peer_addr = Some(client);
            let secure = head
                .headers
                .get(&X_FORWARDED_PROTO)
                .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
            req.extensions_mut().insert(ForwardedScheme { secure });
        }
        None => {
            for name in [
                X_FORWARDED_FOR,
                X_FORWARDED_PROTO,
                X_FORWARDED_HOST,
                FORWARDED,
            ] {
                head.headers.remove(&name);
            }
        }
    }
    next.call(req).await
}

/// The loopback listeners of the backend workers, bound before the pools are built
/// (their members need the ports) and served once the instance's state exists.
pub struct WorkerListeners {
    listeners: BTreeMap<u16, TcpListener>,
}

impl WorkerListeners {
    /// One listener on an ephemeral loopback port per worker number.
    pub fn bind(numbers: BTreeSet<u16>) -> std::io::Result<Self> {
        let listeners = numbers
            .into_iter()
            .map(|number| Ok((number, TcpListener::bind("127.0.0.1:0")?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { listeners })
    }

    /// Where each worker listens.
    pub fn addresses(&self) -> std::io::Result<BTreeMap<u16, SocketAddr>> {
        self.listeners
            .iter()
            .map(|(number, listener)| Ok((*number, listener.local_addr()?)))
            .collect()
    }
}

/// The running backend workers.
pub struct BackendWorkers {
    servers: Vec<ServerHandle>,
}

impl BackendWorkers {
    /// Serves the API on every listener, each with one thread of its own. Must run
    /// inside the instance's actix `System`.
    pub fn start(
        listeners: WorkerListeners,
        settings: &Settings,
        state: web::Data<AppState>,
    ) -> std::io::Result<Self> {
        let mut servers = Vec::new();
        for (number, listener) in listeners.listeners {
            let server = worker_server(number, listener, settings, state.clone())?;
            servers.push(server.handle());
            actix_web::rt::spawn(server);
        }
        Ok(Self { servers })
    }

    /// Stops every worker gracefully: requests in progress get `server.shutdown_timeout`.
    pub async fn stop(self) {
        futures_util::future::join_all(self.servers.iter().map(|server| server.stop(true))).await;
    }
}

fn worker_server(
    number: u16,
    listener: TcpListener,
    settings: &Settings,
    state: web::Data<AppState>,
) -> std::io::Result<actix_web::dev::Server> {
    let cors_origins = settings.api.cors_origins.clone();
    let max_body = settings.server.max_body_bytes;
    tracing::info!(
        worker = %format!("backend://{number}"),
        addr = %listener.local_addr()?,
        "backend worker listening"
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(json_config(max_body))
            .app_data(query_config())
            .wrap(from_fn(front_hop))
            .wrap(RequestTelemetry::without_metrics(state.metrics.clone()))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .service(web::scope("/_/auth").configure(auth_pages))
            .service(
                web::scope("/api")
                    .wrap(cors(&cors_origins))
                    .configure(api_routes)
                    .default_service(web::to(api_not_found)),
            )
            .default_service(web::to(api_not_found))
    })
    .workers(1)
    // The front end's signal handling stops the instance, and with it the workers.
    .disable_signals()
    // Longer than the proxy keeps idle connections, so that the worker never closes
    // one the proxy is about to reuse.
    .keep_alive(settings.proxy.keep_alive + Duration::from_secs(5))
    .client_request_timeout(settings.server.request_head_timeout)
    .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
    .h1_allow_half_closed(false)
    .tcp_nodelay(true)
    .listen(listener)?;
    Ok(server.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_front_end_over_loopback_with_the_key_names_the_client() {
        let key = HopKey::generate();
        let good = key.header_value();
        let good = good.to_str().unwrap();
        let loopback = Some("127.0.0.1:50000".parse().unwrap());
        let from_front = headers(&[
            (&X_GATEHOUSE_HOP, good),
            (&X_GATEHOUSE_PEER, "203.0.113.9:4711"),
        ]);
        assert_eq!(
            front_end_client(&key, loopback, &from_front),
            Some("203.0.113.9:4711".parse().unwrap())
        );
        let remote = Some("192.0.2.1:50000".parse().unwrap());
        assert_eq!(front_end_client(&key, remote, &from_front), None);
        let wrong_key = headers(&[
            (&X_GATEHOUSE_HOP, &HopKey::generate().0),
            (&X_GATEHOUSE_PEER, "203.0.113.9:4711"),
        ]);
        assert_eq!(front_end_client(&key, loopback, &wrong_key), None);
        let short_key = headers(&[
            (&X_GATEHOUSE_HOP, &good[..10]),
            (&X_GATEHOUSE_PEER, "203.0.113.9:4711"),
        ]);
        assert_eq!(front_end_client(&key, loopback, &short_key), None);
        assert_eq!(
            front_end_client(&key, loopback, &headers(&[(&X_GATEHOUSE_HOP, good)])),
            None
        );
    }

    #[test]
    fn keys_differ_and_never_print() {
        let (a, b) = (HopKey::generate(), HopKey::generate());
        assert_ne!(a.header_value(), b.header_value());
        assert_eq!(a.header_value().len(), 64);
        assert_eq!(format!("{a:?}"), "HopKey([redacted])");
    }
}
