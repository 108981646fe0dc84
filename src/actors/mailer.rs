//! The mailer: the delivery actor ([`super::delivery`]) working through the outbox.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::database::DbError;
use super::delivery::{DeliveryActor, DeliveryHandle, DeliveryRounds};
use crate::mail::delivery::Courier;
use crate::queue::{RoundReport, Worker};

impl DeliveryRounds for Courier {
    const NAME: &'static str = "mailer";

    fn deliver_due(self: Arc<Self>) -> BoxFuture<'static, Result<RoundReport, DbError>> {
        async move { Courier::deliver_due(&self).await }.boxed()
    }

    fn worker(&self) -> &Worker {
        &self.worker
    }
}

/// The actor delivering the outbox.
pub type MailerActor = DeliveryActor<Courier>;

/// The handle other parts of Gatehouse use to reach the mailer: wake it after queuing
/// mail.
pub type Mailer = DeliveryHandle<Courier>;
