//! Auth endpoints under `/api/collections/{collection}/…` and the extractors that tell
//! handlers who is calling: [`Authenticated`] (maybe a guest), [`RequireAuth`] (401 for
//! guests) and [`RequireSuperuser`] (401 for guests, 403 for everyone else).
//!
//! A token arrives as `Authorization: <token>` (the SDKs' raw form), `Authorization:
//! Bearer <token>`, or the auth cookie. Cookie-authenticated requests that change state
//! must come from a trusted origin (CSRF protection); header tokens need no such check,
//! since browsers never attach them on their own.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::actors::auth::{
    AuthWithPassword, Authenticate, ConfirmEmailChange, ConfirmPasswordReset, ConfirmVerification,
    FinishOAuth, ListSessions, Refresh, RequestEmailChange, RequestPasswordReset,
    RequestVerification, Revoke, StartOAuth,
};
use crate::auth::service::OAuthLogin;
use crate::auth::{AuthError, AuthIdentity, AuthResponse, ClientInfo};
use crate::error::ApiError;
use crate::http::AppState;

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    Header,
    Cookie,
}

/// The caller: `Some` identity for a valid token, `None` for a guest (no token, or a
/// bad or expired one — PocketBase treats those as guests too).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Option<AuthIdentity>);

/// The caller, who must be authenticated (401 otherwise).
#[derive(Debug, Clone)]
pub struct RequireAuth(pub AuthIdentity);

/// The caller, who must be a superuser (401 for guests, 403 for others).
#[derive(Debug, Clone)]
pub struct RequireSuperuser(pub AuthIdentity);

type ExtractFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if let Some(cached) = req.extensions().get::<Authenticated>() {
                return Ok(cached.clone());
            }
            let resolved = resolve(&req).await?;
            req.extensions_mut().insert(resolved.clone());
            Ok(resolved)
        })
    }
}

async fn resolve(req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let state = state(req);
    let Some((token, source)) = token_of(req, &state) else {
        return Ok(Authenticated(None));
    };
    let identity = state
        .auth
        .pick()
        .send(Authenticate { token })
        .await
        .map_err(|_| ApiError::unavailable("The auth service is restarting; try again."))??;
    if identity.is_some()
        && source == TokenSource::Cookie
        && changes_state(req.method())
        && !origin_trusted(req, &state)
    {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "csrf_failed",
            "Cookie-authenticated changes must come from a trusted origin.",
        ));
    }
    Ok(Authenticated(identity))
}

impl FromRequest for RequireAuth {
    type Error = ApiError;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Authenticated::from_request(req, payload);
        Box::pin(async move {
            caller
                .await?
                .0
                .map(RequireAuth)
                .ok_or_else(ApiError::unauthorized)
        })
    }
}

impl FromRequest for RequireSuperuser {
    type Error = ApiError;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = RequireAuth::from_request(req, payload);
        Box::pin(async move {
            let RequireAuth(identity) = caller.await?;
            if identity.is_superuser() {
                Ok(RequireSuperuser(identity))
            } else {
                Err(ApiError::forbidden(
                    "Only superusers can perform this action.",
                ))
            }
        })
    }
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the app")
        .clone()
}

fn token_of(req: &HttpRequest, state: &AppState) -> Option<(String, TokenSource)> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim())
        .map(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .unwrap_or(value)
                .trim()
        })
        .filter(|token| !token.is_empty());
    if let Some(token) = header {
        return Some((token.to_string(), TokenSource::Header));
    }
    let cookie = &state.settings.auth.cookie;
    if !cookie.enabled {
        return None;
    }
    req.cookie(&cookie.name)
        .map(|c| c.value().to_string())
        .filter(|token| !token.is_empty())
        .map(|token| (token, TokenSource::Cookie))
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's `Origin` (or, without one, its `Referer`'s origin) must be this site
/// itself, `server.public_url`, or one of `auth.cookie.trusted_origins`.
fn origin_trusted(req: &HttpRequest, state: &AppState) -> bool {
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|referer| url::Url::parse(referer).ok())
                .map(|url| url.origin().ascii_serialization())
        });
    let Some(origin) = origin.filter(|o| o != "null") else {
        return false;
    };
    let scheme = if super::backend_worker::is_secure(req) {
        "https"
    } else {
        "http"
    };
    let own = format!("{scheme}://{}", req.app_config().host());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|host| format!("{scheme}://{host}"));
    let public = url::Url::parse(&state.settings.server.public_url)
        .map(|url| url.origin().ascii_serialization())
        .ok();
    origin == own
        || host.as_deref() == Some(origin.as_str())
        || public.as_deref() == Some(origin.as_str())
        || state.settings.auth.cookie.trusted_origins.contains(&origin)
}

