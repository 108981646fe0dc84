//! Liveness, readiness, PocketBase's health endpoint and Prometheus metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::http::AppState;

/// PocketBase's health answer.
#[derive(Serialize, ToSchema)]
pub struct ApiHealth {
    #[schema(example = "API is healthy.")]
    message: &'static str,
    #[schema(example = 200)]
    code: u16,
    #[schema(value_type = Object)]
    data: serde_json::Map<String, serde_json::Value>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", content_type = "application/json")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The instance can serve: its database (and, in a cluster, Redis) answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", content_type = "application/json"),
        (status = 503, description = "A dependency does not answer; `data` names it", body = crate::error::ErrorBody),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = state.db.ping().await.map_err(|err| err.to_string());
    let redis = match &state.redis {
        Some(redis) => Some(
            match tokio::time::timeout(std::time::Duration::from_secs(2), redis.ping()).await {
                Ok(result) => result.map_err(|err| err.to_string()),
                Err(_) => Err("Redis did not answer within 2s".to_string()),
            },
        ),
        None => None,
    };
    let checks = [("database", Some(&database)), ("redis", redis.as_ref())];
    let failed: Vec<(&str, &String)> = checks
        .iter()
        .filter_map(|(name, result)| match result {
            Some(Err(reason)) => Some((*name, reason)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        let mut report = serde_json::Map::new();
        for (name, result) in checks {
            if result.is_some() {
                report.insert(name.to_string(), json!("ok"));
            }
        }
        return Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": report })));
    }
    let summary: Vec<String> = failed
        .iter()
        .map(|(name, reason)| format!("{name}: {reason}"))
        .collect();
    tracing::warn!(failed = ?summary, "readiness check failed");
    Err(failed.into_iter().fold(
        ApiError::unavailable(format!("Not ready: {}", summary.join("; "))),
        |api, (name, reason)| api.with_field(name, "not_ready", reason),
    ))
}

/// PocketBase-compatible API health check.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, description = "The API answers", body = ApiHealth)))]
pub async fn api_health() -> HttpResponse {
    HttpResponse::Ok().json(ApiHealth {
        message: "API is healthy.",
        code: 200,
        data: serde_json::Map::new(),
    })
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
