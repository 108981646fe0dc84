//! Record lists and views of the collections named in `cache.collections`, answered
//! from the response cache (memory, then Redis) for guests.
//!
//! Only answers any guest would get are stored: the request carries no
//! `Authorization` and no auth cookie, the collection is not an auth collection, its
//! rule lets guests read and reads no request headers (which would make answers differ
//! between guests), and the request has no `?expand=` (which would show other
//! collections' records). A record created, changed or deleted — through the API of
//! any instance — drops the cached answers of its collection and of collections whose
//! relations point at it (deletes cascade into them), everywhere.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Serialize;

use super::auth::Authenticated;
use super::proxy_cache::{from_cache, request_key, X_CACHE};
use super::AppState;
use crate::actors::cache::{CacheKey, CachedResponse, Freshness, Invalidate, PurgeTarget, Tier};
use crate::cache_policy::StoragePolicy;
use crate::collections::{Collection, FieldKind};
use crate::error::ApiError;

/// Which rule guards the answer.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    List,
    View,
}

/// A request whose answer may come from, and go into, the cache.
pub struct Cacheable {
    key: CacheKey,
    ttl: Duration,
    /// The cache's generation before the answer was computed.
    generation: u64,
}

/// `Some` when the answer to `req` on `collection` is public and its collection is
/// cacheable.
pub fn cacheable(
    state: &AppState,
    req: &HttpRequest,
    caller: &Authenticated,
    collection: &str,
    access: Access,
) -> Option<Cacheable> {
    let cached = &state.settings.cache.collections;
    if cached.is_empty() || caller.0.is_some() {
        return None;
    }
    let definition = state.registry.get(collection)?;
    let settings = cached.get(&definition.name)?;
    let rule = match access {
        Access::List => &definition.list_rule,
        Access::View => &definition.view_rule,
    };
    let public = rule
        .as_deref()
        .is_some_and(|rule| !rule.contains("@request.headers"));
    let cookie = &state.settings.auth.cookie.name;
    let guest = !req.headers().contains_key(header::AUTHORIZATION) && req.cookie(cookie).is_none();
    let query = req.query_string();
    let shaped_by_request =
        query.contains("expand=") || query.contains("%40request") || query.contains("@request");
    (public && guest && !definition.is_auth() && !shaped_by_request).then(|| Cacheable {
        key: request_key(req),
        ttl: settings.ttl,
        generation: state.cache.generation(),
    })
}

/// The cached answer, while it is fresh.
pub async fn lookup(
    state: &AppState,
    req: &HttpRequest,
    cacheable: &Cacheable,
) -> Option<HttpResponse> {
    let (cached, tier) = state
        .cache
        .lookup(&cacheable.key.borrowed(), req.headers())
        .await?;
    if cached.freshness() != Freshness::Fresh {
        return None;
    }
    state.cache.count_response("HIT", tier);
    Some(from_cache(req, &cached, "HIT"))
}

/// Answers with `body` as JSON, storing it for later guests unless records changed
/// while it was read (it might predate the change).
pub fn store(
    state: &AppState,
    req: &HttpRequest,
    cacheable: Cacheable,
    body: &impl Serialize,
) -> Result<HttpResponse, ApiError> {
    let body = Bytes::from(serde_json::to_vec(body).map_err(|err| super::internal(&err))?);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let policy = StoragePolicy {
        fresh_for: cacheable.ttl,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary: Vec::new(),
    };
    state.cache.insert_unless_invalidated(
        cacheable.generation,
        &cacheable.key,
        req.headers(),
        CachedResponse::new(StatusCode::OK, headers, body.clone(), policy),
    );
    state.cache.count_response("MISS", Tier::None);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((X_CACHE, HeaderValue::from_static("MISS")))
        .body(body))
}

/// The paths of a collection's cached answers, by name and by id.
fn collection_paths(collection: &Collection) -> [PurgeTarget; 2] {
    [
        PurgeTarget::Prefix(format!("/api/collections/{}/", collection.name)),
        PurgeTarget::Prefix(format!("/api/collections/{}/", collection.id)),
    ]
}

/// Records of `collection` were written: drops its cached answers and those of the
/// collections that relate to it, on every instance.
pub async fn records_changed(state: &AppState, collection: &str) {
    if state.settings.cache.collections.is_empty() {
        return;
    }
    let Some(changed) = state.registry.get(collection) else {
        return;
    };
    let targets = state
        .registry
        .all()
        .iter()
        .filter(|other| {
            other.id == changed.id
                || other.fields.iter().any(|field| {
                    matches!(&field.kind, FieldKind::Relation { collection_id, .. } if *collection_id == changed.id)
                })
        })
        .flat_map(|other| collection_paths(other))
        .collect();
    invalidate(state, targets).await;
}

/// Collection definitions changed (rules, names, deletions): drops the cached answers
/// of each of `names` (names or ids as the client gave them, and the current ones).
pub async fn collections_changed(state: &AppState, names: &[&str]) {
    if state.settings.cache.collections.is_empty() {
        return;
    }
    let mut targets: Vec<PurgeTarget> = names
        .iter()
        .filter(|name| !name.is_empty())
        .map(|name| PurgeTarget::Prefix(format!("/api/collections/{name}/")))
        .collect();
    for name in names {
        if let Some(collection) = state.registry.get(name) {
            targets.extend(collection_paths(&collection));
        }
    }
    invalidate(state, targets).await;
}

/// Collections were imported: drops every cached record answer.
pub async fn all_collections_changed(state: &AppState) {
    if !state.settings.cache.collections.is_empty() {
        invalidate(state, vec![PurgeTarget::Prefix("/api/collections/".into())]).await;
    }
}

async fn invalidate(state: &AppState, targets: Vec<PurgeTarget>) {
    if state
        .cache_actor
        .send(Invalidate { targets })
        .await
        .is_err()
    {
        tracing::warn!("the cache actor is restarting; cached answers expire by themselves");
    }
}