/// The client's address (behind a trusted proxy, the forwarded one) and user agent,
/// for sessions and rate limits.
pub fn client_info(req: &HttpRequest) -> ClientInfo {
    let trusted = &state(req).trusted_proxies;
    ClientInfo {
        ip: req
            .peer_addr()
            .map(|a| trusted.client_ip(a.ip(), req.headers()).to_string())
            .unwrap_or_default(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    }
}

async fn ask<M>(state: &AppState, msg: M) -> Result<M::Result, ApiError>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    crate::actors::auth::AuthActor: actix::Handler<M>,
{
    state
        .auth
        .pick()
        .send(msg)
        .await
        .map_err(|_| ApiError::unavailable("The auth service is restarting; try again."))
}

/// The auth answer as JSON, with the token also as a cookie when cookies are on.
fn auth_answer(req: &HttpRequest, state: &AppState, answer: AuthResponse) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    let cookie = &state.settings.auth.cookie;
    if cookie.enabled {
        response.cookie(
            Cookie::build(cookie.name.clone(), answer.token.clone())
                .http_only(true)
                .same_site(SameSite::Lax)
                .secure(super::backend_worker::is_secure(req))
                .path("/")
                .max_age(actix_web::cookie::time::Duration::seconds(
                    answer.lifetime as i64,
                ))
                .finish(),
        );
    }
    response.json(answer)
}

fn cleared_cookie(state: &AppState) -> Option<Cookie<'static>> {
    let settings = &state.settings.auth.cookie;
    settings.enabled.then(|| {
        let mut cookie = Cookie::build(settings.name.clone(), "").path("/").finish();
        cookie.make_removal();
        cookie
    })
}

/// `auth-with-password` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordLogin {
    /// The email (or another identity field of the collection).
    #[serde(default)]
    identity: String,
    #[serde(default)]
    password: String,
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/api/collections/{collection}/auth-with-password", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = PasswordLogin,
    responses(
        (status = 200, description = "`{token, record}`; also sets the auth cookie"),
        (status = 400, description = "Missing fields or wrong credentials", body = crate::error::ErrorBody),
        (status = 403, description = "Unverified account (when configured)", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
    ))]
pub async fn auth_with_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<PasswordLogin>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let answer = ask(
        &state,
        AuthWithPassword {
            collection: collection.into_inner(),
            identity: body.identity,
            password: body.password,
            client: client_info(&req),
        },
    )
    .await??;
    Ok(auth_answer(&req, &state, answer))
}

/// A new token for the caller's session, with the record as it is now.
#[utoipa::path(post, path = "/api/collections/{collection}/auth-refresh", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    responses(
        (status = 200, description = "`{token, record}`"),
        (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
        (status = 403, description = "The token belongs to another collection", body = crate::error::ErrorBody),
    ))]
pub async fn auth_refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    caller: RequireAuth,
) -> Result<HttpResponse, ApiError> {
    let answer = ask(
        &state,
        Refresh {
            identity: caller.0,
            collection: collection.into_inner(),
        },
    )
    .await??;
    Ok(auth_answer(&req, &state, answer))
}

/// Login methods of the collection; starts an OAuth2 flow (state, PKCE) per provider.
#[utoipa::path(get, path = "/api/collections/{collection}/auth-methods", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    responses((status = 200, description = "`{password, oauth2, mfa, otp}` as PocketBase")))]
pub async fn auth_methods(
    state: web::Data<AppState>,
    collection: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let methods = ask(
        &state,
        StartOAuth {
            collection: collection.into_inner(),
        },
    )
    .await??;
    Ok(HttpResponse::Ok().json(methods))
}

