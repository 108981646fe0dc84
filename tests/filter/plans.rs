//! Filtering on an indexed field lets the engine use the index, also when other
//! parts of the filter walk relations; sorting by it reads the index in order.

use gatehouse::domain::filter::{Compiler, Dialect, Filter, Sort};
use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Query, SqliteQueryBuilder};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::on_both_backends;
use crate::support::{guest, Backend, FixtureDb};

/// The engine's plan for `SELECT id FROM posts WHERE <filter>`, as one text.
async fn plan(db: &FixtureDb, filter: &str) -> String {
    page_plan(db, filter, "").await
}

/// The engine's plan for the third page of 30 of `SELECT id FROM posts WHERE <filter>`
/// in the order of `sort`, as the records list asks for it.
async fn page_plan(db: &FixtureDb, filter: &str, sort: &str) -> String {
    let c = db.registry_posts();
    let request = guest();
    let compiler = Compiler::new(&db.registry, &c, &request, db.dialect);
    let condition = compiler.filter(&Filter::parse(filter).unwrap()).unwrap();
    let mut select = Query::select()
        .column((Alias::new("posts"), Alias::new("id")))
        .from(Alias::new("posts"))
        .and_where(condition)
        .to_owned();
    if !sort.is_empty() {
        for term in compiler.sort(&Sort::parse(sort).unwrap()).unwrap() {
            term.apply(&mut select);
        }
        select.limit(30).offset(60);
    }
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

async fn sorting_by_an_indexed_field_reads_the_index_in_order(backend: Backend) {
    let Some(db) = FixtureDb::open(backend, "sorting_reads_the_index").await else {
        return;
    };
    db.conn
        .execute_unprepared("CREATE INDEX idx_posts_views ON posts (views)")
        .await
        .unwrap();
    for n in 0..1000 {
        let record = json!({"id": format!("bulk{n}"), "title": "bulk", "views": n});
        db.insert("posts", record.as_object().unwrap()).await;
    }
    let analyze = match db.dialect {
        Dialect::Sqlite => "ANALYZE",
        Dialect::Postgres => "ANALYZE posts",
    };
    db.conn.execute_unprepared(analyze).await.unwrap();
    for sort in ["-views", "views"] {
        let plan = page_plan(&db, "views >= 100 && views < 900", sort).await;
        let sorted_apart = match db.dialect {
            Dialect::Sqlite => plan.contains("TEMP B-TREE"),
            Dialect::Postgres => plan.contains("Sort"),
        };
        assert!(
            plan.contains("idx_posts_views") && !sorted_apart,
            "{sort:?} on {:?}:\n{plan}",
            db.dialect
        );
    }
    // A relation path can be NULL: its order stays explicit, and the page is sorted.
    let plan = page_plan(&db, "views >= 100", "-author.name").await;
    assert!(
        plan.contains("TEMP B-TREE") || plan.contains("Sort"),
        "{plan}"
    );
}

on_both_backends!(
    indexed_field_uses_the_index,
    sorting_by_an_indexed_field_reads_the_index_in_order
);
