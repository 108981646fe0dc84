//! Revocable sessions: every auth token names a session row (`sid`), which keeps only
//! a hash of the token's signature. Validated sessions are cached briefly; revoking one
//! on this instance removes it from the cache at once.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Alias, Expr, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};
use serde::Serialize;
use utoipa::ToSchema;

use super::tokens::VerifiedToken;
use crate::cluster::bus::{BusMessage, ClusterBus};
use crate::collections::record::Record;

/// A row of `_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    #[serde(skip)]
    pub collection_ref: String,
    #[serde(skip)]
    pub record_ref: String,
    #[serde(skip)]
    pub token_hash: String,
    pub user_agent: String,
    pub ip: String,
    pub created: String,
    pub refreshed: String,
    pub expires: String,
    #[serde(skip)]
    pub revoked: bool,
}

fn table() -> Alias {
    Alias::new("_sessions")
}

const COLUMNS: [&str; 10] = [
    "id",
    "collectionRef",
    "recordRef",
    "tokenHash",
    "userAgent",
    "ip",
    "created",
    "refreshed",
    "expires",
    "revoked",
];

fn from_row(row: &QueryResult) -> Result<Session, DbErr> {
    Ok(Session {
        id: row.try_get("", "id")?,
        collection_ref: row.try_get("", "collectionRef")?,
        record_ref: row.try_get("", "recordRef")?,
        token_hash: row.try_get("", "tokenHash")?,
        user_agent: row.try_get("", "userAgent")?,
        ip: row.try_get("", "ip")?,
        created: row.try_get("", "created")?,
        refreshed: row.try_get("", "refreshed")?,
        expires: row.try_get("", "expires")?,
        revoked: row.try_get("", "revoked")?,
    })
}

pub async fn insert<C: ConnectionTrait>(conn: &C, session: &Session) -> Result<(), DbErr> {
    let insert = Query::insert()
        .into_table(table())
        .columns(COLUMNS.map(Alias::new))
        .values_panic([
            session.id.clone().into(),
            session.collection_ref.clone().into(),
            session.record_ref.clone().into(),
            session.token_hash.clone().into(),
            session.user_agent.clone().into(),
            session.ip.clone().into(),
            session.created.clone().into(),
            session.refreshed.clone().into(),
            session.expires.clone().into(),
            session.revoked.into(),
        ])
        .to_owned();
    conn.execute(conn.get_database_backend().build(&insert))
        .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Session>, DbErr> {
    let query = Query::select()
        .columns(COLUMNS.map(Alias::new))
        .from(table())
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    conn.query_one(conn.get_database_backend().build(&query))
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Points a session at a newly issued token.
pub async fn renew<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    token_hash: &str,
    refreshed: &str,
    expires: &str,
) -> Result<(), DbErr> {
    let update = Query::update()
        .table(table())
        .values([
            (Alias::new("tokenHash"), token_hash.into()),
            (Alias::new("refreshed"), refreshed.into()),
            (Alias::new("expires"), expires.into()),
        ])
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .and_where(Expr::col(Alias::new("revoked")).eq(false))
        .to_owned();
    conn.execute(conn.get_database_backend().build(&update))
        .await?;
    Ok(())
}

pub async fn revoke<C: ConnectionTrait>(conn: &C, id: &str) -> Result<(), DbErr> {
    let update = Query::update()
        .table(table())
        .value(Alias::new("revoked"), true)
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    conn.execute(conn.get_database_backend().build(&update))
        .await?;
    Ok(())
}

/// Revokes every live session of a record except `keep`; returns the revoked ids.
pub async fn revoke_all<C: ConnectionTrait>(
    conn: &C,
    collection_ref: &str,
    record_ref: &str,
    keep: Option<&str>,
) -> Result<Vec<String>, DbErr> {
    let mut select = Query::select();
    select
        .column(Alias::new("id"))
        .from(table())
        .and_where(Expr::col(Alias::new("collectionRef")).eq(collection_ref))
        .and_where(Expr::col(Alias::new("recordRef")).eq(record_ref))
        .and_where(Expr::col(Alias::new("revoked")).eq(false));
    if let Some(keep) = keep {
        select.and_where(Expr::col(Alias::new("id")).ne(keep));
    }
    let ids: Vec<String> = conn
        .query_all(conn.get_database_backend().build(&select))
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "id"))
        .collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        let update = Query::update()
            .table(table())
            .value(Alias::new("revoked"), true)
            .and_where(Expr::col(Alias::new("id")).is_in(ids.clone()))
            .to_owned();
        conn.execute(conn.get_database_backend().build(&update))
            .await?;
    }
    Ok(ids)
}

