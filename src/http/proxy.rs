//! The reverse proxy: forwards a request to a server of an upstream pool and streams
//! the answer back.
//!
//! Phases, each in its own function: choose servers ([`Pool::candidates`]), build the
//! upstream request ([`upstream_headers`]), send it with retries ([`send`]), and turn
//! the answer into the client's response ([`into_response`]). Bodies stream both ways;
//! nothing is buffered beyond what a socket read returns, so Server-Sent Events reach
//! the client as each event is written. Upgrades (WebSocket) are tunnelled by
//! [`super::proxy_tunnel`]; cacheable GET/HEAD go through [`super::proxy_cache`].

use std::cell::{Cell, RefCell};
use std::future::Future as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::backend_worker::{HopKey, HOP_HEADER, PEER_HEADER};
use super::forwarded::{is_forwarding_header, ForwardingHeaders, TrustedProxies};
use super::middleware::X_REQUEST_ID;
use super::upstream_client::{ConnectError, Pooled, UpstreamClient};
use crate::actors::balancer::selection::client_key;
use crate::actors::balancer::{InFlight, Member, Pool, Upstreams};
use crate::actors::cache::ResponseCache;
use crate::config::Settings;
use crate::error::{ApiError, REQUEST_ID};
use crate::routing::{strip_path_prefix, Route};
use crate::telemetry::Metrics;

/// What one HTTP worker needs to proxy: its own pool of upstream connections and
/// handles to the shared pools and cache.
pub struct Proxy {
    pub client: Rc<UpstreamClient<OutgoingBody>>,
    pub upstreams: Arc<Upstreams>,
    pub cache: ResponseCache,
    pub trusted: TrustedProxies,
    /// Presented to this instance's backend workers.
    pub hop_key: HopKey,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl Proxy {
    /// Builds a worker's proxy; called in each worker's app factory.
    pub fn new(
        settings: &Settings,
        upstreams: Arc<Upstreams>,
        cache: ResponseCache,
        trusted: TrustedProxies,
        hop_key: HopKey,
        metrics: Arc<Metrics>,
    ) -> Self {
        let proxy = &settings.proxy;
        Self {
            client: Rc::new(UpstreamClient::new(proxy.connect_timeout, proxy.keep_alive)),
            upstreams,
            cache,
            trusted,
            hop_key,
            connect_timeout: proxy.connect_timeout,
            read_timeout: proxy.read_timeout,
            body_read_timeout: settings.limits.body_read_timeout,
            metrics,
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no healthy server in upstream pool {0}")]
    NoHealthyUpstream(String),
    #[error("no server of upstream pool {0} could be reached")]
    Unreachable(String),
    #[error("the TLS handshake with a server of upstream pool {0} failed")]
    Tls(String),
    #[error("the upstream server did not answer in time")]
    Timeout,
    #[error("the upstream server's answer was invalid: {0}")]
    BadGateway(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the client stopped sending its request body")]
    BodyTimeout,
}

impl From<ProxyError> for ApiError {
    fn from(err: ProxyError) -> Self {
        match err {
            ProxyError::NoHealthyUpstream(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_upstream",
                "No healthy upstream server is available.",
            ),
            ProxyError::Unreachable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "The upstream server could not be reached.",
            ),
            ProxyError::Tls(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_tls_failed",
                "The upstream server's TLS certificate could not be verified, or its TLS handshake failed.",
            ),
            ProxyError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "The upstream server did not answer in time.",
            ),
            ProxyError::BadGateway(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "The upstream server sent an invalid response.",
            ),
            ProxyError::BodyTooLarge(limit) => ApiError::payload_too_large(limit),
            ProxyError::BodyTimeout => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body was not received in time.",
            ),
        }
    }
}

/// Whether header `name` is hop-by-hop (RFC 9110 §7.6.1), `Expect` (which Gatehouse
/// answers itself), framing, or one of the two that the proxy sets on its hop to a
/// backend worker (a client's are never passed on): never forwarded as it is.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "expect"
            | "content-length"
            | HOP_HEADER
            | PEER_HEADER
    )
}

/// `X-Request-Id` as hyper's `http` types spell it.
const UPSTREAM_X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const UPSTREAM_HOP: http::HeaderName = http::HeaderName::from_static(HOP_HEADER);
const UPSTREAM_PEER: http::HeaderName = http::HeaderName::from_static(PEER_HEADER);

