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

/// The instance can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", content_type = "application/json"),
        (status = 503, description = "A dependency does not answer; `data` names it", body = crate::error::ErrorBody),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": { "database": "ok" },
        }))),
        Err(err) => {
            tracing::warn!(%err, "readiness check failed");
            Err(
                ApiError::unavailable(format!("Not ready: database: {err}")).with_field(
                    "database",
                    "not_ready",
                    &err.to_string(),
                ),
            )
        }
    }
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
