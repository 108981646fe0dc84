use gatehouse::actors::database::DbError;
use sea_orm::{ConnectionTrait, Statement};

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
    let value = app
        .db
        .transact::<i32, DbError, _>(|txn| {
            Box::pin(async move {
                let row = txn
                    .query_one(Statement::from_string(
                        txn.get_database_backend(),
                        "SELECT 41 + 1 AS answer",
                    ))
                    .await?
                    .expect("one row");
                Ok(row.try_get::<i32>("", "answer")?)
            })
        })
        .await
        .unwrap();
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

    let rows = app
        .db
        .transact::<i64, DbError, _>(|txn| {
            Box::pin(async move {
                let row = txn
                    .query_one(Statement::from_string(
                        txn.get_database_backend(),
                        "SELECT COUNT(*) AS n FROM probe",
                    ))
                    .await?
                    .expect("one row");
                Ok(row.try_get::<i64>("", "n")?)
            })
        })
        .await
        .unwrap();
    assert_eq!(rows, 0, "the write before the panic was rolled back");
}
