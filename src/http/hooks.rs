//! `POST /api/hooks/{name}`: signed events from external services.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::actors::webhooks::StoreInboundEvent;
use crate::error::ApiError;
use crate::http::AppState;
use crate::queue::now_millis;
use crate::webhooks::inbound::{self, Stored};

/// What became of an inbound event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookReceipt {
    pub event_id: String,
    /// True when the event had been received before: nothing changed.
    pub replayed: bool,
    /// The record the event created.
    pub record_id: Option<String>,
}

/// Receive a signed event from the external service configured as `name`: the signature
/// (Standard Webhooks, or GitHub's `X-Hub-Signature-256`) and timestamp are checked, the
/// event is stored once by its id, and a record is created from it.
#[utoipa::path(post, path = "/api/hooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "The hook's name in webhooks.inbound.hooks")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or a replay, which changes nothing)", body = HookReceipt),
        (status = 400, description = "The body is not JSON, has no object where the record comes from, or the record is invalid", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_signature`: missing, wrong or stale signature; nothing stored", body = crate::error::ErrorBody),
        (status = 404, description = "`not_found`: no hook of this name", body = crate::error::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::error::ErrorBody),
    ))]
pub async fn receive(
    state: web::Data<AppState>,
    name: web::Path<String>,
    request: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let inbound = &state.settings.webhooks.inbound;
    let hook = inbound
        .hooks
        .iter()
        .find(|hook| hook.name == *name)
        .ok_or_else(ApiError::not_found)?;
    let limit = inbound.max_body_bytes;
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("The request body could not be read."))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let tolerance = i64::try_from(inbound.tolerance.as_secs()).unwrap_or(i64::MAX);
    let event_id =
        inbound::verify(hook, header, &body, now_millis() / 1000, tolerance).map_err(|err| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                format!("The signature could not be verified: {err}."),
            )
        })?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("The body is not JSON: {err}.")))?;
    let record = inbound::record_body(&json, &hook.data_pointer).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The payload has no object at {:?} to create a record from.",
            hook.data_pointer
        ))
    })?;
    let stored = state
        .db
        .pick()
        .send(StoreInboundEvent {
            hook: hook.name.clone(),
            event_id: event_id.clone(),
            collection: hook.collection.clone(),
            body: record,
        })
        .await
        .map_err(|_| ApiError::unavailable("The database is unavailable; try again."))??;
    let receipt = match stored {
        Stored::Created { record_id } => HookReceipt {
            event_id,
            replayed: false,
            record_id: Some(record_id),
        },
        Stored::Replayed { record_id } => HookReceipt {
            event_id,
            replayed: true,
            record_id,
        },
    };
    Ok(HttpResponse::Ok().json(receipt))
}
