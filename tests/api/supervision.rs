use gatehouse::actors::database::DbError;
use sea_orm::ConnectionTrait;

use crate::on_both_backends;
use crate::support::{spawn_app_with, Backend};

on_both_backends!(
    a_panicking_database_job_is_contained_and_the_actor_restarts,
    queued_requests_survive_a_restart,
    a_panicking_transaction_writes_nothing,
);

async fn a_panicking_database_job_is_contained_and_the_actor_restarts(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.database.actors = 1).await else {
        return;
    };

    let err = app
        .db
        .transact::<(), DbError, _>(|_| Box::pin(async { panic!("injected fault") }))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Panicked(_)), "{err:?}");

    // The only database actor was restarted: the next request through it succeeds.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let value: i32 = app.query_value("SELECT 41 + 1 AS answer").await;
    assert_eq!(value, 42);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gatehouse_actor_restarts_total{actor=\"database\"} 1"),
        "{metrics}"
    );
}

async fn queued_requests_survive_a_restart(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.database.actors = 1).await else {
        return;
    };

    let crash = app
        .db
        .transact::<(), DbError, _>(|_| Box::pin(async { panic!("injected fault") }));
    let pings = (0..50).map(|_| app.db.ping());
    let (crash, pings) = tokio::join!(crash, futures_util::future::join_all(pings));
    assert!(matches!(crash, Err(DbError::Panicked(_))));
    for ping in pings {
        ping.expect("a ping queued around the crash still gets its answer");
    }
}

async fn a_panicking_transaction_writes_nothing(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.database.actors = 1).await else {
        return;
    };
    app.db
        .transact::<(), DbError, _>(|txn| {
            Box::pin(async move {
                txn.execute_unprepared("CREATE TABLE probe (n INTEGER NOT NULL)")
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap();

    let crash = app
        .db
        .transact::<(), DbError, _>(|txn| {
            Box::pin(async move {
                txn.execute_unprepared("INSERT INTO probe (n) VALUES (1)")
                    .await?;
                panic!("fault after the first write");
            })
        })
        .await;
    assert!(matches!(crash, Err(DbError::Panicked(_))));

    let rows: i64 = app.query_value("SELECT COUNT(*) AS n FROM probe").await;
    assert_eq!(rows, 0, "the write before the panic was rolled back");
}

/// On SQLite a write job holds the one writer's turn: a write transaction it asked for
/// and awaited would wait for that turn for ever. It fails at once instead.
#[actix_web::test]
async fn a_write_asked_for_inside_a_write_fails_instead_of_waiting_for_ever() {
    let app = spawn_app_with(Backend::Sqlite, |_| {})
        .await
        .expect("SQLite is always available");
    let db = app.db.clone();
    let outer = app.db.transact::<(), DbError, _>(move |_| {
        Box::pin(async move {
            db.transact::<(), DbError, _>(|_| Box::pin(async { Ok(()) }))
                .await
        })
    });
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), outer)
        .await
        .expect("answered, not left waiting for its own turn");
    assert!(matches!(outcome, Err(DbError::NestedWrite)), "{outcome:?}");
    // The writer is free again.
    assert!(app.count_rows("_collections").await > 0, "a write after it");
}
