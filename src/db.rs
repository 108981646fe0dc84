//! Opening the database (SQLite or PostgreSQL) and applying migrations.

use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
    TransactionTrait,
};

use crate::config::DatabaseSettings;

/// How long a SQLite statement waits for a lock another connection holds.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection pool for `settings`: for SQLite, creates the file's folder and
/// turns on WAL, foreign keys and a busy timeout; for PostgreSQL, creates the schema
/// and puts it first on the search path.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    connect_pool(settings, settings.max_connections).await
}

/// SQLite's connection for write transactions (`None` for PostgreSQL, which writes
/// concurrently, on the read pool). SQLite lets one connection write at a time, and a
/// connection that finds the write lock taken sleeps in SQLite's busy handler (1, 2,
/// 5, 10 … ms, growing) instead of being woken when it frees: with a few concurrent
/// creates, most of their time went to those sleeps. So writes get a pool of one
/// connection, as in PocketBase, where they take turns (see
/// [`crate::actors::group_commit`]). One connection, not two taking turns: a
/// connection drops its page cache whenever another one has written.
pub async fn connect_writer(
    settings: &DatabaseSettings,
) -> Result<Option<DatabaseConnection>, DbErr> {
    match settings.url.sqlite_path() {
        Some(_) => connect_pool(settings, 1).await.map(Some),
        None => Ok(None),
    }
}

async fn connect_pool(
    settings: &DatabaseSettings,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let url = &settings.url;
    if let Some(parent) = url.sqlite_path().as_deref().and_then(|p| p.parent()) {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|err| {
                DbErr::Custom(format!("cannot create folder {}: {err}", parent.display()))
            })?;
        }
    }
    let mut options = ConnectOptions::new(url.expose());
    // sqlx pings a connection when it goes back to the pool (a broken one is closed
    // there) and, unless told otherwise, again when it is taken out: a second round
    // trip to SQLite's thread or PostgreSQL for every query, which only catches a
    // connection that broke while idle (its first query fails, and the pool drops it).
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .sqlx_logging(false);
    if url.is_sqlite() {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    } else {
        options.set_schema_search_path(settings.schema.clone());
    }
    let conn = Database::connect(options).await?;
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            settings.schema
        ))
        .await?;
    }
    Ok(conn)
}

/// A migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// Applies pending migrations (all, or `steps`) in one transaction.
pub async fn migrate_up(conn: &DatabaseConnection, steps: Option<u32>) -> Result<(), DbErr> {
    locked(conn, |txn| Box::pin(Migrator::up(txn, steps))).await
}

/// Rolls back the last `steps` applied migrations in one transaction.
pub async fn migrate_down(conn: &DatabaseConnection, steps: u32) -> Result<(), DbErr> {
    locked(conn, |txn| Box::pin(Migrator::down(txn, Some(steps)))).await
}

/// Every known migration in order, with its state.
pub async fn migration_status(conn: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    Migrator::install(conn).await?;
    Ok(Migrator::get_migration_with_status(conn)
        .await?
        .into_iter()
        .map(|m| MigrationState {
            name: m.name().to_string(),
            applied: m.status() == sea_orm_migration::MigrationStatus::Applied,
        })
        .collect())
}

/// Runs `work` in a transaction; on PostgreSQL it first takes an advisory lock, so that
/// instances starting together apply migrations one after another, not twice.
async fn locked<F>(conn: &DatabaseConnection, work: F) -> Result<(), DbErr>
where
    F: for<'c> FnOnce(
        &'c sea_orm::DatabaseTransaction,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), DbErr>> + Send + 'c>,
    >,
{
    let txn = conn.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        // The key is "gatehous" read as a big-endian i64: any constant works if it is
        // the same for every instance.
        txn.execute(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7449363237540164979)",
        ))
        .await?;
    }
    work(&txn).await?;
    txn.commit().await
}