/// Whether `name` is listed in one of the `Connection` header values `listed`.
fn named_by_connection<'a>(mut listed: impl Iterator<Item = &'a [u8]>, name: &str) -> bool {
    listed.any(|value| {
        value
            .split(|&byte| byte == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Copies `from` without hop-by-hop headers, those named by `Connection`, and framing
/// (`Content-Length` is set from the body that is actually sent).
pub fn end_to_end_headers(from: &HeaderMap) -> HeaderMap {
    let has_connection = from.contains_key(header::CONNECTION);
    let mut headers = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if is_hop_by_hop(name.as_str())
            || (has_connection
                && named_by_connection(
                    from.get_all(header::CONNECTION).map(HeaderValue::as_bytes),
                    name.as_str(),
                ))
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The end-to-end headers of an upstream answer, as the client's response takes them.
fn response_headers(from: &http::HeaderMap) -> HeaderMap {
    let connection = from.get_all(http::header::CONNECTION);
    let has_connection = connection.iter().next().is_some();
    let mut headers = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if is_hop_by_hop(name.as_str())
            || (has_connection
                && named_by_connection(
                    connection.iter().map(http::HeaderValue::as_bytes),
                    name.as_str(),
                ))
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Whether the method may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The request as it goes upstream, independent of the client connection so that it
/// can be sent again (retries) or later (background revalidation). Its headers are
/// already hyper's: each attempt sends a clone, which shares the values' bytes.
pub struct UpstreamRequest {
    pub method: Method,
    /// The request target, before the server's base path.
    pub path_and_query: Bytes,
    pub headers: http::HeaderMap,
    /// Hash of the client address, for `ip_hash`.
    pub client_key: u64,
    /// The client connection's address, told to backend workers.
    pub peer: Option<SocketAddr>,
}

impl UpstreamRequest {
    /// The request `req` forwarded on `route`: path (without the route prefix when it
    /// strips it), end-to-end headers, original `Host`, forwarding headers, request id.
    ///
    /// Built in one pass over the client's headers, straight into hyper's header map;
    /// every value written here (and every client value, which has to be copied from
    /// actix-http's `http` version to hyper's) goes into one buffer that the values
    /// then share, so the whole request costs a handful of allocations.
    pub fn from_client(
        req: &HttpRequest,
        route: &Route,
        strip_prefix: bool,
        proxy: &Proxy,
    ) -> Self {
        let client = req.headers();
        let path = req.uri().path();
        let path = if strip_prefix {
            match strip_path_prefix(route.prefix(), path) {
                Some("") | None => "/",
                Some(rest) => rest,
            }
        } else {
            path
        };
        let query = req.uri().query();
        let peer_addr = req.peer_addr();
        let peer = peer_addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        let host = client
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| req.uri().authority().map(|authority| authority.as_str()))
            .unwrap_or_default();
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let client_bytes: usize = client.iter().map(|(_, value)| value.len()).sum();
        let mut buffer = BytesMut::with_capacity(
            client_bytes + path.len() + query.map_or(0, str::len) + 2 * host.len() + 256,
        );
        let request_id = REQUEST_ID
            .try_with(|id| {
                buffer.put_slice(id.as_bytes());
                buffer.split().freeze()
            })
            .ok();
        let mut headers = http::HeaderMap::with_capacity(client.len() + 6);
        let has_connection = client.contains_key(header::CONNECTION);
        for (name, value) in client {
            let name = name.as_str();
            // Host, the forwarding headers and the request id are set below.
            if is_hop_by_hop(name)
                || name == "host"
                || is_forwarding_header(name)
                || (request_id.is_some() && name == X_REQUEST_ID.as_str())
                || (has_connection
                    && named_by_connection(
                        client
                            .get_all(header::CONNECTION)
                            .map(HeaderValue::as_bytes),
                        name,
                    ))
            {
                continue;
            }
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            buffer.put_slice(value.as_bytes());
            if let Ok(value) = http::HeaderValue::from_maybe_shared(buffer.split().freeze()) {
                headers.append(name, value);
            }
        }

        buffer.put_slice(host.as_bytes());
        let host = buffer.split().freeze();
        ForwardingHeaders::new(&proxy.trusted, peer, client, scheme, &host, &mut buffer)
            .apply(&mut headers);
        if let Ok(host) = http::HeaderValue::from_maybe_shared(host) {
            headers.insert(http::header::HOST, host);
        }
        if let Some(Ok(id)) = request_id.map(http::HeaderValue::from_maybe_shared) {
            headers.insert(UPSTREAM_X_REQUEST_ID, id);
        }

        buffer.put_slice(path.as_bytes());
        if let Some(query) = query {
            buffer.put_u8(b'?');
            buffer.put_slice(query.as_bytes());
        }
        Self {
            method: req.method().clone(),
            path_and_query: buffer.freeze(),
            headers,
            client_key: client_key(proxy.trusted.client_ip(peer, client)),
            peer: peer_addr,
        }
    }
}

/// Adds the headers of the hop to a backend worker to `headers`: the instance's key and
/// the client connection's address `peer`. Nothing for any other server.
pub fn add_worker_hop(
    headers: &mut http::HeaderMap,
    member: &Member,
    key: &HopKey,
    peer: Option<SocketAddr>,
) {
    if member.url.worker().is_none() {
        return;
    }
    if let Ok(value) = http::HeaderValue::from_bytes(key.header_value().as_bytes()) {
        headers.insert(UPSTREAM_HOP, value);
    }
    if let Some(Ok(value)) = peer.map(|peer| http::HeaderValue::from_str(&peer.to_string())) {
        headers.insert(UPSTREAM_PEER, value);
    }
}

/// The client's request body, handed to the first attempt that reads it. An attempt
/// that failed before reading any of it (connection refused) leaves it for the next.
#[derive(Clone)]
pub struct RequestBody {
    inner: Rc<BodyState>,
}

struct BodyState {
    payload: RefCell<Option<web::Payload>>,
    length: Option<u64>,
    touched: Cell<bool>,
    limit: usize,
    received: Cell<usize>,
    idle_timeout: Duration,
    violation: Cell<Option<Violation>>,
}

#[derive(Debug, Clone, Copy)]
enum Violation {
    TooLarge,
    TimedOut,
}

impl RequestBody {
    /// `None` when the request has no body.
    pub fn new(
        req: &HttpRequest,
        payload: web::Payload,
        limit: usize,
        idle_timeout: Duration,
    ) -> Result<Option<Self>, ProxyError> {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if length.is_some_and(|length| length > limit as u64) {
            return Err(ProxyError::BodyTooLarge(limit));
        }
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        if length.unwrap_or(0) == 0 && !chunked {
            return Ok(None);
        }
        Ok(Some(Self {
            inner: Rc::new(BodyState {
                payload: RefCell::new(Some(payload)),
                length,
                touched: Cell::new(false),
                limit,
                received: Cell::new(0),
                idle_timeout,
                violation: Cell::new(None),
            }),
        }))
    }

    /// Whether an attempt has read (part of) the body, so it cannot be sent again.
    fn is_spent(&self) -> bool {
        self.inner.touched.get()
    }

    fn violation(&self) -> Option<ProxyError> {
        self.inner.violation.get().map(|violation| match violation {
            Violation::TooLarge => ProxyError::BodyTooLarge(self.inner.limit),
            Violation::TimedOut => ProxyError::BodyTimeout,
        })
    }

    fn stream(&self) -> BodyReader {
        BodyReader {
            state: self.inner.clone(),
            idle: IdleTimer::new(self.inner.idle_timeout),
        }
    }
}

/// The body of a request to an upstream server: none, or the client's.
pub enum OutgoingBody {
    Empty,
    Client(BodyReader),
}

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Client(reader) => Pin::new(reader).poll_next(cx).map(|item| {
                item.map(|chunk| {
                    chunk.map(Frame::data).map_err(|err| match err {
                        PayloadError::Io(err) => err,
                        other => std::io::Error::other(other.to_string()),
                    })
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Client(reader) => reader
                .state
                .length
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

/// Reads the client body for one attempt, enforcing the size limit and the pause
/// limit (slow clients are cut off).
pub struct BodyReader {
    state: Rc<BodyState>,
    idle: IdleTimer,
}

/// A deadline that restarts with every chunk. The timer is only armed once a read has
/// to wait, so bodies that are already there (most small ones) never register one.
struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
        }
    }

    /// Data arrived: the pause starts again.
    fn restart(&mut self) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.timeout);
        }
    }

    /// The read is waiting: whether it has waited too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        self.sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }
}

impl Stream for BodyReader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let state = self.state.clone();
        let mut slot = state.payload.borrow_mut();
        let Some(payload) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                state.touched.set(true);
                let received = state.received.get() + chunk.len();
                state.received.set(received);
                if received > state.limit {
                    state.violation.set(Some(Violation::TooLarge));
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                self.idle.restart();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                state.touched.set(true);
                Poll::Ready(other)
            }
            Poll::Pending => {
                if self.idle.expired(cx) {
                    state.touched.set(true);
                    state.violation.set(Some(Violation::TimedOut));
                    return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body timed out",
                    )))));
                }
                Poll::Pending
            }
        }
    }
}

