//! The webhooks admin API (superusers only): register, list, change and remove
//! endpoints; list deliveries with their attempt log; send a failed delivery again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::actors::database::DbError;
use crate::error::ApiError;
use crate::http::auth::RequireSuperuser;
use crate::http::AppState;
use crate::queue::{now_millis, RetryRequest};
use crate::webhooks::deliveries::{self, DeliveryPage, DeliveryView};
use crate::webhooks::endpoints::{self, EndpointChange, EndpointView, NewEndpoint};

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointRequest {
    #[schema(example = "https://example.com/hooks/gatehouse")]
    pub url: String,
    /// `*`, event types (`user.registered`, `record.created`, …) or a record event of
    /// one collection (`record.created:posts`).
    #[schema(example = json!(["record.created:posts", "user.registered"]))]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Changes to an endpoint; fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// Enabling an endpoint that was disabled for failing clears the reason.
    pub enabled: Option<bool>,
}

fn check_url(error: ApiError, url: &str) -> (ApiError, Option<url::Url>) {
    match endpoints::parse_url(url) {
        Ok(url) => (error, Some(url)),
        Err(reason) => (
            error.with_field("url", "validation_invalid_url", &reason),
            None,
        ),
    }
}

fn check_events(error: ApiError, events: &[String]) -> ApiError {
    match endpoints::parse_events(events) {
        Ok(_) => error,
        Err(reason) => error.with_field("events", "validation_invalid_value", &reason),
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is no webhook endpoint with this id.",
    )
}

/// Register an endpoint: it receives the events it subscribes to, signed with the
/// secret in this answer (shown only here).
#[utoipa::path(post, path = "/api/admin/webhooks", tag = "webhooks",
    request_body = EndpointRequest,
    responses(
        (status = 201, description = "The endpoint, with its signing secret", body = EndpointView),
        (status = 400, description = "`validation_failed`: bad `url` or `events`", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    body: web::Json<EndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (error, url) = check_url(ApiError::validation("Invalid webhook endpoint."), &body.url);
    let error = check_events(error, &body.events);
    let Some(url) = url.filter(|_| error.data.is_empty()) else {
        return Err(error);
    };
    let new = NewEndpoint {
        url,
        events: body.events,
        description: body.description,
        enabled: body.enabled.unwrap_or(true),
    };
    let endpoint = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(endpoints::create(txn, new).await?) })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Created().json(EndpointView::of(endpoint, true)))
}

/// List every endpoint (secrets left out).
#[utoipa::path(get, path = "/api/admin/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "Every endpoint, oldest first", body = Vec<EndpointView>),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    _: RequireSuperuser,
) -> Result<HttpResponse, ApiError> {
    let all = state
        .db
        .read::<_, DbError, _>(|txn| Box::pin(async move { Ok(endpoints::list(txn).await?) }))
        .await
        .map_err(ApiError::from)?;
    let views: Vec<EndpointView> = all
        .into_iter()
        .map(|endpoint| EndpointView::of(endpoint, false))
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// One endpoint, with why it was disabled if it was.
#[utoipa::path(get, path = "/api/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
    ))]
pub async fn view(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let endpoint = state
        .db
        .read::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(endpoints::find(txn, &id).await?) })
        })
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(EndpointView::of(endpoint, false)))
}

/// Change an endpoint. An endpoint declared in the config can only be enabled or
/// disabled here; the rest of it comes from the config.
#[utoipa::path(patch, path = "/api/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointView),
        (status = 400, description = "`validation_failed`: bad `url` or `events`", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 409, description = "`webhook_from_config`: only `enabled` can change", body = crate::error::ErrorBody),
    ))]
pub async fn update(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
    body: web::Json<EndpointPatch>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut error = ApiError::validation("Invalid webhook endpoint.");
    let mut url = None;
    if let Some(text) = &body.url {
        (error, url) = check_url(error, text);
    }
    if let Some(events) = &body.events {
        error = check_events(error, events);
    }
    if !error.data.is_empty() {
        return Err(error);
    }
    let config_fields = url.is_some() || body.events.is_some() || body.description.is_some();
    let change = EndpointChange {
        url,
        events: body.events,
        description: body.description,
        enabled: body.enabled,
    };
    let id = id.into_inner();
    let updated = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                match endpoints::find(txn, &id).await? {
                    None => Ok(None),
                    Some(endpoint) if endpoint.from_config && config_fields => Ok(Some(Err(()))),
                    Some(_) => Ok(endpoints::update(txn, &id, change).await?.map(Ok)),
                }
            })
        })
        .await
        .map_err(ApiError::from)?;
    match updated {
        None => Err(not_found()),
        Some(Err(())) => Err(from_config()),
        Some(Ok(endpoint)) => {
            if endpoint.enabled {
                state.webhooks.wake();
            }
            Ok(HttpResponse::Ok().json(EndpointView::of(endpoint, false)))
        }
    }
}

