//! Group commit: SQLite's write transactions, taken in turn and committed together.
//!
//! SQLite lets one connection write at a time, so write transactions take turns on one
//! connection, in arrival order, as PocketBase's single write connection makes them.
//! Every statement is a round trip to sqlx's thread for that connection, and a
//! transaction of one insert costs five of them (`BEGIN`, taking the write lock, the
//! insert, `COMMIT`, and sqlx's ping as the connection goes back to its pool), each a
//! thread wake-up or two. Under load that chain, not the CPU, set the pace.
//!
//! So the jobs that queue up while one transaction runs go together into the next:
//! one `BEGIN` and one `COMMIT` for the lot, each job in a savepoint of its own. A job
//! that fails rolls back to its savepoint and leaves the others alone. The others commit
//! together, and each caller hears its result once the commit is known. A job alone in
//! its turn runs without a savepoint, as a transaction of its own.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler};
use futures_util::FutureExt;
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    Statement, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::database::{AfterCommit, DbError, TxJob, NAME};
use super::supervisor::{contain, Crashed};
use crate::webhooks::{waking_after_commit, EndpointCache};

/// The most jobs one transaction takes: a long group would hold its first callers'
/// answers back.
const MOST_PER_GROUP: usize = 64;

tokio::task_local! {
    /// Set while the group task runs jobs.
    static RUNNING_JOBS: ();
}

/// Whether the caller runs inside a write job on SQLite's writer: a write it waited for
/// would wait for the turn its own job holds, for ever.
pub fn inside_write_job() -> bool {
    RUNNING_JOBS.try_with(|_| ()).is_ok()
}

/// The queue of write transactions (cheap to clone).
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupCommit {
    /// Starts the task that runs the queued jobs on `conn` (a pool with one connection)
    /// on the current arbiter. A job that waited longer than `wait` for its turn is
    /// refused as an overload, as a pooled connection not free in time would be.
    pub fn start(
        conn: DatabaseConnection,
        endpoints: Arc<EndpointCache>,
        wait: Duration,
    ) -> GroupCommit {
        let (queue, jobs) = mpsc::unbounded_channel();
        actix::spawn(run(conn, endpoints, wait, jobs));
        GroupCommit { queue }
    }

    /// Queues `job` when first polled; the answer arrives once its group has committed
    /// or it failed. `committed` runs on the job's value once it has committed, before
    /// the next job's, so that what it publishes goes out in commit order. A job that
    /// panics is rolled back alone and restarts `actor`, the database actor that took it,
    /// as a panic in the actor's own work would.
    pub fn submit<T, E, A>(
        &self,
        job: TxJob<T, E>,
        committed: Option<AfterCommit<T>>,
        actor: Addr<A>,
    ) -> impl Future<Output = Result<T, E>>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        A: Actor + Handler<Crashed>,
        A::Context: ToEnvelope<A, Crashed>,
    {
        let queue = self.queue.clone();
        async move {
            if inside_write_job() {
                return Err(E::from(DbError::NestedWrite));
            }
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                job: Box::new(Typed {
                    job,
                    committed,
                    reply,
                    actor,
                }),
                since: Instant::now(),
            };
            if queue.send(queued).is_err() {
                return Err(E::from(DbError::ActorGone));
            }
            answer
                .await
                .unwrap_or_else(|_| Err(E::from(DbError::ActorGone)))
        }
    }
}

struct Queued {
    job: Box<dyn Job>,
    since: Instant,
}

/// A job of any result type, as the queue holds it.
trait Job: Send {
    fn run<'c>(self: Box<Self>, txn: &'c DatabaseTransaction) -> Ran<'c>;
    fn refuse(self: Box<Self>, err: DbError);
}

type Ran<'c> = Pin<Box<dyn Future<Output = Outcome> + Send + 'c>>;

/// What a job left behind once it ran.
struct Outcome {
    succeeded: bool,
    /// Tells its caller, given how the commit went (a failed job ignores that).
    answer: Box<dyn FnOnce(Result<(), DbError>) + Send>,
}