/// The record's sessions that are neither revoked nor expired, newest first.
pub async fn list_active<C: ConnectionTrait>(
    conn: &C,
    collection_ref: &str,
    record_ref: &str,
    now: &str,
) -> Result<Vec<Session>, DbErr> {
    let query = Query::select()
        .columns(COLUMNS.map(Alias::new))
        .from(table())
        .and_where(Expr::col(Alias::new("collectionRef")).eq(collection_ref))
        .and_where(Expr::col(Alias::new("recordRef")).eq(record_ref))
        .and_where(Expr::col(Alias::new("revoked")).eq(false))
        .and_where(Expr::col(Alias::new("expires")).gt(now))
        .order_by(Alias::new("created"), Order::Desc)
        .to_owned();
    conn.query_all(conn.get_database_backend().build(&query))
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// A session that was checked against the database, with its record.
#[derive(Debug, Clone)]
pub struct ValidSession {
    pub record: Record,
    /// The session's current token, as it was verified.
    pub token: VerifiedToken,
    /// Unix seconds.
    pub expires: i64,
}

/// Sessions validated recently (by session id), and the ones revoked on this
/// instance. Shared by everything that can end sessions (logout, password changes),
/// so that a revoked token never authenticates again here.
pub struct SessionGuard {
    valid: moka::sync::Cache<String, Arc<ValidSession>>,
    /// Kept longer than `valid`'s entries live, so that a validation that raced a
    /// logout cannot put the revoked session back.
    revoked: moka::sync::Cache<String, ()>,
    /// In a cluster, revocations are told to the other instances too.
    bus: std::sync::OnceLock<ClusterBus>,
    /// Told of every revocation seen here (realtime clients drop that auth).
    on_revoke: std::sync::OnceLock<RevocationListener>,
}

/// Runs for the session ids of every revocation this instance learns of.
pub type RevocationListener = Box<dyn Fn(&[String]) + Send + Sync>;

impl SessionGuard {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            valid: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live((ttl * 2).max(Duration::from_secs(60)))
                .build(),
            bus: std::sync::OnceLock::new(),
            on_revoke: std::sync::OnceLock::new(),
        }
    }

    /// Calls `listener` for every revocation from now on.
    pub fn on_revoke(&self, listener: RevocationListener) {
        let _ = self.on_revoke.set(listener);
    }

    /// Tells other instances about revocations from now on.
    pub fn attach_bus(&self, bus: ClusterBus) {
        let _ = self.bus.set(bus);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<ValidSession>> {
        self.valid.get(sid)
    }

    /// Caches a validated session; `false` (and nothing cached) when it was revoked
    /// meanwhile.
    pub fn remember(&self, sid: String, session: ValidSession) -> bool {
        if self.is_revoked(&sid) {
            return false;
        }
        self.valid.insert(sid.clone(), Arc::new(session));
        if self.is_revoked(&sid) {
            self.valid.invalidate(&sid);
            return false;
        }
        true
    }

    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revoked.contains_key(sid)
    }

    /// Marks sessions revoked here and, in a cluster, on every other instance.
    pub fn forget(&self, sids: &[String]) {
        self.forget_here(sids);
        if let (Some(bus), false) = (self.bus.get(), sids.is_empty()) {
            bus.publish(BusMessage::SessionsRevoked {
                sids: sids.to_vec(),
            });
        }
    }

    /// Marks sessions revoked and drops them from this instance's cache.
    pub fn forget_here(&self, sids: &[String]) {
        for sid in sids {
            self.revoked.insert(sid.clone(), ());
            self.valid.invalidate(sid);
        }
        if let (Some(listener), false) = (self.on_revoke.get(), sids.is_empty()) {
            listener(sids);
        }
    }
}
