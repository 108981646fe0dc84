//! The worker side of a queue, shared by every kind of queued work (mail, webhooks):
//! claim a batch of due rows, hand each to the kind's delivery a few at a time, and
//! count what became of them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{now_millis, Claim, Queue, QueueRow, RoundReport, Status};
use crate::actors::database::{Db, DbError};

/// A queue, the database it lives in, and how a worker takes rows from it.
pub struct Worker {
    pub db: Db,
    pub queue: Queue,
    /// Rows claimed per round.
    pub batch_size: u32,
    /// Rows delivered at once within a round.
    pub concurrency: usize,
    /// How long a claim holds a row before another worker may take it over.
    pub lease: Duration,
    /// Set when the instance shuts down: rows not yet started are handed back.
    pub stopping: AtomicBool,
}

/// What became of one claimed row.
enum Handled {
    /// The delivery recorded this status, or `None` when the claim was lost meanwhile
    /// (its lease expired and another worker took the row over, or it was withdrawn).
    Delivered(Option<Status>),
    /// Handed back undelivered because the worker is stopping.
    Released,
}

impl Worker {
    pub fn new(db: Db, queue: Queue, batch_size: u32, concurrency: usize, lease: Duration) -> Self {
        Self {
            db,
            queue,
            batch_size,
            concurrency,
            lease,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Claims one batch of due rows and runs `deliver` on each, `concurrency` at a time.
    /// `deliver` does the work and records its outcome under the claim. A row is checked
    /// to be still held right before its turn: one claimed in the batch but withdrawn
    /// while it waited behind slow deliveries (a recipient unsubscribed) is skipped.
    pub async fn round<R, F, Fut>(&self, deliver: F) -> Result<RoundReport, DbError>
    where
        R: QueueRow + Sync + 'static,
        F: Fn(Arc<Claim>, R) -> Fut,
        Fut: Future<Output = Result<Option<Status>, DbError>>,
    {
        if self.is_stopping() {
            return Ok(RoundReport::default());
        }
        let (claim, rows) = {
            let queue = self.queue.clone();
            let (limit, lease) = (self.batch_size, self.lease);
            self.db
                .transact::<_, DbError, _>(move |txn| {
                    Box::pin(async move {
                        Ok(queue.claim::<R, _>(txn, limit, lease, now_millis()).await?)
                    })
                })
                .await?
        };
        let mut report = RoundReport {
            claimed: rows.len(),
            ..RoundReport::default()
        };
        let claim = Arc::new(claim);
        let deliver = &deliver;
        let mut outcomes = futures_util::stream::iter(rows)
            .map(|row| {
                let claim = claim.clone();
                async move {
                    if self.is_stopping() {
                        self.release(&claim, row).await?;
                        Ok(Handled::Released)
                    } else if !self.holds(&claim, row.id()).await? {
                        tracing::info!(
                            id = row.id(),
                            "withdrawn, or taken over by another worker, before it was sent"
                        );
                        Ok(Handled::Delivered(None))
                    } else {
                        Ok::<_, DbError>(Handled::Delivered(deliver(claim, row).await?))
                    }
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some(handled) = outcomes.next().await {
            match handled? {
                Handled::Delivered(Some(Status::Sent)) => report.sent += 1,
                Handled::Delivered(Some(Status::Pending)) => report.retrying += 1,
                Handled::Delivered(Some(_)) => report.failed += 1,
                Handled::Delivered(None) => report.lost += 1,
                Handled::Released => report.released += 1,
            }
        }
        Ok(report)
    }

    /// Whether `claim` still holds the row `id`.
    async fn holds(&self, claim: &Claim, id: &str) -> Result<bool, DbError> {
        let (queue, claim, id) = (self.queue.clone(), claim.clone(), id.to_owned());
        self.db
            .read::<_, DbError, _>(move |txn| {
                Box::pin(async move { Ok(queue.holds(txn, &claim, &id).await?) })
            })
            .await
    }

    /// Gives a claimed row back untouched, for a round that stops before starting it.
    async fn release<R: QueueRow + Sync + 'static>(
        &self,
        claim: &Claim,
        row: R,
    ) -> Result<(), DbError> {
        let (queue, claim) = (self.queue.clone(), claim.clone());
        self.db
            .transact::<_, DbError, _>(move |txn| {
                Box::pin(async move {
                    queue.release(txn, &claim, &row, now_millis()).await?;
                    Ok(())
                })
            })
            .await
    }

    /// When the earliest pending row is due, if any is pending.
    pub async fn next_due(&self) -> Result<Option<i64>, DbError> {
        let queue = self.queue.clone();
        self.db
            .read::<_, DbError, _>(move |txn| {
                Box::pin(async move { Ok(queue.next_due(txn).await?) })
            })
            .await
    }
}
