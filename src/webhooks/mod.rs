//! Webhooks: signed outbound events delivered durably, and signed inbound hooks.
//!
//! An event ([`Event`]) is written as one delivery row per subscribed endpoint inside
//! the transaction of the change that caused it ([`emit`]), so that a change and its
//! deliveries commit together or not at all. The webhook actor
//! ([`crate::actors::webhooks`]) delivers the rows through the shared durable queue
//! ([`crate::queue`]): signed per Standard Webhooks ([`signing`]), only to addresses the
//! SSRF guard admits ([`ssrf`]), retried with backoff, logged per attempt
//! ([`deliveries`]). Inbound hooks ([`inbound`]) verify a signature, store an event once
//! by its id and create a record from it.

pub mod deliveries;
pub mod endpoints;
pub mod inbound;
pub mod sender;
pub mod signing;
pub mod ssrf;

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbErr};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::cluster::bus::{BusMessage, ClusterBus};
use crate::collections::record::{Record, Viewer};
use endpoints::Subscription;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RecordCreated,
    RecordUpdated,
    RecordDeleted,
    UserRegistered,
    UserVerified,
    NewsletterSubscribed,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::RecordCreated,
        EventKind::RecordUpdated,
        EventKind::RecordDeleted,
        EventKind::UserRegistered,
        EventKind::UserVerified,
        EventKind::NewsletterSubscribed,
    ];

    /// The event's `type`, e.g. `record.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RecordCreated => "record.created",
            EventKind::RecordUpdated => "record.updated",
            EventKind::RecordDeleted => "record.deleted",
            EventKind::UserRegistered => "user.registered",
            EventKind::UserVerified => "user.verified",
            EventKind::NewsletterSubscribed => "newsletter.subscribed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Record events can be subscribed per collection.
    pub fn per_collection(self) -> bool {
        matches!(
            self,
            EventKind::RecordCreated | EventKind::RecordUpdated | EventKind::RecordDeleted
        )
    }
}

/// One event: its kind, the collection it concerns (if any) and its data.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub kind: EventKind,
    pub collection: Option<&'a str>,
    data: EventData<'a>,
}

/// An event's `data`. A record's JSON is built only when an endpoint gets the event:
/// most writes have no subscriber.
#[derive(Debug, Clone)]
enum EventData<'a> {
    Record(&'a Record),
    Json(Value),
}

impl<'a> Event<'a> {
    /// A record or user event; the record as a superuser sees it (never its password
    /// hash or token key).
    pub fn for_record(kind: EventKind, record: &'a Record) -> Self {
        Self {
            kind,
            collection: Some(&record.collection.name),
            data: EventData::Record(record),
        }
    }

    /// `newsletter.subscribed`: a subscription was confirmed.
    pub fn newsletter_subscribed(email: &str, name: Option<&str>) -> Self {
        Self {
            kind: EventKind::NewsletterSubscribed,
            collection: None,
            data: EventData::Json(json!({"email": email, "name": name})),
        }
    }

