//! The mailer as an operator runs it: whole `gatehouse serve` processes, killed with
//! SIGKILL or run side by side on one database, delivering to a loopback SMTP server.

use std::process::Command;
use std::time::Duration;

use crate::smtp_sink::SmtpSink;
use crate::support::{gatehouse, run, stderr, stdout, Server};

const WAIT: Duration = Duration::from_secs(20);

/// A database for one test: a SQLite file, or a fresh PostgreSQL schema.
struct TestDatabase {
    url: String,
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    fn sqlite() -> Self {
        let dir = scratch();
        Self {
            url: format!("sqlite://{}/gatehouse.db?mode=rwc", dir.path().display()),
            schema: None,
            _dir: dir,
        }
    }

    fn postgres() -> Option<Self> {
        let url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| url.starts_with("postgres"));
        let Some(url) = url else {
            eprintln!("SKIPPED postgres variant: DATABASE_URL is not set to a PostgreSQL server");
            return None;
        };
        Some(Self {
            url,
            schema: Some(format!("t_{}", uuid::Uuid::new_v4().simple())),
            _dir: scratch(),
        })
    }

    /// `gatehouse` in a scratch folder with this database and the mailer pointed at
    /// `sink`, retrying fast.
    fn command(&self, sink: &SmtpSink) -> Command {
        let mut command = gatehouse(self._dir.path());
        command.env("GATEHOUSE__DATABASE__URL", &self.url);
        deliver_to(&mut command, sink);
        if let Some(schema) = &self.schema {
            command.env("GATEHOUSE__DATABASE__SCHEMA", schema);
        }
        command
    }

    /// Removes the PostgreSQL schema (the processes using it have been killed).
    async fn remove(self) {
        if let Some(schema) = &self.schema {
            use sea_orm::ConnectionTrait;
            let conn = sea_orm::Database::connect(&self.url).await.unwrap();
            conn.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Points a `gatehouse serve` command's mailer at `sink`, retrying fast, with a short
/// lease so that the claims of a killed process pass to another one soon.
pub fn deliver_to(command: &mut Command, sink: &SmtpSink) {
    command
        .env("GATEHOUSE__MAIL__TRANSPORT", "smtp")
        .env("GATEHOUSE__MAIL__SMTP__HOST", sink.addr.ip().to_string())
        .env("GATEHOUSE__MAIL__SMTP__PORT", sink.addr.port().to_string())
        .env("GATEHOUSE__MAIL__SMTP__SECURITY", "none")
        .env("GATEHOUSE__MAIL__SMTP__TIMEOUT", "1s")
        .env("GATEHOUSE__MAIL__LEASE", "3s")
        .env("GATEHOUSE__MAIL__BATCH_SIZE", "2")
        .env("GATEHOUSE__MAIL__POLL_INTERVAL", "200ms")
        .env("GATEHOUSE__MAIL__RETRY__MAX_ATTEMPTS", "1000")
        .env("GATEHOUSE__MAIL__RETRY__INITIAL_DELAY", "20ms")
        .env("GATEHOUSE__MAIL__RETRY__MAX_DELAY", "100ms");
}

/// A working folder with the `public/` folder `serve` needs.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    dir
}

pub async fn subscribe(server: &Server, email: String) {
    let response = reqwest::Client::new()
        .post(server.url("/api/newsletter/subscribe"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// Mail is queued while the SMTP server is down, the process is killed with SIGKILL
/// (some mails may be claimed mid-attempt), the server comes up and Gatehouse starts
/// again: every mail arrives, exactly once.
#[tokio::test]
async fn sigkill_with_mail_pending_then_restart_delivers_each_mail_once() {
    for database in [Some(TestDatabase::sqlite()), TestDatabase::postgres()]
        .into_iter()
        .flatten()
    {
        let mut sink = SmtpSink::start().await;
        sink.stop().await;
        let mut server = Server::start(database.command(&sink)).await;
        for i in 0..6 {
            subscribe(&server, format!("reader{i}@example.com")).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal(libc::SIGKILL);
        server.wait_exit(Duration::from_secs(5)).await;
        assert!(sink.received().is_empty());

        sink.restart().await;
        let restarted = Server::start(database.command(&sink)).await;
        sink.wait_for(6, WAIT).await;
        let received = sink.settle(Duration::from_millis(1500)).await;
        let mut to: Vec<_> = received.iter().map(|mail| mail.to[0].clone()).collect();
        to.sort();
        let expected: Vec<_> = (0..6).map(|i| format!("reader{i}@example.com")).collect();
        assert_eq!(to, expected, "{}", database.url);
        drop(restarted);
        database.remove().await;
    }
}

/// Two `gatehouse serve` processes share one database and one SMTP server; mail queued
/// through both is delivered exactly once.
#[tokio::test]
async fn two_processes_sharing_a_database_never_send_a_mail_twice() {
    for database in [Some(TestDatabase::sqlite()), TestDatabase::postgres()]
        .into_iter()
        .flatten()
    {
        let sink = SmtpSink::start().await;
        let first = Server::start(database.command(&sink)).await;
        let second = Server::start(database.command(&sink)).await;
        let subscriptions = (0..40).map(|i| {
            let server = if i % 2 == 0 { &first } else { &second };
            subscribe(server, format!("reader{i}@example.com"))
        });
        futures_util::future::join_all(subscriptions).await;
        sink.wait_for(40, WAIT).await;
        let received = sink.settle(Duration::from_millis(1500)).await;
        let mut to: Vec<_> = received.iter().map(|mail| mail.to[0].clone()).collect();
        to.sort();
        to.dedup();
        assert_eq!(received.len(), 40, "no mail sent twice ({})", database.url);
        assert_eq!(to.len(), 40);
        drop((first, second));
        database.remove().await;
    }
}

#[test]
fn the_smtp_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE__MAIL__TRANSPORT", "smtp")
        .env("GATEHOUSE__MAIL__SMTP__HOST", "smtp.example.com")
        .env("GATEHOUSE__MAIL__SMTP__USERNAME", "mailer")
        .env("GATEHOUSE__MAIL__SMTP__PASSWORD", "hunter2-smtp")
        .arg("config"));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("hunter2-smtp"), "{text}");
    assert!(text.contains("password = \"[redacted]\""), "{text}");
    assert!(text.contains("host = \"smtp.example.com\""), "{text}");
}

#[test]
fn mail_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE__MAIL__SMTP__SECURITY", "ssl")
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("mail.smtp.security"), "{message}");
    assert!(
        message.contains("GATEHOUSE__MAIL__SMTP__SECURITY"),
        "{message}"
    );

    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE__MAIL__FROM", "nobody")
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("mail.from"), "{}", stderr(&output));
}
