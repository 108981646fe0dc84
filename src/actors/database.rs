//! The database actor: owns the sea-orm connection pool and runs typed work on it.
//!
//! Work arrives as messages and runs as a `ResponseFuture`, a task of its own: the
//! actor hands each query to the pool and is free for the next message at once, so many
//! queries run concurrently and no mailbox becomes a one-at-a-time queue. Several
//! instances share the pool (see [`ActorPool`]), so the CPU side of queries (encoding,
//! decoding rows) spreads over threads as well. On SQLite, write transactions take turns
//! on one connection and commit in groups (see [`GroupCommit`]).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, Supervised,
};
use sea_orm::{
    sqlx, DatabaseConnection, DatabaseTransaction, DbErr, RuntimeErr, TransactionError,
    TransactionTrait,
};

use super::group_commit::{self, GroupCommit};
use super::supervisor::{contain, ActorPool, Crashed, Panicked};
use crate::records::RecordsEnv;
use crate::telemetry::Metrics;
use crate::webhooks::EndpointCache;

pub(super) const NAME: &str = "database";

/// Why database work failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Query(#[from] DbErr),
    /// The commit of a group of write transactions (see [`GroupCommit`]) failed.
    #[error("committing a group of writes failed: {0}")]
    Commit(Arc<DbErr>),
    #[error(transparent)]
    Panicked(#[from] Panicked),
    #[error("the database actor is not running")]
    ActorGone,
    /// A write transaction was asked for from inside another on SQLite's one writer,
    /// where it would have waited for ever.
    #[error("a write transaction was started inside another one")]
    NestedWrite,
    #[error("{0}")]
    NotReady(String),
}

impl DbError {
    /// Whether the database was too busy to take the work, so that trying again shortly
    /// may succeed: no pooled connection came free in time, SQLite's write lock stayed
    /// taken past the busy timeout, or PostgreSQL gave up on a serialization conflict,
    /// a deadlock or its connection limit.
    pub fn is_overload(&self) -> bool {
        let err = match self {
            DbError::Query(err) => err,
            DbError::Commit(err) => &**err,
            _ => return false,
        };
        if matches!(err, DbErr::ConnectionAcquire(_)) {
            return true;
        }
        let (DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
        | DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Database(db)))) = err
        else {
            return false;
        };
        // SQLite: SQLITE_BUSY (5) and its extended codes, SQLITE_LOCKED (6);
        // PostgreSQL: serialization_failure, deadlock_detected, too_many_connections.
        matches!(
            db.code().as_deref(),
            Some("5" | "6" | "261" | "517" | "773" | "40001" | "40P01" | "53300")
        )
    }
}

/// The database actor instances, used in turn.
pub type Db = ActorPool<DatabaseActor>;

pub struct DatabaseActor {
    conn: DatabaseConnection,
    sqlite_file: Option<PathBuf>,
    ping_timeout: Duration,
    metrics: Arc<Metrics>,
    pub(crate) records: Arc<RecordsEnv>,
    /// The webhook endpoints transactions queue deliveries for.
    endpoints: Arc<EndpointCache>,
    /// SQLite's write transactions (PostgreSQL's run on `conn`).
    group_commit: Option<GroupCommit>,
}

impl DatabaseActor {
    pub fn new(
        conn: DatabaseConnection,
        sqlite_file: Option<PathBuf>,
        ping_timeout: Duration,
        metrics: Arc<Metrics>,
        records: Arc<RecordsEnv>,
        endpoints: Arc<EndpointCache>,
        group_commit: Option<GroupCommit>,
    ) -> Self {
        Self {
            conn,
            sqlite_file,
            ping_timeout,
            metrics,
            records,
            endpoints,
            group_commit,
        }
    }

    /// Runs `job` in a transaction as a task of its own, with panics contained.
    pub(crate) fn transaction<T, E>(
        &self,
        ctx: &mut Context<Self>,
        mode: TxMode,
        job: TxJob<T, E>,
    ) -> ResponseFuture<Result<T, E>>
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
    {
        Box::pin(self.transactions(ctx).run(mode, job, None))
    }

    /// A handle that runs transactions from a future of the handler's own, for work
    /// that must happen before its transaction begins (see [`Transactions::run`]).
    pub(crate) fn transactions(&self, ctx: &mut Context<Self>) -> Transactions {
        Transactions {
            conn: self.conn.clone(),
            actor: ctx.address(),
            endpoints: self.endpoints.clone(),
            group_commit: self.group_commit.clone(),
        }
    }
}

