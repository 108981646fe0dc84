//! The realtime actor: takes committed record changes from the [`Hub`] one at a
//! time, in commit order, and delivers each to the subscribers allowed to see it.
//! Connecting and subscribing never wait for it: they only touch the hub.

use std::sync::Arc;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Supervised, WrapFuture};
use tokio::sync::{mpsc, Mutex};

use super::database::Db;
use super::supervisor::{contain, Crashed};
use crate::realtime::deliver::deliver;
use crate::realtime::{Hub, RecordEvent};
use crate::records::RecordsEnv;
use crate::telemetry::Metrics;

const NAME: &str = "realtime";

pub struct RealtimeActor {
    hub: Arc<Hub>,
    db: Db,
    env: Arc<RecordsEnv>,
    /// Shared so that a restarted actor carries on with the same queue.
    events: Arc<Mutex<mpsc::Receiver<RecordEvent>>>,
    metrics: Arc<Metrics>,
}

impl RealtimeActor {
    pub fn new(
        hub: Arc<Hub>,
        db: Db,
        env: Arc<RecordsEnv>,
        events: Arc<Mutex<mpsc::Receiver<RecordEvent>>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            hub,
            db,
            env,
            events,
            metrics,
        }
    }
}

impl Actor for RealtimeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (hub, db, env, events) = (
            self.hub.clone(),
            self.db.clone(),
            self.env.clone(),
            self.events.clone(),
        );
        let addr = ctx.address();
        let run = async move {
            let mut events = events.lock().await;
            while let Some(event) = events.recv().await {
                if contain(NAME, addr.clone(), deliver(&hub, &db, &env, event))
                    .await
                    .is_err()
                {
                    tracing::error!("delivering a realtime event panicked");
                    break;
                }
            }
        };
        ctx.spawn(run.into_actor(self));
    }
}

impl Supervised for RealtimeActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
    }
}

impl Handler<Crashed> for RealtimeActor {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
