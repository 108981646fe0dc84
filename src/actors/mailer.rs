//! The mailer actor: delivers the outbox in the background.
//!
//! It runs one delivery round at a time ([`Courier::deliver_due`]): when woken after a
//! mail was queued, on a timer (retries, and mail queued by other instances sharing the
//! database), at the time the next retry is due, and at once again after a full batch.
//! A round runs as a `ResponseFuture`, a task of its own, so the actor keeps taking
//! messages while mail is being sent; wake-ups that arrive during a round are folded
//! into one more round after it. A panic in a round is contained: the mails it held go
//! back to the queue when their lease runs out and the actor is restarted.
//! On shutdown ([`Mailer::drain`]) no new round starts, mails claimed but not started
//! are handed back, and the sends in progress finish.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, Supervised,
};
use tokio::sync::oneshot;

use super::supervisor::{contain, Crashed};
use crate::mail::delivery::{Courier, RoundReport};
use crate::queue::now_millis;
use crate::telemetry::Metrics;

const NAME: &str = "mailer";

pub struct MailerActor {
    courier: Arc<Courier>,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
    round_running: bool,
    /// A wake-up arrived during the running round.
    again: bool,
    /// Callers of [`Drain`] waiting for the running round to end.
    drained: Vec<oneshot::Sender<()>>,
}

impl MailerActor {
    pub fn new(courier: Arc<Courier>, poll_interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            courier,
            poll_interval,
            metrics,
            round_running: false,
            again: false,
            drained: Vec::new(),
        }
    }

    fn draining(&self) -> bool {
        self.courier.stopping.load(Ordering::SeqCst)
    }
}

impl Actor for MailerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Resume whatever is pending (mail left by a previous run or a crash).
        ctx.notify(Wake);
        ctx.run_interval(self.poll_interval, |_, ctx| ctx.notify(Wake));
    }
}

impl Supervised for MailerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
        tracing::warn!(actor = NAME, "actor restarted by its supervisor");
    }
}

impl Handler<Crashed> for MailerActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Look for due mail now (sent after queuing mail, and by the actor's own timers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

impl Handler<Wake> for MailerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) -> Self::Result {
        if self.draining() {
            return Box::pin(async {});
        }
        if self.round_running {
            self.again = true;
            return Box::pin(async {});
        }
        self.round_running = true;
        let courier = self.courier.clone();
        let addr = ctx.address();
        Box::pin(async move {
            let outcome = contain(NAME, addr.clone(), async {
                let report = courier.deliver_due().await?;
                let next_due = courier.next_due().await?;
                Ok::<_, crate::actors::database::DbError>((report, next_due))
            })
            .await;
            let finished = match outcome {
                Ok(Ok((report, next_due))) => {
                    if report.claimed > 0 {
                        tracing::debug!(?report, "delivery round finished");
                    }
                    RoundFinished {
                        full_batch: report.claimed >= courier.batch_size as usize,
                        next_due,
                        report,
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, "delivery round failed; retrying at the next poll");
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

impl Handler<RoundFinished> for MailerActor {
    type Result = ();

    fn handle(&mut self, done: RoundFinished, ctx: &mut Context<Self>) {
        self.round_running = false;
        for waiter in self.drained.drain(..) {
            let _ = waiter.send(());
        }
        if self.draining() {
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

impl Handler<Drain> for MailerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.courier.stopping.store(true, Ordering::SeqCst);
        if !self.round_running {
            return Box::pin(async {});
        }
        let (done, finished) = oneshot::channel();
        self.drained.push(done);
        Box::pin(async move {
            let _ = finished.await;
        })
    }
}

/// The handle other parts of Gatehouse use to reach the mailer.
#[derive(Clone)]
pub struct Mailer {
    addr: Addr<MailerActor>,
}

impl Mailer {
    pub fn new(addr: Addr<MailerActor>) -> Self {
        Self { addr }
    }

    /// Tells the mailer that mail was queued (call after the transaction committed).
    pub fn wake(&self) {
        self.addr.do_send(Wake);
    }

    /// Stops delivery, letting the sends in progress finish (at most `limit`).
    pub async fn drain(&self, limit: Duration) {
        match tokio::time::timeout(limit, self.addr.send(Drain)).await {
            Ok(_) => tracing::info!("mailer drained"),
            Err(_) => tracing::warn!(?limit, "mailer did not finish its sends in time"),
        }
    }
}