/// What running a transaction needs, taken from a [`DatabaseActor`].
pub(crate) struct Transactions {
    conn: DatabaseConnection,
    actor: Addr<DatabaseActor>,
    endpoints: Arc<EndpointCache>,
    group_commit: Option<GroupCommit>,
}

impl Transactions {
    /// The pool, for work done before the transaction.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Runs `work`, done before the transaction, with panics contained as the
    /// transaction's are.
    pub(crate) async fn contain<T>(&self, work: impl Future<Output = T>) -> Result<T, DbError> {
        contain(NAME, self.actor.clone(), work)
            .await
            .map_err(DbError::Panicked)
    }

    /// Runs `job` in a transaction with panics contained (a panic restarts the actor
    /// the handle came from), and `committed` on its value once it has committed: on
    /// SQLite in commit order (see [`GroupCommit::submit`]).
    pub(crate) fn run<T, E>(
        self,
        mode: TxMode,
        job: TxJob<T, E>,
        committed: Option<AfterCommit<T>>,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
    {
        let Transactions {
            conn,
            actor,
            endpoints,
            group_commit,
        } = self;
        async move {
            if let (TxMode::Write, Some(group_commit)) = (mode, group_commit) {
                return group_commit.submit(job, committed, actor).await;
            }
            // Deliveries the transaction queued go out as soon as it has committed.
            let transaction =
                crate::webhooks::waking_after_commit(endpoints, conn.transaction(job));
            match contain(NAME, actor, transaction).await {
                Ok(Ok(mut value)) => {
                    if let Some(committed) = committed {
                        committed(&mut value);
                    }
                    Ok(value)
                }
                Ok(Err(TransactionError::Transaction(err))) => Err(err),
                Ok(Err(TransactionError::Connection(err))) => Err(DbError::Query(err).into()),
                Err(panicked) => Err(DbError::Panicked(panicked).into()),
            }
        }
    }
}

impl DatabaseActor {
    /// Runs `job`, which only reads, on the pool without a transaction (each statement
    /// sees what was committed when it ran), as a task of its own with panics
    /// contained. A transaction would cost a `BEGIN` and a `COMMIT` round trip for
    /// every read.
    pub(crate) fn query<T, E>(
        &self,
        ctx: &mut Context<Self>,
        job: QueryJob<T, E>,
    ) -> ResponseFuture<Result<T, E>>
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
    {
        let conn = self.conn.clone();
        let addr = ctx.address();
        Box::pin(async move {
            match contain(NAME, addr, async move { job(&conn).await }).await {
                Ok(result) => result,
                Err(panicked) => Err(DbError::Panicked(panicked).into()),
            }
        })
    }
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    Read,
    Write,
}

impl Actor for DatabaseActor {
    type Context = Context<Self>;
}

impl Supervised for DatabaseActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
        tracing::warn!(actor = NAME, "actor restarted by its supervisor");
    }
}

impl Handler<Crashed> for DatabaseActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Checks that the database answers (readiness).
#[derive(Message)]
#[rtype(result = "Result<(), DbError>")]
pub struct Ping;

impl Handler<Ping> for DatabaseActor {
    type Result = ResponseFuture<Result<(), DbError>>;

    fn handle(&mut self, _: Ping, ctx: &mut Context<Self>) -> Self::Result {
        let conn = self.conn.clone();
        let sqlite_file = self.sqlite_file.clone();
        let timeout = self.ping_timeout;
        let addr = ctx.address();
        Box::pin(async move {
            contain(NAME, addr, async move {
                // A SQLite file deleted under a running server still answers through
                // open handles, but everything written from then on is lost.
                if let Some(file) = sqlite_file.filter(|file| !file.exists()) {
                    return Err(DbError::NotReady(format!(
                        "database file {} is missing",
                        file.display()
                    )));
                }
                match tokio::time::timeout(timeout, conn.ping()).await {
                    Ok(result) => result.map_err(DbError::from),
                    Err(_) => Err(DbError::NotReady(format!(
                        "database did not answer within {timeout:?}"
                    ))),
                }
            })
            .await?
        })
    }
}

