//! Webhook endpoints: where events go, which events, with which secret. Registered by
//! an administrator through the API, or declared in the config (kept in the same table,
//! marked `from_config`, and brought in line with the config at every start).

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{signing, Event, EventKind};
use crate::config::WebhookEndpointSettings;
use crate::mail::outbox::rfc3339;
use crate::queue::now_millis;

/// The endpoints table (sea-orm entity).
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_endpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Set for endpoints declared in the config.
        pub name: Option<String>,
        pub url: String,
        /// JSON array of subscriptions (see [`super::Subscription`]).
        pub events: String,
        pub secret: String,
        pub description: String,
        pub enabled: bool,
        pub from_config: bool,
        pub disabled_reason: Option<String>,
        pub failing_since: Option<i64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub type Endpoint = entity::Model;

/// One entry of an endpoint's `events`: `*` (everything), an event type such as
/// `user.registered` or `record.created` (record events of every collection), or a
/// record event of one collection, `record.created:posts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    All,
    Kind {
        kind: EventKind,
        collection: Option<String>,
    },
}

impl Subscription {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::All);
        }
        let (kind, collection) = match text.split_once(':') {
            Some((kind, collection)) => (kind, Some(collection)),
            None => (text, None),
        };
        let kind = EventKind::parse(kind).ok_or_else(|| {
            let known: Vec<_> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
            format!(
                "{text:?}: the event must be * or one of {}",
                known.join(", ")
            )
        })?;
        if let Some(collection) = collection {
            let valid = !collection.is_empty()
                && collection
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !kind.per_collection() || !valid {
                return Err(format!(
                    "{text:?}: only record events take a collection name, as in record.created:posts"
                ));
            }
        }
        Ok(Self::Kind {
            kind,
            collection: collection.map(str::to_string),
        })
    }

    pub fn matches(&self, event: &Event<'_>) -> bool {
        match self {
            Self::All => true,
            Self::Kind { kind, collection } => {
                *kind == event.kind
                    && collection
                        .as_ref()
                        .is_none_or(|name| event.collection == Some(name.as_str()))
            }
        }
    }
}

/// Checks a list of subscriptions; an empty list subscribes to nothing and is refused.
pub fn parse_events(events: &[String]) -> Result<Vec<Subscription>, String> {
    if events.is_empty() {
        return Err("subscribe to at least one event (or *)".into());
    }
    events
        .iter()
        .map(|text| Subscription::parse(text))
        .collect()
}

/// Checks an endpoint URL: absolute http(s) with a host, no credentials in it.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    Ok(url)
}

impl Endpoint {
    /// The stored subscriptions (only ever written after [`parse_events`]).
    pub fn subscriptions(&self) -> Vec<Subscription> {
        serde_json::from_str::<Vec<String>>(&self.events)
            .unwrap_or_default()
            .iter()
            .filter_map(|text| Subscription::parse(text).ok())
            .collect()
    }

    fn event_names(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

/// The enabled endpoints.
pub async fn enabled<C: ConnectionTrait>(conn: &C) -> Result<Vec<Endpoint>, DbErr> {
    entity::Entity::find()
        .filter(entity::Column::Enabled.eq(true))
        .all(conn)
        .await
}

/// The ids of the enabled endpoints subscribed to `event`.
pub async fn subscribed<C: ConnectionTrait>(
    conn: &C,
    event: &Event<'_>,
) -> Result<Vec<String>, DbErr> {
    Ok(enabled(conn)
        .await?
        .into_iter()
        .filter(|endpoint| {
            endpoint
                .subscriptions()
                .iter()
                .any(|subscription| subscription.matches(event))
        })
        .map(|endpoint| endpoint.id)
        .collect())
}

/// An endpoint as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    /// The name of an endpoint declared in the config.
    pub name: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub from_config: bool,
    /// Why the endpoint was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    /// Since when every delivery to it has failed (RFC 3339), if they do.
    pub failing_since: Option<String>,
    /// The signing secret (`whsec_…`), shown only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl EndpointView {
    pub fn of(endpoint: Endpoint, with_secret: bool) -> Self {
        Self {
            events: endpoint.event_names(),
            id: endpoint.id,
            name: endpoint.name,
            url: endpoint.url,
            description: endpoint.description,
            enabled: endpoint.enabled,
            from_config: endpoint.from_config,
            disabled_reason: endpoint.disabled_reason,
            failing_since: endpoint.failing_since.map(rfc3339),
            secret: with_secret.then_some(endpoint.secret),
            created_at: rfc3339(endpoint.created_at),
            updated_at: rfc3339(endpoint.updated_at),
        }
    }
}

/// A new endpoint, already checked.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: url::Url,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
}