/// A response from an upstream server: its head, converted for the client, and its
/// body still to be read on the connection, which returns to the pool after it.
pub struct Upstream {
    pub status: StatusCode,
    /// The answer's end-to-end headers.
    pub headers: HeaderMap,
    content_length: Option<u64>,
    body: Incoming,
    connection: Option<Returnable>,
    in_flight: InFlight,
}

/// A connection and the pool it goes back to once its exchange is complete.
struct Returnable {
    connection: Pooled<OutgoingBody>,
    client: Rc<UpstreamClient<OutgoingBody>>,
}

impl Returnable {
    fn release(self) {
        self.client.release(self.connection);
    }
}

impl Upstream {
    /// Reads the whole body, up to `limit` bytes (`None` beyond, or on an error).
    pub async fn read_to_end(mut self, limit: usize) -> Option<Bytes> {
        let mut collected = bytes::BytesMut::new();
        while let Some(frame) =
            futures_util::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await
        {
            if let Ok(chunk) = frame.ok()?.into_data() {
                if collected.len() + chunk.len() > limit {
                    return None;
                }
                collected.extend_from_slice(&chunk);
            }
        }
        if let Some(connection) = self.connection.take() {
            connection.release();
        }
        Some(collected.freeze())
    }
}

/// Why one attempt on one server failed.
enum AttemptError {
    Connect(ConnectError),
    Timeout,
    Exchange(hyper::Error),
    InvalidPath,
}

