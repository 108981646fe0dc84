//! The cluster bus: instances tell each other what changed (sessions revoked,
//! collections or webhook endpoints changed, cached responses purged) over Redis
//! pub/sub. Delivery is best effort — what a bus message invalidates also expires on
//! its own — so a lost message costs freshness for a bounded time, never correctness
//! of stored data.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Supervised, WrapFuture};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Redis;
use crate::actors::cache::PurgeTarget;
use crate::actors::supervisor::Crashed;
use crate::telemetry::Metrics;

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum BusMessage {
    /// These sessions ended (logout, password change): drop them from caches.
    SessionsRevoked { sids: Vec<String> },
    /// Collection definitions changed: reload them from the database.
    CollectionsChanged,
    /// Webhook endpoints changed: drop the memory copy of them.
    WebhookEndpointsChanged,
    /// A record changed (committed): tell this instance's realtime subscribers.
    RecordChanged(Box<crate::realtime::RecordEvent>),
    /// Cached responses were purged (already deleted from Redis): drop the memory
    /// copies of these paths, on `host` or every host.
    CachePurged {
        targets: Vec<PurgeTarget>,
        host: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    message: BusMessage,
}

/// Runs on this instance for every message another instance publishes.
pub type BusHandler = Arc<dyn Fn(&BusMessage) + Send + Sync>;

/// Publishes to, and (through its actor) listens on, the cluster's channel.
#[derive(Clone)]
pub struct ClusterBus {
    redis: Redis,
    channel: Arc<str>,
    instance: Arc<str>,
}

impl ClusterBus {
    pub fn new(redis: Redis) -> Self {
        Self {
            channel: redis.key("bus").into(),
            instance: crate::domain::ids::random_alphanumeric(16).into(),
            redis,
        }
    }

    /// Sends `message` to every other instance; failures are logged, not raised.
    pub fn publish(&self, message: BusMessage) {
        let bus = self.clone();
        actix_web::rt::spawn(async move {
            let envelope = Envelope {
                from: bus.instance.to_string(),
                message,
            };
            let payload = serde_json::to_string(&envelope).expect("bus messages serialize");
            let result = match bus.redis.connection() {
                Ok(mut conn) => redis::cmd("PUBLISH")
                    .arg(&*bus.channel)
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map(|_| ()),
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::warn!(%err, "could not publish on the cluster bus");
            }
        });
    }
}

/// Listens on the bus and runs the handlers; restarted by its supervisor when the
/// subscription ends (Redis restarted) or a handler panics.
pub struct BusListener {
    bus: ClusterBus,
    handlers: Vec<BusHandler>,
    metrics: Arc<Metrics>,
}

impl BusListener {
    pub fn new(bus: ClusterBus, handlers: Vec<BusHandler>, metrics: Arc<Metrics>) -> Self {
        Self {
            bus,
            handlers,
            metrics,
        }
    }
}

impl Actor for BusListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let handlers = self.handlers.clone();
        let addr = ctx.address();
        let listen = async move {
            match bus.redis.client().get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&*bus.channel).await {
                    Ok(()) => {
                        tracing::info!("listening on the cluster bus");
                        let mut messages = pubsub.into_on_message();
                        while let Some(message) = messages.next().await {
                            dispatch(&bus, &handlers, message.get_payload_bytes());
                        }
                        tracing::warn!("the cluster bus subscription ended");
                    }
                    Err(err) => tracing::warn!(%err, "cannot subscribe to the cluster bus"),
                },
                Err(err) => tracing::warn!(%err, "cannot reach Redis for the cluster bus"),
            }
            // Pace reconnection attempts while Redis is away.
            tokio::time::sleep(Duration::from_millis(500)).await;
            addr.do_send(Crashed);
        };
        ctx.spawn(listen.into_actor(self));
    }
}

fn dispatch(bus: &ClusterBus, handlers: &[BusHandler], payload: &[u8]) {
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(envelope) if envelope.from == *bus.instance => {}
        Ok(envelope) => {
            for handler in handlers {
                let run = std::panic::AssertUnwindSafe(|| handler(&envelope.message));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(message = ?envelope.message, "a cluster bus handler panicked");
                }
            }
        }
        Err(err) => tracing::warn!(%err, "ignoring a garbled cluster bus message"),
    }
}

impl Supervised for BusListener {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics
            .actor_restarts
            .with_label_values(&["cluster_bus"])
            .inc();
    }
}

impl Handler<Crashed> for BusListener {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
