//! How many mails per second the mailer delivers to an SMTP server on loopback.
//!
//! `cargo bench --bench mail_throughput` — queues MAILS mails (default 2000) in the
//! outbox of a real instance (SQLite in a temporary folder, or PostgreSQL when
//! BENCH_DATABASE_URL is set), wakes the mailer and times until the SMTP sink has every
//! message and every row is `sent`. MAIL_CONCURRENCY and MAIL_BATCH_SIZE override the
//! mailer's settings (defaults: the shipped ones).

#[path = "../tests/api/support/smtp_sink.rs"]
#[allow(dead_code)]
mod smtp_sink;

use std::time::{Duration, Instant};

use gatehouse::actors::database::DbError;
use gatehouse::app::Application;
use gatehouse::config::{sqlite_url_for, ConnectionUrl, MailTransportKind, Settings, SmtpSecurity};
use gatehouse::mail::{enqueue, MailKind, MailTemplates, OutgoingMail};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

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
    let mails = env_number("MAILS", 2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let sink = smtp_sink::SmtpSink::start().await;

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
    settings.mail.transport = MailTransportKind::Smtp;
    settings.mail.smtp.host = sink.addr.ip().to_string();
    settings.mail.smtp.port = sink.addr.port();
    settings.mail.smtp.security = SmtpSecurity::None;
    settings.mail.concurrency = env_number("MAIL_CONCURRENCY", settings.mail.concurrency);
    settings.mail.batch_size = env_number("MAIL_BATCH_SIZE", settings.mail.batch_size as usize)
        .try_into()
        .unwrap();
    settings.mail.smtp.pool_size = settings.mail.concurrency.try_into().unwrap();
    // Queue everything first, then wake the mailer: the timing covers delivery only.
    settings.mail.poll_interval = Duration::from_secs(3600);
    let (concurrency, batch_size) = (settings.mail.concurrency, settings.mail.batch_size);
    let schema = (backend == "postgres").then(|| settings.database.schema.clone());

    let app = Application::build_on(settings, listener).await.unwrap();
    let db = app.db().clone();
    let mailer = app.mailer().clone();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());

    let templates = MailTemplates::built_in();
    for chunk in 0..mails.div_ceil(100) {
        let batch: Vec<OutgoingMail> = (chunk * 100..((chunk + 1) * 100).min(mails))
            .map(|i| {
                let to = format!("reader{i}@example.com");
                let content = templates
                    .render(
                        MailKind::Verification,
                        &json!({"app_name": "Bench", "email": to, "name": null,
                                "link": format!("https://example.com/verify?token={i}")}),
                    )
                    .unwrap();
                OutgoingMail {
                    to,
                    to_name: None,
                    kind: MailKind::Verification,
                    content,
                    headers: vec![],
                }
            })
            .collect();
        db.transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                for mail in &batch {
                    enqueue(txn, mail).await?;
                }
                Ok(())
            })
        })
        .await
        .unwrap();
    }

    let started = Instant::now();
    mailer.wake();
    sink.wait_for(mails, Duration::from_secs(600)).await;
    let delivered = started.elapsed();
    loop {
        let pending = db
            .transact::<i64, DbError, _>(|txn| {
                Box::pin(async move {
                    let row = txn
                        .query_one(Statement::from_string(
                            txn.get_database_backend(),
                            "SELECT COUNT(*) AS n FROM outbox WHERE status <> 'sent'",
                        ))
                        .await?
                        .unwrap();
                    Ok(row.try_get::<i64>("", "n")?)
                })
            })
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = started.elapsed();
    println!(
        "mail_throughput: {mails} mails, {backend}, concurrency {concurrency}, batch {batch_size}: \
         accepted by SMTP in {:.2}s ({:.0} mails/s); all marked sent in {:.2}s ({:.0} mails/s)",
        delivered.as_secs_f64(),
        mails as f64 / delivered.as_secs_f64(),
        recorded.as_secs_f64(),
        mails as f64 / recorded.as_secs_f64(),
    );
    handle.stop(true).await;
    if let (Some(schema), Ok(url)) = (schema, std::env::var("BENCH_DATABASE_URL")) {
        let conn = sea_orm::Database::connect(&url).await.unwrap();
        conn.execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
            .unwrap();
    }
}
