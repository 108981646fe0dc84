//! The one JSON error shape of every API response, PocketBase's with two additions:
//!
//! `{"status":400,"message":"…","data":{"field":{"code":"…","message":"…"}},"code":"validation_failed","requestId":"…"}`
//!
//! `data` holds per-field errors (an empty object otherwise) and `code` is a stable,
//! machine-readable reason. `requestId` echoes the response's `X-Request-Id`.

use std::fmt;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{error::JsonPayloadError, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::actors::database::DbError;
use crate::auth::AuthError;
use crate::records::batch::{BatchError, ItemFailure};
use crate::records::RecordError;

tokio::task_local! {
    /// The id of the request being handled, set by the request middleware so that
    /// errors can carry it without threading it through every handler.
    pub static REQUEST_ID: String;
}

/// The JSON body of every API error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    #[schema(example = 400)]
    status: u16,
    #[schema(example = "Failed to create record.")]
    message: &'a str,
    /// Per-field errors, `{"field": {"code": "validation_required", "message": "…"}}`.
    #[schema(value_type = Object)]
    data: &'a Map<String, Value>,
    /// A stable, machine-readable reason.
    #[schema(example = "validation_failed")]
    code: &'a str,
    /// The request's `X-Request-Id`.
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// An API error: status, stable code, human message and per-field details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Boxed to keep `Result<_, ApiError>` small on the happy path.
    pub data: Box<Map<String, Value>>,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: Box::default(),
            retry_after: None,
        }
    }

    /// Adds a field error (`data.<field> = {code, message}`); a dotted path such as
    /// `fields.2.name` nests, as PocketBase nests errors of list items.
    pub fn with_field(mut self, field: &str, code: &str, message: &str) -> Self {
        let mut parts: Vec<&str> = field.split('.').collect();
        let leaf = parts.pop().unwrap_or(field);
        let mut map: &mut Map<String, Value> = &mut self.data;
        for part in parts {
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            map = entry.as_object_mut().expect("just made an object");
        }
        map.insert(
            leaf.to_string(),
            serde_json::json!({ "code": code, "message": message }),
        );
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 400 whose details are in `data`, one entry per field.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested resource wasn't found.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The request method is not supported by this resource.",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong while processing your request.",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
    }

    /// PocketBase's 401 for routes that need an authenticated caller.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The request requires valid record authorization token.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The JSON body, with the current request id when there is one.
    pub fn body(&self) -> Value {
        serde_json::to_value(ErrorBody {
            status: self.status.as_u16(),
            message: &self.message,
            data: &self.data,
            code: self.code,
            request_id: REQUEST_ID.try_with(Clone::clone).ok(),
        })
        .expect("error bodies serialize")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status).json(self.body());
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::ActorGone | DbError::NotReady(_) => {
                tracing::error!(%err, "database unavailable");
                Self::unavailable("The database is unavailable; try again shortly.")
            }
            err if err.is_overload() => {
                tracing::warn!(%err, "database too busy");
                Self {
                    retry_after: Some(Duration::from_secs(1)),
                    ..Self::unavailable("The database is too busy; try again shortly.")
                }
            }
            DbError::Query(_)
            | DbError::Commit(_)
            | DbError::Panicked(_)
            | DbError::NestedWrite => {
                tracing::error!(%err, "database work failed");
                Self::internal()
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Validation(fields) => fields.into_iter().fold(
                Self::validation("An error occurred while validating the submitted data."),
                |api, (field, error)| api.with_field(&field, error.code, &error.message),
            ),
            AuthError::InvalidCredentials => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_credentials",
                "Failed to authenticate.",
            ),
            AuthError::Unverified => Self::new(
                StatusCode::FORBIDDEN,
                "unverified",
                "The account's email address is not verified yet.",
            ),
            AuthError::Unauthorized => Self::unauthorized(),
            AuthError::Forbidden(message) => Self::forbidden(message),
            AuthError::NotFound => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Missing or invalid collection context.",
            ),
            AuthError::InvalidToken => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                "An error occurred while validating the submitted data.",
            )
            .with_field(
                "token",
                "validation_invalid_token",
                "Invalid or expired token.",
            ),
            AuthError::RateLimited(wait) => Self {
                retry_after: Some(wait),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests; try again later.",
                )
            },
            AuthError::OAuth(reason) => {
                tracing::info!(%reason, "OAuth2 login failed");
                Self::new(
                    StatusCode::BAD_REQUEST,
                    "oauth2_failed",
                    format!("OAuth2 login failed: {reason}."),
                )
            }
            AuthError::Database(err) => err.into(),
            AuthError::Record(err) => err.into(),
            AuthError::Hash(_) | AuthError::Panicked(_) | AuthError::Mail(_) => {
                tracing::error!(%err, "auth failed");
                Self::internal()
            }
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::MissingCollection => {
                Self::new(StatusCode::NOT_FOUND, "not_found", "Missing collection context.")
            }
            RecordError::NotFound => Self::not_found(),
            RecordError::SuperusersOnly => Self::forbidden("Only superusers can perform this action."),
            RecordError::Forbidden(message) => Self::forbidden(message),
            RecordError::BadParam { param, reason } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("Something went wrong while processing your request. Invalid {param}: {reason}"),
            ),
            RecordError::Validation { message, fields } => fields.into_iter().fold(
                Self::validation(message),
                |api, (field, error)| api.with_field(&field, error.code, &error.message),
            ),
            RecordError::CreateRuleFailed => {
                Self::new(StatusCode::BAD_REQUEST, "rule_failed", "Failed to create record.")
            }
            RecordError::RequiredRelation => Self::new(
                StatusCode::BAD_REQUEST,
                "relation_required",
                "Failed to delete record. Make sure that the record is not part of a required relation reference.",
            ),
            RecordError::Database(err) => err.into(),
            RecordError::BrokenRule { .. } | RecordError::Hash(_) => {
                tracing::error!(%err, "records request failed");
                Self::internal()
            }
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(err: BatchError) -> Self {
        let invalid = || Self::validation("Invalid batch request data.");
        match err {
            BatchError::Invalid(fields) => {
                fields.into_iter().fold(invalid(), |api, (field, error)| {
                    api.with_field(&field, error.code, &error.message)
                })
            }
            BatchError::TooMany { max } => {
                let mut api = invalid();
                api.data.insert(
                    "requests".into(),
                    serde_json::json!({
                        "code": "validation_length_too_long",
                        "message": format!("The length must be no more than {max}."),
                        "params": {"max": max, "min": 0},
                    }),
                );
                api
            }
            BatchError::Item { index, failure } => {
                let response = match failure {
                    ItemFailure::Unsupported => Self::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "Something went wrong while processing your request.",
                    ),
                    ItemFailure::Record(err) => err.into(),
                };
                let mut api = Self::new(
                    StatusCode::BAD_REQUEST,
                    "batch_failed",
                    "Batch transaction failed.",
                );
                api.data.insert(
                    "requests".into(),
                    serde_json::json!({ index.to_string(): {
                        "code": "batch_request_failed",
                        "message": "Batch request failed.",
                        "response": response.body(),
                    }}),
                );
                api
            }
            BatchError::Timeout(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "batch_timeout",
                "Batch transaction failed.",
            ),
            BatchError::Auth(err) => err.into(),
            BatchError::Database(err) => err.into(),
        }
    }
}

