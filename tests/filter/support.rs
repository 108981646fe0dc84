//! A fixture database for filter tests: tables built from collection schemas per the
//! storage contract, in a temporary SQLite file or a fresh PostgreSQL schema.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use gatehouse::domain::filter::{
    candidate_row, CollectionSchema, Compiler, Dialect, FieldKind, FieldSchema, Filter,
    RequestContext, SchemaLookup, Sort,
};
use sea_orm::sea_query::{
    Alias, Expr, PostgresQueryBuilder, Query, SelectStatement, SqliteQueryBuilder,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use serde_json::{json, Map, Value};

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend, as `<name>::sqlite` and
/// `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::support::Backend;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )+};
}

/// Collections by name and id.
pub struct Registry(HashMap<String, Arc<CollectionSchema>>);

impl Registry {
    /// Replaces the list rule of `collection`.
    pub fn set_list_rule(&mut self, collection: &str, rule: Option<&str>) {
        let mut changed = (*self.0[collection]).clone();
        changed.list_rule = rule.map(str::to_string);
        self.0.insert(collection.to_string(), Arc::new(changed));
    }
}

impl SchemaLookup for Registry {
    fn collection(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>> {
        self.0
            .get(name_or_id)
            .or_else(|| self.0.values().find(|c| c.id == name_or_id))
            .cloned()
    }
}

fn collection(name: &str, auth: bool, fields: Vec<FieldSchema>) -> CollectionSchema {
    let mut all = vec![FieldSchema::new("id", FieldKind::Text)];
    all.extend(fields);
    CollectionSchema {
        id: format!("pbc_{name}"),
        name: name.into(),
        auth,
        list_rule: Some(String::new()),
        fields: all,
    }
}

/// teams, users (auth), tags, posts, comments.
pub fn registry() -> Registry {
    use FieldKind::*;
    let collections = vec![
        collection("teams", false, vec![FieldSchema::new("name", Text)]),
        collection(
            "users",
            true,
            vec![
                FieldSchema::new("name", Text),
                FieldSchema::new("email", Email),
                FieldSchema::new("emailVisibility", Bool),
                FieldSchema::new("verified", Bool),
                FieldSchema::new("role", Select),
                FieldSchema::new("age", Number),
                FieldSchema::relation("team", "pbc_teams"),
                FieldSchema::new("secret", Text).hidden(),
            ],
        ),
        collection(
            "tags",
            false,
            vec![
                FieldSchema::new("name", Text),
                FieldSchema::new("weight", Number),
            ],
        ),
        collection(
            "posts",
            false,
            vec![
                FieldSchema::new("title", Text),
                FieldSchema::new("body", Editor),
                FieldSchema::new("views", Number),
                FieldSchema::new("published", Bool),
                FieldSchema::new("created", Date),
                FieldSchema::new("status", Select),
                FieldSchema::new("labels", Select).multiple(),
                FieldSchema::relation("author", "pbc_users"),
                FieldSchema::relation("tags", "pbc_tags").multiple(),
                FieldSchema::new("meta", Json),
                FieldSchema::relation("reviewers", "pbc_users").multiple(),
            ],
        ),
        collection(
            "comments",
            false,
            vec![
                FieldSchema::relation("post", "pbc_posts"),
                FieldSchema::new("text", Text),
                FieldSchema::new("likes", Number),
            ],
        ),
    ];
    Registry(
        collections
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect(),
    )
}

/// The fixture rows, by collection, in insertion order.
pub fn rows() -> Vec<(&'static str, Value)> {
    vec![
        ("teams", json!({"id": "t1", "name": "Red"})),
        ("teams", json!({"id": "t2", "name": "Blue"})),
        (
            "users",
            json!({"id": "u1", "name": "Alice", "email": "a@x.io", "emailVisibility": true,
            "verified": true, "role": "admin", "age": 30, "team": "t1", "secret": "s1"}),
        ),
        (
            "users",
            json!({"id": "u2", "name": "bob", "email": "b@x.io", "emailVisibility": false,
            "verified": false, "role": "member", "age": 20, "team": "t2"}),
        ),
        (
            "users",
            json!({"id": "u3", "name": "Carol", "email": "c@x.io", "emailVisibility": true,
            "verified": true, "role": "member", "age": 40}),
        ),
        ("tags", json!({"id": "g1", "name": "rust", "weight": 1})),
        ("tags", json!({"id": "g2", "name": "go", "weight": 2})),
        ("tags", json!({"id": "g3", "name": "sql", "weight": 3})),
        (
            "posts",
            json!({"id": "p1", "title": "Hello Rust", "body": "<p>Rust rocks</p>", "views": 10,
            "published": true, "created": "2024-01-10 10:00:00.000Z", "status": "draft",
            "labels": ["a", "b"], "author": "u1", "tags": ["g1", "g3"],
            "meta": {"score": 5, "name": "first", "list": ["x"]}, "reviewers": ["u2", "u3"]}),
        ),
        (
            "posts",
            json!({"id": "p2", "title": "100% sure_thing", "views": 0, "published": false,
            "created": "2024-02-01 00:00:00.000Z", "status": "published", "labels": [],
            "author": "u2", "tags": [], "meta": null, "reviewers": []}),
        ),
        (
            "posts",
            json!({"id": "p3", "title": "go go", "views": 25.5, "published": true,
            "created": "2024-03-15 12:00:00.000Z", "status": "published", "labels": ["b"],
            "author": "", "tags": ["g2"], "meta": {"score": "7", "flag": true}, "reviewers": ["u1"]}),
        ),
        (
            "posts",
            json!({"id": "p4", "title": "O'Reilly \"quotes\" \\ back", "views": 5, "published": false,
            "created": "2023-12-31 23:59:59.999Z", "status": "", "labels": ["a"], "author": "u3",
            "tags": ["g1", "missing"], "meta": {"score": 12}, "reviewers": ["u1", "u2"]}),
        ),
        (
            "comments",
            json!({"id": "c1", "post": "p1", "text": "nice", "likes": 3}),
        ),
        (
            "comments",
            json!({"id": "c2", "post": "p1", "text": "meh", "likes": 0}),
        ),
        (
            "comments",
            json!({"id": "c3", "post": "p3", "text": "ok", "likes": 5}),
        ),
    ]
}

/// The instant the macros are computed from: 2024-02-01 12:00:00 UTC.
pub fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 2, 1, 12, 0, 0).unwrap()
}

