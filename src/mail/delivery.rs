//! One delivery round: claim due outbox mails, send them a few at a time, record each
//! outcome. The mailer actor runs rounds; this is the work itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lettre::message::Mailbox;

use super::message;
use super::outbox::OutboxMail;
use super::transport::MailTransport;
use crate::actors::database::{Db, DbError};
use crate::queue::{now_millis, Claim, Outcome, Queue, RoundReport, Status};

/// Delivers outbox mail: the transport, the sender address and the queue's settings.
pub struct Courier {
    pub db: Db,
    pub transport: MailTransport,
    pub queue: Queue,
    pub from: Mailbox,
    pub batch_size: u32,
    pub concurrency: usize,
    pub lease: Duration,
    /// Set when the instance shuts down: mails not yet started are handed back.
    pub stopping: AtomicBool,
}

impl Courier {
    /// Claims one batch of due mails and delivers it.
    pub async fn deliver_due(self: &Arc<Self>) -> Result<RoundReport, DbError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(RoundReport::default());
        }
        let (claim, mails) = {
            let queue = self.queue.clone();
            let (limit, lease) = (self.batch_size, self.lease);
            self.db
                .transact::<_, DbError, _>(move |txn| {
                    Box::pin(async move {
                        Ok(queue
                            .claim::<OutboxMail, _>(txn, limit, lease, now_millis())
                            .await?)
                    })
                })
                .await?
        };
        let mut report = RoundReport {
            claimed: mails.len(),
            ..RoundReport::default()
        };
        let claim = Arc::new(claim);
        let mut outcomes = futures_util::stream::iter(mails)
            .map(|mail| {
                let courier = self.clone();
                let claim = claim.clone();
                async move { courier.deliver_one(&claim, mail).await }
            })
            .buffer_unordered(self.concurrency);
        while let Some(result) = outcomes.next().await {
            match result? {
                Delivered::Recorded(Status::Sent) => report.sent += 1,
                Delivered::Recorded(Status::Pending) => report.retrying += 1,
                Delivered::Recorded(_) => report.failed += 1,
                Delivered::Released => report.released += 1,
                Delivered::Lost => report.lost += 1,
            }
        }
        Ok(report)
    }

    async fn deliver_one(&self, claim: &Claim, mail: OutboxMail) -> Result<Delivered, DbError> {
        if self.stopping.load(Ordering::SeqCst) {
            let (queue, claim) = (self.queue.clone(), claim.clone());
            return self
                .db
                .transact::<_, DbError, _>(move |txn| {
                    Box::pin(async move {
                        queue.release(txn, &claim, &mail, now_millis()).await?;
                        Ok(Delivered::Released)
                    })
                })
                .await;
        }
        // The mail may have waited in the batch behind slow sends: if it was withdrawn
        // meanwhile (its recipient unsubscribed), it is not sent.
        let still_held = {
            let (queue, claim, id) = (self.queue.clone(), claim.clone(), mail.id.clone());
            self.db
                .read::<_, DbError, _>(move |txn| {
                    Box::pin(async move { Ok(queue.holds(txn, &claim, &id).await?) })
                })
                .await?
        };
        if !still_held {
            tracing::info!(id = %mail.id, kind = %mail.kind, "mail withdrawn (or taken over) before it was sent");
            return Ok(Delivered::Lost);
        }
        let outcome = match message::build(&mail, &self.from) {
            Ok(message) => self.transport.send(message).await,
            Err(reason) => Outcome::Permanent(reason),
        };
        match &outcome {
            Outcome::Done => tracing::debug!(id = %mail.id, kind = %mail.kind, "mail delivered"),
            Outcome::Transient(error) => tracing::warn!(
                id = %mail.id, kind = %mail.kind, attempt = mail.attempts, %error,
                "mail delivery failed; will retry"
            ),
            Outcome::Permanent(error) => tracing::warn!(
                id = %mail.id, kind = %mail.kind, %error, "mail rejected permanently"
            ),
        }
        let (queue, claim) = (self.queue.clone(), claim.clone());
        let id = mail.id.clone();
        let recorded = self
            .db
            .transact::<_, DbError, _>(move |txn| {
                Box::pin(async move {
                    Ok(queue
                        .record(txn, &claim, &mail, &outcome, now_millis())
                        .await?)
                })
            })
            .await?;
        Ok(match recorded {
            Some(status) => Delivered::Recorded(status),
            None => {
                tracing::warn!(
                    %id,
                    "the mail was withdrawn, or its claim expired, while it was being sent"
                );
                Delivered::Lost
            }
        })
    }

    /// When the earliest pending mail is due, if any is pending.
    pub async fn next_due(&self) -> Result<Option<i64>, DbError> {
        let queue = self.queue.clone();
        self.db
            .transact::<_, DbError, _>(move |txn| {
                Box::pin(async move { Ok(queue.next_due(txn).await?) })
            })
            .await
    }
}

enum Delivered {
    Recorded(Status),
    Released,
    Lost,
}
