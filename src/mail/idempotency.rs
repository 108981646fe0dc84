//! Remembered answers to requests sent with an `Idempotency-Key`: a retried request
//! gets the first answer again instead of doing the work twice. Keys expire after a
//! configured time; each is bound to a hash of the request it first came with.

use sea_orm::entity::prelude::*;
use sea_orm::{QueryFilter, Set};

/// A remembered answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

/// What a key says about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// First use: do the work, then [`remember`] the answer in the same transaction.
    New,
    /// The same request came before: answer this.
    Answered(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// The `idempotency_keys` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub response_status: i32,
        pub response_body: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Looks `key` up in `scope`, forgetting keys older than `ttl_millis` first.
pub async fn lookup<C: ConnectionTrait>(
    conn: &C,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    ttl_millis: i64,
) -> Result<Replay, DbErr> {
    entity::Entity::delete_many()
        .filter(entity::Column::CreatedAt.lt(now.saturating_sub(ttl_millis)))
        .exec(conn)
        .await?;
    let Some(found) = entity::Entity::find_by_id((scope.to_string(), key.to_string()))
        .one(conn)
        .await?
    else {
        return Ok(Replay::New);
    };
    if found.request_hash != request_hash {
        return Ok(Replay::Mismatch);
    }
    let body = serde_json::from_str(&found.response_body)
        .map_err(|err| DbErr::Custom(format!("stored idempotent response: {err}")))?;
    Ok(Replay::Answered(StoredResponse {
        status: u16::try_from(found.response_status).unwrap_or(200),
        body,
    }))
}

/// Stores the answer to a first request. A concurrent first request with the same key
/// makes this insert fail on the primary key, rolling that request's work back.
pub async fn remember<C: ConnectionTrait>(
    conn: &C,
    scope: &str,
    key: &str,
    request_hash: &str,
    response: &StoredResponse,
    now: i64,
) -> Result<(), DbErr> {
    entity::ActiveModel {
        scope: Set(scope.to_string()),
        key: Set(key.to_string()),
        request_hash: Set(request_hash.to_string()),
        response_status: Set(i32::from(response.status)),
        response_body: Set(response.body.to_string()),
        created_at: Set(now),
    }
    .insert(conn)
    .await?;
    Ok(())
}
