//! Small real HTTP servers for proxy tests: an actix-web app on a loopback port that
//! counts and records what reaches it, and a WebSocket echo server.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::{SinkExt, StreamExt};
use gatehouse::config::{RouteHandler, RouteSettings, Settings, UpstreamSettings};
use rustls::pki_types::pem::PemObject;
use tokio::sync::Notify;

/// A loopback address where nothing listens, reserved while this value lives: a socket
/// bound to it but not listening, so connections to it are refused and no other test's
/// server can be given the port meanwhile (as it can once a listener is dropped).
pub struct DeadAddress {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

impl DeadAddress {
    pub fn new() -> Self {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any_port.into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        Self {
            addr,
            _socket: socket,
        }
    }
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

impl Seen {
    /// The value of header `name`; panics when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

/// Shared state of one upstream server.
pub struct UpstreamState {
    pub name: String,
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Status of `GET /health`.
    health: AtomicU16,
    /// Released by tests that hold a streaming answer open.
    pub release: Notify,
    /// Notified when `/upload` has received the first chunk of its body.
    pub first_chunk: Notify,
}

/// A running upstream server.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    handle: ServerHandle,
}

impl Upstream {
    /// Starts an upstream that names itself `name` in its answers.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    /// Starts an upstream that speaks HTTPS with `certificate` (PEM chain and key).
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> Self {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Self::start_with(name, Some(config)).await
    }

    async fn start_with(name: &str, tls: Option<rustls::ServerConfig>) -> Self {
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            hits: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            health: AtomicU16::new(200),
            release: Notify::new(),
            first_chunk: Notify::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/health", web::get().to(health))
                .route("/stream", web::get().to(stream))
                .route("/echo", web::to(echo))
                .route("/consume", web::post().to(consume))
                .route("/upload", web::post().to(upload))
                .route("/big", web::get().to(big))
                .route("/cached", web::to(cached))
                .route("/status/{code}", web::to(status))
                .route("/slow", web::get().to(slow))
                .default_service(web::to(whoami))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config),
            None => server.listen(listener),
        }
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            addr,
            state,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached this server (health probes excluded).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Every request seen, in order (health probes excluded).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Makes `GET /health` answer `status`.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn record(state: &UpstreamState, req: &HttpRequest) {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |pq| pq.to_string()),
        headers: req.headers().clone(),
    });
}

/// Any path: `<name>`.
async fn whoami(req: HttpRequest, state: web::Data<UpstreamState>) -> HttpResponse {
    record(&state, &req);
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(state.name.clone())
}

async fn health(state: web::Data<UpstreamState>) -> HttpResponse {
    let status = state.health.load(Ordering::SeqCst);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// `/status/{code}`: answers with that status and `<name>`.
async fn status(
    req: HttpRequest,
    code: web::Path<u16>,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(*code).unwrap())
        .body(state.name.clone())
}

/// Echoes the request body back as it arrives, chunk by chunk.
async fn echo(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(payload)
}

/// Reads the whole request body, then answers with its length.
async fn consume(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    HttpResponse::Ok().body(body.len().to_string())
}

/// Reads the body chunk by chunk, telling the test about the first; answers with the
/// number of bytes received.
async fn upload(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    let mut total = 0;
    while let Some(chunk) = payload.next().await {
        if total == 0 {
            state.first_chunk.notify_one();
        }
        total += chunk.unwrap().len();
    }
    HttpResponse::Ok().body(total.to_string())
}

/// `/big?bytes=N`: N bytes, generated 64 KiB at a time, with a Content-Length.
async fn big(query: web::Query<HashMap<String, u64>>) -> HttpResponse {
    let total = query.get("bytes").copied().unwrap_or(0);
    let chunk = web::Bytes::from(vec![b'z'; 64 * 1024]);
    let parts = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let size = left.min(chunk.len() as u64);
                (
                    Ok::<_, actix_web::Error>(chunk.slice(..size as usize)),
                    left - size,
                )
            })
        }
    });
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(actix_web::body::SizedStream::new(total, parts))
}

