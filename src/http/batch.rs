//! `POST /api/batch`: PocketBase's batch of record writes, read from JSON or from the
//! SDK's multipart form (`@jsonPayload`), run in one transaction by the auth actor
//! (accounts created in a batch are registrations: limited, and sent their mail).

use actix_multipart::Multipart;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};

use std::collections::BTreeSet;

use super::api_cache;
use super::auth::{client_info, Authenticated};
use super::records::rule_headers;
use super::AppState;
use crate::actors::auth::RunBatch;
use crate::error::ApiError;
use crate::records::batch::BatchInput;

/// The multipart part that carries the batch's JSON, as PocketBase's SDK names it.
const JSON_PAYLOAD: &str = "@jsonPayload";

fn unreadable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        "Failed to read the submitted batch data.",
    )
}

/// Appends a body stream to `into`, refusing (413) to go past `limit` bytes in all.
async fn collect<S, E>(mut stream: S, into: &mut Vec<u8>, limit: usize) -> Result<(), ApiError>
where
    S: Stream<Item = Result<web::Bytes, E>> + Unpin,
{
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable())?;
        if into.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        into.extend_from_slice(&chunk);
    }
    Ok(())
}

/// The JSON of a multipart batch. Other parts carry files for file fields, which
/// Gatehouse does not have.
async fn multipart_json(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut form = Multipart::new(req.headers(), payload);
    let mut json = Vec::new();
    while let Some(part) = form.next().await {
        let part = part.map_err(|_| unreadable())?;
        if part.name() != Some(JSON_PAYLOAD) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "files_unsupported",
                format!(
                    "Batch part {:?}: file fields are not supported.",
                    part.name().unwrap_or_default()
                ),
            ));
        }
        collect(part, &mut json, limit).await?;
    }
    Ok(json)
}

/// Runs record creates, upserts, updates and deletes in one transaction, all or
/// nothing, each under its collection's rules with the caller of this request.
#[utoipa::path(post, path = "/api/batch", tag = "records",
    request_body(content = Object, description = "`{\"requests\": [{\"method\": \"POST\", \"url\": \"/api/collections/posts/records?expand=author\", \"headers\": {}, \"body\": {…}}]}` as JSON, or as the `@jsonPayload` part of a multipart form (what the SDKs send). Methods and URLs: `POST`/`PUT` (upsert by `body.id`) `…/records`, `PATCH`/`DELETE` `…/records/{id}`."),
    responses(
        (status = 200, description = "One `{status, body}` per request, in order"),
        (status = 400, description = "Invalid batch data (`data.requests`), or a request failed and nothing was kept (`data.requests.{index}.response` is that request's error)", body = crate::error::ErrorBody),
        (status = 403, description = "Batches are turned off (`batch.enabled`)", body = crate::error::ErrorBody),
        (status = 413, description = "Body over `batch.max_body_bytes`", body = crate::error::ErrorBody),
    ))]
pub async fn batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authenticated,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings.batch;
    if !settings.enabled {
        return Err(ApiError::forbidden("Batch requests are not allowed."));
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    let body = if multipart {
        multipart_json(&req, payload, settings.max_body_bytes).await?
    } else {
        let mut body = Vec::new();
        collect(payload, &mut body, settings.max_body_bytes).await?;
        body
    };
    let input: BatchInput = serde_json::from_slice(&body).map_err(|_| unreadable())?;
    let items = input.into_items(settings.max_requests)?;
    let written: BTreeSet<String> = items
        .iter()
        .filter_map(|item| item.collection().map(str::to_string))
        .collect();
    let answers = state
        .auth
        .pick()
        .send(RunBatch {
            items,
            identity: caller.0,
            headers: rule_headers(&req),
            client: client_info(&req),
            timeout: settings.timeout,
        })
        .await
        .map_err(|_| ApiError::unavailable("The auth service is restarting; try again."))??;
    for collection in &written {
        api_cache::records_changed(&state, collection).await;
    }
    Ok(HttpResponse::Ok().json(answers))
}
