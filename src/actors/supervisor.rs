//! How Gatehouse supervises its actors.
//!
//! actix's `Supervisor` restarts an actor that *stops*, but a panic inside a handler
//! unwinds through the actor's task: the actor dies with its mailbox and every later
//! `send` fails with `MailboxError::Closed` (actix issues #158, #204, #301). So every
//! handler runs its work inside [`contain`]: a panic is caught, the caller gets an
//! error instead of a dropped reply, and the actor is told to stop ([`Crashed`]),
//! which makes its supervisor restart it with the same mailbox — queued messages wait
//! and are handled by the restarted actor. Work that was already running as a
//! `ResponseFuture` is a task of its own and finishes undisturbed.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Arbiter, Context, Handler, Message, Supervised, Supervisor};
use futures_util::FutureExt;

/// Sent by an actor to itself after one of its handlers panicked: it stops, and its
/// supervisor restarts it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crashed;

/// The work of a handler panicked; the actor is being restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {actor} actor panicked while handling the request and is being restarted")]
pub struct Panicked {
    pub actor: &'static str,
}

/// Runs `work`, turning a panic into `Err(Panicked)` and sending [`Crashed`] to `addr`
/// so that the actor restarts.
pub async fn contain<A, T>(
    actor: &'static str,
    addr: Addr<A>,
    work: impl Future<Output = T>,
) -> Result<T, Panicked>
where
    A: Actor + Handler<Crashed>,
    A::Context: ToEnvelope<A, Crashed>,
{
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(value) => Ok(value),
        Err(payload) => {
            tracing::error!(
                actor,
                panic = panic_message(payload.as_ref()),
                "actor handler panicked; restarting the actor"
            );
            addr.do_send(Crashed);
            Err(Panicked { actor })
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Several supervised instances of one actor, each on its own arbiter thread, used in
/// turn so that no single mailbox serialises the work.
pub struct ActorPool<A: Actor> {
    addrs: Arc<[Addr<A>]>,
    next: Arc<AtomicUsize>,
}

impl<A: Actor> Clone for ActorPool<A> {
    fn clone(&self) -> Self {
        Self {
            addrs: self.addrs.clone(),
            next: self.next.clone(),
        }
    }
}

impl<A> ActorPool<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// Starts `instances` supervised actors built by `factory`, each on a new arbiter.
    /// Returns the pool and the arbiters, which the caller stops at shutdown.
    pub fn start<F>(instances: usize, factory: F) -> (Self, Vec<Arbiter>)
    where
        F: Fn() -> A + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let (addrs, arbiters): (Vec<_>, Vec<_>) = (0..instances.max(1))
            .map(|_| {
                let arbiter = Arbiter::new();
                let factory = factory.clone();
                let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| factory());
                (addr, arbiter)
            })
            .unzip();
        let pool = Self {
            addrs: addrs.into(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        (pool, arbiters)
    }

    /// The next instance, round robin.
    pub fn pick(&self) -> &Addr<A> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        &self.addrs[index]
    }
}

/// Stops arbiters in the given order, waiting for each thread to end.
pub async fn stop_arbiters(arbiters: Vec<Arbiter>) {
    for arbiter in arbiters {
        arbiter.stop();
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
    }
}
