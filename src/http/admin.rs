//! Gatehouse's own admin API under `/api/admin/*`: superusers only.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::RequireSuperuser;
use super::AppState;

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