/// Shapes errors of actix-web's JSON extractor like every other API error.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(*limit),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The request body must be JSON (Content-Type: application/json).",
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "An error occurred while loading the submitted data.",
        ),
    };
    api.into()
}

/// Shapes errors of actix-web's query-string extractor like every other API error.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("Invalid query parameters: {err}."),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_pocketbase_keys_plus_code() {
        let body = ApiError::validation("Failed to create record.")
            .with_field("title", "validation_required", "Cannot be blank.")
            .body();
        assert_eq!(body["status"], 400);
        assert_eq!(body["message"], "Failed to create record.");
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["data"]["title"]["code"], "validation_required");
        assert!(body.get("requestId").is_none());
    }

    #[test]
    fn dotted_field_paths_nest() {
        let body = ApiError::validation("x")
            .with_field("fields.1.name", "validation_required", "Cannot be blank.")
            .with_field("fields.1.type", "validation_invalid_value", "Bad.")
            .body();
        assert_eq!(
            body["data"]["fields"]["1"]["name"]["code"],
            "validation_required"
        );
        assert_eq!(
            body["data"]["fields"]["1"]["type"]["code"],
            "validation_invalid_value"
        );
    }

    #[test]
    fn data_is_an_empty_object_without_field_errors() {
        assert_eq!(ApiError::not_found().body()["data"], serde_json::json!({}));
    }

    #[actix_web::test]
    async fn request_id_is_included_inside_a_request_scope() {
        let body = REQUEST_ID
            .scope("abc".to_string(), async { ApiError::internal().body() })
            .await;
        assert_eq!(body["requestId"], "abc");
    }
}