/// Registers an endpoint with a new secret.
pub async fn create<C: ConnectionTrait>(conn: &C, new: NewEndpoint) -> Result<Endpoint, DbErr> {
    super::endpoints_changed();
    let now = now_millis();
    entity::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        name: Set(None),
        url: Set(new.url.to_string()),
        events: Set(serde_json::to_string(&new.events).expect("strings serialize")),
        secret: Set(signing::new_secret()),
        description: Set(new.description),
        enabled: Set(new.enabled),
        from_config: Set(false),
        disabled_reason: Set(None),
        failing_since: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
}

/// Changes to an endpoint, already checked; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<url::Url>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Applies `change`; enabling an endpoint clears why it was disabled and its failure
/// streak. `None` when there is no such endpoint.
pub async fn update<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    change: EndpointChange,
) -> Result<Option<Endpoint>, DbErr> {
    let Some(endpoint) = find(conn, id).await? else {
        return Ok(None);
    };
    super::endpoints_changed();
    let mut active: entity::ActiveModel = endpoint.into();
    if let Some(url) = change.url {
        active.url = Set(url.to_string());
    }
    if let Some(events) = change.events {
        active.events = Set(serde_json::to_string(&events).expect("strings serialize"));
    }
    if let Some(description) = change.description {
        active.description = Set(description);
    }
    if let Some(enabled) = change.enabled {
        active.enabled = Set(enabled);
        if enabled {
            active.disabled_reason = Set(None);
            active.failing_since = Set(None);
        }
    }
    active.updated_at = Set(now_millis());
    Ok(Some(active.update(conn).await?))
}

pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Endpoint>, DbErr> {
    entity::Entity::find_by_id(id).one(conn).await
}

/// Every endpoint, oldest first.
pub async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<Endpoint>, DbErr> {
    entity::Entity::find()
        .order_by_asc(entity::Column::CreatedAt)
        .order_by_asc(entity::Column::Id)
        .all(conn)
        .await
}

/// Removes an endpoint; its deliveries stay as history (pending ones fail, the endpoint
/// being gone). Returns whether it existed.
pub async fn delete<C: ConnectionTrait>(conn: &C, id: &str) -> Result<bool, DbErr> {
    super::endpoints_changed();
    Ok(entity::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        == 1)
}

