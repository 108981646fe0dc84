//! One delivery round: claim due outbox mails, send them a few at a time, record each
//! outcome. The mailer actor runs rounds; this is the work itself.

use lettre::message::Mailbox;

use super::message;
use super::outbox::OutboxMail;
use super::transport::MailTransport;
use crate::actors::database::DbError;
use crate::queue::{now_millis, Claim, Outcome, RoundReport, Status, Worker};

/// Delivers outbox mail: the transport, the sender address and the outbox's worker.
pub struct Courier {
    pub worker: Worker,
    pub transport: MailTransport,
    pub from: Mailbox,
}

impl Courier {
    /// Claims one batch of due mails and delivers it.
    pub async fn deliver_due(&self) -> Result<RoundReport, DbError> {
        self.worker
            .round(|claim, mail: OutboxMail| async move { self.deliver_one(&claim, mail).await })
            .await
    }

    /// Sends one claimed mail and records the outcome; answers the mail's new status, or
    /// `None` when the claim was lost meanwhile.
    async fn deliver_one(
        &self,
        claim: &Claim,
        mail: OutboxMail,
    ) -> Result<Option<Status>, DbError> {
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
        let (queue, claim) = (self.worker.queue.clone(), claim.clone());
        let id = mail.id.clone();
        let recorded = self
            .worker
            .db
            .transact::<_, DbError, _>(move |txn| {
                Box::pin(async move {
                    Ok(queue
                        .record(txn, &claim, &mail, &outcome, now_millis())
                        .await?)
                })
            })
            .await?;
        if recorded.is_none() {
            tracing::warn!(
                %id,
                "the mail was withdrawn, or its claim expired, while it was being sent"
            );
        }
        Ok(recorded)
    }
}