/// The request as hyper sends it to `member`, with `headers`, the request's own or a
/// copy of them.
fn outgoing(
    request: &UpstreamRequest,
    headers: http::HeaderMap,
    member: &Member,
    body: Option<&RequestBody>,
    hop_key: &HopKey,
) -> Result<hyper::Request<OutgoingBody>, AttemptError> {
    let method = http::Method::from_bytes(request.method.as_str().as_bytes())
        .map_err(|_| AttemptError::InvalidPath)?;
    let uri = http::Uri::from_maybe_shared(member.url.target_for(&request.path_and_query))
        .map_err(|_| AttemptError::InvalidPath)?;
    let body = body.map_or(OutgoingBody::Empty, |body| {
        OutgoingBody::Client(body.stream())
    });
    let mut outgoing = hyper::Request::new(body);
    *outgoing.method_mut() = method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    add_worker_hop(outgoing.headers_mut(), member, hop_key, request.peer);
    Ok(outgoing)
}

/// One attempt on one server: a kept-alive connection (or a new one), the request
/// with `headers`, and the response head within `read_timeout`.
async fn attempt(
    proxy: &Proxy,
    member: &Member,
    request: &UpstreamRequest,
    headers: http::HeaderMap,
    body: Option<&RequestBody>,
) -> Result<(hyper::Response<Incoming>, Pooled<OutgoingBody>), AttemptError> {
    let mut connection = proxy
        .client
        .checkout(member)
        .await
        .map_err(AttemptError::Connect)?;
    let mut outgoing = outgoing(request, headers, member, body, &proxy.hop_key)?;
    loop {
        let sent = tokio::time::timeout(
            proxy.read_timeout,
            connection.sender.try_send_request(outgoing),
        )
        .await;
        match sent {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Ok(response)) => return Ok((response, connection)),
            Ok(Err(mut err)) => {
                // A kept-alive connection that the server closed before the request
                // was written gives it back unsent: it goes on a new connection.
                if let (true, Some(unsent)) = (connection.reused, err.take_message()) {
                    outgoing = unsent;
                    connection = proxy
                        .client
                        .connect(member)
                        .await
                        .map_err(AttemptError::Connect)?;
                    continue;
                }
                return Err(AttemptError::Exchange(err.into_error()));
            }
        }
    }
}

