//! The HTTP front end: routes, middleware and handlers. Handlers translate HTTP to
//! actor messages and back; they never touch the database themselves.

pub mod admin;
pub mod admin_campaigns;
pub mod admin_outbox;
pub mod admin_webhooks;
pub mod api_cache;
pub mod auth;
pub mod auth_pages;
pub mod backend_worker;
pub mod batch;
pub mod compression;
pub mod edge;
pub mod forwarded;
pub mod front;
pub mod health;
pub mod hooks;
pub mod middleware;
pub mod newsletter;
pub mod openapi;
pub mod proxy;
pub mod proxy_cache;
pub mod proxy_tunnel;
pub mod realtime;
pub mod records;
pub mod static_files;
pub mod upstream_client;

use std::net::TcpListener;
use std::sync::Arc;

use actix::Addr;
use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header::HeaderValue;
use actix_web::http::Method;
use actix_web::{guard, web, App, HttpServer};

use crate::actors::auth::Auth;
use crate::actors::balancer::{BalancerActor, Upstreams};
use crate::actors::cache::{CacheActor, ResponseCache};
use crate::actors::database::Db;
use crate::actors::mailer::Mailer;
use crate::actors::webhooks::Webhooks;
use crate::collections::Registry;
use crate::config::Settings;
use crate::error::{json_error, query_error, ApiError};
use crate::mail::MailContext;
use crate::queue::{Listing, Queue, Status};
use crate::routing::{request_host, RouteAction, RouteTable};
use crate::telemetry::Metrics;
use backend_worker::HopKey;
use edge::EdgePolicy;
use forwarded::TrustedProxies;
use middleware::{RequestTelemetry, X_REQUEST_ID};
use proxy::Proxy;
use static_files::StaticSite;

/// What every HTTP worker shares: actor addresses and read-only state built at start.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub registry: Arc<Registry>,
    pub started: std::time::Instant,
    pub db: Db,
    pub auth: Auth,
    /// Wake it after queuing mail.
    pub mailer: Mailer,
    /// Templates, product name and public URL for mails.
    pub mail: Arc<MailContext>,
    /// The outbox's delivery queue, for the admin API.
    pub outbox: Queue,
    /// Wake it after making deliveries due.
    pub webhooks: Webhooks,
    /// The webhook deliveries' queue, for the admin API.
    pub webhook_queue: Queue,
    /// The cluster's Redis, when configured (readiness checks it).
    pub redis: Option<crate::cluster::Redis>,
    pub metrics: Arc<Metrics>,
    pub static_site: StaticSite,
    pub openapi: String,
    pub routes: Arc<RouteTable>,
    /// The site of each `static` route with a `root` of its own, by route position.
    pub route_sites: Vec<Option<StaticSite>>,
    pub upstreams: Arc<Upstreams>,
    pub cache: ResponseCache,
    pub trusted_proxies: TrustedProxies,
    pub balancer: Addr<BalancerActor>,
    pub cache_actor: Addr<CacheActor>,
    /// Realtime clients: connecting and subscribing touch only this.
    pub realtime: Arc<crate::realtime::Hub>,
    /// What the proxy presents to this instance's backend workers, and they check.
    pub hop_key: HopKey,
}

/// The HTTPS listener and its rustls configuration.
pub struct TlsListener {
    pub listener: TcpListener,
    pub config: rustls::ServerConfig,
}