struct Typed<T, E, A: Actor> {
    job: TxJob<T, E>,
    committed: Option<AfterCommit<T>>,
    reply: oneshot::Sender<Result<T, E>>,
    actor: Addr<A>,
}

impl<T, E, A> Job for Typed<T, E, A>
where
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
    A: Actor + Handler<Crashed>,
    A::Context: ToEnvelope<A, Crashed>,
{
    fn run<'c>(self: Box<Self>, txn: &'c DatabaseTransaction) -> Ran<'c> {
        let Typed {
            job,
            committed,
            reply,
            actor,
        } = *self;
        Box::pin(async move {
            let (succeeded, result) = match contain(NAME, actor, job(txn)).await {
                Ok(Ok(value)) => (true, Ok(value)),
                Ok(Err(err)) => (false, Err(err)),
                Err(panicked) => (false, Err(E::from(DbError::Panicked(panicked)))),
            };
            Outcome {
                succeeded,
                answer: Box::new(move |commit| {
                    let result = match (commit, result) {
                        (Err(err), Ok(_)) => Err(E::from(err)),
                        (Ok(()), Ok(mut value)) => {
                            if let Some(committed) = committed {
                                committed(&mut value);
                            }
                            Ok(value)
                        }
                        (_, Err(err)) => Err(err),
                    };
                    let _ = reply.send(result);
                }),
            }
        })
    }

    fn refuse(self: Box<Self>, err: DbError) {
        let _ = self.reply.send(Err(E::from(err)));
    }
}

async fn run(
    conn: DatabaseConnection,
    endpoints: Arc<EndpointCache>,
    wait: Duration,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let mut group = Vec::with_capacity(MOST_PER_GROUP);
    while queue.recv_many(&mut group, MOST_PER_GROUP).await > 0 {
        let mut jobs = Vec::with_capacity(group.len());
        for queued in group.drain(..) {
            if queued.since.elapsed() > wait {
                queued.job.refuse(DbError::Query(DbErr::ConnectionAcquire(
                    ConnAcquireErr::Timeout,
                )));
            } else {
                jobs.push(queued.job);
            }
        }
        if !jobs.is_empty() {
            // Deliveries the group queued go out once it has committed.
            let group = waking_after_commit(endpoints.clone(), commit_group(&conn, jobs));
            let group = RUNNING_JOBS.scope((), group);
            // Jobs' panics are contained one by one; should this task's own code panic,
            // the group's callers are answered (their replies dropped: the database is
            // unavailable) and the queue goes on being served.
            if AssertUnwindSafe(group).catch_unwind().await.is_err() {
                tracing::error!("group commit panicked; uncommitted writes were rolled back");
            }
        }
    }
}

/// Runs `jobs` in one transaction and answers each; `Err` if nothing committed.
async fn commit_group(conn: &DatabaseConnection, jobs: Vec<Box<dyn Job>>) -> Result<(), ()> {
    let txn = match begin_locked(conn).await {
        Ok(txn) => txn,
        Err(err) => {
            let err = Arc::new(err);
            for job in jobs {
                job.refuse(DbError::Commit(err.clone()));
            }
            return Err(());
        }
    };
    let mut answers = Vec::with_capacity(jobs.len());
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let outcome = job.run(&txn).await;
        if !outcome.succeeded {
            let _ = txn.rollback().await;
            (outcome.answer)(Ok(()));
            return Err(());
        }
        answers.push(outcome.answer);
    } else {
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let savepoint = match txn.begin().await {
                Ok(savepoint) => savepoint,
                Err(err) => {
                    job.refuse(DbError::Query(err));
                    continue;
                }
            };
            let outcome = job.run(&savepoint).await;
            let settled = if outcome.succeeded {
                savepoint.commit().await
            } else {
                savepoint.rollback().await
            };
            match settled {
                Ok(()) if outcome.succeeded => answers.push(outcome.answer),
                Ok(()) => (outcome.answer)(Ok(())),
                // What the savepoint holds is unknown now: nothing of the group commits.
                Err(err) => {
                    let err = Arc::new(err);
                    let _ = txn.rollback().await;
                    let answered = answers.into_iter().chain([outcome.answer]);
                    for answer in answered {
                        answer(Err(DbError::Commit(err.clone())));
                    }
                    for job in jobs {
                        job.refuse(DbError::Commit(err.clone()));
                    }
                    return Err(());
                }
            }
        }
    }
    let committed = txn.commit().await.map_err(Arc::new);
    let result = committed.as_ref().map(drop).map_err(drop);
    for answer in answers {
        answer(committed.clone().map_err(DbError::Commit));
    }
    result
}

