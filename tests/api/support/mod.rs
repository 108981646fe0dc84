//! The test harness: a real Gatehouse on a random port, a fresh database per test
//! (a SQLite file, or a PostgreSQL schema when DATABASE_URL is set), a real HTTP client.

pub mod accounts;
pub mod certs;
pub mod oauth_provider;
pub mod raw_http;
pub mod tcp_proxy;
pub mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use actix_web::dev::ServerHandle;
use gatehouse::actors::database::Db;
use gatehouse::app::Application;
use gatehouse::config::{sqlite_url_for, ConnectionUrl, Settings};

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

/// A running Gatehouse with its own database and static root.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the test enabled TLS.
    pub tls_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub db: Db,
    pub static_root: PathBuf,
    pub sqlite_file: Option<PathBuf>,
    handle: ServerHandle,
    /// Signalled when the instance has shut down completely.
    stopped: std::sync::mpsc::Receiver<()>,
    postgres_schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
        // The stop command is sent at once; then the instance closes its actors and its
        // database pool, which the next test may need the connections of.
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
                    if let Ok(conn) = sea_orm::Database::connect(&url).await {
                        use sea_orm::ConnectionTrait;
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            ))
                            .await;
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

/// Starts Gatehouse on `backend`; `None` (after saying why) when that backend is not
/// available here.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
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

    let mut settings = test_settings();
    settings.static_files.root = static_root.clone();
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
    // TEST_LOG=debug (or any filter) shows the instance's logs while debugging a test.
    if let Ok(level) = std::env::var("TEST_LOG") {
        let mut log = settings.log.clone();
        log.level = level;
        gatehouse::telemetry::init_tracing(&log);
    }

    // The instance runs in an actix system of its own, so that when the test ends (and
    // its runtime with it) the instance still shuts down completely: its actor threads
    // stop and its database pool closes. Otherwise every PostgreSQL test would leave its
    // connections open until the process exits, and a long suite runs out of them.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(err) => {
                    let _ = started_tx.send(Err(err.to_string()));
                    return;
                }
            };
            let running = (app.addr(), app.tls_addr(), app.db().clone(), app.handle());
            let _ = started_tx.send(Ok(running));
            let _ = app.run_until_stopped().await;
        });
        let _ = stopped_tx.send(());
    });
    let (addr, tls_addr, db, handle) = started_rx
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
        static_root,
        sqlite_file,
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