fn from_config() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "webhook_from_config",
        "This endpoint is declared in the config; change it there (only `enabled` can change here).",
    )
}

/// Remove an endpoint. Its deliveries stay listed; pending ones fail.
#[utoipa::path(delete, path = "/api/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 409, description = "`webhook_from_config`: remove it from the config instead", body = crate::error::ErrorBody),
    ))]
pub async fn delete(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let outcome = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                Ok(match endpoints::find(txn, &id).await? {
                    None => None,
                    Some(endpoint) if endpoint.from_config => Some(false),
                    Some(_) => Some(endpoints::delete(txn, &id).await?),
                })
            })
        })
        .await
        .map_err(ApiError::from)?;
    match outcome {
        Some(true) => Ok(HttpResponse::NoContent().finish()),
        Some(false) => Err(from_config()),
        None => Err(not_found()),
    }
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries to this endpoint.
    pub endpoint: Option<String>,
    /// Only deliveries in this state: `pending`, `sending`, `sent`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Page number, from 1 (default 1).
    pub page: Option<u64>,
    /// Entries per page, 1–500 (default 30).
    pub per_page: Option<u64>,
}

/// List deliveries, newest first, optionally by endpoint and state.
#[utoipa::path(get, path = "/api/admin/webhooks/deliveries", tag = "webhooks",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "One page of deliveries", body = DeliveryPage),
        (status = 400, description = "`validation_failed`: unknown `status`, bad `page` or `perPage`", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
    ))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let listing = super::queue_listing(
        "Invalid deliveries query.",
        query.status.as_deref(),
        query.page,
        query.per_page,
    )?;
    let endpoint = query.endpoint.filter(|id| !id.is_empty());
    let page = state
        .db
        .read::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(deliveries::list(txn, endpoint, listing).await?) })
        })
        .await
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(page))
}

/// One delivery: its signed payload and every attempt (status, latency, the first bytes
/// of the answer).
#[utoipa::path(get, path = "/api/admin/webhooks/deliveries/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id (the webhook-id)")),
    responses(
        (status = 200, description = "The delivery with its attempt log", body = DeliveryView),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
    ))]
pub async fn view_delivery(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let delivery = state
        .db
        .read::<_, DbError, _>(move |txn| {
            Box::pin(async move { Ok(deliveries::find(txn, &id).await?) })
        })
        .await
        .map_err(ApiError::from)?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(delivery))
}

/// Send a `failed` (or `cancelled`) delivery again, with the same `webhook-id`: it
/// becomes `pending` with fresh attempts and the webhook actor is woken.
#[utoipa::path(post, path = "/api/admin/webhooks/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id (the webhook-id)")),
    responses(
        (status = 200, description = "The delivery is pending again", body = DeliveryView),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
        (status = 403, description = "Not a superuser", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::error::ErrorBody),
        (status = 409, description = "`delivery_not_retryable`: the delivery is pending, being sent or sent", body = crate::error::ErrorBody),
    ))]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    _: RequireSuperuser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let queue = state.webhook_queue.clone();
    let (request, delivery) = state
        .db
        .transact::<_, DbError, _>(move |txn| {
            Box::pin(async move {
                let request = queue.retry(txn, &id, now_millis()).await?;
                Ok((request, deliveries::find(txn, &id).await?))
            })
        })
        .await
        .map_err(ApiError::from)?;
    match (request, delivery) {
        (RetryRequest::Requeued, Some(delivery)) => {
            state.webhooks.wake();
            Ok(HttpResponse::Ok().json(delivery))
        }
        (RetryRequest::NotRetryable(status), _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "delivery_not_retryable",
            format!(
                "Only failed or cancelled deliveries can be retried; this one is {}.",
                status.as_str()
            ),
        )),
        _ => Err(ApiError::not_found()),
    }
}
