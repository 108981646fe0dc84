//! The webhook actor: the delivery actor ([`super::delivery`]) working through the
//! webhook deliveries.

use std::sync::Arc;

use actix::{Context, Handler, Message, ResponseFuture};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::database::{DatabaseActor, DbError, TxJob, TxMode};
use super::delivery::{DeliveryActor, DeliveryHandle, DeliveryRounds};
use crate::queue::{RoundReport, Worker};
use crate::records::RecordError;
use crate::webhooks::inbound::{self, Stored};
use crate::webhooks::sender::WebhookSender;

impl DeliveryRounds for WebhookSender {
    const NAME: &'static str = "webhooks";

    fn deliver_due(self: Arc<Self>) -> BoxFuture<'static, Result<RoundReport, DbError>> {
        async move { WebhookSender::deliver_due(&self).await }.boxed()
    }

    fn worker(&self) -> &Worker {
        &self.worker
    }
}

/// The actor delivering webhooks.
pub type WebhookActor = DeliveryActor<WebhookSender>;

/// The handle other parts of Gatehouse use to reach the webhook actor.
pub type Webhooks = DeliveryHandle<WebhookSender>;

/// Stores an inbound hook's event once and creates its record (handled by the database
/// actor, in one transaction).
pub struct StoreInboundEvent {
    pub hook: String,
    pub event_id: String,
    pub collection: String,
    pub body: Map<String, Value>,
}

impl Message for StoreInboundEvent {
    type Result = Result<Stored, RecordError>;
}

impl Handler<StoreInboundEvent> for DatabaseActor {
    type Result = ResponseFuture<Result<Stored, RecordError>>;

    fn handle(&mut self, msg: StoreInboundEvent, ctx: &mut Context<Self>) -> Self::Result {
        let env = self.records.clone();
        let job: TxJob<Stored, RecordError> = Box::new(move |txn| {
            Box::pin(async move {
                inbound::store(
                    txn,
                    &env,
                    &msg.hook,
                    &msg.event_id,
                    &msg.collection,
                    msg.body,
                )
                .await
            })
        });
        self.transaction(ctx, TxMode::Write, job)
    }
}
