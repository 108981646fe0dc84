//! Accounts and authentication in PocketBase's dialect, with revocable sessions.
//!
//! [`service::AuthService`] holds the flows (register, password and OAuth2 login,
//! refresh, logout, sessions); the auth actor (`crate::actors::auth`) runs them, and
//! the HTTP handlers (`crate::http::auth`) only translate requests to its messages.

pub mod mails;
pub mod oauth;
pub mod passwords;
pub mod rate_limit;
pub mod service;
pub mod sessions;
pub mod tokens;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::actors::database::DbError;
use crate::actors::supervisor::Panicked;
use crate::collections::record::{Record, Viewer};
use crate::collections::validate::FieldError;
use passwords::HashError;

/// An authenticated caller: the auth record and the session its token belongs to.
#[derive(Debug, Clone)]
pub struct AuthIdentity {
    pub record: Record,
    pub session_id: String,
}

impl AuthIdentity {
    pub fn is_superuser(&self) -> bool {
        self.record.collection.is_superusers()
    }

    /// How this caller sees `record`.
    pub fn viewer_of(&self, record: &Record) -> Viewer {
        if self.is_superuser() {
            Viewer::Superuser
        } else if record.collection.id == self.record.collection.id
            && record.id() == self.record.id()
        {
            Viewer::Owner
        } else {
            Viewer::Other
        }
    }
}

/// Where a request came from, for session records and rate limits.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// `{token, record}` (and `meta` after OAuth2), PocketBase's auth answer.
#[derive(Debug, Clone, Serialize)]
pub struct AuthResponse {
    pub token: String,
    pub record: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Seconds the token lives, for the cookie.
    #[serde(skip)]
    pub lifetime: u64,
}

/// Why an auth request failed; mapped to the API error shape in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("validation failed")]
    Validation(Vec<(String, FieldError)>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the account's email is not verified")]
    Unverified,
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such auth collection")]
    NotFound,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("too many requests")]
    RateLimited(Duration),
    #[error("OAuth2 login failed: {0}")]
    OAuth(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Panicked(#[from] Panicked),
    #[error(transparent)]
    Record(#[from] crate::records::RecordError),
    #[error("mail: {0}")]
    Mail(String),
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Database(DbError::Query(err))
    }
}

impl AuthError {
    /// A single field error.
    pub fn field(name: &str, error: FieldError) -> Self {
        Self::Validation(vec![(name.to_string(), error)])
    }
}