/// Begins a transaction holding SQLite's write lock. SQLite starts transactions
/// deferred: one that reads and then writes fails with `SQLITE_BUSY` (no waiting) if
/// another connection committed in between. So the first statement takes the write
/// lock, waiting for it as long as the busy timeout allows — what `BEGIN IMMEDIATE`
/// does, which sea-orm cannot issue.
async fn begin_locked(conn: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = conn.begin().await?;
    // Prepared (and so cached per connection): preparing it took a tenth of a create's
    // instructions.
    let take_lock = Statement::from_string(
        DbBackend::Sqlite,
        "UPDATE \"_collections\" SET \"id\" = \"id\" WHERE 1 = 0",
    );
    txn.execute(take_lock).await?;
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use actix::{Actor, Addr, Context, Handler};
    use futures_util::future::join_all;
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr};

    use super::GroupCommit;
    use crate::actors::database::{AfterCommit, DbError, TxJob};
    use crate::actors::supervisor::Crashed;
    use crate::webhooks::EndpointCache;

    /// Stands for the database actor: counts the crashes reported to it.
    struct Taker(Arc<AtomicUsize>);

    impl Actor for Taker {
        type Context = Context<Self>;
    }

    impl Handler<Crashed> for Taker {
        type Result = ();

        fn handle(&mut self, _: Crashed, _: &mut Context<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The values after-commit hooks saw, in the order they ran.
    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<Vec<i64>>>);

    impl Log {
        fn hook(&self) -> AfterCommit<i64> {
            let log = self.clone();
            Box::new(move |value| log.0.lock().unwrap().push(*value))
        }

        fn seen(&self) -> Vec<i64> {
            self.0.lock().unwrap().clone()
        }
    }

    fn taker() -> (Addr<Taker>, Arc<AtomicUsize>) {
        let crashes = Arc::new(AtomicUsize::new(0));
        (Taker(crashes.clone()).start(), crashes)
    }

    #[derive(Debug, thiserror::Error)]
    enum Failed {
        #[error("refused by the job")]
        ByJob,
        #[error(transparent)]
        Db(#[from] DbError),
    }

    /// A group commit on a fresh SQLite file (kept while the folder lives), refusing
    /// jobs that waited longer than `wait`.
    async fn started(wait: Duration) -> (tempfile::TempDir, DatabaseConnection, GroupCommit) {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path()).await;
        let group = GroupCommit::start(conn.clone(), Arc::new(EndpointCache::new(None)), wait);
        (dir, conn, group)
    }

    async fn database(dir: &std::path::Path) -> DatabaseConnection {
        let url = format!("sqlite://{}?mode=rwc", dir.join("group.db").display());
        let conn = Database::connect(url).await.unwrap();
        conn.execute_unprepared(
            "CREATE TABLE _collections (id TEXT); CREATE TABLE t (v INTEGER UNIQUE)",
        )
        .await
        .unwrap();
        conn
    }

    /// Inserts `v`, then fails if `fail` (after writing) or panics if `panic`.
    fn insert(v: i64, fail: bool, panic: bool) -> TxJob<i64, Failed> {
        Box::new(move |txn| {
            Box::pin(async move {
                txn.execute_unprepared(&format!("INSERT INTO t (v) VALUES ({v})"))
                    .await
                    .map_err(|err| Failed::Db(DbError::Query(err)))?;
                assert!(!panic, "job {v} panics after writing");
                if fail {
                    return Err(Failed::ByJob);
                }
                Ok(v)
            })
        })
    }

    async fn stored(conn: &DatabaseConnection) -> Vec<i64> {
        conn.query_all(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT v FROM t ORDER BY v",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0).unwrap())
        .collect()
    }

    #[actix_web::test]
    async fn a_write_asked_for_inside_a_write_job_is_refused_not_awaited_for_ever() {
        let (_dir, conn, group) = started(Duration::from_secs(5)).await;
        let (actor, _) = taker();
        let (inner, inner_actor) = (group.clone(), actor.clone());
        let outer: TxJob<i64, Failed> = Box::new(move |txn| {
            Box::pin(async move {
                txn.execute_unprepared("INSERT INTO t (v) VALUES (1)")
                    .await
                    .map_err(|err| Failed::Db(DbError::Query(err)))?;
                inner
                    .submit(insert(2, false, false), None, inner_actor)
                    .await
            })
        });
        let answer = tokio::time::timeout(Duration::from_secs(5), group.submit(outer, None, actor))
            .await
            .expect("answered, not left waiting for its own turn");
        assert!(
            matches!(answer, Err(Failed::Db(DbError::NestedWrite))),
            "{answer:?}"
        );
        assert_eq!(stored(&conn).await, [0_i64; 0], "the outer job rolled back");
    }

    #[actix_web::test]
    async fn a_failing_job_in_a_group_loses_its_writes_and_only_its_own() {
        let (_dir, conn, group) = started(Duration::from_secs(5)).await;
        let (actor, crashes) = taker();
        let log = Log::default();
        // Queued before the group's task runs, so that one transaction takes them all:
        // a failure after writing, a panic after writing, and a unique violation.
        let answers = join_all([
            group.submit(insert(1, false, false), Some(log.hook()), actor.clone()),
            group.submit(insert(2, true, false), Some(log.hook()), actor.clone()),
            group.submit(insert(3, false, false), Some(log.hook()), actor.clone()),
            group.submit(insert(4, false, true), Some(log.hook()), actor.clone()),
            group.submit(insert(1, false, false), Some(log.hook()), actor.clone()),
            group.submit(insert(5, false, false), Some(log.hook()), actor.clone()),
        ])
        .await;
        assert!(matches!(answers[0], Ok(1)), "{:?}", answers[0]);
        assert!(matches!(answers[1], Err(Failed::ByJob)), "{:?}", answers[1]);
        assert!(matches!(answers[2], Ok(3)), "{:?}", answers[2]);
        assert!(
            matches!(answers[3], Err(Failed::Db(DbError::Panicked(_)))),
            "{:?}",
            answers[3]
        );
        assert!(
            matches!(answers[4], Err(Failed::Db(DbError::Query(DbErr::Exec(_))))),
            "{:?}",
            answers[4]
        );
        assert!(matches!(answers[5], Ok(5)), "{:?}", answers[5]);
        assert_eq!(stored(&conn).await, [1, 3, 5]);
        assert_eq!(
            log.seen(),
            [1, 3, 5],
            "hooks ran for the committed, in order"
        );
        actix::clock::sleep(Duration::from_millis(10)).await;
        assert_eq!(crashes.load(Ordering::SeqCst), 1, "the panic was reported");

        // A job alone in its turn: its failure rolls back its transaction.
        assert!(matches!(
            group
                .submit(insert(6, true, false), None, actor.clone())
                .await,
            Err(Failed::ByJob)
        ));
        assert!(matches!(
            group
                .submit(insert(7, false, false), None, actor.clone())
                .await,
            Ok(7)
        ));
        assert_eq!(stored(&conn).await, [1, 3, 5, 7]);
    }

    #[actix_web::test]
    async fn a_job_that_waited_past_its_limit_is_refused_as_an_overload() {
        let (_dir, conn, group) = started(Duration::ZERO).await;
        let (actor, _) = taker();
        match group.submit(insert(1, false, false), None, actor).await {
            Err(Failed::Db(err)) => assert!(err.is_overload(), "{err}"),
            other => panic!("expected an overload, got {other:?}"),
        }
        assert!(stored(&conn).await.is_empty());
    }
}
