//! How many webhook deliveries per second Gatehouse makes to a receiver on loopback.
//!
//! `cargo bench --bench webhook_throughput` — queues EVENTS events (default 2000) for one
//! endpoint in one transaction of a real instance (SQLite in a temporary folder, or
//! PostgreSQL when BENCH_DATABASE_URL is set), then times until the receiver has every
//! signed delivery and every row is `sent`. WEBHOOK_CONCURRENCY and WEBHOOK_BATCH_SIZE
//! override the webhook settings (defaults: the shipped ones).

#[path = "../tests/api/support/webhook_receiver.rs"]
#[allow(dead_code)]
mod webhook_receiver;

use std::time::{Duration, Instant};

use base64::Engine;
use gatehouse::actors::database::DbError;
use gatehouse::app::Application;
use gatehouse::config::{sqlite_url_for, ConnectionUrl, Secret, Settings, WebhookEndpointSettings};
use gatehouse::webhooks::{emit, Event};
use sea_orm::{ConnectionTrait, Statement};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    actix_web::rt::System::new().block_on(run());
}

async fn run() {
    let events = env_number("EVENTS", 2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let receiver = webhook_receiver::Receiver::start().await;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = Settings::defaults();
    settings.server.public_url = format!("http://{}", listener.local_addr().unwrap());
    settings.static_files.root = dir.path().join("public");
    settings.auth.secret_file = dir.path().join("auth_secret");
    settings.log.access_log = false;
    let backend = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => {
            settings.database.url = ConnectionUrl::new(url);
            settings.database.schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            "postgres"
        }
        Err(_) => {
            settings.database.url = sqlite_url_for(&dir.path().join("bench.db"));
            "sqlite"
        }
    };
    let hooks = &mut settings.webhooks;
    hooks.allow = vec!["127.0.0.1".into()];
    hooks.concurrency = env_number("WEBHOOK_CONCURRENCY", hooks.concurrency);
    hooks.batch_size = env_number("WEBHOOK_BATCH_SIZE", hooks.batch_size as usize)
        .try_into()
        .unwrap();
    hooks.endpoints = vec![WebhookEndpointSettings {
        name: "bench".into(),
        url: receiver.url("/hooks"),
        events: vec!["*".into()],
        secret: Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([5u8; 32])
        )),
        description: String::new(),
        enabled: true,
    }];
    let (concurrency, batch_size) = (hooks.concurrency, hooks.batch_size);
    let schema = (backend == "postgres").then(|| settings.database.schema.clone());

    let app = Application::build_on(settings, listener).await.unwrap();
    let db = app.db().clone();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());

    // One transaction: its commit wakes the webhook actor, and the clock starts there.
    db.transact::<_, DbError, _>(move |txn| {
        Box::pin(async move {
            for i in 0..events {
                let event = Event::newsletter_subscribed(&format!("reader{i}@example.com"), None);
                emit(txn, &event).await?;
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    let started = Instant::now();
    receiver.wait_for(events, Duration::from_secs(600)).await;
    let delivered = started.elapsed();
    loop {
        let unsent = db
            .read::<i64, DbError, _>(|txn| {
                Box::pin(async move {
                    let row = txn
                        .query_one(Statement::from_string(
                            txn.get_database_backend(),
                            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status <> 'sent'",
                        ))
                        .await?
                        .unwrap();
                    Ok(row.try_get::<i64>("", "n")?)
                })
            })
            .await
            .unwrap();
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = started.elapsed();
    println!(
        "webhook_throughput: {events} deliveries, {backend}, concurrency {concurrency}, batch {batch_size}: \
         received in {:.2}s ({:.0} deliveries/s); all marked sent in {:.2}s ({:.0} deliveries/s)",
        delivered.as_secs_f64(),
        events as f64 / delivered.as_secs_f64(),
        recorded.as_secs_f64(),
        events as f64 / recorded.as_secs_f64(),
    );
    handle.stop(true).await;
    if let (Some(schema), Ok(url)) = (schema, std::env::var("BENCH_DATABASE_URL")) {
        let conn = sea_orm::Database::connect(&url).await.unwrap();
        conn.execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    }
}