/// Brings the endpoints declared in the config into the table: new ones added, changed
/// ones updated (an endpoint disabled for failing stays disabled until an administrator
/// enables it), and ones no longer declared removed.
pub async fn sync_config<C: ConnectionTrait>(
    conn: &C,
    declared: &[WebhookEndpointSettings],
) -> Result<(), DbErr> {
    let now = now_millis();
    for endpoint in declared {
        entity::Entity::insert(entity::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            name: Set(Some(endpoint.name.clone())),
            url: Set(endpoint.url.clone()),
            events: Set(serde_json::to_string(&endpoint.events).expect("strings serialize")),
            secret: Set(endpoint.secret.expose().to_string()),
            description: Set(endpoint.description.clone()),
            enabled: Set(endpoint.enabled),
            from_config: Set(true),
            disabled_reason: Set(None),
            failing_since: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(entity::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
        let mut update = entity::Entity::update_many()
            .col_expr(entity::Column::Url, Expr::value(endpoint.url.clone()))
            .col_expr(
                entity::Column::Events,
                Expr::value(serde_json::to_string(&endpoint.events).expect("strings serialize")),
            )
            .col_expr(
                entity::Column::Secret,
                Expr::value(endpoint.secret.expose().to_string()),
            )
            .col_expr(
                entity::Column::Description,
                Expr::value(endpoint.description.clone()),
            )
            .col_expr(entity::Column::FromConfig, Expr::value(true));
        if !endpoint.enabled {
            update = update.col_expr(entity::Column::Enabled, Expr::value(false));
        }
        update
            .filter(entity::Column::Name.eq(endpoint.name.clone()))
            .exec(conn)
            .await?;
    }
    let names: Vec<String> = declared.iter().map(|e| e.name.clone()).collect();
    entity::Entity::delete_many()
        .filter(entity::Column::FromConfig.eq(true))
        .filter(entity::Column::Name.is_not_in(names))
        .exec(conn)
        .await?;
    Ok(())
}

/// A delivery to the endpoint succeeded: its failure streak ends.
pub async fn delivered<C: ConnectionTrait>(conn: &C, id: &str) -> Result<(), DbErr> {
    entity::Entity::update_many()
        .col_expr(
            entity::Column::FailingSince,
            Expr::value(Option::<i64>::None),
        )
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::FailingSince.is_not_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// A delivery to the endpoint failed: its failure streak starts (or goes on), and an
/// endpoint failing for `disable_after` is disabled, with the reason kept for the
/// administrator. Returns whether this disabled it.
pub async fn failed<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    error: &str,
    disable_after: i64,
    now: i64,
) -> Result<bool, DbErr> {
    entity::Entity::update_many()
        .col_expr(entity::Column::FailingSince, Expr::value(now))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::FailingSince.is_null())
        .exec(conn)
        .await?;
    let disabled = entity::Entity::update_many()
        .col_expr(entity::Column::Enabled, Expr::value(false))
        .col_expr(
            entity::Column::DisabledReason,
            Expr::value(format!(
                "disabled automatically at {}: every delivery failed for {}; last error: {error}",
                rfc3339(now),
                humantime_serde::re::humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(disable_after).unwrap_or(0)
                )),
            )),
        )
        .col_expr(entity::Column::UpdatedAt, Expr::value(now))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Enabled.eq(true))
        .filter(entity::Column::FailingSince.lte(now.saturating_sub(disable_after)))
        .exec(conn)
        .await?;
    let disabled = disabled.rows_affected == 1;
    if disabled {
        super::endpoints_changed();
    }
    Ok(disabled)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: EventKind, collection: Option<&str>) -> Event<'_> {
        Event {
            kind,
            collection,
            data: crate::webhooks::EventData::Json(json!({})),
        }
    }

    #[test]
    fn subscriptions_match_kinds_and_collections() {
        let posts = event(EventKind::RecordCreated, Some("posts"));
        let user = event(EventKind::UserRegistered, Some("users"));
        let all = Subscription::parse("*").unwrap();
        let created = Subscription::parse("record.created").unwrap();
        let created_posts = Subscription::parse("record.created:posts").unwrap();
        let created_tags = Subscription::parse("record.created:tags").unwrap();
        assert!(all.matches(&posts) && all.matches(&user));
        assert!(created.matches(&posts) && !created.matches(&user));
        assert!(created_posts.matches(&posts));
        assert!(!created_tags.matches(&posts));
    }

    #[test]
    fn bad_subscriptions_are_refused() {
        assert!(Subscription::parse("record.created:").is_err());
        assert!(Subscription::parse("user.registered:users").is_err());
        assert!(Subscription::parse("record.exploded").is_err());
        assert!(parse_events(&[]).is_err());
        assert!(parse_events(&["newsletter.subscribed".into()]).is_ok());
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(parse_url("https://example.com/hooks").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("https://user:pw@example.com/").is_err());
        assert!(parse_url("/relative").is_err());
    }
}