    /// The JSON body sent to endpoints (Standard Webhooks' payload shape).
    pub fn payload(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        let data = match &self.data {
            EventData::Record(record) => json!({
                "collection": record.collection.name,
                "record": record.to_json(Viewer::Superuser),
            }),
            EventData::Json(data) => data.clone(),
        };
        json!({
            "type": self.kind.as_str(),
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string()
    }
}

/// Queues `event` for every enabled endpoint subscribed to it, inside the caller's
/// transaction. Returns how many deliveries were queued.
pub async fn emit<C: ConnectionTrait>(conn: &C, event: &Event<'_>) -> Result<usize, DbErr> {
    // In a transaction of the database actor the endpoints come from its memory copy,
    // unless this very transaction changed them.
    let cache = IN_TRANSACTION
        .try_with(|hooks| (!hooks.endpoints_changed.get()).then(|| hooks.endpoints.clone()))
        .ok()
        .flatten();
    let endpoints = match cache {
        Some(cache) => cache.subscribed(conn, event).await?,
        None => endpoints::subscribed(conn, event).await?,
    };
    if endpoints.is_empty() {
        return Ok(0);
    }
    let queued = deliveries::enqueue(conn, event, &endpoints).await?;
    // Outside a transaction of the database actor nobody is told; the webhook actor's
    // poll (`webhooks.poll_interval`) finds the rows.
    let _ = IN_TRANSACTION.try_with(|hooks| hooks.queued.set(true));
    Ok(queued)
}

/// Notes that the running transaction added, changed or disabled an endpoint: once it
/// has committed, the memory copies of the endpoints are dropped.
pub(crate) fn endpoints_changed() {
    let _ = IN_TRANSACTION.try_with(|hooks| hooks.endpoints_changed.set(true));
}

/// What a transaction of the database actor did that matters once it has committed.
struct TransactionHooks {
    endpoints: Arc<EndpointCache>,
    queued: Cell<bool>,
    endpoints_changed: Cell<bool>,
}

tokio::task_local! {
    static IN_TRANSACTION: TransactionHooks;
}

/// Counts commits that queued deliveries; each webhook actor watches it.
static COMMITTED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Runs `transaction` (which commits when it returns `Ok`) with `endpoints` as the copy
/// [`emit`] reads; once it has committed, wakes the webhook actors if it queued
/// deliveries, and drops the copy (here and on other instances) if it changed endpoints.
/// The database actor runs every transaction through this.
pub async fn waking_after_commit<T, E>(
    endpoints: Arc<EndpointCache>,
    transaction: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let hooks = TransactionHooks {
        endpoints: endpoints.clone(),
        queued: Cell::new(false),
        endpoints_changed: Cell::new(false),
    };
    let (result, queued, changed) = IN_TRANSACTION
        .scope(hooks, async {
            let result = transaction.await;
            let (queued, changed) =
                IN_TRANSACTION.with(|hooks| (hooks.queued.get(), hooks.endpoints_changed.get()));
            (result, queued, changed)
        })
        .await;
    if result.is_ok() {
        if changed {
            endpoints.changed();
        }
        if queued {
            COMMITTED.send_modify(|commits| *commits = commits.wrapping_add(1));
        }
    }
    result
}

/// How long a memory copy of the endpoints is used at most: changes made on another
/// instance arrive over the cluster bus, and this bounds how stale a copy can be should
/// a bus message be lost.
const ENDPOINTS_MAX_AGE: Duration = Duration::from_secs(10);

/// The enabled endpoints and their subscriptions, kept in memory: every record write
/// asks for them, and they rarely change. One per instance, shared by the database
/// actor instances.
pub struct EndpointCache {
    bus: Option<ClusterBus>,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Raised by every change, so that a copy loaded before it is not kept.
    generation: u64,
    copy: Option<(Instant, Arc<[Subscriber]>)>,
}

/// An enabled endpoint: its id and what it subscribes to.
struct Subscriber {
    id: String,
    subscriptions: Vec<Subscription>,
}

impl EndpointCache {
    /// A cache that tells changes to the other instances on `bus`, if any.
    pub fn new(bus: Option<ClusterBus>) -> Self {
        Self {
            bus,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Endpoints changed (committed) on this instance: drops the copy here and on the
    /// other instances.
    pub fn changed(&self) {
        self.forget_here();
        if let Some(bus) = &self.bus {
            bus.publish(BusMessage::WebhookEndpointsChanged);
        }
    }

    /// Drops this instance's copy (another instance changed endpoints).
    pub fn forget_here(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.generation = state.generation.wrapping_add(1);
        state.copy = None;
    }

    /// The ids of the enabled endpoints subscribed to `event`, loading them through
    /// `conn` when there is no fresh copy.
    async fn subscribed<C: ConnectionTrait>(
        &self,
        conn: &C,
        event: &Event<'_>,
    ) -> Result<Vec<String>, DbErr> {
        let (copy, generation) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = state
                .copy
                .as_ref()
                .filter(|(loaded, _)| loaded.elapsed() < ENDPOINTS_MAX_AGE)
                .map(|(_, subscribers)| subscribers.clone());
            (fresh, state.generation)
        };
        let subscribers = match copy {
            Some(subscribers) => subscribers,
            None => {
                let loaded: Arc<[Subscriber]> = endpoints::enabled(conn)
                    .await?
                    .into_iter()
                    .map(|endpoint| Subscriber {
                        subscriptions: endpoint.subscriptions(),
                        id: endpoint.id,
                    })
                    .collect();
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.generation == generation {
                    state.copy = Some((Instant::now(), loaded.clone()));
                }
                loaded
            }
        };
        Ok(subscribers
            .iter()
            .filter(|subscriber| subscriber.subscriptions.iter().any(|s| s.matches(event)))
            .map(|subscriber| subscriber.id.clone())
            .collect())
    }
}

/// Resolves at every commit that queued deliveries (none is missed between two calls).
pub fn commits() -> impl futures_util::Stream<Item = ()> {
    let receiver = COMMITTED.subscribe();
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        Some(((), receiver))
    })
}
