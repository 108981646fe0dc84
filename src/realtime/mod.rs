//! Realtime: PocketBase's server-sent events. The [`Hub`] knows the connected
//! clients (their auth and subscriptions) and hands record changes, after their
//! transaction committed, to the realtime actor ([`crate::actors::realtime`]), which
//! works out who may see each change and queues it on their streams.
//!
//! Each client has a bounded queue; a client that falls `client_buffer` messages
//! behind is disconnected (its EventSource reconnects), so a slow reader costs at most
//! that much memory. The changes waiting for the actor are bounded too (`hub_queue`):
//! a change that finds it full is dropped without making the writer wait, and every
//! client that could have been sent it is disconnected, so that its SDK reconnects
//! and refetches instead of silently missing the change. A stream with nothing to
//! send for `idle_timeout` ends, as in PocketBase.

pub mod deliver;
pub mod subscription;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::auth::AuthIdentity;
use crate::cluster::bus::{BusMessage, ClusterBus};
use crate::collections::record::Record;
use crate::config::RealtimeSettings;
use crate::telemetry::Metrics;
use subscription::Subscription;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// A committed change of one record: its values after the change (before it, for a
/// delete), secrets blanked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEvent {
    pub action: Action,
    /// Collection id.
    pub collection: String,
    pub record: Map<String, Value>,
}

impl RecordEvent {
    pub fn new(action: Action, record: &Record) -> Self {
        let mut values = record.values.clone();
        if record.collection.is_auth() {
            // Never needed to evaluate rules or show the record; kept off the bus.
            for secret in ["password", "tokenKey"] {
                if let Some(value) = values.get_mut(secret) {
                    *value = Value::String(String::new());
                }
            }
        }
        Self {
            action,
            collection: record.collection.id.clone(),
            record: values,
        }
    }
}

/// One SSE message for a client: the event name (its subscription string) and the
/// JSON data, shared by every client that gets the same data.
#[derive(Debug, Clone)]
pub struct Message {
    pub name: Arc<str>,
    pub data: Bytes,
}

/// Who a client is and what it watches, as its last subscription POST set them.
#[derive(Debug, Default)]
pub struct ClientState {
    pub auth: Option<AuthIdentity>,
    pub subscriptions: Vec<Subscription>,
}

/// A connected SSE client.
#[derive(Debug)]
pub struct Client {
    pub id: Arc<str>,
    /// Messages behind an `Arc`: tokio allocates a queue's first block of 32 slots
    /// when the channel is made, and with ten thousand idle clients 32 pointers
    /// instead of 32 messages each is ~1.3 KiB less per client.
    sender: mpsc::Sender<Arc<Message>>,
    pub state: Mutex<ClientState>,
}

impl Client {
    /// The client's auth and subscriptions (a poisoned lock still holds valid data).
    pub fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a subscription change was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("Missing or invalid client id.")]
    UnknownClient,
    #[error("The current and the previous request authorization don't match.")]
    AuthChanged,
}

