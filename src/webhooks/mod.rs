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
use std::sync::LazyLock;

use sea_orm::{ConnectionTrait, DbErr};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::collections::record::{Record, Viewer};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub collection: Option<String>,
    pub data: Value,
}

impl Event {
    /// A record or user event; the record as a superuser sees it (never its password
    /// hash or token key).
    pub fn for_record(kind: EventKind, record: &Record) -> Self {
        Self {
            kind,
            collection: Some(record.collection.name.clone()),
            data: json!({
                "collection": record.collection.name,
                "record": record.to_json(Viewer::Superuser),
            }),
        }
    }

    /// `newsletter.subscribed`: a subscription was confirmed.
    pub fn newsletter_subscribed(email: &str, name: Option<&str>) -> Self {
        Self {
            kind: EventKind::NewsletterSubscribed,
            collection: None,
            data: json!({"email": email, "name": name}),
        }
    }

    /// The JSON body sent to endpoints (Standard Webhooks' payload shape).
    pub fn payload(&self, at: chrono::DateTime<chrono::Utc>) -> String {
        json!({
            "type": self.kind.as_str(),
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
        .to_string()
    }
}

/// Queues `event` for every enabled endpoint subscribed to it, inside the caller's
/// transaction. Returns how many deliveries were queued.
pub async fn emit<C: ConnectionTrait>(conn: &C, event: &Event) -> Result<usize, DbErr> {
    let endpoints = endpoints::subscribed(conn, event).await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let queued = deliveries::enqueue(conn, event, &endpoints).await?;
    // Outside a transaction of the database actor nobody is told; the webhook actor's
    // poll (`webhooks.poll_interval`) finds the rows.
    let _ = QUEUED_IN_TRANSACTION.try_with(|queued| queued.set(true));
    Ok(queued)
}

tokio::task_local! {
    /// Set when the running transaction queued deliveries.
    static QUEUED_IN_TRANSACTION: Cell<bool>;
}

/// Counts commits that queued deliveries; each webhook actor watches it.
static COMMITTED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Runs `transaction` (which commits when it returns `Ok`), and once it has committed
/// deliveries it queued, wakes the webhook actors (the database actor runs every
/// transaction through this).
pub async fn waking_after_commit<T, E>(
    transaction: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (result, queued) = QUEUED_IN_TRANSACTION
        .scope(Cell::new(false), async {
            let result = transaction.await;
            (result, QUEUED_IN_TRANSACTION.with(Cell::get))
        })
        .await;
    if queued && result.is_ok() {
        COMMITTED.send_modify(|commits| *commits = commits.wrapping_add(1));
    }
    result
}

/// Resolves at every commit that queued deliveries (none is missed between two calls).
pub fn commits() -> impl futures_util::Stream<Item = ()> {
    let receiver = COMMITTED.subscribe();
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        Some(((), receiver))
    })
}