/// Sends `request` to the pool's servers in order of preference: the next server is
/// tried after a connection failure (any method, when the body was not yet read) and,
/// for idempotent methods, after a timeout or a 502/503/504 — up to `tries` servers
/// and `retry_timeout`.
pub async fn send(
    proxy: &Proxy,
    pool: &Arc<Pool>,
    mut request: UpstreamRequest,
    body: Option<&RequestBody>,
) -> Result<Upstream, ProxyError> {
    let candidates = pool.candidates(request.client_key);
    if candidates.is_empty() {
        return Err(ProxyError::NoHealthyUpstream(pool.name.clone()));
    }
    let started = Instant::now();
    let metrics = &proxy.metrics;
    let count = |status: &str| {
        metrics
            .proxy_requests
            .with_label_values(&[pool.name.as_str(), status])
            .inc();
    };
    let idempotent = is_idempotent(&request.method);
    let tries = (pool.settings.tries as usize).min(candidates.len());
    let mut last_error = ProxyError::Unreachable(pool.name.clone());
    for (attempt_number, &index) in candidates.iter().take(tries).enumerate() {
        if attempt_number > 0 && started.elapsed() >= pool.settings.retry_timeout {
            break;
        }
        if attempt_number > 0 {
            metrics
                .proxy_retries
                .with_label_values(&[pool.name.as_str()])
                .inc();
        }
        let sent = Instant::now();
        let is_last = attempt_number + 1 == tries;
        let in_flight = pool.start_request(index);
        let member = pool.member(index);
        // Only an attempt that may be followed by another needs a copy of the headers.
        let headers = if is_last {
            std::mem::take(&mut request.headers)
        } else {
            request.headers.clone()
        };
        let result = attempt(proxy, member, &request, headers, body).await;
        if let Some(violation) = body.and_then(RequestBody::violation) {
            return Err(violation);
        }
        let body_spent = body.is_some_and(RequestBody::is_spent);
        metrics
            .proxy_upstream_duration
            .with_label_values(&[pool.name.as_str()])
            .observe(sent.elapsed().as_secs_f64());
        match result {
            Ok((response, connection)) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                count(status.as_str());
                let failed = matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                );
                if failed {
                    pool.record_failure(index);
                    if idempotent && !body_spent && !is_last {
                        tracing::debug!(server = %member.url, %status, "retrying on another server");
                        continue;
                    }
                } else {
                    pool.record_success(index);
                }
                let (head, body) = response.into_parts();
                let content_length = head
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                return Ok(Upstream {
                    status,
                    headers: response_headers(&head.headers),
                    content_length,
                    body,
                    connection: Some(Returnable {
                        connection,
                        client: proxy.client.clone(),
                    }),
                    in_flight,
                });
            }
            Err(err) => {
                count("error");
                pool.record_failure(index);
                let (error, retryable) = match err {
                    AttemptError::Connect(err) => {
                        tracing::warn!(pool = %pool.name, server = %member.url, %err, "upstream connection failed");
                        let error = match err {
                            ConnectError::Tls(_) => ProxyError::Tls(pool.name.clone()),
                            _ => ProxyError::Unreachable(pool.name.clone()),
                        };
                        (error, !body_spent)
                    }
                    AttemptError::Timeout => {
                        tracing::warn!(pool = %pool.name, server = %member.url, "upstream request timed out");
                        (ProxyError::Timeout, idempotent && !body_spent)
                    }
                    AttemptError::Exchange(err) => {
                        tracing::warn!(pool = %pool.name, server = %member.url, %err, "upstream request failed");
                        (
                            ProxyError::BadGateway(err.to_string()),
                            idempotent && !body_spent,
                        )
                    }
                    AttemptError::InvalidPath => {
                        return Err(ProxyError::BadGateway(format!(
                            "{} is not a valid request target",
                            String::from_utf8_lossy(&request.path_and_query)
                        )))
                    }
                };
                if !retryable {
                    return Err(error);
                }
                last_error = error;
            }
        }
    }
    Err(last_error)
}