/// A guest request at [`now`].
pub fn guest() -> RequestContext {
    RequestContext::guest(now())
}

/// A request authenticated as fixture user `id`, with its record as the auth object.
pub fn user(id: &str) -> RequestContext {
    let (_, row) = rows()
        .into_iter()
        .find(|(c, r)| *c == "users" && r["id"] == id)
        .expect("fixture user");
    let mut record: Map<String, Value> = row.as_object().unwrap().clone();
    record.insert("collectionId".into(), "pbc_users".into());
    record.insert("collectionName".into(), "users".into());
    guest().with_auth(record)
}

/// A superuser request.
pub fn superuser() -> RequestContext {
    RequestContext {
        superuser: true,
        ..guest()
    }
}

/// Says why a test did not run, on the terminal even when output is captured.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// A database with the fixture tables and rows.
pub struct FixtureDb {
    pub conn: DatabaseConnection,
    pub dialect: Dialect,
    pub registry: Registry,
    _dir: Option<tempfile::TempDir>,
    postgres_schema: Option<(String, String)>,
}

impl FixtureDb {
    /// Opens `backend` (None, after saying why, when it is not available) and
    /// creates the fixture.
    pub async fn open(backend: Backend, test: &str) -> Option<FixtureDb> {
        let (conn, dir, postgres_schema) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
                let mut options = ConnectOptions::new(url);
                options.max_connections(1).sqlx_logging(false);
                (Database::connect(options).await.unwrap(), Some(dir), None)
            }
            Backend::Postgres => {
                let Some(url) = std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|u| u.starts_with("postgres"))
                else {
                    skip(test, "DATABASE_URL does not name a PostgreSQL server");
                    return None;
                };
                let schema = format!("filter_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&url).await.unwrap();
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let mut options = ConnectOptions::new(url.clone());
                options
                    .max_connections(1)
                    .sqlx_logging(false)
                    .set_schema_search_path(schema.clone());
                (
                    Database::connect(options).await.unwrap(),
                    None,
                    Some((url, schema)),
                )
            }
        };
        let dialect = Dialect::try_from(conn.get_database_backend()).unwrap();
        let db = FixtureDb {
            conn,
            dialect,
            registry: registry(),
            _dir: dir,
            postgres_schema,
        };
        db.create_tables().await;
        Some(db)
    }

    async fn create_tables(&self) {
        let pg = self.dialect == Dialect::Postgres;
        for name in ["teams", "users", "tags", "posts", "comments"] {
            let c = self.registry.collection(name).unwrap();
            let columns: Vec<String> = c
                .fields
                .iter()
                .map(|f| {
                    let ty = match f.kind {
                        _ if f.name == "id" => "TEXT PRIMARY KEY",
                        FieldKind::Number if pg => "DOUBLE PRECISION NOT NULL DEFAULT 0",
                        FieldKind::Number => "REAL NOT NULL DEFAULT 0",
                        FieldKind::Bool => "BOOLEAN NOT NULL DEFAULT FALSE",
                        FieldKind::Json if pg => "JSONB",
                        FieldKind::Json => "TEXT",
                        _ if f.multiple && pg => "JSONB NOT NULL DEFAULT '[]'",
                        _ if f.multiple => "TEXT NOT NULL DEFAULT '[]'",
                        _ => "TEXT NOT NULL DEFAULT ''",
                    };
                    format!("\"{}\" {ty}", f.name)
                })
                .collect();
            self.conn
                .execute_unprepared(&format!("CREATE TABLE \"{name}\" ({})", columns.join(", ")))
                .await
                .unwrap();
        }
        for (name, row) in rows() {
            self.insert(name, row.as_object().unwrap()).await;
        }
    }

    /// Inserts `record` into `collection` (missing fields get their zero value).
    pub async fn insert(&self, collection: &str, record: &Map<String, Value>) {
        let c = self.registry.collection(collection).unwrap();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(collection))
            .columns(c.fields.iter().map(|f| Alias::new(&f.name)))
            .select_from(candidate_row(&c, record, self.dialect))
            .unwrap();
        let (sql, values) = match self.dialect {
            Dialect::Sqlite => insert.build(SqliteQueryBuilder),
            Dialect::Postgres => insert.build(PostgresQueryBuilder),
        };
        self.conn
            .execute(Statement::from_sql_and_values(self.backend(), sql, values))
            .await
            .unwrap();
    }

    /// The posts collection.
    pub fn registry_posts(&self) -> Arc<CollectionSchema> {
        self.registry.collection("posts").unwrap()
    }

    /// sea-orm's name for the engine.
    pub fn backend(&self) -> DbBackend {
        match self.dialect {
            Dialect::Sqlite => DbBackend::Sqlite,
            Dialect::Postgres => DbBackend::Postgres,
        }
    }

    /// The query's first column of every row, as strings.
    pub async fn strings(&self, select: &SelectStatement) -> Result<Vec<String>, sea_orm::DbErr> {
        let (sql, values) = match self.dialect {
            Dialect::Sqlite => select.build(SqliteQueryBuilder),
            Dialect::Postgres => select.build(PostgresQueryBuilder),
        };
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect())
    }

    /// Ids of `collection` rows matching the client filter `filter` for `request`,
    /// sorted; Err(text) when the filter is refused or the query fails.
    pub async fn ids(
        &self,
        collection: &str,
        filter: &str,
        request: &RequestContext,
    ) -> Result<Vec<String>, String> {
        self.matching(collection, filter, request, false).await
    }

    /// Like [`FixtureDb::ids`] for a (trusted) API rule.
    pub async fn rule_ids(
        &self,
        collection: &str,
        rule: &str,
        request: &RequestContext,
    ) -> Result<Vec<String>, String> {
        self.matching(collection, rule, request, true).await
    }

    async fn matching(
        &self,
        collection: &str,
        filter: &str,
        request: &RequestContext,
        rule: bool,
    ) -> Result<Vec<String>, String> {
        let c = self.registry.collection(collection).unwrap();
        let filter = Filter::parse(filter).map_err(|e| e.to_string())?;
        let compiler = Compiler::new(&self.registry, &c, request, self.dialect);
        let condition = if rule {
            compiler.rule(&filter)
        } else {
            compiler.filter(&filter)
        }
        .map_err(|e| e.to_string())?;
        let select = Query::select()
            .column((Alias::new(collection), Alias::new("id")))
            .from(Alias::new(collection))
            .and_where(condition)
            .order_by(
                (Alias::new(collection), Alias::new("id")),
                sea_orm::sea_query::Order::Asc,
            )
            .to_owned();
        self.strings(&select)
            .await
            .map_err(|e| format!("query failed: {e}"))
    }

    /// Ids of posts in the order `sort` gives.
    pub async fn sorted_posts(&self, sort: &str) -> Result<Vec<String>, String> {
        let c = self.registry.collection("posts").unwrap();
        let sort = Sort::parse(sort).map_err(|e| e.to_string())?;
        let request = guest();
        let compiler = Compiler::new(&self.registry, &c, &request, self.dialect);
        let terms = compiler.sort(&sort).map_err(|e| e.to_string())?;
        let mut select = Query::select()
            .column((Alias::new("posts"), Alias::new("id")))
            .from(Alias::new("posts"))
            .to_owned();
        for term in &terms {
            term.apply(&mut select);
        }
        self.strings(&select)
            .await
            .map_err(|e| format!("query failed: {e}"))
    }

    /// Whether a record with `values` would pass `rule` before it exists.
    pub async fn candidate_passes(
        &self,
        rule: &str,
        values: Value,
        request: &RequestContext,
    ) -> bool {
        let c = self.registry.collection("posts").unwrap();
        let filter = Filter::parse(rule).unwrap();
        let compiler = Compiler::new(&self.registry, &c, request, self.dialect);
        let condition = compiler.rule(&filter).unwrap();
        let row = candidate_row(&c, values.as_object().unwrap(), self.dialect);
        let select = Query::select()
            .expr(Expr::val("ok"))
            .from_subquery(row, Alias::new("posts"))
            .and_where(condition)
            .to_owned();
        !self.strings(&select).await.unwrap().is_empty()
    }
}

impl Drop for FixtureDb {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.postgres_schema.take() {
            // Drop runs outside async code; a short-lived runtime removes the schema.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(conn) = Database::connect(&url).await {
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            ))
                            .await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// Runs every `(filter, expected ids)` case and fails once with every mismatch.
pub async fn check(
    db: &FixtureDb,
    collection: &str,
    request: &RequestContext,
    cases: &[(&str, &[&str])],
) {
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        match db.ids(collection, filter, request).await {
            Ok(ids) if ids == *expected => {}
            Ok(ids) => failures.push(format!("{filter:?}: expected {expected:?}, got {ids:?}")),
            Err(err) => failures.push(format!(
                "{filter:?}: expected {expected:?}, got error {err}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{:?}: {} of {} cases failed:\n{}",
        db.dialect,
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
