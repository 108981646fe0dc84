//! Webhook deliveries: one row per event and endpoint, delivered through the shared
//! durable queue ([`crate::queue`]), and a log row per attempt.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::Event;
use crate::mail::outbox::rfc3339;
use crate::queue::{now_millis, Listing, Queue, QueueRow, RetryPolicy, Status};

/// The deliveries table's name, as the queue knows it.
pub const TABLE: &str = "webhook_deliveries";

/// The delivery queue of the deliveries table.
pub fn queue(policy: RetryPolicy) -> Queue {
    Queue::new(TABLE, policy)
}

/// The deliveries table (sea-orm entity).
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        /// Also the `webhook-id` header: the same on every attempt, so receivers can
        /// recognise a delivery they already handled.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub endpoint_id: String,
        pub event_type: String,
        /// The exact body sent (and signed).
        pub payload: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: i64,
        pub claimed_by: Option<String>,
        pub claimed_until: Option<i64>,
        pub last_error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub finished_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The attempts log (sea-orm entity).
pub mod attempt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_attempts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub delivery_id: String,
        pub attempt: i32,
        pub started_at: i64,
        /// The HTTP status answered, if the endpoint answered.
        pub status_code: Option<i32>,
        pub latency_ms: i64,
        pub error: Option<String>,
        /// The first bytes of the answer's body.
        pub response_excerpt: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A claimed delivery.
pub type Delivery = entity::Model;

impl QueueRow for Delivery {
    fn id(&self) -> &str {
        &self.id
    }

    fn attempts(&self) -> u32 {
        u32::try_from(self.attempts).unwrap_or(0)
    }
}

/// Queues `event` for each of `endpoints`, inside the caller's transaction.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    event: &Event<'_>,
    endpoints: &[String],
) -> Result<usize, DbErr> {
    let now = now_millis();
    let at = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    let payload = event.payload(at);
    let rows = endpoints.iter().map(|endpoint| entity::ActiveModel {
        id: Set(format!("msg_{}", uuid::Uuid::new_v4().simple())),
        endpoint_id: Set(endpoint.clone()),
        event_type: Set(event.kind.as_str().to_string()),
        payload: Set(payload.clone()),
        status: Set(Status::Pending.as_str().to_string()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        claimed_by: Set(None),
        claimed_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    });
    entity::Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(endpoints.len())
}

/// What one attempt did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub started_at: i64,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response_excerpt: String,
}

/// Logs an attempt at `delivery_id`.
pub async fn log_attempt<C: ConnectionTrait>(
    conn: &C,
    delivery_id: &str,
    record: AttemptRecord,
) -> Result<(), DbErr> {
    attempt::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        delivery_id: Set(delivery_id.to_string()),
        attempt: Set(record.attempt),
        started_at: Set(record.started_at),
        status_code: Set(record.status_code.map(i32::from)),
        latency_ms: Set(record.latency_ms),
        error: Set(record.error),
        response_excerpt: Set(record.response_excerpt),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// One logged attempt, as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: String,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response_excerpt: String,
}

/// A delivery as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The `webhook-id` the endpoint receives.
    pub id: String,
    pub endpoint_id: String,
    #[schema(example = "record.created")]
    pub event_type: String,
    #[schema(value_type = String, example = "pending")]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The signed body (only in the answer about one delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Every attempt, oldest first (only in the answer about one delivery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptView>>,
}

impl From<Delivery> for DeliveryView {
    fn from(row: Delivery) -> Self {
        Self {
            id: row.id,
            endpoint_id: row.endpoint_id,
            event_type: row.event_type,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: rfc3339(row.next_attempt_at),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            finished_at: row.finished_at.map(rfc3339),
            payload: None,
            attempt_log: None,
        }
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub page: u64,
    pub per_page: u64,
    pub total_items: u64,
    pub total_pages: u64,
    pub items: Vec<DeliveryView>,
}

/// Lists one page of deliveries, optionally only those to one endpoint.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    endpoint_id: Option<String>,
    listing: Listing,
) -> Result<DeliveryPage, DbErr> {
    let mut query = entity::Entity::find();
    if let Some(endpoint_id) = endpoint_id {
        query = query.filter(entity::Column::EndpointId.eq(endpoint_id));
    }
    let (total_items, rows) = listing
        .fetch(
            conn,
            query,
            entity::Column::Status,
            entity::Column::CreatedAt,
            entity::Column::Id,
        )
        .await?;
    Ok(DeliveryPage {
        page: listing.page,
        per_page: listing.per_page,
        total_items,
        total_pages: listing.total_pages(total_items),
        items: rows.into_iter().map(DeliveryView::from).collect(),
    })
}

/// One delivery with its payload and attempt log.
pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<DeliveryView>, DbErr> {
    let Some(row) = entity::Entity::find_by_id(id).one(conn).await? else {
        return Ok(None);
    };
    let attempts = attempt::Entity::find()
        .filter(attempt::Column::DeliveryId.eq(id))
        .order_by_asc(attempt::Column::StartedAt)
        .order_by_asc(attempt::Column::Attempt)
        .all(conn)
        .await?;
    let payload = row.payload.clone();
    let mut view = DeliveryView::from(row);
    view.payload = Some(payload);
    view.attempt_log = Some(
        attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                started_at: rfc3339(a.started_at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error,
                response_excerpt: a.response_excerpt,
            })
            .collect(),
    );
    Ok(Some(view))
}
