//! Webhook delivery as an operator runs it: a whole `gatehouse serve` process killed
//! with SIGKILL while deliveries are pending, then started again.

use std::time::Duration;

use base64::Engine;

use crate::support::{gatehouse, Server};
use crate::webhook_receiver::Receiver;

const WAIT: Duration = Duration::from_secs(30);

/// Accounts are registered (one `user.registered` delivery each) while the endpoint is
/// down, the process is killed with SIGKILL (some deliveries may be claimed mid-attempt),
/// the endpoint comes up and Gatehouse starts again: every delivery arrives, none lost.
#[actix_web::test]
async fn sigkill_with_deliveries_pending_then_restart_delivers_them_all() {
    let postgres = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"));
    if postgres.is_none() {
        eprintln!("SKIPPED postgres variant: DATABASE_URL is not set to a PostgreSQL server");
    }
    for database in [None, postgres].into_iter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        // Bound but not listening: refused connections, and no other server takes it.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = reserved.local_addr().unwrap().port();
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        std::fs::write(
            dir.path().join("hooks.toml"),
            format!(
                r#"
[webhooks]
allow = ["127.0.0.1"]
poll_interval = "200ms"
lease = "3s"
timeout = "1s"
batch_size = 4
concurrency = 4

[webhooks.retry]
max_attempts = 1000
initial_delay = "20ms"
max_delay = "100ms"

[[webhooks.endpoints]]
name = "receiver"
url = "http://127.0.0.1:{port}/hooks"
events = ["user.registered"]
secret = "{secret}"
"#
            ),
        )
        .unwrap();
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let command = || {
            let mut command = gatehouse(dir.path());
            command.args(["--config", "hooks.toml"]);
            match &database {
                Some(url) => {
                    command
                        .env("GATEHOUSE__DATABASE__URL", url)
                        .env("GATEHOUSE__DATABASE__SCHEMA", &schema);
                }
                None => {
                    command.env(
                        "GATEHOUSE__DATABASE__URL",
                        format!("sqlite://{}/gatehouse.db?mode=rwc", dir.path().display()),
                    );
                }
            }
            command
        };

        let mut server = Server::start(command()).await;
        let client = reqwest::Client::new();
        let emails: Vec<String> = (0..8).map(|i| format!("user{i}@example.com")).collect();
        for email in &emails {
            let response = client
                .post(server.url("/api/collections/users/records"))
                .json(&serde_json::json!({
                    "email": email, "password": "password-123", "passwordConfirm": "password-123"
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        // Let some attempts fail (and some be claimed) before the kill.
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal(libc::SIGKILL);
        server.wait_exit(Duration::from_secs(5)).await;

        drop(reserved);
        let receiver = Receiver::start_on(format!("127.0.0.1:{port}").parse().unwrap()).await;
        let restarted = Server::start(command()).await;
        let hits = receiver.wait_for(emails.len(), WAIT).await;
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
        delivered.dedup();
        assert_eq!(
            delivered, emails,
            "every registration delivered ({database:?})"
        );
        drop(restarted);
        if let Some(url) = &database {
            use sea_orm::ConnectionTrait;
            let conn = sea_orm::Database::connect(url).await.unwrap();
            conn.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}
