//! Operator endpoints of the front of house: upstream health and cache purges.
//!
//! Until the superuser extractor of the accounts work is available, these answer only
//! clients connected over loopback (like nginx's `allow 127.0.0.1; deny all`): 403
//! for everyone else.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use crate::actors::balancer::{PoolStatus, UpstreamStatus};
use crate::actors::cache::{Purge, PurgeTarget};
use crate::error::ApiError;

/// A request from the machine itself.
pub struct LocalOperator;

impl FromRequest for LocalOperator {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let local = req.peer_addr().is_some_and(|addr| addr.ip().is_loopback());
        std::future::ready(if local {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only operators may use this endpoint.",
            ))
        })
    }
}

/// Every upstream pool with its servers.
#[derive(Serialize, ToSchema)]
pub struct UpstreamsBody {
    pub upstreams: Vec<PoolStatus>,
}

/// Each upstream server's health, requests in flight and error counts.
#[utoipa::path(get, path = "/api/admin/upstreams", tag = "admin",
    responses(
        (status = 200, description = "Pools and their servers", body = UpstreamsBody),
        (status = 403, description = "Not an operator", body = crate::error::ErrorBody),
    ))]
pub async fn upstreams(
    _: LocalOperator,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let upstreams = state
        .balancer
        .send(UpstreamStatus)
        .await
        .map_err(|_| ApiError::unavailable("The load balancer is restarting."))?;
    Ok(HttpResponse::Ok().json(UpstreamsBody { upstreams }))
}

/// What to remove from the response cache: exactly one of `key` (a path with its
/// query, e.g. `/img/logo.png`) or `prefix` (e.g. `/img/`), optionally on one `host`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[schema(example = "/img/logo.png")]
    pub key: Option<String>,
    #[schema(example = "/img/")]
    pub prefix: Option<String>,
    #[schema(example = "example.com")]
    pub host: Option<String>,
}

/// What a purge removed and what the cache holds now.
#[derive(Serialize, ToSchema)]
pub struct PurgeBody {
    /// URLs removed (with every variant of each).
    pub purged: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Removes cached responses by key or prefix.
#[utoipa::path(post, path = "/api/admin/cache/purge", tag = "admin",
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "Purged", body = PurgeBody),
        (status = 400, description = "Neither or both of key and prefix", body = crate::error::ErrorBody),
        (status = 403, description = "Not an operator", body = crate::error::ErrorBody),
    ))]
pub async fn purge_cache(
    _: LocalOperator,
    state: web::Data<AppState>,
    body: web::Json<PurgeRequest>,
) -> Result<HttpResponse, ApiError> {
    let PurgeRequest { key, prefix, host } = body.into_inner();
    let target = match (key, prefix) {
        (Some(key), None) if key.starts_with('/') => PurgeTarget::Key(key),
        (None, Some(prefix)) if prefix.starts_with('/') => PurgeTarget::Prefix(prefix),
        _ => {
            return Err(
                ApiError::validation("Give either key or prefix, a path starting with /.")
                    .with_field("key", "validation_required", "Give key or prefix."),
            )
        }
    };
    let result = state
        .cache_actor
        .send(Purge {
            target,
            host: host.map(|host| host.to_ascii_lowercase()),
        })
        .await
        .map_err(|_| ApiError::unavailable("The cache is restarting."))?;
    Ok(HttpResponse::Ok().json(PurgeBody {
        purged: result.purged,
        entries: result.entries,
        bytes: result.bytes,
    }))
}
