//! The delivery actor: works through a durable queue ([`crate::queue`]) in the
//! background. The mailer and the webhook sender are both this actor, each with its own
//! [`DeliveryRounds`] (what one round claims and how it delivers).
//!
//! It runs one delivery round at a time ([`DeliveryRounds::deliver_due`]): when woken
//! after an item was queued, on a timer (retries, and items queued by other instances
//! sharing the database), at the time the next retry is due, and at once again after a
//! full batch. A round runs as a `ResponseFuture`, a task of its own, so the actor keeps
//! taking messages while items are being delivered; wake-ups that arrive during a round
//! are folded into one more round after it. A panic in a round is contained: the items
//! it held go back to the queue when their lease runs out and the actor is restarted.
//! On shutdown ([`DeliveryHandle::drain`]) no new round starts, items claimed but not
//! started are handed back, and the deliveries in progress finish.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::{AbortHandle, Abortable, BoxFuture};
use std::time::Duration;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, Supervised,
};
use tokio::sync::oneshot;

use super::database::DbError;
use super::supervisor::{contain, Crashed};
use crate::queue::{now_millis, RoundReport, Worker};
use crate::telemetry::Metrics;

/// One kind of queued work: how a round claims and delivers, and when the next is due.
pub trait DeliveryRounds: Send + Sync + 'static {
    /// The actor's name in logs and metrics.
    const NAME: &'static str;

    /// Claims one batch of due items and delivers it.
    fn deliver_due(self: Arc<Self>) -> BoxFuture<'static, Result<RoundReport, DbError>>;

    /// The queue's worker: batch size, stop flag, when the next item is due.
    fn worker(&self) -> &Worker;
}

pub struct DeliveryActor<R: DeliveryRounds> {
    /// Released when draining ends, so that what the rounds hold (e.g. an SMTP pool) is
    /// dropped inside this actor's runtime (lettre's pool spawns its cleanup on drop,
    /// and panics when no runtime is left — as when an arbiter shuts down with the pool
    /// still alive).
    courier: Option<Arc<R>>,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
    round_running: bool,
    /// A wake-up arrived during the running round.
    again: bool,
    /// Callers of [`Drain`] waiting for the running round to end.
    drained: Vec<oneshot::Sender<()>>,
    /// Cancels the running round (its sends stop where they are; their claims expire
    /// and another round sends them later).
    round_abort: Option<AbortHandle>,
}

impl<R: DeliveryRounds> DeliveryActor<R> {
    pub fn new(courier: Arc<R>, poll_interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            courier: Some(courier),
            poll_interval,
            metrics,
            round_running: false,
            again: false,
            drained: Vec::new(),
            round_abort: None,
        }
    }

    fn draining(&self) -> bool {
        self.courier
            .as_ref()
            .is_none_or(|courier| courier.worker().is_stopping())
    }
}

impl<R: DeliveryRounds> Actor for DeliveryActor<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Resume whatever is pending (left by a previous run or a crash).
        ctx.notify(Wake);
        ctx.run_interval(self.poll_interval, |_, ctx| ctx.notify(Wake));
    }
}

impl<R: DeliveryRounds> Supervised for DeliveryActor<R> {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics
            .actor_restarts
            .with_label_values(&[R::NAME])
            .inc();
        tracing::warn!(actor = R::NAME, "actor restarted by its supervisor");
    }
}