/// Builds the HTTP server on `listener` (and `tls`, when given). The factory below runs
/// once per worker; it only clones handles to actors that were started before it and
/// builds the worker's own upstream client.
pub fn server(
    settings: &Settings,
    listener: TcpListener,
    tls: Option<TlsListener>,
    state: web::Data<AppState>,
) -> std::io::Result<Server> {
    let cors_origins = settings.api.cors_origins.clone();
    let max_body = settings.server.max_body_bytes;
    let access_log = settings.log.access_log;
    let metrics_enabled = settings.metrics.enabled;
    let edge_policy = web::Data::new(EdgePolicy {
        max_header_bytes: settings.limits.max_header_bytes,
        redirect_to_https_port: (settings.tls.enabled && settings.tls.redirect_http)
            .then(|| tls.as_ref().and_then(|tls| tls.listener.local_addr().ok()))
            .flatten()
            .map(|addr| addr.port()),
        hsts: (settings.tls.enabled && !settings.tls.hsts.is_empty())
            .then(|| HeaderValue::from_str(&settings.tls.hsts).ok())
            .flatten(),
    });
    let worker_settings = settings.clone();
    let mut server = HttpServer::new(move || {
        let proxy = Proxy::new(
            &worker_settings,
            state.upstreams.clone(),
            state.cache.clone(),
            state.trusted_proxies.clone(),
            state.hop_key.clone(),
            state.metrics.clone(),
        );
        let routes = state.routes.clone();
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(edge_policy.clone())
            .app_data(web::Data::new(proxy))
            .app_data(json_config(max_body))
            .app_data(query_config())
            .wrap(compression::Compression)
            .wrap(actix_web::middleware::from_fn(edge::edge))
            .wrap(RequestTelemetry::new(state.metrics.clone(), access_log))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .service(web::scope("/_/auth").configure(auth_pages));
        if metrics_enabled {
            app = app.route("/metrics", web::get().to(health::metrics));
        }
        app.service(
            web::scope("/api")
                .guard(guard::fn_guard(move |ctx| {
                    let head = ctx.head();
                    routes
                        .find(request_host(head), head.uri.path())
                        .is_some_and(|route| route.action == RouteAction::Api)
                }))
                .wrap(cors(&cors_origins))
                .configure(api_routes)
                .default_service(web::to(api_not_found)),
        )
        .default_service(web::to(front::dispatch))
    })
    .workers(settings.http_workers())
    .keep_alive(settings.server.keep_alive)
    .client_request_timeout(settings.server.request_head_timeout)
    .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
    // A client that closes its side is gone: without this, a response still streaming
    // (a realtime event stream waiting for its next event) would only notice at its
    // next write, and hold its memory until then.
    .h1_allow_half_closed(false)
    // Applies to the TLS listener too: actix-http sets it on the TCP stream under TLS.
    .tcp_nodelay(true)
    .listen(listener)?;
    if let Some(tls) = tls {
        server = server.listen_rustls_0_23(tls.listener, tls.config)?;
    }
    Ok(server.run())
}

/// JSON bodies up to `limit` bytes; errors in the API's envelope.
fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(json_error)
}

/// Query strings; errors in the API's envelope.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(query_error)
}

/// The API under `/api`: the same routes on the front end (for `api` routes) and on
/// every backend worker.
fn api_routes(api: &mut web::ServiceConfig) {
    api.route("/health", web::get().to(health::api_health))
        .route("/openapi.json", web::get().to(openapi::serve))
        .route("/batch", web::post().to(batch::batch))
        .route("/realtime", web::get().to(realtime::connect))
        .route("/realtime", web::post().to(realtime::set_subscriptions))
        .service(
            web::scope("/newsletter")
                .route("/subscribe", web::post().to(newsletter::subscribe))
                .route("/confirm", web::get().to(newsletter::confirm))
                .route("/unsubscribe", web::get().to(newsletter::unsubscribe_page))
                .route("/unsubscribe", web::post().to(newsletter::unsubscribe)),
        )
        // Single routes, not a scope: a scope would swallow the other /admin paths.
        .route("/admin/outbox", web::get().to(admin_outbox::list))
        .route(
            "/admin/outbox/{id}/retry",
            web::post().to(admin_outbox::retry),
        )
        // Deliveries before `{id}`: the first matching route wins.
        .route(
            "/admin/webhooks/deliveries",
            web::get().to(admin_webhooks::list_deliveries),
        )
        .route(
            "/admin/webhooks/deliveries/{id}",
            web::get().to(admin_webhooks::view_delivery),
        )
        .route(
            "/admin/webhooks/deliveries/{id}/retry",
            web::post().to(admin_webhooks::retry_delivery),
        )
        .route("/admin/webhooks", web::get().to(admin_webhooks::list))
        .route("/admin/webhooks", web::post().to(admin_webhooks::create))
        .route("/admin/webhooks/{id}", web::get().to(admin_webhooks::view))
        .route(
            "/admin/webhooks/{id}",
            web::patch().to(admin_webhooks::update),
        )
        .route(
            "/admin/webhooks/{id}",
            web::delete().to(admin_webhooks::delete),
        )
        .route("/hooks/{name}", web::post().to(hooks::receive))
        .route("/admin/campaigns", web::post().to(admin_campaigns::create))
        .route(
            "/admin/campaigns/{id}",
            web::get().to(admin_campaigns::show),
        )
        .route(
            "/admin/campaigns/{id}/send",
            web::post().to(admin_campaigns::send),
        )
        .route("/collections", web::get().to(records::list_collections))
        .route("/collections", web::post().to(records::create_collection))
        .route(
            "/collections/import",
            web::put().to(records::import_collections),
        )
        .service(
            web::scope("/collections/{collection}")
                .route("", web::get().to(records::view_collection))
                .route("", web::patch().to(records::update_collection))
                .route("", web::delete().to(records::delete_collection))
                .route("/truncate", web::delete().to(records::truncate_collection))
                .route("/records", web::get().to(records::list))
                .route("/records", web::post().to(records::create))
                .route("/records/{id}", web::get().to(records::view))
                .route("/records/{id}", web::patch().to(records::update))
                .route("/records/{id}", web::delete().to(records::delete))
                .route(
                    "/auth-with-password",
                    web::post().to(auth::auth_with_password),
                )
                .route("/auth-refresh", web::post().to(auth::auth_refresh))
                .route("/auth-methods", web::get().to(auth::auth_methods))
                .route("/auth-with-oauth2", web::post().to(auth::auth_with_oauth2))
                .route("/logout", web::post().to(auth::logout))
                .route("/logout-all", web::post().to(auth::logout_all))
                .route("/sessions", web::get().to(auth::sessions))
                .route(
                    "/request-verification",
                    web::post().to(auth::request_verification),
                )
                .route(
                    "/confirm-verification",
                    web::post().to(auth::confirm_verification),
                )
                .route(
                    "/request-password-reset",
                    web::post().to(auth::request_password_reset),
                )
                .route(
                    "/confirm-password-reset",
                    web::post().to(auth::confirm_password_reset),
                )
                .route(
                    "/request-email-change",
                    web::post().to(auth::request_email_change),
                )
                .route(
                    "/confirm-email-change",
                    web::post().to(auth::confirm_email_change),
                ),
        )
        .route("/admin/status", web::get().to(admin::status))
        .route("/admin/upstreams", web::get().to(admin::upstreams))
        .route("/admin/cache/purge", web::post().to(admin::purge_cache));
}

