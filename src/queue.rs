//! A durable work queue kept in a database table: the delivery mechanism shared by the
//! mail outbox and anything else delivered in the background (webhooks).
//!
//! A row is written in the transaction of the change that causes it (`pending`), then a
//! worker *claims* due rows atomically (`sending`, with a lease), does the work, and
//! records the outcome: `sent`, back to `pending` with a backed-off `next_attempt_at`,
//! or `failed` with the last error. Claims are safe between any number of workers and
//! processes: on PostgreSQL the claim skips rows another transaction holds
//! (`FOR UPDATE SKIP LOCKED`); on SQLite the claim is one `UPDATE … RETURNING` statement,
//! which SQLite runs under its single write lock, and whose `WHERE` re-checks the status.
//! A worker that dies keeps its claim only until the lease runs out; then another
//! worker takes the row over. Outcomes are recorded only by the claim that holds the
//! row, so a worker whose lease expired cannot overwrite its successor's result.
//!
//! A queue table has a string primary key `id` plus the columns that
//! `migrations::queue_columns::add` creates; times are milliseconds since the epoch.

use std::time::Duration;

use rand::Rng;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Statement,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod worker;
pub use worker::Worker;

/// Where a queued item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for `next_attempt_at`.
    Pending,
    /// Claimed by a worker until `claimed_until`.
    Sending,
    /// Done.
    Sent,
    /// Given up: a permanent error, or too many transient ones.
    Failed,
    /// Withdrawn before it was sent (e.g. the recipient unsubscribed).
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Sending,
        Status::Sent,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// When to try again after a transient failure, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after the `attempt`-th failed attempt (1-based): `initial_delay` doubled
    /// per attempt, capped at `max_delay`, then scaled by a random factor in [0.75, 1.25]
    /// so that items that failed together do not all come back together.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .initial_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let jittered = base.as_secs_f64() * rng.gen_range(0.75..=1.25);
        Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX)
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The work is done.
    Done,
    /// Failed in a way that may pass (timeouts, refused connections, SMTP 4xx or
    /// HTTP 429/5xx answers).
    Transient(String),
    /// Failed in a way that will not pass by trying again (SMTP 5xx or other HTTP 4xx
    /// answers, bad data).
    Permanent(String),
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub claimed: usize,
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    /// Claimed but handed back undelivered because the worker is stopping.
    pub released: usize,
    /// Claims that no longer held their row: it was withdrawn meanwhile, or another
    /// sender took it over after the lease expired.
    pub lost: usize,
}

/// A row claimed from a queue table: the columns the queue needs, beside the table's own.
pub trait QueueRow: FromQueryResult + Send {
    fn id(&self) -> &str;
    /// Attempts made so far, including the current one.
    fn attempts(&self) -> u32;
}

/// A claim on rows: who holds them and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unique per claim, so that outcomes are recorded only by the claim holding a row.
    pub token: String,
    pub until: i64,
}

/// What an administrator's retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRequest {
    /// The row was `failed` or `cancelled` and is `pending` again, with fresh attempts.
    Requeued,
    /// The row is in another state and was left alone.
    NotRetryable(Status),
    NotFound,
}

/// One queue table and its retry policy.
#[derive(Debug, Clone)]
pub struct Queue {
    table: &'static str,
    policy: RetryPolicy,
}

