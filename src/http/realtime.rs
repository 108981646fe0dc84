//! `/api/realtime`: PocketBase's server-sent events. `GET` opens a stream that starts
//! with `PB_CONNECT` (the client id on the `id:` line); `POST` sets the client's
//! subscriptions and, from its `Authorization`, the client's auth.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Authenticated;
use super::AppState;
use crate::error::ApiError;
use crate::realtime::SubscribeError;

/// Opens the event stream.
#[utoipa::path(get, path = "/api/realtime", tag = "realtime",
    responses(
        (status = 200, description = "`text/event-stream`: first `id:<clientId>`, `event:PB_CONNECT`, `data:{\"clientId\":…}`; then one event per record change a subscription allows, named by the subscription string, with data `{\"record\",\"action\"}`", content_type = "text/event-stream"),
        (status = 503, description = "The instance is shutting down", body = crate::error::ErrorBody),
    ))]
pub async fn connect(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stream = state
        .realtime
        .connect()
        .ok_or_else(|| ApiError::unavailable("The server is shutting down."))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// `POST /api/realtime`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetSubscriptions {
    /// The id from `PB_CONNECT`.
    #[serde(default)]
    pub client_id: String,
    /// The new set, replacing the old: `coll/*`, `coll/RECORD_ID` or `coll`, each
    /// optionally with `?options=` and URI-encoded JSON `{"query":{…},"headers":{…}}`.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

fn invalid(field: &str, code: &str, message: &str) -> ApiError {
    ApiError::validation("Something went wrong while processing your request.")
        .with_field(field, code, message)
}

/// Reads and checks the body as PocketBase does: at most 1000 subscriptions of at
/// most 2500 characters, and a client id.
fn parse(body: &[u8]) -> Result<SetSubscriptions, ApiError> {
    let form: SetSubscriptions = if body.iter().all(u8::is_ascii_whitespace) {
        SetSubscriptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|_| ApiError::bad_request("Failed to read the request body; expected JSON."))?
    };
    if form.client_id.is_empty() {
        return Err(invalid(
            "clientId",
            "validation_required",
            "Cannot be blank.",
        ));
    }
    if form.client_id.chars().count() > 255 {
        return Err(invalid(
            "clientId",
            "validation_length_out_of_range",
            "The length must be between 1 and 255.",
        ));
    }
    if form.subscriptions.len() > 1000 {
        return Err(invalid(
            "subscriptions",
            "validation_length_too_long",
            "The length must be no more than 1000.",
        ));
    }
    if let Some(i) = form
        .subscriptions
        .iter()
        .position(|s| s.chars().count() > 2500)
    {
        return Err(invalid(
            &format!("subscriptions.{i}"),
            "validation_length_too_long",
            "The length must be no more than 2500.",
        ));
    }
    Ok(form)
}

/// Sets the client's subscriptions (replacing them) and its auth.
#[utoipa::path(post, path = "/api/realtime", tag = "realtime",
    request_body = SetSubscriptions,
    responses(
        (status = 204, description = "Subscriptions set"),
        (status = 400, description = "Missing client id, too many or too long subscriptions", body = crate::error::ErrorBody),
        (status = 403, description = "The client was authenticated as someone else", body = crate::error::ErrorBody),
        (status = 404, description = "No such client (closed, or connected to another instance)", body = crate::error::ErrorBody),
    ))]
pub async fn set_subscriptions(
    state: web::Data<AppState>,
    caller: Authenticated,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let form = parse(&body)?;
    match state
        .realtime
        .subscribe(&form.client_id, caller.0, &form.subscriptions)
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(err @ SubscribeError::UnknownClient) => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            err.to_string(),
        )),
        Err(err @ SubscribeError::AuthChanged) => Err(ApiError::forbidden(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn body_checks_follow_pocketbase() {
        assert!(parse(b"").is_err());
        assert!(parse(b"{\"clientId\":\"\"}").is_err());
        assert!(parse(b"not json").is_err());
        let form = parse(br#"{"clientId":"abc","subscriptions":["posts/*"],"extra":1}"#).unwrap();
        assert_eq!(form.client_id, "abc");
        assert_eq!(form.subscriptions, ["posts/*"]);
        let many = serde_json::json!({"clientId": "abc", "subscriptions": vec!["a"; 1001]});
        assert!(parse(many.to_string().as_bytes()).is_err());
        let long = serde_json::json!({"clientId": "abc", "subscriptions": ["a".repeat(2501)]});
        let err = parse(long.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            err.body()["data"]["subscriptions"]["0"]["code"],
            Value::from("validation_length_too_long")
        );
    }
}
