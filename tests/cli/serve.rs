use std::time::Duration;

use futures_util::StreamExt;

use crate::support::{gatehouse, Server};

/// The README's run command, from the repository: the shipped landing page answers.
#[tokio::test]
async fn serve_on_the_defaults_answers_with_the_landing_page() {
    let data = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = gatehouse(repo);
    command
        .env(
            "GATEHOUSE__DATABASE__URL",
            format!("sqlite://{}/gatehouse.db?mode=rwc", data.path().display()),
        )
        .env(
            "GATEHOUSE__AUTH__SECRET_FILE",
            data.path().join("auth_secret"),
        );
    let server = Server::start(command).await;

    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("Gatehouse is running"));
    let health = reqwest::get(server.url("/api/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(data.path().join("gatehouse.db").exists());
    assert!(
        data.path().join("auth_secret").exists(),
        "a signing secret was generated"
    );
}

/// SIGTERM stops accepting connections but lets a download in progress finish.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    const SIZE: usize = 24 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("public/big.bin"), &content).unwrap();
    let mut command = gatehouse(dir.path());
    command.env("GATEHOUSE__SERVER__SHUTDOWN_TIMEOUT", "20s");
    command.env(
        "GATEHOUSE__DATABASE__URL",
        format!("sqlite://{}/g.db?mode=rwc", dir.path().display()),
    );
    let mut server = Server::start(command).await;
    // A write, so that the write transactions' pool holds a connection too.
    let registered = reqwest::Client::new()
        .post(server.url("/api/collections/users/records"))
        .json(&serde_json::json!({
            "email": "leaving@example.com",
            "password": "a long enough password",
            "passwordConfirm": "a long enough password",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);

    let response = reqwest::get(server.url("/big.bin")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::with_capacity(SIZE);
    received.extend_from_slice(&body.next().await.unwrap().unwrap());

    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "new connections are refused once shutdown begins"
    );

    // Read the rest slowly: the server must keep the connection until it is done.
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.expect("the download is not cut off"));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(received.len(), SIZE);
    assert!(received == content, "the download arrived intact");

    let status = server.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    // SQLite folds its write-ahead log into the file and removes it when the last
    // connection closes: every pool was closed.
    assert!(dir.path().join("g.db").exists());
    assert!(
        !dir.path().join("g.db-wal").exists(),
        "the database was closed before exiting"
    );
}

/// SIGTERM ends realtime event streams at once, so they do not hold the graceful stop
/// open until its timeout.
#[tokio::test]
async fn sigterm_ends_realtime_streams_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let mut command = gatehouse(dir.path());
    command.env("GATEHOUSE__SERVER__SHUTDOWN_TIMEOUT", "10m");
    command.env(
        "GATEHOUSE__DATABASE__URL",
        format!("sqlite://{}/g.db?mode=rwc", dir.path().display()),
    );
    let mut server = Server::start(command).await;
    let response = reqwest::get(server.url("/api/realtime")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let connect = body.next().await.unwrap().unwrap();
    assert!(connect.starts_with(b"id:"));

    server.signal(libc::SIGTERM);
    assert!(
        body.next().await.is_none(),
        "the stream ends without another event"
    );
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}