/// Milliseconds since the Unix epoch, the queue's unit of time.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A duration in the queue's unit of time (milliseconds), saturating.
pub fn to_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Queue {
    /// `table` is a fixed identifier from the code, never user input.
    pub fn new(table: &'static str, policy: RetryPolicy) -> Self {
        Self { table, policy }
    }

    /// Claims up to `limit` due rows for `lease`: pending rows whose time has come and
    /// rows whose previous claim expired. Each claimed row counts one more attempt.
    /// Rows whose claims expired `max_attempts` times are failed instead, so that an item
    /// that crashes its worker cannot do so forever.
    pub async fn claim<R: QueueRow, C: ConnectionTrait>(
        &self,
        conn: &C,
        limit: u32,
        lease: Duration,
        now: i64,
    ) -> Result<(Claim, Vec<R>), DbErr> {
        let backend = conn.get_database_backend();
        let table = self.table;
        let max_attempts = i64::from(self.policy.max_attempts);
        conn.execute(Statement::from_sql_and_values(
            backend,
            sql(
                backend,
                &format!(
                    "UPDATE {table} SET status = 'failed', claimed_by = NULL, claimed_until = NULL, \
                     last_error = 'delivery was interrupted too often (worker stopped while sending)', \
                     updated_at = $1, finished_at = $1 \
                     WHERE status = 'sending' AND claimed_until < $1 AND attempts >= $2"
                ),
            ),
            [now.into(), max_attempts.into()],
        ))
        .await?;

        let claim = Claim {
            token: uuid::Uuid::new_v4().simple().to_string(),
            until: now.saturating_add(to_millis(lease)),
        };
        let due = "(status = 'pending' AND next_attempt_at <= $3) \
                   OR (status = 'sending' AND claimed_until < $3)";
        let lock = match backend {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let statement = format!(
            "UPDATE {table} SET status = 'sending', claimed_by = $1, claimed_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM {table} WHERE {due} \
                          ORDER BY next_attempt_at LIMIT $4 {lock}) \
             AND ({due}) \
             RETURNING *"
        );
        let rows = R::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql(backend, &statement),
            [
                claim.token.clone().into(),
                claim.until.into(),
                now.into(),
                i64::from(limit).into(),
            ],
        ))
        .all(conn)
        .await?;
        Ok((claim, rows))
    }

    /// Records the outcome of the current attempt at `row`. Returns the row's new status,
    /// or `None` when the claim no longer holds the row (its lease expired and another
    /// worker took it over), in which case nothing is written.
    pub async fn record<R: QueueRow, C: ConnectionTrait>(
        &self,
        conn: &C,
        claim: &Claim,
        row: &R,
        outcome: &Outcome,
        now: i64,
    ) -> Result<Option<Status>, DbErr> {
        self.record_not_before(conn, claim, row, outcome, None, now)
            .await
    }

    /// [`Queue::record`], where a retry after a transient failure waits at least until
    /// `not_before` (e.g. what the other side's `Retry-After` asked for).
    pub async fn record_not_before<R: QueueRow, C: ConnectionTrait>(
        &self,
        conn: &C,
        claim: &Claim,
        row: &R,
        outcome: &Outcome,
        not_before: Option<i64>,
        now: i64,
    ) -> Result<Option<Status>, DbErr> {
        let (status, error, next_attempt_at) = match outcome {
            Outcome::Done => (Status::Sent, None, None),
            Outcome::Permanent(error) => (Status::Failed, Some(error.clone()), None),
            Outcome::Transient(error) if row.attempts() >= self.policy.max_attempts => {
                (Status::Failed, Some(error.clone()), None)
            }
            Outcome::Transient(error) => {
                let delay = self.policy.delay(row.attempts(), &mut rand::thread_rng());
                (
                    Status::Pending,
                    Some(error.clone()),
                    Some(
                        now.saturating_add(to_millis(delay))
                            .max(not_before.unwrap_or(i64::MIN)),
                    ),
                )
            }
        };
        let finished_at = (status != Status::Pending).then_some(now);
        let backend = conn.get_database_backend();
        let table = self.table;
        let result = conn
            .execute(Statement::from_sql_and_values(
                backend,
                sql(
                    backend,
                    &format!(
                        "UPDATE {table} SET status = $1, last_error = COALESCE($2, last_error), \
                         next_attempt_at = COALESCE($3, next_attempt_at), finished_at = $4, \
                         claimed_by = NULL, claimed_until = NULL, updated_at = $5 \
                         WHERE id = $6 AND status = 'sending' AND claimed_by = $7"
                    ),
                ),
                [
                    status.as_str().into(),
                    error.into(),
                    next_attempt_at.into(),
                    finished_at.into(),
                    now.into(),
                    row.id().into(),
                    claim.token.clone().into(),
                ],
            ))
            .await?;
        Ok((result.rows_affected() == 1).then_some(status))
    }

    /// Whether `claim` still holds the row `id`: false once the row was withdrawn (e.g.
    /// `cancelled`) or taken over by another worker after the lease expired. Checked
    /// right before the work starts, so that a row claimed in a batch but withdrawn while
    /// it waited for its turn is not worked on.
    pub async fn holds<C: ConnectionTrait>(
        &self,
        conn: &C,
        claim: &Claim,
        id: &str,
    ) -> Result<bool, DbErr> {
        let backend = conn.get_database_backend();
        let table = self.table;
        let found = conn
            .query_one(Statement::from_sql_and_values(
                backend,
                sql(
                    backend,
                    &format!(
                        "SELECT id FROM {table} \
                         WHERE id = $1 AND status = 'sending' AND claimed_by = $2"
                    ),
                ),
                [id.into(), claim.token.clone().into()],
            ))
            .await?;
        Ok(found.is_some())
    }

    /// Gives a claimed row back untouched (its attempt not counted), for a worker that
    /// stops before it started the work.
    pub async fn release<R: QueueRow, C: ConnectionTrait>(
        &self,
        conn: &C,
        claim: &Claim,
        row: &R,
        now: i64,
    ) -> Result<bool, DbErr> {
        let backend = conn.get_database_backend();
        let table = self.table;
        let result = conn
            .execute(Statement::from_sql_and_values(
                backend,
                sql(
                    backend,
                    &format!(
                        "UPDATE {table} SET status = 'pending', attempts = attempts - 1, \
                         claimed_by = NULL, claimed_until = NULL, updated_at = $1 \
                         WHERE id = $2 AND status = 'sending' AND claimed_by = $3"
                    ),
                ),
                [now.into(), row.id().into(), claim.token.clone().into()],
            ))
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// When the earliest pending row is due, if any row is pending.
    pub async fn next_due<C: ConnectionTrait>(&self, conn: &C) -> Result<Option<i64>, DbErr> {
        let backend = conn.get_database_backend();
        let table = self.table;
        let row = conn
            .query_one(Statement::from_string(
                backend,
                format!("SELECT MIN(next_attempt_at) AS due FROM {table} WHERE status = 'pending'"),
            ))
            .await?;
        match row {
            Some(row) => row.try_get::<Option<i64>>("", "due"),
            None => Ok(None),
        }
    }

    /// An administrator's retry: a `failed` or `cancelled` row becomes `pending` and due
    /// now, with its attempts reset; its last error stays until the next attempt.
    pub async fn retry<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: &str,
        now: i64,
    ) -> Result<RetryRequest, DbErr> {
        let backend = conn.get_database_backend();
        let table = self.table;
        let result = conn
            .execute(Statement::from_sql_and_values(
                backend,
                sql(
                    backend,
                    &format!(
                        "UPDATE {table} SET status = 'pending', attempts = 0, next_attempt_at = $1, \
                         finished_at = NULL, updated_at = $1 \
                         WHERE id = $2 AND status IN ('failed', 'cancelled')"
                    ),
                ),
                [now.into(), id.into()],
            ))
            .await?;
        if result.rows_affected() == 1 {
            return Ok(RetryRequest::Requeued);
        }
        let row = conn
            .query_one(Statement::from_sql_and_values(
                backend,
                sql(
                    backend,
                    &format!("SELECT status FROM {table} WHERE id = $1"),
                ),
                [id.into()],
            ))
            .await?;
        Ok(match row {
            None => RetryRequest::NotFound,
            Some(row) => {
                let status: String = row.try_get("", "status")?;
                RetryRequest::NotRetryable(Status::parse(&status).unwrap_or(Status::Sending))
            }
        })
    }
}