/// A unit of work run in one transaction: committed when it returns `Ok`, rolled back
/// when it returns `Err` or panics.
pub type TxJob<T, E> = Box<
    dyn for<'c> FnOnce(
            &'c DatabaseTransaction,
        ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
        + Send,
>;

/// Runs on a transaction's value once it has committed (see
/// [`Transactions::run`]).
pub type AfterCommit<T> = Box<dyn FnOnce(&mut T) + Send>;

/// Reads run on the pool, outside a transaction (see [`DatabaseActor::query`]).
pub type QueryJob<T, E> = Box<
    dyn for<'c> FnOnce(
            &'c DatabaseConnection,
        ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
        + Send,
>;

/// Runs a [`TxJob`] and answers with its typed result.
pub struct Transact<T, E> {
    mode: TxMode,
    job: TxJob<T, E>,
}

impl<T: 'static, E: 'static> Message for Transact<T, E> {
    type Result = Result<T, E>;
}

impl<T, E> Handler<Transact<T, E>> for DatabaseActor
where
    T: Send + 'static,
    E: From<DbError> + std::error::Error + Send + 'static,
{
    type Result = ResponseFuture<Result<T, E>>;

    fn handle(&mut self, msg: Transact<T, E>, ctx: &mut Context<Self>) -> Self::Result {
        self.transaction(ctx, msg.mode, msg.job)
    }
}

impl Db {
    /// Asks one instance whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.pick()
            .send(Ping)
            .await
            .map_err(|_| DbError::ActorGone)?
    }

    /// Runs `job` in a write transaction on one instance.
    pub async fn transact<T, E, F>(&self, job: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + 'static,
    {
        self.run(TxMode::Write, Box::new(job)).await
    }

    /// Runs `job`, which only reads, in a transaction on one instance (on SQLite,
    /// readers never wait for writers).
    pub async fn read<T, E, F>(&self, job: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send
            + 'static,
    {
        self.run(TxMode::Read, Box::new(job)).await
    }

    async fn run<T, E>(&self, mode: TxMode, job: TxJob<T, E>) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + std::error::Error + Send + 'static,
    {
        if mode == TxMode::Write && group_commit::inside_write_job() {
            return Err(E::from(DbError::NestedWrite));
        }
        self.pick()
            .send(Transact { mode, job })
            .await
            .map_err(|_| E::from(DbError::ActorGone))?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::http::StatusCode;
    use actix_web::ResponseError;
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sea_orm::{ConnectionTrait, SqlxSqliteConnector, TransactionTrait};

    use super::DbError;
    use crate::error::ApiError;

    async fn sqlite(path: &std::path::Path, max: u32) -> sea_orm::DatabaseConnection {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_millis(100))
            .connect_with(options)
            .await
            .unwrap();
        SqlxSqliteConnector::from_sqlx_sqlite_pool(pool)
    }

    fn answer(err: DbError) -> (StatusCode, Option<String>) {
        let response = ApiError::from(err).error_response();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        (response.status(), retry_after)
    }

    #[actix_web::test]
    async fn a_write_lock_held_elsewhere_is_overload_and_answers_503() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let holder = sqlite(&path, 1).await;
        holder
            .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
            .await
            .unwrap();
        let other = sqlite(&path, 1).await;

        let txn = holder.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t (v) VALUES ('held')")
            .await
            .unwrap();
        let err = DbError::Query(
            other
                .execute_unprepared("INSERT INTO t (v) VALUES ('waiting')")
                .await
                .unwrap_err(),
        );
        assert!(err.is_overload(), "{err}");
        assert_eq!(
            answer(err),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        txn.commit().await.unwrap();

        let duplicate = DbError::Query(
            other
                .execute_unprepared("INSERT INTO t (v) VALUES ('held')")
                .await
                .unwrap_err(),
        );
        assert!(!duplicate.is_overload(), "{duplicate}");
        assert_eq!(answer(duplicate).0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[actix_web::test]
    async fn no_free_pooled_connection_is_overload() {
        let dir = tempfile::tempdir().unwrap();
        let conn = sqlite(&dir.path().join("pool.db"), 1).await;
        let txn = conn.begin().await.unwrap();
        let err = DbError::Query(conn.execute_unprepared("SELECT 1").await.unwrap_err());
        assert!(err.is_overload(), "{err}");
        assert_eq!(answer(err).0, StatusCode::SERVICE_UNAVAILABLE);
        txn.rollback().await.unwrap();
    }
}