/// Finishes an OAuth2 login: exchanges the code (PKCE) and logs in, links or creates
/// the account.
#[utoipa::path(post, path = "/api/collections/{collection}/auth-with-oauth2", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = OAuthLogin,
    responses(
        (status = 200, description = "`{token, record, meta}`"),
        (status = 400, description = "Bad request or the provider refused", body = crate::error::ErrorBody),
    ))]
pub async fn auth_with_oauth2(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<OAuthLogin>,
) -> Result<HttpResponse, ApiError> {
    let answer = ask(
        &state,
        FinishOAuth {
            collection: collection.into_inner(),
            login: body.into_inner(),
            client: client_info(&req),
        },
    )
    .await??;
    Ok(auth_answer(&req, &state, answer))
}

fn check_collection(caller: &AuthIdentity, collection: &str) -> Result<(), ApiError> {
    let own = &caller.record.collection;
    if own.name == collection || own.id == collection {
        Ok(())
    } else {
        Err(AuthError::Forbidden("The authorized record is not from this collection.").into())
    }
}

/// Ends the caller's session (Gatehouse's revocable sessions).
#[utoipa::path(post, path = "/api/collections/{collection}/logout", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    responses(
        (status = 204, description = "The token no longer authenticates"),
        (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    ))]
pub async fn logout(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    caller: RequireAuth,
) -> Result<HttpResponse, ApiError> {
    revoke(state, &collection, caller.0, false).await
}

/// Ends every session of the caller and rotates their token key.
#[utoipa::path(post, path = "/api/collections/{collection}/logout-all", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    responses(
        (status = 204, description = "No token of this account authenticates any more"),
        (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    ))]
pub async fn logout_all(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    caller: RequireAuth,
) -> Result<HttpResponse, ApiError> {
    revoke(state, &collection, caller.0, true).await
}

async fn revoke(
    state: web::Data<AppState>,
    collection: &str,
    identity: AuthIdentity,
    everywhere: bool,
) -> Result<HttpResponse, ApiError> {
    check_collection(&identity, collection)?;
    ask(
        &state,
        Revoke {
            identity,
            everywhere,
        },
    )
    .await??;
    let mut response = HttpResponse::NoContent();
    if let Some(cookie) = cleared_cookie(&state) {
        response.cookie(cookie);
    }
    Ok(response.finish())
}

/// The caller's live sessions, newest first; `current` marks this one.
#[utoipa::path(get, path = "/api/collections/{collection}/sessions", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    responses(
        (status = 200, description = "`{items: [{id, userAgent, ip, created, refreshed, expires, current}]}`"),
        (status = 401, description = "Missing or invalid token", body = crate::error::ErrorBody),
    ))]
pub async fn sessions(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    caller: RequireAuth,
) -> Result<HttpResponse, ApiError> {
    check_collection(&caller.0, &collection)?;
    let items = ask(&state, ListSessions { identity: caller.0 }).await??;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// `{email}` of `request-verification` and `request-password-reset`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailRequest {
    #[serde(default)]
    email: String,
}

/// `{token}` of `confirm-verification`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenConfirmation {
    #[serde(default)]
    token: String,
}

/// `{token, password, passwordConfirm}` of `confirm-password-reset`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordResetConfirmation {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

/// `{newEmail}` of `request-email-change`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChangeRequest {
    #[serde(default)]
    new_email: String,
}

/// `{token, password}` of `confirm-email-change`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailChangeConfirmation {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

fn required(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        Err(AuthError::field(field, crate::collections::validate::FieldError::required()).into())
    } else {
        Ok(())
    }
}

/// Mails a verification link to an unverified account; 204 for any address.
#[utoipa::path(post, path = "/api/collections/{collection}/request-verification", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = EmailRequest,
    responses(
        (status = 204, description = "Queued if the account exists and is unverified"),
        (status = 400, description = "Not an email address", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::error::ErrorBody),
    ))]
pub async fn request_verification(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<EmailRequest>,
) -> Result<HttpResponse, ApiError> {
    email_request(
        &req,
        &state,
        collection,
        body,
        |collection, email, client| RequestVerification {
            collection,
            email,
            client,
        },
    )
    .await
}