/// Writes `$n` placeholders the way `backend` wants them: PostgreSQL takes them as they
/// are; SQLite's `?NNN` form names the same parameter wherever it appears.
fn sql(backend: DbBackend, statement: &str) -> String {
    match backend {
        DbBackend::Postgres => statement.to_string(),
        _ => statement.replace('$', "?"),
    }
}

/// Which page of a queue table an administrator asked for: newest first, optionally only
/// rows in one state; `page` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub status: Option<Status>,
    pub page: u64,
    pub per_page: u64,
}

impl Listing {
    /// The total count of rows `query` selects, and the rows of the requested page,
    /// newest first (`created`, then `id`, descending).
    pub async fn fetch<E, C>(
        &self,
        conn: &C,
        mut query: Select<E>,
        status: E::Column,
        created: E::Column,
        id: E::Column,
    ) -> Result<(u64, Vec<E::Model>), DbErr>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        if let Some(wanted) = self.status {
            query = query.filter(status.eq(wanted.as_str()));
        }
        let total = query.clone().count(conn).await?;
        let rows = query
            .order_by_desc(created)
            .order_by_desc(id)
            .offset((self.page - 1).saturating_mul(self.per_page))
            .limit(self.per_page)
            .all(conn)
            .await?;
        Ok((total, rows))
    }

    /// Pages needed for `total` rows.
    pub fn total_pages(&self, total: u64) -> u64 {
        total.div_ceil(self.per_page)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(60),
    };

    #[test]
    fn delays_double_within_the_jitter_and_stop_at_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, base) in [(1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (30, 60.0)] {
            for _ in 0..200 {
                let delay = POLICY.delay(attempt, &mut rng).as_secs_f64();
                assert!(
                    (base * 0.75..=base * 1.25).contains(&delay),
                    "attempt {attempt}: {delay}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_items_that_failed_together() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> =
            (0..50).map(|_| POLICY.delay(2, &mut rng)).collect();
        assert!(delays.len() > 40, "{} distinct delays", delays.len());
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            initial_delay: Duration::from_secs(u64::MAX / 4),
            max_delay: Duration::MAX,
        };
        policy.delay(u32::MAX, &mut StdRng::seed_from_u64(3));
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let statement = "UPDATE t SET a = $1 WHERE b = $2 AND c = $1";
        assert_eq!(sql(DbBackend::Postgres, statement), statement);
        assert_eq!(
            sql(DbBackend::Sqlite, statement),
            "UPDATE t SET a = ?1 WHERE b = ?2 AND c = ?1"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("queued"), None);
    }
}