/// The pages account mails link to, under `/_/auth`.
fn auth_pages(pages: &mut web::ServiceConfig) {
    pages
        .route(
            "/confirm-verification/{token}",
            web::get().to(auth_pages::verification_page),
        )
        .route(
            "/confirm-verification/{token}",
            web::post().to(auth_pages::verification_submit),
        )
        .route(
            "/confirm-password-reset/{token}",
            web::get().to(auth_pages::password_reset_page),
        )
        .route(
            "/confirm-password-reset/{token}",
            web::post().to(auth_pages::password_reset_submit),
        )
        .route(
            "/confirm-email-change/{token}",
            web::get().to(auth_pages::email_change_page),
        )
        .route(
            "/confirm-email-change/{token}",
            web::post().to(auth_pages::email_change_submit),
        );
}

/// CORS for the API: the configured origins, every method the SDKs use, any header.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_any_header()
        .expose_headers([X_REQUEST_ID])
        .max_age(86400);
    if origins.iter().any(|origin| origin == "*") {
        cors.allow_any_origin().send_wildcard()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
    }
}

async fn api_not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// A failure that is Gatehouse's fault: logged in full, answered with a plain 500.
fn internal(err: &dyn std::error::Error) -> ApiError {
    tracing::error!(%err, "request failed");
    ApiError::internal()
}

/// Database trouble: 503 when the database actor is gone (shutting down), else 500.
/// Largest page the queue listings (outbox, webhook deliveries) answer.
const MAX_QUEUE_PAGE: u64 = 500;

/// Checks the `status`, `page` and `perPage` of a queue listing; every bad one is named
/// in the error's `data`.
fn queue_listing(
    message: &str,
    status: Option<&str>,
    page: Option<u64>,
    per_page: Option<u64>,
) -> Result<Listing, ApiError> {
    let mut error = ApiError::validation(message);
    let parsed = status.filter(|s| !s.is_empty()).map(Status::parse);
    if parsed == Some(None) {
        error = error.with_field(
            "status",
            "validation_invalid_value",
            "Must be one of pending, sending, sent, failed, cancelled.",
        );
    }
    let page = page.unwrap_or(1);
    if page == 0 {
        error = error.with_field("page", "validation_min_number", "Must be at least 1.");
    }
    let per_page = per_page.unwrap_or(30);
    if !(1..=MAX_QUEUE_PAGE).contains(&per_page) {
        error = error.with_field(
            "perPage",
            "validation_out_of_range",
            &format!("Must be between 1 and {MAX_QUEUE_PAGE}."),
        );
    }
    if !error.data.is_empty() {
        return Err(error);
    }
    Ok(Listing {
        status: parsed.flatten(),
        page,
        per_page,
    })
}