/// The two `request-*` endpoints that take an email: the same checks, another mail.
async fn email_request<M>(
    req: &HttpRequest,
    state: &AppState,
    collection: web::Path<String>,
    body: web::Json<EmailRequest>,
    message: impl FnOnce(String, String, ClientInfo) -> M,
) -> Result<HttpResponse, ApiError>
where
    M: actix::Message<Result = Result<(), AuthError>> + Send + 'static,
    crate::actors::auth::AuthActor: actix::Handler<M>,
{
    let email = body.into_inner().email;
    required("email", &email)?;
    ask(
        state,
        message(collection.into_inner(), email, client_info(req)),
    )
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Confirms an address with the token from the verification mail.
#[utoipa::path(post, path = "/api/collections/{collection}/confirm-verification", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = TokenConfirmation,
    responses(
        (status = 204, description = "Verified"),
        (status = 400, description = "Invalid or expired token", body = crate::error::ErrorBody),
    ))]
pub async fn confirm_verification(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<TokenConfirmation>,
) -> Result<HttpResponse, ApiError> {
    let token = body.into_inner().token;
    required("token", &token)?;
    ask(
        &state,
        ConfirmVerification {
            collection: collection.into_inner(),
            token,
        },
    )
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Mails a password reset link; 204 for any address.
#[utoipa::path(post, path = "/api/collections/{collection}/request-password-reset", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = EmailRequest,
    responses(
        (status = 204, description = "Queued if the account exists"),
        (status = 400, description = "Not an email address", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::error::ErrorBody),
    ))]
pub async fn request_password_reset(
    req: HttpRequest,
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<EmailRequest>,
) -> Result<HttpResponse, ApiError> {
    email_request(
        &req,
        &state,
        collection,
        body,
        |collection, email, client| RequestPasswordReset {
            collection,
            email,
            client,
        },
    )
    .await
}

/// Sets a new password with the token from the reset mail; ends every session.
#[utoipa::path(post, path = "/api/collections/{collection}/confirm-password-reset", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = PasswordResetConfirmation,
    responses(
        (status = 204, description = "Password changed"),
        (status = 400, description = "Invalid token or password", body = crate::error::ErrorBody),
    ))]
pub async fn confirm_password_reset(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<PasswordResetConfirmation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    required("token", &body.token)?;
    ask(
        &state,
        ConfirmPasswordReset {
            collection: collection.into_inner(),
            token: body.token,
            password: body.password,
            password_confirm: body.password_confirm,
        },
    )
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Mails a confirmation link to the caller's new address.
#[utoipa::path(post, path = "/api/collections/{collection}/request-email-change", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = EmailChangeRequest,
    responses(
        (status = 204, description = "Queued"),
        (status = 400, description = "Invalid or taken address", body = crate::error::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::error::ErrorBody),
    ))]
pub async fn request_email_change(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    caller: RequireAuth,
    body: web::Json<EmailChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    check_collection(&caller.0, &collection)?;
    let new_email = body.into_inner().new_email;
    required("newEmail", &new_email)?;
    ask(
        &state,
        RequestEmailChange {
            identity: caller.0,
            new_email,
        },
    )
    .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Moves an account to its new address with the token from the mail and the password.
#[utoipa::path(post, path = "/api/collections/{collection}/confirm-email-change", tag = "auth",
    params(("collection" = String, Path, description = "Auth collection name or id")),
    request_body = EmailChangeConfirmation,
    responses(
        (status = 204, description = "Email changed; every session ended"),
        (status = 400, description = "Invalid token or password", body = crate::error::ErrorBody),
    ))]
pub async fn confirm_email_change(
    state: web::Data<AppState>,
    collection: web::Path<String>,
    body: web::Json<EmailChangeConfirmation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    required("token", &body.token)?;
    required("password", &body.password)?;
    ask(
        &state,
        ConfirmEmailChange {
            collection: collection.into_inner(),
            token: body.token,
            password: body.password,
        },
    )
    .await??;
    Ok(HttpResponse::NoContent().finish())
}
