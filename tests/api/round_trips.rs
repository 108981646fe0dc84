//! Round trips to PostgreSQL, counted on the wire by a relay between Gatehouse and the
//! server.

use std::time::Duration;

use serde_json::json;

use crate::support::pg_wire::{Began, PgWireCounter};
use crate::support::upstream::eventually;
use crate::support::{postgres_addr, postgres_url, skip, spawn_app_on_postgres, TestApp};

/// Gatehouse on PostgreSQL through a relay that reads what it sends, with an open
/// `notes` collection; `None` (the test skipped) without a PostgreSQL server.
async fn notes_behind_a_counter(test: &str) -> Option<(PgWireCounter, TestApp)> {
    let Some(url) = postgres_url() else {
        skip(test, "DATABASE_URL is not set to a PostgreSQL server");
        return None;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let counter = PgWireCounter::start(postgres_addr(&parsed).await).await;
    let mut relayed = parsed.clone();
    relayed.set_host(Some("127.0.0.1")).unwrap();
    relayed.set_port(Some(counter.addr.port())).unwrap();
    relayed.query_pairs_mut().append_pair("sslmode", "disable");
    let app = spawn_app_on_postgres(&relayed).await?;
    app.create_open_notes().await;
    Some((counter, app))
}

/// A read's only round trip is its statement's: the pool takes back a connection that is
/// in step with the server without pinging it (the release ping of sqlx 0.8, see
/// vendor/README.md).
#[actix_web::test]
async fn reads_make_no_round_trip_without_a_statement() {
    let Some((counter, app)) =
        notes_behind_a_counter("reads_make_no_round_trip_without_a_statement").await
    else {
        return;
    };
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

/// List requests that need the same total while it is being counted wait for the next
/// count and share it: eight lists, one count. That count starts after they arrived, so
/// a write made before them is in it, though not in the count they waited on.
#[actix_web::test]
async fn lists_that_arrive_during_a_count_share_the_next_and_see_earlier_writes() {
    let Some((counter, app)) = notes_behind_a_counter(
        "lists_that_arrive_during_a_count_share_the_next_and_see_earlier_writes",
    )
    .await
    else {
        return;
    };
    for n in 0..3 {
        app.create_record("notes", None, json!({"text": format!("note {n}")}))
            .await;
    }
    let list = "/api/collections/notes/records?sort=text";
    let pages = |sql: &str| sql.starts_with("SELECT") && sql.contains(r#"FROM "notes""#);

    let counted_before = counter.counts();
    counter.hold_counts();
    let first = app.get_json(list, None);
    let others = async {
        // The first list's page and count ran, and its answer is held back.
        eventually("the first count", || async {
            counter.counts() == counted_before + 1
        })
        .await;
        app.create_record("notes", None, json!({"text": "note 3"}))
            .await;
        let paged_before = counter.executed(pages);
        let lists = futures_util::future::join_all((0..8).map(|_| app.get_json(list, None)));
        let release = async {
            // Each of them joined the count before asking for its page.
            eventually("eight pages", || async {
                counter.executed(pages) == paged_before + 8
            })
            .await;
            counter.release();
        };
        tokio::join!(lists, release).0
    };
    let ((status, first), others) = tokio::join!(first, others);

    assert_eq!(status, 200, "{first}");
    assert_eq!(first["totalItems"], 3, "counted before the write: {first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    for (status, page) in others {
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["totalItems"], 4, "counted after the write: {page}");
        assert_eq!(page["totalPages"], 1);
        assert_eq!(page["items"].as_array().unwrap().len(), 4);
        assert_eq!(page["items"][3]["text"], "note 3");
    }
    assert_eq!(
        counter.counts() - counted_before,
        2,
        "the first list's count and one for the eight that waited"
    );
}

/// A write transaction's `BEGIN` travels with its first statement instead of making a
/// round trip of its own (sqlx's transaction begin, patched in vendor/), and the writes
/// still commit together or not at all.
#[actix_web::test]
async fn a_transaction_begins_with_its_first_statement() {
    let Some((counter, app)) =
        notes_behind_a_counter("a_transaction_begins_with_its_first_statement").await
    else {
        return;
    };
    // Each connection of the pool (four in tests) prepares the insert once, with a
    // `BEGIN` of its own: creates four at a time take every connection.
    for round in 0..5 {
        futures_util::future::join_all((0..4).map(|n| {
            app.create_record(
                "notes",
                None,
                json!({"text": format!("warm-up {round}.{n}")}),
            )
        }))
        .await;
    }

    // Background jobs open transactions of their own: only the creates' are looked at.
    let inserts = |sql: &str| sql.starts_with(r#"INSERT INTO "notes""#);
    let (alone, carried) = (
        counter.opened(Began::Alone, inserts),
        counter.opened(Began::Carried, inserts),
    );
    for n in 0..10 {
        app.create_record("notes", None, json!({"text": format!("note {n}")}))
            .await;
    }
    assert_eq!(
        counter.opened(Began::Alone, inserts) - alone,
        0,
        "creates whose BEGIN was sent alone"
    );
    assert_eq!(
        counter.opened(Began::Carried, inserts) - carried,
        10,
        "creates whose BEGIN came with the insert"
    );

    // A batch whose second item fails leaves nothing of the first behind.
    let admin = app.superuser_token("root@example.com").await;
    let batch = app
        .send(
            reqwest::Method::POST,
            "/api/batch",
            Some(&admin),
            Some(&json!({"requests": [
                {"method": "POST", "url": "/api/collections/notes/records", "body": {"text": "kept?"}},
                {"method": "POST", "url": "/api/collections/nope/records", "body": {}}
            ]})),
        )
        .await;
    assert_eq!(batch.status(), 400);
    let (_, page) = app
        .get_json("/api/collections/notes/records?filter=text='kept?'", None)
        .await;
    assert_eq!(page["totalItems"], 0, "{page}");
    let (_, page) = app.get_json("/api/collections/notes/records", None).await;
    assert_eq!(page["totalItems"], 30);
}