/// The connected clients of this instance, and the way to the realtime actor.
pub struct Hub {
    clients: RwLock<HashMap<Arc<str>, Arc<Client>>>,
    events: mpsc::Sender<RecordEvent>,
    bus: Option<ClusterBus>,
    client_buffer: usize,
    idle_timeout: Duration,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// The hub, and the receiving end of its changes for the realtime actor.
    pub fn new(
        settings: &RealtimeSettings,
        bus: Option<ClusterBus>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, mpsc::Receiver<RecordEvent>) {
        let (events, receiver) = mpsc::channel(settings.hub_queue);
        let hub = Arc::new(Self {
            clients: RwLock::default(),
            events,
            bus,
            client_buffer: settings.client_buffer,
            idle_timeout: settings.idle_timeout,
            closed: AtomicBool::new(false),
            metrics,
        });
        (hub, receiver)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Client>>> {
        self.clients.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Client>>> {
        self.clients.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new client and returns its event stream, which starts with
    /// `PB_CONNECT`; `None` once the instance is shutting down.
    pub fn connect(self: &Arc<Self>) -> Option<EventStream> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let id: Arc<str> = crate::domain::ids::random_alphanumeric(40).into();
        let (sender, receiver) = mpsc::channel(self.client_buffer);
        let client = Arc::new(Client {
            id: id.clone(),
            sender,
            state: Mutex::default(),
        });
        self.write().insert(id.clone(), client);
        self.metrics.realtime_clients.inc();
        let connect = format!("{{\"clientId\":\"{id}\"}}");
        let first = sse_frame(&id, "PB_CONNECT", connect.as_bytes());
        Some(EventStream {
            first: Some(first),
            receiver,
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
            idle_timeout: self.idle_timeout,
            registration: Registration {
                hub: Arc::downgrade(self),
                id,
            },
        })
    }

    /// Replaces a client's subscriptions and sets its auth (PocketBase allows a guest
    /// to become a user, never a change of user).
    pub fn subscribe(
        &self,
        client_id: &str,
        auth: Option<AuthIdentity>,
        subscriptions: &[String],
    ) -> Result<(), SubscribeError> {
        let client = self
            .read()
            .get(client_id)
            .cloned()
            .ok_or(SubscribeError::UnknownClient)?;
        let mut state = client.state();
        if let Some(current) = &state.auth {
            let same = auth.as_ref().is_some_and(|new| {
                new.record.id() == current.record.id()
                    && new.record.collection.id == current.record.collection.id
            });
            if !same {
                return Err(SubscribeError::AuthChanged);
            }
        }
        state.auth = auth;
        state.subscriptions = subscriptions
            .iter()
            .filter_map(|raw| Subscription::parse(raw))
            .collect();
        Ok(())
    }

    /// Every connected client, at this moment.
    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.read().values().cloned().collect()
    }

    pub fn client_count(&self) -> usize {
        self.read().len()
    }

    /// Queues `message` for `client`; a client whose queue is full is disconnected.
    pub fn send(&self, client: &Client, message: Arc<Message>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = client.sender.try_send(message) {
            tracing::info!(client = %client.id, "realtime client too slow; disconnecting it");
            self.metrics.realtime_dropped.inc();
            self.write().remove(&client.id);
        }
    }

    /// Hands a committed change to the realtime actor here and, in a cluster, to the
    /// other instances.
    pub fn publish(&self, event: RecordEvent) {
        if let Some(bus) = &self.bus {
            bus.publish(BusMessage::RecordChanged(Box::new(event.clone())));
        }
        self.publish_here(event);
    }

    /// Hands a change to this instance's realtime actor only (a change another
    /// instance made).
    pub fn publish_here(&self, event: RecordEvent) {
        if self.client_count() == 0 {
            return;
        }
        match self.events.try_send(event) {
            // Closed only when the actor is gone, i.e. the instance is stopping.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(event)) => self.overflowed(&event),
        }
    }

    /// A change the realtime actor had no room for: dropped, and every client with a
    /// subscription (any of them could have been sent it) disconnected.
    fn overflowed(&self, event: &RecordEvent) {
        self.metrics.realtime_events_dropped.inc();
        let subscribed: Vec<Arc<str>> = self
            .clients()
            .into_iter()
            .filter(|client| !client.state().subscriptions.is_empty())
            .map(|client| client.id.clone())
            .collect();
        tracing::warn!(
            collection = %event.collection,
            action = event.action.as_str(),
            disconnected = subscribed.len(),
            "realtime queue full; change dropped and its possible subscribers disconnected"
        );
        let mut clients = self.write();
        for id in &subscribed {
            clients.remove(id);
        }
    }

    /// Sessions ended: their clients continue as guests.
    pub fn sessions_revoked(&self, sids: &[String]) {
        for client in self.clients() {
            let mut state = client.state();
            if state
                .auth
                .as_ref()
                .is_some_and(|auth| sids.contains(&auth.session_id))
            {
                state.auth = None;
            }
        }
    }

    /// Ends every stream and refuses new ones (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.write().clear();
    }
}

/// One SSE frame as PocketBase writes it.
pub fn sse_frame(client_id: &str, name: &str, data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(client_id.len() + name.len() + data.len() + 20);
    frame.put_slice(b"id:");
    frame.put_slice(client_id.as_bytes());
    frame.put_slice(b"\nevent:");
    frame.put_slice(name.as_bytes());
    frame.put_slice(b"\ndata:");
    frame.put_slice(data);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// Removes the client from the hub when its stream ends.
struct Registration {
    hub: std::sync::Weak<Hub>,
    id: Arc<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.write().remove(&self.id);
            hub.metrics.realtime_clients.dec();
        }
    }
}

/// The body of `GET /api/realtime`: `PB_CONNECT`, then the client's messages, until
/// the client is disconnected, falls too far behind, or stays idle too long.
pub struct EventStream {
    first: Option<Bytes>,
    receiver: mpsc::Receiver<Arc<Message>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    registration: Registration,
}

impl Stream for EventStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                let deadline = tokio::time::Instant::now() + self.idle_timeout;
                self.idle.as_mut().reset(deadline);
                let frame = sse_frame(&self.registration.id, &message.name, &message.data);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