/// `/stream`: sends a first part (an SSE event), then holds the response open
/// until the test calls `release`, then sends the end.
async fn stream(req: HttpRequest, state: web::Data<UpstreamState>) -> HttpResponse {
    record(&state, &req);
    let state = state.into_inner();
    let parts = futures_util::stream::unfold(0, move |step| {
        let state = state.clone();
        async move {
            match step {
                0 => Some((
                    Ok::<_, actix_web::Error>(web::Bytes::from("data: first\n\n")),
                    1,
                )),
                1 => {
                    state.release.notified().await;
                    Some((Ok(web::Bytes::from("data: last\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(parts)
}

/// `/slow?ms=N`: answers after N milliseconds.
async fn slow(
    req: HttpRequest,
    query: web::Query<HashMap<String, u64>>,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    let ms = query.get("ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().body(state.name.clone())
}

/// `/cached?cc=..&etag=..&vary=..&expires=..&status=..&header=name:value&pad=N`: a response
/// with those caching headers whose body is `<name>:<hit number>`, so a test can tell
/// a stored copy from a new fetch. Answers 304 to a matching `If-None-Match`.
async fn cached(
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<UpstreamState>,
) -> HttpResponse {
    record(&state, &req);
    let hit = state.hits.load(Ordering::SeqCst);
    if let Some(ms) = query.get("delay_ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = query
        .get("status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let etag = query.get("etag").map(|etag| format!("\"{etag}\""));
    let matches = etag.as_ref().is_some_and(|etag| {
        req.headers()
            .get("if-none-match")
            .is_some_and(|value| value.to_str().unwrap_or("") == etag)
    });
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
    };
    for (param, header) in [
        ("cc", "cache-control"),
        ("vary", "vary"),
        ("expires", "expires"),
    ] {
        if let Some(value) = query.get(param) {
            response.insert_header((header, value.as_str()));
        }
    }
    if let Some(etag) = &etag {
        response.insert_header(("etag", etag.as_str()));
    }
    if let Some((name, value)) = query.get("header").and_then(|h| h.split_once(':')) {
        response.insert_header((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
    }
    if matches {
        return response.finish();
    }
    let variant = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .map(|lang| format!(":{lang}"))
        .unwrap_or_default();
    // `pad=N` adds N dots, for responses of a known size.
    let pad = query.get("pad").and_then(|n| n.parse().ok()).unwrap_or(0);
    response.content_type("text/plain").body(format!(
        "{}:{hit}{variant}{}",
        state.name,
        ".".repeat(pad)
    ))
}

/// A WebSocket server that echoes every message, prefixed with `echo:`.
pub async fn start_websocket_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            actix_web::rt::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() {
                        let text = format!("echo:{}", message.into_text().unwrap());
                        if ws
                            .send(tokio_tungstenite::tungstenite::Message::text(text))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Adds pool `name` of `servers` (configured further by `pool`) and a proxy route for
/// `path` just before the last route (the catch-all static one), so `/api` stays the API.
pub fn proxy_route(
    settings: &mut Settings,
    path: &str,
    name: &str,
    servers: &[String],
    pool: impl FnOnce(&mut UpstreamSettings),
    route: impl FnOnce(&mut RouteSettings),
) {
    let list: Vec<String> = servers
        .iter()
        .map(|url| format!("{{ url = \"{url}\" }}"))
        .collect();
    let mut upstream: UpstreamSettings =
        toml::from_str(&format!("servers = [{}]", list.join(", "))).unwrap();
    pool(&mut upstream);
    settings.upstreams.insert(name.to_string(), upstream);
    let mut proxy = RouteSettings {
        host: None,
        path: path.to_string(),
        handler: RouteHandler::Proxy,
        root: None,
        upstream: Some(name.to_string()),
        strip_prefix: false,
        cache: false,
        to: None,
        status: None,
        max_body_bytes: None,
    };
    route(&mut proxy);
    let position = settings.routes.len().saturating_sub(1);
    settings.routes.insert(position, proxy);
}

/// Polls `condition` every 10 ms until it holds; panics after 10 s (a hang guard, not
/// a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting: {what}");
}

/// Runs `future`, failing the test (instead of hanging it) after 10 s.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("did not happen: {what}"))
}
