//! Round trips to PostgreSQL, counted on the wire by a relay between Gatehouse and the
//! server.

use std::time::Duration;

use serde_json::json;

use crate::support::pg_wire::PgWireCounter;
use crate::support::{postgres_addr, postgres_url, skip, spawn_app_on_postgres};

/// A read's only round trip is its statement's: the pool takes back a connection that is
/// in step with the server without pinging it (the release ping of sqlx 0.8, see
/// vendor/README.md).
#[actix_web::test]
async fn reads_make_no_round_trip_without_a_statement() {
    let Some(url) = postgres_url() else {
        skip(
            "reads_make_no_round_trip_without_a_statement",
            "DATABASE_URL is not set to a PostgreSQL server",
        );
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let counter = PgWireCounter::start(postgres_addr(&parsed).await).await;
    let mut relayed = parsed.clone();
    relayed.set_host(Some("127.0.0.1")).unwrap();
    relayed.set_port(Some(counter.addr.port())).unwrap();
    relayed.query_pairs_mut().append_pair("sslmode", "disable");
    let Some(app) = spawn_app_on_postgres(&relayed).await else {
        return;
    };
    app.create_open_notes().await;
    let created = app
        .create_record("notes", None, json!({"text": "counted"}))
        .await;
    let path = format!(
        "/api/collections/notes/records/{}",
        created["id"].as_str().unwrap()
    );

    let before = counter.empty_syncs();
    for _ in 0..20 {
        let (status, _) = app.get_json(&path, None).await;
        assert_eq!(status, 200);
        let (status, _) = app.get_json("/api/collections/notes/records", None).await;
        assert_eq!(status, 200);
    }
    // A pool releases a connection after the answer is sent: give that time to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counter.empty_syncs() - before,
        0,
        "round trips that carried no statement during 20 views and 20 lists"
    );
}