impl<R: DeliveryRounds> Handler<Crashed> for DeliveryActor<R> {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Look for due items now (sent after queuing, and by the actor's own timers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

impl<R: DeliveryRounds> Handler<Wake> for DeliveryActor<R> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) -> Self::Result {
        let Some(courier) = self.courier.clone().filter(|_| !self.draining()) else {
            return Box::pin(async {});
        };
        if self.round_running {
            self.again = true;
            return Box::pin(async {});
        }
        self.round_running = true;
        let addr = ctx.address();
        let (abort, registration) = AbortHandle::new_pair();
        self.round_abort = Some(abort);
        Box::pin(async move {
            let round = async {
                let report = courier.clone().deliver_due().await?;
                let next_due = courier.worker().next_due().await?;
                Ok::<_, DbError>((report, next_due))
            };
            let Ok(outcome) =
                Abortable::new(contain(R::NAME, addr.clone(), round), registration).await
            else {
                addr.do_send(RoundFinished::default());
                return;
            };
            let finished = match outcome {
                Ok(Ok((report, next_due))) => {
                    if report.claimed > 0 {
                        tracing::debug!(actor = R::NAME, ?report, "delivery round finished");
                    }
                    RoundFinished {
                        full_batch: report.claimed >= courier.worker().batch_size as usize,
                        next_due,
                        report,
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(actor = R::NAME, %err, "delivery round failed; retrying at the next poll");
                    RoundFinished::default()
                }
                Err(_panicked) => RoundFinished::default(),
            };
            addr.do_send(finished);
        })
    }
}

/// A round ended: whether to start another at once, and when the next retry is due.
#[derive(Message, Default)]
#[rtype(result = "()")]
struct RoundFinished {
    full_batch: bool,
    next_due: Option<i64>,
    report: RoundReport,
}

impl<R: DeliveryRounds> Handler<RoundFinished> for DeliveryActor<R> {
    type Result = ();

    fn handle(&mut self, done: RoundFinished, ctx: &mut Context<Self>) {
        self.round_running = false;
        self.round_abort = None;
        if self.draining() {
            self.courier = None;
            for waiter in self.drained.drain(..) {
                let _ = waiter.send(());
            }
            return;
        }
        let busy = done.full_batch || done.report.released > 0;
        if std::mem::take(&mut self.again) || busy {
            ctx.notify(Wake);
        } else if let Some(due) = done.next_due {
            // A retry due before the next poll is woken for exactly.
            let wait = Duration::from_millis(u64::try_from(due - now_millis()).unwrap_or(0));
            if wait < self.poll_interval {
                ctx.notify_later(Wake, wait);
            }
        }
    }
}

/// Stop delivering: start no new round and wait for the running one to finish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl<R: DeliveryRounds> Handler<Drain> for DeliveryActor<R> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        if let Some(courier) = &self.courier {
            courier.worker().stopping.store(true, Ordering::SeqCst);
        }
        if !self.round_running {
            self.courier = None;
            return Box::pin(async {});
        }
        let (done, finished) = oneshot::channel();
        self.drained.push(done);
        Box::pin(async move {
            let _ = finished.await;
        })
    }
}

/// Cancels the running round, answering once it has ended (used when draining takes
/// too long, so that nothing of the round outlives the actor's runtime).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AbortRound;

impl<R: DeliveryRounds> Handler<AbortRound> for DeliveryActor<R> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: AbortRound, _: &mut Context<Self>) -> Self::Result {
        let Some(abort) = self.round_abort.take() else {
            return Box::pin(async {});
        };
        abort.abort();
        let (done, finished) = oneshot::channel();
        self.drained.push(done);
        Box::pin(async move {
            let _ = finished.await;
        })
    }
}

/// The handle other parts of Gatehouse use to reach a delivery actor.
pub struct DeliveryHandle<R: DeliveryRounds> {
    addr: Addr<DeliveryActor<R>>,
}

impl<R: DeliveryRounds> Clone for DeliveryHandle<R> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
        }
    }
}

impl<R: DeliveryRounds> DeliveryHandle<R> {
    pub fn new(addr: Addr<DeliveryActor<R>>) -> Self {
        Self { addr }
    }

    /// Tells the actor that work was queued (call after the transaction committed).
    pub fn wake(&self) {
        self.addr.do_send(Wake);
    }

    /// Stops delivery, letting the deliveries in progress finish (at most `limit`).
    pub async fn drain(&self, limit: Duration) {
        match tokio::time::timeout(limit, self.addr.send(Drain)).await {
            Ok(_) => tracing::info!(actor = R::NAME, "drained"),
            Err(_) => {
                tracing::warn!(
                    actor = R::NAME,
                    ?limit,
                    "deliveries did not finish in time; cancelling them"
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), self.addr.send(AbortRound)).await;
            }
        }
    }
}
