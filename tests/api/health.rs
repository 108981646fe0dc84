use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{
    postgres_addr, postgres_url, skip, spawn_app, spawn_app_on_postgres, spawn_app_with,
    tcp_proxy::TcpProxy, Backend,
};

on_both_backends!(
    liveness_and_readiness_answer,
    readiness_fails_when_the_database_is_gone
);

async fn liveness_and_readiness_answer(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };

    let live = app.get("/healthz").await;
    assert_eq!(live.status(), 200);

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");

    let health = app.get("/api/health").await;
    assert_eq!(health.status(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "API is healthy.", "code": 200, "data": {}})
    );
}

async fn readiness_fails_when_the_database_is_gone(backend: Backend) {
    match backend {
        Backend::Sqlite => sqlite_file_deleted(backend).await,
        Backend::Postgres => postgres_connection_cut().await,
    }
}

async fn sqlite_file_deleted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    assert_eq!(app.get("/readyz").await.status(), 200);

    std::fs::remove_file(app.sqlite_file.as_ref().unwrap()).unwrap();

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(body["data"]["database"]["code"], "not_ready");
    assert!(
        body["message"].as_str().unwrap().contains("missing"),
        "{body}"
    );
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Gatehouse reaches PostgreSQL through a relay the test cuts and restores: readiness
/// fails while the database is unreachable and recovers without a restart.
async fn postgres_connection_cut() {
    let Some(url) = postgres_url() else {
        skip(
            "postgres readiness",
            "DATABASE_URL is not set to a PostgreSQL server",
        );
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let mut proxy = TcpProxy::start(postgres_addr(&parsed).await).await;
    let mut via_proxy = parsed.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();

    let Some(app) = spawn_app_with(Backend::Postgres, |settings| {
        settings.database.url = gatehouse::config::ConnectionUrl::new(via_proxy.to_string());
        settings.database.connect_timeout = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.cut();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["data"]["database"]["code"], "not_ready");

    proxy.restore().await;
    let mut recovered = false;
    for _ in 0..50 {
        if app.get("/readyz").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "readiness did not recover after the database came back"
    );
}

/// The README's advice for a PostgreSQL server on the same machine: its Unix socket
/// (`?host=/var/run/postgresql`). Records are written and read through it, and the
/// server sees a socket client, one without an address.
#[actix_web::test]
async fn postgres_over_its_unix_socket() {
    const SOCKET_DIR: &str = "/var/run/postgresql";
    let test = "postgres_over_its_unix_socket";
    let Some(url) = postgres_url() else {
        skip(test, "DATABASE_URL is not set to a PostgreSQL server");
        return;
    };
    let mut over_socket = url::Url::parse(&url).unwrap();
    let port = over_socket.port().unwrap_or(5432);
    if !std::path::Path::new(SOCKET_DIR)
        .join(format!(".s.PGSQL.{port}"))
        .exists()
    {
        skip(
            test,
            "the PostgreSQL server has no socket in /var/run/postgresql",
        );
        return;
    }
    over_socket.set_host(Some("localhost")).unwrap();
    over_socket
        .query_pairs_mut()
        .append_pair("host", SOCKET_DIR);
    let Some(app) = spawn_app_on_postgres(&over_socket).await else {
        return;
    };
    app.create_open_notes().await;
    let created = app
        .create_record("notes", None, json!({"text": "over the socket"}))
        .await;
    let (status, read) = app
        .get_json(
            &format!(
                "/api/collections/notes/records/{}",
                created["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["text"], "over the socket");
    let client_has_no_address: bool = app.query_value("SELECT inet_client_addr() IS NULL").await;
    assert!(client_has_no_address, "the connection went over TCP");
}
