//! Builds a Gatehouse instance: actors first, then the HTTP front end that talks to them.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::{Arbiter, Supervisor};
use actix_web::dev::{Server, ServerHandle};
use actix_web::web;
use futures_util::StreamExt;
use sea_orm::{DatabaseConnection, DbErr};

use crate::actors::auth::AuthActor;
use crate::actors::balancer::{BalancerActor, Upstreams};
use crate::actors::cache::{CacheActor, ResponseCache};
use crate::actors::database::{DatabaseActor, Db};
use crate::actors::group_commit::GroupCommit;
use crate::actors::mailer::{Mailer, MailerActor};
use crate::actors::maintenance::Maintenance;
use crate::actors::realtime::RealtimeActor;
use crate::actors::supervisor::{stop_arbiters, ActorPool};
use crate::actors::webhooks::{WebhookActor, Webhooks};
use crate::auth::passwords::PasswordHasher;
use crate::auth::rate_limit::{InProcessLimiter, RateLimiter};
use crate::auth::service::AuthService;
use crate::auth::sessions::SessionGuard;
use crate::auth::tokens::TokenSigner;
use crate::cluster::bus::{BusHandler, BusListener, BusMessage, ClusterBus};
use crate::cluster::cache_tier::RedisTier;
use crate::cluster::limiter::RedisLimiter;
use crate::cluster::Redis;
use crate::collections::{store, Registry};
use crate::config::{ConfigError, Settings};
use crate::db;
use crate::http::backend_worker::{BackendWorkers, HopKey, WorkerListeners};
use crate::http::forwarded::TrustedProxies;
use crate::http::static_files::StaticSite;
use crate::http::{self, openapi, AppState, TlsListener};
use crate::mail::delivery::Courier;
use crate::mail::transport::MailTransport;
use crate::mail::{outbox, MailContext, MailTemplates};
use crate::queue::{RetryPolicy, Worker};
use crate::realtime::Hub;
use crate::records::RecordsEnv;
use crate::routing::{RouteAction, RouteTable};
use crate::telemetry::Metrics;
use crate::tls::{self, CertificateResolver, TlsError};
use crate::webhooks::sender::{self, WebhookSender};
use crate::webhooks::ssrf::AddressPolicy;
use crate::webhooks::{deliveries, endpoints, EndpointCache};

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Static(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Mail(String),
    #[error("upstreams: {0}")]
    Upstreams(String),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("auth: {0}")]
    Auth(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("webhooks: {0}")]
    Webhooks(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What this instance does when another one reports a change on the cluster bus.
fn cluster_handlers(
    sessions: &Arc<SessionGuard>,
    registry: &Arc<Registry>,
    conn: &DatabaseConnection,
    realtime: &Arc<Hub>,
    cache: &ResponseCache,
    metrics: &Arc<Metrics>,
    endpoints: &Arc<EndpointCache>,
) -> Vec<BusHandler> {
    let sessions = sessions.clone();
    let endpoints = endpoints.clone();
    let (registry, conn) = (registry.clone(), conn.clone());
    let realtime = realtime.clone();
    let (cache, metrics) = (cache.clone(), metrics.clone());
    vec![
        Arc::new(move |message: &BusMessage| {
            if let BusMessage::RecordChanged(event) = message {
                realtime.publish_here(event.as_ref().clone());
            }
        }),
        Arc::new(move |message: &BusMessage| {
            if let BusMessage::CachePurged { targets, host } = message {
                metrics.cache_invalidations_received.inc();
                cache.invalidate(targets, host.as_deref());
            }
        }),
        Arc::new(move |message: &BusMessage| {
            if *message == BusMessage::WebhookEndpointsChanged {
                endpoints.forget_here();
            }
        }),
        Arc::new(move |message: &BusMessage| {
            if let BusMessage::SessionsRevoked { sids } = message {
                sessions.forget_here(sids);
            }
        }),
        Arc::new(move |message: &BusMessage| {
            if *message == BusMessage::CollectionsChanged {
                let (registry, conn) = (registry.clone(), conn.clone());
                actix_web::rt::spawn(async move {
                    match store::load_collections(&conn).await {
                        Ok(collections) => registry.replace(collections),
                        Err(err) => tracing::warn!(%err, "could not reload collections"),
                    }
                });
            }
        }),
    ]
}

/// On SIGTERM or SIGINT, ends every realtime stream at once, so that the graceful
/// stop that follows does not wait for them (clients reconnect elsewhere).
fn close_streams_on_signal(realtime: Arc<Hub>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        realtime.close();
    });
    Ok(())
}

