//! Filtering on an indexed field lets the engine use the index, also when other
//! parts of the filter walk relations.

use gatehouse::domain::filter::{Compiler, Dialect, Filter};
use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Query, SqliteQueryBuilder};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::on_both_backends;
use crate::support::{guest, Backend, FixtureDb};

/// The engine's plan for `SELECT id FROM posts WHERE <filter>`, as one text.
async fn plan(db: &FixtureDb, filter: &str) -> String {
    let c = db.registry_posts();
    let request = guest();
    let compiler = Compiler::new(&db.registry, &c, &request, db.dialect);
    let condition = compiler.filter(&Filter::parse(filter).unwrap()).unwrap();
    let select = Query::select()
        .column((Alias::new("posts"), Alias::new("id")))
        .from(Alias::new("posts"))
        .and_where(condition)
        .to_owned();
    let (sql, values) = match db.dialect {
        Dialect::Sqlite => select.build(SqliteQueryBuilder),
        Dialect::Postgres => select.build(PostgresQueryBuilder),
    };
    let explain = match db.dialect {
        Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        Dialect::Postgres => format!("EXPLAIN {sql}"),
    };
    let rows = db
        .conn
        .query_all(Statement::from_sql_and_values(
            db.backend(),
            explain,
            values,
        ))
        .await
        .unwrap();
    let column = match db.dialect {
        Dialect::Sqlite => "detail",
        Dialect::Postgres => "QUERY PLAN",
    };
    rows.iter()
        .map(|r| r.try_get::<String>("", column).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn indexed_field_uses_the_index(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "indexed_field_uses_the_index").await else {
        return;
    };
    db.conn
        .execute_unprepared("CREATE INDEX idx_posts_title ON posts (title)")
        .await
        .unwrap();
    for n in 0..300 {
        let record =
            json!({"id": format!("bulk{n}"), "title": format!("bulk title {n}"), "views": n});
        db.insert("posts", record.as_object().unwrap()).await;
    }
    match db.dialect {
        Dialect::Sqlite => {
            db.conn.execute_unprepared("ANALYZE").await.unwrap();
        }
        Dialect::Postgres => {
            db.conn.execute_unprepared("ANALYZE posts").await.unwrap();
            db.conn
                .execute_unprepared("SET enable_seqscan = off")
                .await
                .unwrap();
        }
    }
    for filter in [
        "title = 'go go'",
        "title = 'go go' && author.name = 'nobody'",
        "title >= 'go' && title < 'gp' && tags.name ?= 'go'",
    ] {
        let plan = plan(&db, filter).await;
        assert!(
            plan.contains("idx_posts_title"),
            "{filter:?} on {:?}:\n{plan}",
            db.dialect
        );
    }
    let unindexed = plan(&db, "views = 3").await;
    assert!(!unindexed.contains("idx_posts_title"), "{unindexed}");
}

on_both_backends!(indexed_field_uses_the_index);