/// The client's response for an upstream answer: status, end-to-end headers and the
/// body streamed chunk by chunk, each chunk due within `read_timeout` of the last.
/// `tee` sees every chunk (the cache fills itself from it).
pub fn into_response(
    upstream: Upstream,
    method: &Method,
    read_timeout: Duration,
    tee: Option<Box<dyn BodyTee>>,
) -> HttpResponse {
    let Upstream {
        status,
        headers,
        content_length,
        body,
        mut connection,
        in_flight,
    } = upstream;
    let bodyless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodyless {
        if body.is_end_stream() {
            if let Some(connection) = connection.take() {
                connection.release();
            }
        }
        match content_length {
            Some(length) if *method == Method::HEAD => {
                BoxBody::new(actix_web::body::SizedStream::new(
                    length,
                    futures_util::stream::empty::<Result<Bytes, PayloadError>>(),
                ))
            }
            _ => BoxBody::new(()),
        }
    } else {
        BoxBody::new(UpstreamBody {
            body,
            length: content_length,
            idle: IdleTimer::new(read_timeout),
            tee,
            connection,
            _in_flight: in_flight,
        })
    };
    let mut client_response = HttpResponse::with_body(status, body);
    *client_response.headers_mut() = headers;
    client_response
}

/// Sees a response body as it streams past.
pub trait BodyTee {
    fn chunk(&mut self, chunk: &Bytes);
    /// The body ended normally.
    fn finish(self: Box<Self>);
}

/// An upstream response body on its way to the client.
struct UpstreamBody {
    body: Incoming,
    length: Option<u64>,
    idle: IdleTimer,
    tee: Option<Box<dyn BodyTee>>,
    /// Goes back to the pool once the body has been read to its end.
    connection: Option<Returnable>,
    _in_flight: InFlight,
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.release();
        }
        if let Some(tee) = self.tee.take() {
            tee.finish();
        }
    }

    fn fail(&mut self, err: std::io::Error) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.tee = None;
        self.connection = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl MessageBody for UpstreamBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        self.length.map_or(BodySize::Stream, BodySize::Sized)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are hop-by-hop here: HTTP/1.1 clients get none.
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    this.idle.restart();
                    if let Some(tee) = this.tee.as_mut() {
                        tee.chunk(&chunk);
                    }
                    if this.body.is_end_stream() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(err))) => return this.fail(std::io::Error::other(err)),
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle.expired(cx) {
                        return this.fail(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "upstream body timed out",
                        ));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Forwards `req` on a proxy route to `upstream`; `host` is the request's, as
/// [`crate::routing::request_host`] found it for routing.
pub async fn forward(
    req: &HttpRequest,
    host: &str,
    payload: web::Payload,
    route: &Route,
    upstream: &str,
    strip_prefix: bool,
    proxy: &web::Data<Proxy>,
) -> Result<HttpResponse, ApiError> {
    let Some(pool) = proxy.upstreams.get(upstream).cloned() else {
        return Err(ProxyError::NoHealthyUpstream(upstream.to_string()).into());
    };
    let upgrade = super::proxy_tunnel::is_upgrade(req);
    if !upgrade && route.cache && matches!(*req.method(), Method::GET | Method::HEAD) {
        return super::proxy_cache::forward_cached(req, host, &pool, route, strip_prefix, proxy)
            .await;
    }
    let request = UpstreamRequest::from_client(req, route, strip_prefix, proxy);
    if upgrade {
        return super::proxy_tunnel::tunnel(req, payload, &pool, request, proxy)
            .await
            .map_err(ApiError::from);
    }
    let body = RequestBody::new(req, payload, route.max_body_bytes, proxy.body_read_timeout)?;
    let upstream = send(proxy, &pool, request, body.as_ref()).await?;
    let mut response = into_response(upstream, req.method(), proxy.read_timeout, None);
    if route.cache {
        response.headers_mut().insert(
            super::proxy_cache::X_CACHE,
            HeaderValue::from_static("BYPASS"),
        );
        proxy
            .cache
            .count_response("BYPASS", crate::actors::cache::Tier::None);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("te", "trailers"),
            ("accept", "text/html"),
        ] {
            from.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = end_to_end_headers(&from);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.get(header::ACCEPT).unwrap(), "text/html");
    }

    #[test]
    fn only_safe_methods_and_put_delete_are_idempotent() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