/// A running instance: the HTTP server and the actors behind it.
pub struct Application {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    server: Server,
    /// Stopped after the front end, which forwards to them until its requests are done.
    backend_workers: BackendWorkers,
    realtime: Arc<Hub>,
    db: Db,
    mailer: Mailer,
    mail_drain_timeout: std::time::Duration,
    webhooks: Webhooks,
    webhook_drain_timeout: std::time::Duration,
    conn: DatabaseConnection,
    /// SQLite's write connection (see [`db::connect_writer`]).
    writer: Option<DatabaseConnection>,
    /// Backend actor threads, in the order they are stopped.
    arbiters: Vec<Arbiter>,
}

impl Application {
    /// Binds the listener, opens the database, applies migrations when configured and
    /// starts the actors. Must run inside an actix `System`.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let bind = settings.server.bind;
        let listener =
            TcpListener::bind(bind).map_err(|source| StartError::Bind { addr: bind, source })?;
        Self::build_on(settings, listener).await
    }

    /// [`Application::build`] on a listener the caller bound, e.g. a test that needs
    /// the port first to put it in `server.public_url`.
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Self, StartError> {
        let static_site = StaticSite::new(&settings.static_files)
            .map_err(StartError::Static)?
            .with_memory(
                settings.cache.static_max_bytes,
                settings.cache.static_max_file_bytes,
            );
        let routes = RouteTable::new(&settings)?;
        let route_sites = routes
            .routes()
            .iter()
            .map(|route| match &route.action {
                RouteAction::Static { root: Some(root) } => {
                    StaticSite::for_route(route.prefix(), root, &settings.static_files).map(
                        |site| {
                            Some(site.with_memory(
                                settings.cache.static_max_bytes,
                                settings.cache.static_max_file_bytes,
                            ))
                        },
                    )
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Static)?;
        let trusted_proxies = TrustedProxies::new(settings.trusted_proxy_ranges()?);
        let worker_listeners = WorkerListeners::bind(settings.backend_workers())?;
        let upstreams = Arc::new(
            Upstreams::new(&settings.upstreams, &worker_listeners.addresses()?)
                .map_err(StartError::Upstreams)?,
        );
        let tls = if settings.tls.enabled {
            let resolver = Arc::new(CertificateResolver::load(&settings.tls)?);
            let config = tls::server_config(&settings.tls, resolver.clone())?;
            tls::reload_on_sighup(resolver)?;
            let bind = settings.tls.bind;
            let listener = TcpListener::bind(bind)
                .map_err(|source| StartError::Bind { addr: bind, source })?;
            Some(TlsListener { listener, config })
        } else {
            None
        };
        let templates = MailTemplates::load(&settings.mail.templates_dir)
            .map_err(|err| StartError::Mail(err.to_string()))?;
        if !templates.overridden().is_empty() {
            tracing::info!(overridden = ?templates.overridden(), "mail templates from {}", settings.mail.templates_dir.display());
        }
        let transport = MailTransport::from_settings(&settings.mail).map_err(StartError::Mail)?;
        let conn = db::connect(&settings.database).await?;
        if settings.database.auto_migrate {
            db::migrate_up(&conn, None).await?;
        }
        let writer = db::connect_writer(&settings.database).await?;
        let registry = Arc::new(Registry::new(store::load_collections(&conn).await?));
        let signer = TokenSigner::from_settings(&settings.auth).map_err(|err| {
            StartError::Auth(format!(
                "token secret file {}: {err}",
                settings.auth.secret_file.display()
            ))
        })?;
        let metrics = Arc::new(Metrics::new());
        let hasher = PasswordHasher::start_pool(
            settings.password_hash_workers(),
            &settings.auth.password_hash,
            metrics.password_hashing.clone(),
        )
        .map_err(|err| StartError::Auth(err.to_string()))?;
        let sessions = Arc::new(SessionGuard::new(
            settings.auth.session_cache_capacity,
            settings.auth.session_cache_ttl,
        ));
        let redis = (!settings.redis.url.is_empty())
            .then(|| Redis::start(settings.redis.url.expose(), &settings.redis.key_prefix))
            .transpose()
            .map_err(|err| StartError::Redis(err.to_string()))?;
        let bus = redis.clone().map(ClusterBus::new);
        let (realtime, realtime_events) =
            Hub::new(&settings.realtime, bus.clone(), metrics.clone());
        sessions.on_revoke(Box::new({
            let realtime = realtime.clone();
            move |sids| realtime.sessions_revoked(sids)
        }));
        close_streams_on_signal(realtime.clone())?;
        let mut cache = ResponseCache::new(
            settings.cache.max_bytes,
            settings.cache.max_object_bytes,
            metrics.clone(),
        );
        if let Some(redis) = redis.as_ref().filter(|_| settings.cache.redis.enabled) {
            cache = cache.with_redis(RedisTier::new(redis.clone(), &settings.cache.redis));
        }
        let endpoint_cache = Arc::new(EndpointCache::new(bus.clone()));
        let mut cluster_arbiters = Vec::new();
        if let Some(bus) = &bus {
            sessions.attach_bus(bus.clone());
            let handlers = cluster_handlers(
                &sessions,
                &registry,
                &conn,
                &realtime,
                &cache,
                &metrics,
                &endpoint_cache,
            );
            let (bus, metrics) = (bus.clone(), metrics.clone());
            let arbiter = Arbiter::new();
            Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                BusListener::new(bus, handlers, metrics)
            });
            cluster_arbiters.push(arbiter);
        }
        let limiter: Arc<dyn RateLimiter> = match &redis {
            Some(redis) => Arc::new(RedisLimiter::new(
                redis.clone(),
                settings.auth.rate_limits.clone(),
            )),
            None => Arc::new(InProcessLimiter::new(&settings.auth.rate_limits)),
        };
        let records = Arc::new(RecordsEnv::new(
            registry.clone(),
            hasher,
            sessions,
            bus.clone(),
            realtime.clone(),
        ));

        let (db, db_arbiters) = ActorPool::start(settings.database_actors(), {
            let conn = conn.clone();
            let sqlite_file = settings.database.url.sqlite_path();
            let ping_timeout = settings.database.connect_timeout;
            let metrics = metrics.clone();
            let records = records.clone();
            let endpoints = endpoint_cache.clone();
            let group_commit = writer.clone().map(|writer| {
                GroupCommit::start(
                    writer,
                    endpoint_cache.clone(),
                    settings.database.connect_timeout,
                )
            });
            move || {
                DatabaseActor::new(
                    conn.clone(),
                    sqlite_file.clone(),
                    ping_timeout,
                    metrics.clone(),
                    records.clone(),
                    endpoints.clone(),
                    group_commit.clone(),
                )
            }
        });

        let realtime_arbiter = Arbiter::new();
        Supervisor::start_in_arbiter(&realtime_arbiter.handle(), {
            let (realtime, db, records, metrics) = (
                realtime.clone(),
                db.clone(),
                records.clone(),
                metrics.clone(),
            );
            let events = Arc::new(tokio::sync::Mutex::new(realtime_events));
            move |_| {
                RealtimeActor::new(
                    realtime.clone(),
                    db.clone(),
                    records.clone(),
                    events.clone(),
                    metrics.clone(),
                )
            }
        });

        let (balancer, balancer_arbiter) = BalancerActor::start(upstreams.clone(), metrics.clone());
        let (cache_actor, cache_arbiter) = CacheActor::start(cache.clone(), bus, metrics.clone());

        let addr = listener.local_addr()?;

        let mail_settings = &settings.mail;
        let outbox_queue = outbox::queue(RetryPolicy {
            max_attempts: mail_settings.retry.max_attempts,
            initial_delay: mail_settings.retry.initial_delay,
            max_delay: mail_settings.retry.max_delay,
        });
        let courier = Arc::new(Courier {
            worker: Worker::new(
                db.clone(),
                outbox_queue.clone(),
                mail_settings.batch_size,
                mail_settings.concurrency,
                mail_settings.lease,
            ),
            transport,
            from: mail_settings
                .from
                .parse()
                .map_err(|err| StartError::Mail(format!("mail.from: {err}")))?,
        });
        // The mailer is I/O-bound: one actor on its own thread is enough; its sends run
        // concurrently (mail.concurrency) and other instances share the outbox safely.
        let mailer_arbiter = Arbiter::new();
        let mailer = Mailer::new(Supervisor::start_in_arbiter(&mailer_arbiter.handle(), {
            let poll_interval = mail_settings.poll_interval;
            let metrics = metrics.clone();
            move |_| MailerActor::new(courier, poll_interval, metrics)
        }));
        let mail = Arc::new(MailContext::new(
            Arc::new(templates),
            mail_settings.app_name.clone(),
            &settings.server.public_url,
        ));
        let auth_service = Arc::new(AuthService::new(
            db.clone(),
            records,
            signer,
            limiter,
            settings.auth.clone(),
            mail.clone(),
            mailer.clone(),
        ));
        let (auth, auth_arbiters) = ActorPool::start(settings.auth_actors(), {
            let metrics = metrics.clone();
            move || AuthActor::new(auth_service.clone(), metrics.clone())
        });

        let hook_settings = &settings.webhooks;
        endpoints::sync_config(&conn, &hook_settings.endpoints).await?;
        endpoint_cache.changed();
        let webhook_queue = deliveries::queue(RetryPolicy {
            max_attempts: hook_settings.retry.max_attempts,
            initial_delay: hook_settings.retry.initial_delay,
            max_delay: hook_settings.retry.max_delay,
        });
        let policy = Arc::new(AddressPolicy::new(&hook_settings.allow));
        let client = sender::client(
            policy.clone(),
            hook_settings.connect_timeout,
            hook_settings.timeout,
            hook_settings.concurrency,
        )
        .map_err(|err| StartError::Webhooks(err.to_string()))?;
        let webhook_sender = Arc::new(WebhookSender {
            worker: Worker::new(
                db.clone(),
                webhook_queue.clone(),
                hook_settings.batch_size,
                hook_settings.concurrency,
                hook_settings.lease,
            ),
            client,
            policy,
            disable_after: hook_settings.disable_after,
            max_retry_after: hook_settings.max_retry_after,
            excerpt_bytes: hook_settings.response_excerpt_bytes,
            metrics: metrics.clone(),
        });
        // Like the mailer: one I/O-bound actor on its own thread, posting concurrently.
        let webhooks_arbiter = Arbiter::new();
        let webhooks = Webhooks::new(Supervisor::start_in_arbiter(&webhooks_arbiter.handle(), {
            let poll_interval = hook_settings.poll_interval;
            let metrics = metrics.clone();
            move |_| WebhookActor::new(webhook_sender, poll_interval, metrics)
        }));
        webhooks_arbiter.spawn({
            let webhooks = webhooks.clone();
            crate::webhooks::commits().for_each(move |()| {
                webhooks.wake();
                std::future::ready(())
            })
        });
        let webhook_drain_timeout = hook_settings.timeout;

        let mail_drain_timeout = mail_settings.smtp.timeout;
        let maintenance_arbiter = Arbiter::new();
        Supervisor::start_in_arbiter(&maintenance_arbiter.handle(), {
            let (db, redis, settings, metrics) = (
                db.clone(),
                redis.clone(),
                settings.maintenance.clone(),
                metrics.clone(),
            );
            move |_| Maintenance::new(db.clone(), redis.clone(), settings.clone(), metrics.clone())
        });

        let settings = Arc::new(settings);
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            registry,
            started: std::time::Instant::now(),
            db: db.clone(),
            auth,
            mailer: mailer.clone(),
            mail,
            outbox: outbox_queue,
            webhooks: webhooks.clone(),
            webhook_queue,
            redis,
            metrics,
            static_site,
            openapi: openapi::document(),
            routes: Arc::new(routes),
            route_sites,
            upstreams,
            cache,
            trusted_proxies,
            balancer,
            cache_actor,
            realtime: realtime.clone(),
            hop_key: HopKey::generate(),
        });
        let tls_addr = tls
            .as_ref()
            .map(|tls| tls.listener.local_addr())
            .transpose()?;
        let server = http::server(&settings, listener, tls, state.clone())?;
        let backend_workers = BackendWorkers::start(worker_listeners, &settings, state)?;
        // Stopped in this order: the mailer and the webhook actor (finishing their sends)
        // before the actors and the database they record into; the front-of-house actors
        // first among those.
        let arbiters = [mailer_arbiter, webhooks_arbiter]
            .into_iter()
            .chain([realtime_arbiter, balancer_arbiter, cache_arbiter])
            .chain(auth_arbiters)
            .chain(cluster_arbiters)
            .chain([maintenance_arbiter])
            .chain(db_arbiters)
            .collect();
        Ok(Self {
            addr,
            tls_addr,
            server,
            backend_workers,
            realtime,
            db,
            mailer,
            mail_drain_timeout,
            webhooks,
            webhook_drain_timeout,
            conn,
            writer,
            arbiters,
        })
    }

    /// The address the listener is bound to (the real port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTPS listener's address, when TLS is enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// A handle to stop the HTTP server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The realtime hub, so that whoever stops the server through [`Self::handle`]
    /// can end the event streams first (they would hold a graceful stop open).
    pub fn realtime(&self) -> Arc<Hub> {
        self.realtime.clone()
    }

    /// The database actors, for tools and tests that send them messages directly.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The mailer, for tools and tests that queue mail directly.
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Serves until SIGINT/SIGTERM or [`ServerHandle::stop`]; then, once in-flight
    /// requests have finished (or the shutdown timeout passed), stops the actors in
    /// order and closes the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.realtime.close();
        self.backend_workers.stop().await;
        tracing::info!("HTTP server stopped; stopping actors");
        // Sends in progress finish (each is bounded by the SMTP timeout); mail not yet
        // started stays queued for the next start or another instance.
        // Both drain at once: neither waits for the other's sends.
        futures_util::join!(
            self.mailer.drain(self.mail_drain_timeout),
            self.webhooks.drain(self.webhook_drain_timeout),
        );
        drop(self.mailer);
        drop(self.webhooks);
        drop(self.db);
        stop_arbiters(self.arbiters).await;
        for pool in self.writer.into_iter().chain([self.conn]) {
            if let Err(err) = pool.close().await {
                tracing::warn!(%err, "closing a database pool failed");
            }
        }
        tracing::info!("shutdown complete");
        result
    }
}
