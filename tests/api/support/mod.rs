//! The test harness: a real Gatehouse on a random port, a fresh database per test
//! (a SQLite file, or a PostgreSQL schema when DATABASE_URL is set), a real HTTP client.

pub mod accounts;
pub mod certs;
pub mod mail;
pub mod oauth_provider;
pub mod pg_wire;
pub mod raw_http;
// Shared with tests/cli, whose process tests alone hold the sink's answers.
#[allow(dead_code)]
pub mod smtp_sink;
pub mod tcp_proxy;
pub mod upstream;
pub mod webhook_receiver;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use actix_web::dev::ServerHandle;
use gatehouse::actors::database::Db;
use gatehouse::actors::mailer::Mailer;
use gatehouse::app::Application;
use gatehouse::config::{
    sqlite_url_for, ConnectionUrl, DatabaseSettings, MailTransportKind, Settings, SmtpSecurity,
};

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend, as `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::support::Backend;

            #[actix_web::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }

            #[actix_web::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )+};
}

/// Says why a test did not run, on the terminal even when test output is captured.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The PostgreSQL server named by DATABASE_URL, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
}

/// The address of the PostgreSQL server that `url` names, over TCP.
pub async fn postgres_addr(url: &url::Url) -> SocketAddr {
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    tokio::net::lookup_host(target)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// A running Gatehouse with its own database and static root.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the test enabled TLS.
    pub tls_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub db: Db,
    pub mailer: Mailer,
    pub static_root: PathBuf,
    pub sqlite_file: Option<PathBuf>,
    /// Where the `file` mail transport writes.
    pub mail_dir: PathBuf,
    /// The database settings, for a second instance sharing the database.
    pub database: DatabaseSettings,
    handle: ServerHandle,
    /// Says when the instance's thread has shut it down completely.
    stopped: std::sync::mpsc::Receiver<()>,
    postgres_schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the instance as SIGTERM does (in-flight work finishes) and waits until it
    /// has shut down completely.
    pub async fn shut_down(&self) {
        self.handle.stop(true).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Err(std::sync::mpsc::TryRecvError::Empty) = self.stopped.try_recv() {
            assert!(
                std::time::Instant::now() < deadline,
                "the instance did not stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Writes a file under the static root.
    pub fn write_static(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.static_root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent at once; the instance's own thread then stops its
        // actors and closes its database pool, which this waits for (bounded), so that
        // no test leaves connections or background work behind.
        drop(self.handle.stop(false));
        let _ = self
            .stopped
            .recv_timeout(std::time::Duration::from_secs(10));
        if let Some((url, schema)) = self.postgres_schema.take() {
            // Drop runs outside async code; a short-lived runtime removes the schema.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut options = sea_orm::ConnectOptions::new(url);
                    options.max_connections(1).sqlx_logging(false);
                    if let Ok(conn) = sea_orm::Database::connect(options).await {
                        use sea_orm::ConnectionTrait;
                        // Background actors (the mailer) may be mid-transaction on a
                        // connection whose I/O ran on the test's runtime, which is blocked
                        // in this drop: such a transaction never ends and would hold its
                        // locks against the DROP forever. End those sessions, then drop;
                        // a few rounds in case a session was between transactions.
                        let _ = conn.execute_unprepared("SET lock_timeout = '2s'").await;
                        for _ in 0..5 {
                            let _ = conn
                                .execute_unprepared(&format!(
                                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                                     JOIN pg_class c ON c.oid = l.relation \
                                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                                     WHERE n.nspname = '{schema}' AND l.pid <> pg_backend_pid()"
                                ))
                                .await;
                            let dropped = conn
                                .execute_unprepared(&format!(
                                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                                ))
                                .await;
                            if dropped.is_ok() {
                                break;
                            }
                        }
                        let _ = conn.close().await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// Settings for a test instance: loopback, random port, quiet, small pools.
pub fn test_settings() -> Settings {
    let mut settings = Settings::defaults();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 2;
    settings.server.shutdown_timeout = std::time::Duration::from_secs(5);
    settings.database.max_connections = 4;
    settings.database.actors = 2;
    settings.log.access_log = false;
    // As config/test.toml has it.
    settings.batch.enabled = true;
    // Fast retries so that retry tests take tens of milliseconds.
    settings.mail.poll_interval = Duration::from_millis(200);
    settings.mail.retry.initial_delay = Duration::from_millis(20);
    settings.mail.retry.max_delay = Duration::from_millis(80);
    settings.mail.smtp.timeout = Duration::from_secs(2);
    settings.mail.lease = Duration::from_secs(30);
    // Cheap hashing keeps the suite fast; the cost parameters are tested on their own.
    settings.auth.password_hash.memory_kib = 256;
    settings.auth.password_hash.iterations = 1;
    settings.auth.password_hash.workers = 2;
    settings.auth.actors = 2;
    let generous = gatehouse::config::RateLimit {
        requests: 10_000,
        per: std::time::Duration::from_secs(60),
    };
    let limits = &mut settings.auth.rate_limits;
    limits.login_per_ip = generous;
    limits.login_per_account = generous;
    limits.register_per_ip = generous;
    limits.request_per_ip = generous;
    limits.request_per_account = generous;
    settings
}

/// Points the mailer of `settings` at a loopback SMTP server.
pub fn use_smtp(settings: &mut Settings, addr: SocketAddr) {
    settings.mail.transport = MailTransportKind::Smtp;
    settings.mail.smtp.host = addr.ip().to_string();
    settings.mail.smtp.port = addr.port();
    settings.mail.smtp.security = SmtpSecurity::None;
}

/// Starts Gatehouse on `backend`; `None` (after saying why) when that backend is not
/// available here.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`] on PostgreSQL, connecting by `url` (another way to the server of
/// DATABASE_URL: its socket, a relay).
pub async fn spawn_app_on_postgres(url: &url::Url) -> Option<TestApp> {
    spawn_app_with(Backend::Postgres, |settings| {
        settings.database.url = gatehouse::config::ConnectionUrl::new(url.to_string());
    })
    .await
}

/// Like [`spawn_app`], after `customize` has adjusted the settings.
pub async fn spawn_app_with(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let dir = tempfile::tempdir().unwrap();
    let static_root = dir.path().join("public");
    std::fs::create_dir_all(&static_root).unwrap();
    std::fs::write(static_root.join("index.html"), "<h1>test home</h1>").unwrap();

    // Bound first so that server.public_url, and with it every link in a mail, names
    // the instance's real port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = test_settings();
    settings.server.public_url = format!("http://{}", listener.local_addr().unwrap());
    settings.static_files.root = static_root.clone();
    settings.mail.file.dir = dir.path().join("mail");
    settings.auth.secret_file = dir.path().join("auth_secret");
    let mut postgres_schema = None;
    let mut sqlite_file = None;
    match backend {
        Backend::Sqlite => {
            let file = dir.path().join("gatehouse.db");
            settings.database.url = sqlite_url_for(&file);
            sqlite_file = Some(file);
        }
        Backend::Postgres => {
            let Some(url) = postgres_url() else {
                skip(
                    &current_test(),
                    "DATABASE_URL is not set to a PostgreSQL server (.ci/run sets it)",
                );
                return None;
            };
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            settings.database.url = ConnectionUrl::new(url.clone());
            settings.database.schema = schema.clone();
            postgres_schema = Some((url, schema));
        }
    }
    customize(&mut settings);
    let mail_dir = settings.mail.file.dir.clone();
    let database = settings.database.clone();
    // TEST_LOG=debug (or any filter) shows the instance's logs while debugging a test.
    if let Ok(level) = std::env::var("TEST_LOG") {
        let mut log = settings.log.clone();
        log.level = level;
        gatehouse::telemetry::init_tracing(&log);
    }

    // The instance runs on a thread of its own, in its own actix system, so that it
    // outlives nothing and depends on nothing of the test's runtime: its connections and
    // actors belong to it, and dropping the TestApp shuts it down completely.
    let (started, ready) = tokio::sync::oneshot::channel();
    let (finished, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = if settings.server.bind.port() == 0 {
                Application::build_on(settings, listener).await
            } else {
                Application::build(settings).await
            };
            match app {
                Ok(app) => {
                    let handles = (
                        app.addr(),
                        app.tls_addr(),
                        app.db().clone(),
                        app.mailer().clone(),
                        app.handle(),
                    );
                    let _ = started.send(Ok(handles));
                    let _ = app.run_until_stopped().await;
                }
                Err(err) => {
                    let _ = started.send(Err(err.to_string()));
                }
            }
        });
        let _ = finished.send(());
    });
    let (addr, tls_addr, db, mailer, handle) = ready
        .await
        .expect("the instance thread answers")
        .expect("test app starts");
    Some(TestApp {
        addr,
        tls_addr,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        db,
        mailer,
        static_root,
        sqlite_file,
        mail_dir,
        database,
        handle,
        stopped,
        postgres_schema,
        _dir: dir,
    })
}

/// Starts Gatehouse on SQLite for front-of-house tests, where the database does not
/// matter; `customize` adjusts the settings (routes, upstreams, TLS).
pub async fn spawn_front(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(Backend::Sqlite, customize)
        .await
        .expect("SQLite is always available")
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string()
}
