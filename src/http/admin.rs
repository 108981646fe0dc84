//! Gatehouse's own admin API under `/api/admin/*`: superusers only. Instance status,
//! upstream health and cache purges.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::RequireSuperuser;
use super::AppState;
use crate::actors::balancer::{PoolStatus, UpstreamStatus};
use crate::actors::cache::{Purge, PurgeTarget};
use crate::error::ApiError;

/// What this instance is and runs.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    version: &'static str,
    uptime_seconds: u64,
    database: &'static str,
    http_workers: usize,
    database_actors: usize,
    auth_actors: usize,
}

/// Version, uptime and the actors this instance runs.
#[utoipa::path(get, path = "/api/admin/status", tag = "admin",
    responses(
        (status = 200, description = "Instance status", body = InstanceStatus),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn status(state: web::Data<AppState>, _: RequireSuperuser) -> HttpResponse {
    let settings = &state.settings;
    HttpResponse::Ok().json(InstanceStatus {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        database: if settings.database.url.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        http_workers: settings.http_workers(),
        database_actors: settings.database_actors(),
        auth_actors: settings.auth_actors(),
    })
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
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn upstreams(
    state: web::Data<AppState>,
    _: RequireSuperuser,
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

/// What a purge removed and what this instance's memory holds now. Other instances
/// drop their copies when the purge reaches them on the cluster bus.
#[derive(Serialize, ToSchema)]
pub struct PurgeBody {
    /// URLs removed from this instance's memory (with every variant of each).
    pub purged: u64,
    /// URLs removed from the shared Redis tier (0 without one).
    #[serde(rename = "redisPurged")]
    pub redis_purged: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Removes cached responses by key or prefix, here, in Redis and on every instance.
#[utoipa::path(post, path = "/api/admin/cache/purge", tag = "admin",
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "Purged", body = PurgeBody),
        (status = 400, description = "Neither or both of key and prefix", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn purge_cache(
    state: web::Data<AppState>,
    _: RequireSuperuser,
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
        redis_purged: result.redis_purged,
        entries: result.entries,
        bytes: result.bytes,
    }))
}
