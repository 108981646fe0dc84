//! The outbox admin API (superusers only): list mails by state, send a failed one again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::actors::database::DbError;
use crate::error::ApiError;
use crate::http::auth::RequireSuperuser;
use crate::http::AppState;
use crate::mail::outbox::{self, OutboxEntry, OutboxPage};
use crate::queue::{now_millis, RetryRequest};

/// Which outbox page to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only mails in this state: `pending`, `sending`, `sent`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Page number, from 1 (default 1).
    pub page: Option<u64>,
    /// Entries per page, 1–500 (default 30).
    pub per_page: Option<u64>,
}

/// List the outbox, newest first, optionally by state (paged like PocketBase lists).
#[utoipa::path(get, path = "/api/admin/outbox", tag = "mail",
    params(OutboxQuery),
    responses(
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 200, description = "One page of outbox entries", body = OutboxPage),
        (status = 400, description = "`validation_failed`: unknown `status`, bad `page` or `perPage`", body = crate::error::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    query: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let listing = super::queue_listing(
        "Invalid outbox query.",
        query.status.as_deref(),
        query.page,
        query.per_page,
    )?;
    let page = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(outbox::list(txn, listing).await?) })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(page))
}

/// Send a `failed` (or `cancelled`) mail again: it becomes `pending` with fresh attempts
/// and the mailer is woken.
#[utoipa::path(post, path = "/api/admin/outbox/{id}/retry", tag = "mail",
    params(("id" = String, Path, description = "Outbox id")),
    responses(
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 200, description = "The mail is pending again", body = OutboxEntry),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 409, description = "`outbox_not_retryable`: the mail is pending, being sent or sent", body = crate::error::ErrorBody),
    ))]
pub async fn retry(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let queue = state.outbox.clone();
    let (request, entry) = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                let request = queue.retry(txn, &id, now_millis()).await?;
                Ok((request, outbox::find(txn, &id).await?))
            })
        })
        .await
        .map_err(ApiError::from)?;
    match (request, entry) {
        (RetryRequest::Requeued, Some(entry)) => {
            state.mailer.wake();
            Ok(HttpResponse::Ok().json(entry))
        }
        (RetryRequest::NotRetryable(status), _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "outbox_not_retryable",
            format!(
                "Only failed or cancelled mails can be retried; this one is {}.",
                status.as_str()
            ),
        )),
        _ => Err(ApiError::not_found()),
    }
}
