//! Several `gatehouse serve` processes sharing one PostgreSQL schema and one Redis key
//! prefix behave as one service. Fault tests use a private `redis-server` on a
//! random port, never the shared one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::mail::{deliver_to, subscribe};
use crate::smtp_sink::{Received, SmtpSink};
use crate::support::{free_port, gatehouse, run, stderr, Server};
use crate::webhook_receiver::Receiver;

const SECRET: &str = "cluster-test-secret-0123456789abcdefghijklmnopqrstuvwxyz";

struct ClusterEnv {
    database: String,
    schema: String,
    redis: String,
    prefix: String,
}

fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// PostgreSQL and Redis from the environment, with a fresh schema and key prefix.
fn cluster_env(test: &str) -> Option<ClusterEnv> {
    let database = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"));
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| u.starts_with("redis"));
    match (database, redis) {
        (Some(database), Some(redis)) => {
            let id = gatehouse::domain::ids::new_record_id();
            Some(ClusterEnv {
                database,
                schema: format!("c_{id}"),
                redis,
                prefix: format!("test-{id}"),
            })
        }
        _ => {
            skip(
                test,
                "DATABASE_URL (PostgreSQL) and REDIS_URL must both be set (.ci/run sets them)",
            );
            None
        }
    }
}

impl Drop for ClusterEnv {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.database,
                "-qc",
                &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn instance(dir: &Path, env: &ClusterEnv, redis_url: &str) -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = gatehouse(dir);
    command
        .env("GATEHOUSE__DATABASE__URL", &env.database)
        .env("GATEHOUSE__DATABASE__SCHEMA", &env.schema)
        .env("GATEHOUSE__REDIS__URL", redis_url)
        .env("GATEHOUSE__REDIS__KEY_PREFIX", &env.prefix)
        .env("GATEHOUSE__AUTH__TOKEN_SECRET", SECRET)
        .env("GATEHOUSE__STATIC__ROOT", repo.join("public"))
        .env("GATEHOUSE__LOG__LEVEL", "warn");
    command
}

async fn post(server: &Server, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(server.url(path)).json(body);
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    request.send().await.unwrap()
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    request.send().await.unwrap()
}

/// Creates the `ops@example.com` superuser through the CLI and signs it in on `server`.
async fn superuser_token(dir: &Path, env: &ClusterEnv, server: &Server) -> String {
    let upsert = run(instance(dir, env, &env.redis).args([
        "superuser",
        "upsert",
        "ops@example.com",
        "ops-password-1",
    ]));
    assert!(upsert.status.success(), "{}", stderr(&upsert));
    let admin: Value = post(
        server,
        "/api/collections/_superusers/auth-with-password",
        None,
        &json!({"identity": "ops@example.com", "password": "ops-password-1"}),
    )
    .await
    .json()
    .await
    .unwrap();
    admin["token"].as_str().unwrap().to_string()
}

/// Polls `check` until it holds, for at most five seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not happen within 5s");
}

#[tokio::test]
async fn sessions_logout_limits_and_collections_cross_instances() {
    let Some(env) = cluster_env("sessions_logout_limits_and_collections_cross_instances") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut first = instance(dir.path(), &env, &env.redis);
    first.env(
        "GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS",
        "3",
    );
    let a = Server::start(first).await;
    let mut second = instance(dir.path(), &env, &env.redis);
    second.env(
        "GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS",
        "3",
    );
    let b = Server::start(second).await;

    // A session opened on A authenticates on B.
    let credentials = json!({"email": "sam@example.com", "password": "password-123", "passwordConfirm": "password-123"});
    assert_eq!(
        post(&a, "/api/collections/users/records", None, &credentials)
            .await
            .status(),
        200
    );
    let login: Value = post(
        &a,
        "/api/collections/users/auth-with-password",
        None,
        &json!({"identity": "sam@example.com", "password": "password-123"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let sessions = "/api/collections/users/sessions";
    assert_eq!(
        get(&b, sessions, Some(&token)).await.status(),
        200,
        "B validated (and cached) A's session"
    );

    // Logging out on A ends it on B.
    assert_eq!(
        post(
            &a,
            "/api/collections/users/logout",
            Some(&token),
            &json!({})
        )
        .await
        .status(),
        204
    );
    eventually("B refusing the revoked token", || async {
        get(&b, sessions, Some(&token)).await.status() == 401
    })
    .await;

    // The registration budget (3 per IP) is shared: Sam's registration on A took one,
    // one more on A and one on B use it up, and then both instances refuse.
    for (server, n) in [(&a, 2), (&b, 3)] {
        let body = json!({"email": format!("u{n}@example.com"), "password": "password-123", "passwordConfirm": "password-123"});
        assert_eq!(
            post(server, "/api/collections/users/records", None, &body)
                .await
                .status(),
            200,
            "registration {n}"
        );
    }
    let extra = json!({"email": "late@example.com", "password": "password-123", "passwordConfirm": "password-123"});
    assert_eq!(
        post(&b, "/api/collections/users/records", None, &extra)
            .await
            .status(),
        429
    );
    assert_eq!(
        post(&a, "/api/collections/users/records", None, &extra)
            .await
            .status(),
        429
    );

    // A collection created on A serves on B.
    let admin = superuser_token(dir.path(), &env, &a).await;
    let created = post(
        &a,
        "/api/collections",
        Some(&admin),
        &json!({"name": "shared", "listRule": ""}),
    )
    .await;
    assert_eq!(created.status(), 200);
    eventually("B serving the new collection", || async {
        get(&b, "/api/collections/shared/records", None)
            .await
            .status()
            == 200
    })
    .await;
}

/// A `redis-server` of this test's own, which it may stop and start.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn losing_redis_makes_an_instance_unready_until_it_returns() {
    let Some(env) = cluster_env("losing_redis_makes_an_instance_unready_until_it_returns") else {
        return;
    };
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(
            "losing_redis_makes_an_instance_unready_until_it_returns",
            "redis-server is not installed",
        );
        return;
    }
    let mut redis = PrivateRedis::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(instance(dir.path(), &env, &redis.url())).await;
    eventually("readiness with Redis up", || async {
        get(&server, "/readyz", None).await.status() == 200
    })
    .await;
    let ready: Value = get(&server, "/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"], "ok");

    redis.stop();
    eventually("readiness failing without Redis", || async {
        get(&server, "/readyz", None).await.status() == 503
    })
    .await;
    let body: Value = get(&server, "/readyz", None).await.json().await.unwrap();
    assert_eq!(body["data"]["redis"]["code"], "not_ready", "{body}");
    // It keeps serving what it can: static files and the API.
    assert_eq!(get(&server, "/", None).await.status(), 200);
    assert_eq!(get(&server, "/api/health", None).await.status(), 200);
    let login = post(
        &server,
        "/api/collections/users/auth-with-password",
        None,
        &json!({"identity": "nobody@example.com", "password": "password-123"}),
    )
    .await;
    assert_eq!(
        login.status(),
        400,
        "rate limits fail open; the login itself is answered"
    );

    let _redis = PrivateRedis::start(redis.port);
    eventually("readiness recovering with Redis back", || async {
        get(&server, "/readyz", None).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn garbled_redis_data_is_a_miss_not_a_failure() {
    let Some(env) = cluster_env("garbled_redis_data_is_a_miss_not_a_failure") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(instance(dir.path(), &env, &env.redis)).await;
    let client = redis::Client::open(env.redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // A bucket key of the wrong type, and junk on the bus channel.
    let _: () = redis::cmd("SET")
        .arg(format!("{}:ratelimit:LoginPerIp:127.0.0.1", env.prefix))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}:bus", env.prefix))
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let login = post(
        &server,
        "/api/collections/users/auth-with-password",
        None,
        &json!({"identity": "nobody@example.com", "password": "password-123"}),
    )
    .await;
    assert_eq!(login.status(), 400, "answered normally");
    assert_eq!(get(&server, "/readyz", None).await.status(), 200);
}

#[actix_web::test]
async fn run_once_locks_exclude_each_other_and_expire() {
    let Some(env) = cluster_env("run_once_locks_exclude_each_other_and_expire") else {
        return;
    };
    let redis = gatehouse::cluster::Redis::start(&env.redis, &env.prefix).unwrap();
    eventually("connecting to Redis", || async {
        redis.ping().await.is_ok()
    })
    .await;
    let first =
        gatehouse::cluster::lock::try_acquire(&redis, "job", Duration::from_millis(300)).await;
    let first = first.expect("the first taker gets the lock");
    assert!(
        gatehouse::cluster::lock::try_acquire(&redis, "job", Duration::from_millis(300))
            .await
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = gatehouse::cluster::lock::try_acquire(&redis, "job", Duration::from_millis(300))
        .await
        .expect("an expired lock can be taken again");
    assert!(second.fencing_token > first.fencing_token);
}

/// The shipped entry-point config (`config/cluster/front.toml`) with its backend ports
/// and data folder swapped for this test's (`serve --http` picks the listener).
fn front_config(dir: &Path, backends: [&Server; 2]) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster/front.toml"),
    )
    .unwrap();
    let config = shipped
        .replace("127.0.0.1:8081", &backends[0].addr.to_string())
        .replace("127.0.0.1:8082", &backends[1].addr.to_string())
        .replace("data/cluster", &dir.join("front").display().to_string());
    let path = dir.join("front.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn requests_served(metrics: &str, route: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("gatehouse_http_requests_total")
                && line.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn the_entry_point_balances_over_backends_and_survives_losing_one() {
    let Some(env) = cluster_env("the_entry_point_balances_over_backends_and_survives_losing_one")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(instance(dir.path(), &env, &env.redis)).await;
    let mut b = Server::start(instance(dir.path(), &env, &env.redis)).await;
    let config = front_config(dir.path(), [&a, &b]);
    let mut front_command = gatehouse(dir.path());
    front_command
        .env(
            "GATEHOUSE__STATIC__ROOT",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("public"),
        )
        .arg("--config")
        .arg(&config);
    let front = Server::start(front_command).await;

    let credentials = json!({"email": "eve@example.com", "password": "password-123", "passwordConfirm": "password-123"});
    assert_eq!(
        post(&front, "/api/collections/users/records", None, &credentials)
            .await
            .status(),
        200
    );
    let login: Value = post(
        &front,
        "/api/collections/users/auth-with-password",
        None,
        &json!({"identity": "eve@example.com", "password": "password-123"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let route = "/api/collections/{collection}/sessions";
    for _ in 0..20 {
        assert_eq!(
            get(&front, "/api/collections/users/sessions", Some(&token))
                .await
                .status(),
            200
        );
    }
    for backend in [&a, &b] {
        let metrics = get(backend, "/metrics", None).await.text().await.unwrap();
        assert!(
            requests_served(&metrics, route) > 0,
            "both backends serve through the entry point"
        );
    }

    // One backend dies: requests through the entry point keep succeeding.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    for _ in 0..20 {
        let response = get(&front, "/api/collections/users/sessions", Some(&token)).await;
        assert_eq!(response.status(), 200, "retried on the live backend");
    }
}

/// Asserts that `received` holds one message to each of reader0..reader{count}.
fn assert_each_reader_got_one(received: &[Received], count: usize) {
    let mut per_recipient = BTreeMap::<&str, usize>::new();
    for to in received.iter().flat_map(|mail| &mail.to) {
        *per_recipient.entry(to).or_default() += 1;
    }
    let missing: Vec<String> = (0..count)
        .map(|i| format!("reader{i}@example.com"))
        .filter(|reader| !per_recipient.contains_key(reader.as_str()))
        .collect();
    let twice: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(received.len(), count);
}

/// Three instances queue 200 mails between them and all run their mailers against
/// one SMTP server: every mail arrives, none twice.
#[tokio::test]
async fn queued_mail_is_delivered_once_with_every_instance_draining() {
    let Some(env) = cluster_env("queued_mail_is_delivered_once_with_every_instance_draining")
    else {
        return;
    };
    let sink = SmtpSink::start().await;
    sink.set_reply_delay(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let mut command = instance(dir.path(), &env, &env.redis);
        deliver_to(&mut command, &sink);
        instances.push(Server::start(command).await);
    }
    let subscriptions =
        (0..200).map(|i| subscribe(&instances[i % 3], format!("reader{i}@example.com")));
    futures_util::future::join_all(subscriptions).await;

    sink.wait_for(200, Duration::from_secs(60)).await;
    let received = sink.settle(Duration::from_millis(1500)).await;
    assert_each_reader_got_one(&received, 200);
}

/// An instance is killed with SIGKILL while its messages wait at the SMTP server for
/// their answer: the server never acknowledged them, the claims run out, and the other
/// instance delivers them. Every mail arrives, none twice.
#[tokio::test]
async fn sigkill_of_an_instance_while_it_delivers_loses_no_mail_and_sends_none_twice() {
    let Some(env) =
        cluster_env("sigkill_of_an_instance_while_it_delivers_loses_no_mail_and_sends_none_twice")
    else {
        return;
    };
    let sink = SmtpSink::start().await;
    sink.set_reply_delay(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let mut command = instance(dir.path(), &env, &env.redis);
        deliver_to(&mut command, &sink);
        // Held answers must not time out on the sending side while the test looks.
        command.env("GATEHOUSE__MAIL__SMTP__TIMEOUT", "2s");
        instances.push(Server::start(command).await);
    }
    let subscriptions =
        (0..100).map(|i| subscribe(&instances[i % 2], format!("reader{i}@example.com")));
    futures_util::future::join_all(subscriptions).await;
    sink.wait_for(10, Duration::from_secs(30)).await;

    // Freeze every delivery at the point where the server has the message but has not
    // answered; then both instances are mid-delivery.
    sink.hold();
    eventually("both instances waiting on the SMTP server", || async {
        sink.held() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = sink.held();
    let mut killed = instances.remove(0);
    killed.signal(libc::SIGKILL);
    killed.wait_exit(Duration::from_secs(5)).await;
    eventually("the killed instance's connections to drop", || async {
        sink.held() < held
    })
    .await;
    sink.release();

    sink.wait_for(100, Duration::from_secs(60)).await;
    let received = sink.settle(Duration::from_millis(1500)).await;
    assert_each_reader_got_one(&received, 100);
}

/// Reads SSE frames (without their closing blank line) from a `GET /api/realtime`.
struct EventReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl EventReader {
    async fn open(server: &Server) -> (Self, String) {
        use futures_util::StreamExt;
        let response = get(server, "/api/realtime", None).await;
        assert_eq!(response.status(), 200);
        let mut reader = Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        };
        let connect = reader.next().await;
        let client_id = connect
            .strip_prefix("id:")
            .and_then(|rest| rest.split('\n').next())
            .expect("PB_CONNECT carries the client id")
            .to_string();
        (reader, client_id)
    }

    async fn next(&mut self) -> String {
        use futures_util::StreamExt;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buffer[..end].to_vec()).unwrap();
                self.buffer.drain(..end + 2);
                return frame;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("an event within 30 s")
                .expect("the stream is open")
                .unwrap();
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The `(event name, data)` of the next event.
    async fn next_event(&mut self) -> (String, Value) {
        let frame = self.next().await;
        let mut lines = frame.lines().skip(1);
        let name = lines.next().unwrap().strip_prefix("event:").unwrap();
        let data = lines.next().unwrap().strip_prefix("data:").unwrap();
        (name.to_string(), serde_json::from_str(data).unwrap())
    }
}

#[tokio::test]
async fn realtime_events_cross_instances_once() {
    let Some(env) = cluster_env("realtime_events_cross_instances_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(instance(dir.path(), &env, &env.redis)).await;
    let b = Server::start(instance(dir.path(), &env, &env.redis)).await;
    let admin = superuser_token(dir.path(), &env, &a).await;
    let created = post(
        &a,
        "/api/collections",
        Some(&admin),
        &json!({"name": "feed", "listRule": "", "createRule": "",
                "fields": [{"name": "text", "type": "text"}]}),
    )
    .await;
    assert_eq!(created.status(), 200);
    eventually("B serving the new collection", || async {
        get(&b, "/api/collections/feed/records", None)
            .await
            .status()
            == 200
    })
    .await;

    let mut readers = Vec::new();
    for server in [&a, &b] {
        let (reader, client_id) = EventReader::open(server).await;
        let subscribed = post(
            server,
            "/api/realtime",
            None,
            &json!({"clientId": client_id, "subscriptions": ["feed/*"]}),
        )
        .await;
        assert_eq!(subscribed.status(), 204);
        readers.push(reader);
    }

    // Two records changed on A: each subscriber, on A and on B, gets each once, in order.
    let mut records = Vec::new();
    for text in ["first", "second"] {
        let record: Value = post(
            &a,
            "/api/collections/feed/records",
            None,
            &json!({ "text": text }),
        )
        .await
        .json()
        .await
        .unwrap();
        records.push(record);
    }
    for reader in &mut readers {
        for record in &records {
            let (name, data) = reader.next_event().await;
            assert_eq!(name, "feed/*");
            assert_eq!(data, json!({"record": record, "action": "create"}));
        }
    }
}

/// X-Cache of an answer and its JSON.
async fn cached_get(server: &Server, path: &str) -> (String, Value) {
    let response = get(server, path, None).await;
    assert_eq!(response.status(), 200, "{path}");
    let label = response
        .headers()
        .get("x-cache")
        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
    (label, response.json().await.unwrap())
}

#[tokio::test]
async fn cache_invalidation_crosses_instances() {
    let Some(env) = cluster_env("cache_invalidation_crosses_instances") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cached = |mut command: Command| {
        command.env("GATEHOUSE__CACHE__COLLECTIONS__POSTS__TTL", "1h");
        command
    };
    let a = Server::start(cached(instance(dir.path(), &env, &env.redis))).await;
    let b = Server::start(cached(instance(dir.path(), &env, &env.redis))).await;
    let admin = superuser_token(dir.path(), &env, &a).await;
    let created = post(
        &a,
        "/api/collections",
        Some(&admin),
        &json!({"name": "posts", "listRule": "", "viewRule": "", "createRule": "", "updateRule": "",
                "fields": [{"name": "title", "type": "text"}]}),
    )
    .await;
    assert_eq!(created.status(), 200);
    let record: Value = post(
        &a,
        "/api/collections/posts/records",
        None,
        &json!({"title": "v1"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = record["id"].as_str().unwrap().to_string();
    let list = "/api/collections/posts/records";
    eventually("B serving the new collection", || async {
        get(&b, list, None).await.status() == 200
    })
    .await;

    // B caches the list; A's write drops it there (and in Redis): B's next answer is new.
    let (_, first) = cached_get(&b, list).await;
    assert_eq!(first["items"][0]["title"], "v1");
    assert_eq!(cached_get(&b, list).await.0, "HIT");
    let updated = reqwest::Client::new()
        .patch(a.url(&format!("/api/collections/posts/records/{id}")))
        .json(&json!({"title": "v2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    eventually("B answering with A's change", || async {
        cached_get(&b, list).await.1["items"][0]["title"] == "v2"
    })
    .await;
    // A (whose memory never held the list) now answers B's fresh copy from Redis.
    assert_eq!(cached_get(&b, list).await.0, "HIT");
    let (label, on_a) = cached_get(&a, list).await;
    assert_eq!(
        (label.as_str(), &on_a["items"][0]["title"]),
        ("HIT", &json!("v2"))
    );

    // An admin purge on A empties B's memory too.
    let purge = post(
        &a,
        "/api/admin/cache/purge",
        Some(&admin),
        &json!({"prefix": "/api/collections/posts/"}),
    )
    .await;
    assert_eq!(purge.status(), 200);
    let purged: Value = purge.json().await.unwrap();
    assert_eq!(purged["redisPurged"], 1);
    eventually("B missing after the purge", || async {
        cached_get(&b, list).await.0 == "MISS"
    })
    .await;
    let metrics = get(&b, "/metrics", None).await.text().await.unwrap();
    let received = metrics
        .lines()
        .find_map(|line| line.strip_prefix("gatehouse_cache_invalidations_received_total "))
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(received >= 2.0, "{received}");
}

/// Two instances share PostgreSQL and a webhook endpoint declared in their config:
/// accounts registered on either give one delivery each, sent once between them.
#[actix_web::test]
async fn webhook_deliveries_are_sent_once_with_two_instances_draining() {
    let Some(env) = cluster_env("webhook_deliveries_are_sent_once_with_two_instances_draining")
    else {
        return;
    };
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hooks.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[webhooks]
allow = ["127.0.0.1"]
poll_interval = "200ms"
batch_size = 2

[[webhooks.endpoints]]
name = "receiver"
url = "{}"
events = ["user.registered"]
secret = "whsec_{}"
"#,
            receiver.url("/hooks"),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
    )
    .unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let mut command = instance(dir.path(), &env, &env.redis);
        command
            .env(
                "GATEHOUSE__AUTH__RATE_LIMITS__REGISTER_PER_IP__REQUESTS",
                "0",
            )
            .arg("--config")
            .arg(&config);
        instances.push(Server::start(command).await);
    }
    let emails: Vec<String> = (0..40).map(|i| format!("user{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        let body =
            json!({"email": email, "password": "password-123", "passwordConfirm": "password-123"});
        let response = post(
            &instances[i % 2],
            "/api/collections/users/records",
            None,
            &body,
        )
        .await;
        let status = response.status();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
    }

    receiver
        .wait_for(emails.len(), Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = receiver.hits();
    let mut ids: Vec<&str> = hits.iter().map(|hit| hit.header("webhook-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut delivered: Vec<String> = hits
        .iter()
        .map(|hit| {
            hit.json()["data"]["record"]["email"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    delivered.sort();
    let mut expected = emails.clone();
    expected.sort();
    assert_eq!(delivered, expected, "each registration delivered once");
    assert_eq!(ids.len(), emails.len(), "one webhook-id per event");
}

/// Each instance keeps the webhook endpoints in memory: an endpoint registered on one
/// instance applies to the very next write on the other (told over the bus), not only
/// after the other's copy ages out.
#[actix_web::test]
async fn an_endpoint_registered_on_one_instance_applies_at_once_on_the_other() {
    let Some(env) =
        cluster_env("an_endpoint_registered_on_one_instance_applies_at_once_on_the_other")
    else {
        return;
    };
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hooks.toml");
    std::fs::write(
        &config,
        "[webhooks]\nallow = [\"127.0.0.1\"]\npoll_interval = \"200ms\"\n",
    )
    .unwrap();
    let hooks = |mut command: Command| {
        command.arg("--config").arg(&config);
        command
    };
    let a = Server::start(hooks(instance(dir.path(), &env, &env.redis))).await;
    let b = Server::start(hooks(instance(dir.path(), &env, &env.redis))).await;
    let admin = superuser_token(dir.path(), &env, &a).await;
    let created = post(
        &a,
        "/api/collections",
        Some(&admin),
        &json!({"name": "posts", "listRule": "", "viewRule": "", "createRule": "",
                "fields": [{"name": "title", "type": "text"}]}),
    )
    .await;
    assert_eq!(created.status(), 200);
    let records = "/api/collections/posts/records";
    eventually("B serving the new collection", || async {
        post(&b, records, None, &json!({"title": "before"}))
            .await
            .status()
            == 200
    })
    .await;

    // B has just written, so it holds the endpoints (none) in memory.
    let registered = post(
        &a,
        "/api/admin/webhooks",
        Some(&admin),
        &json!({"url": receiver.url("/hooks"), "events": ["record.created"]}),
    )
    .await;
    assert_eq!(registered.status(), 201);
    let endpoint: Value = registered.json().await.unwrap();
    let endpoint = endpoint["id"].as_str().unwrap().to_string();
    // The bus message takes a moment; well under the in-memory copy's 10 s life.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = post(&b, records, None, &json!({"title": "after"})).await;
    assert_eq!(written.status(), 200);

    receiver.wait_for(1, Duration::from_secs(5)).await;
    let hits = receiver.hits();
    let titles: Vec<Value> = hits
        .iter()
        .map(|hit| hit.json()["data"]["record"]["title"].clone())
        .collect();
    assert_eq!(titles, [json!("after")], "only the write after registering");
    let deliveries: Value = get(
        &a,
        &format!("/api/admin/webhooks/deliveries?endpoint={endpoint}"),
        Some(&admin),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(deliveries["totalItems"], 1, "{deliveries}");
}
