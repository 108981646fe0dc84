//! The public newsletter API: subscribe, confirm (the link in the confirmation mail) and
//! one-click unsubscribe (RFC 8058). Handlers only write through the database actor
//! and wake the mailer; the mail itself leaves later.

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::email::Email;
use crate::error::ApiError;
use crate::http::AppState;
use crate::mail::newsletter::{self, NewsletterError, SubscriberName};
use crate::mail::templates::escape_html;
use crate::queue::now_millis;

/// `POST /api/newsletter/subscribe` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubscribeRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    #[serde(default)]
    pub name: Option<String>,
}

/// A short confirmation.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewsletterMessage {
    #[schema(example = "Subscription confirmed.")]
    pub message: &'static str,
}

/// The token of a link from a newsletter mail.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TokenQuery {
    /// The token from the link.
    pub token: String,
}

const SUBSCRIBED: &str =
    "If the address can receive mail, a message to confirm the subscription is on its way.";

/// Subscribe to the newsletter (double opt-in).
///
/// Answers the same whether the address is new, pending, already confirmed or
/// unsubscribed, so the endpoint does not reveal who is subscribed. New and lapsed
/// subscribers get a confirmation mail with a single-use link; subscribing again never
/// creates a second subscription.
#[utoipa::path(post, path = "/api/newsletter/subscribe", tag = "newsletter",
    request_body = SubscribeRequest,
    responses(
        (status = 202, description = "Accepted; a confirmation mail is queued when needed", body = NewsletterMessage),
        (status = 400, description = "`validation_failed` (`data.email`, `data.name`) or `invalid_json`", body = crate::error::ErrorBody),
    ))]
pub async fn subscribe(
    state: web::Data<AppState>,
    body: web::Json<SubscribeRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email).ok_or("Must be a valid email address.");
    let name = SubscriberName::parse(body.name.as_deref().unwrap_or_default());
    let (email, name) = match (email, name) {
        (Ok(email), Ok(name)) => (email, name),
        (email, name) => {
            let mut error = ApiError::validation("Failed to subscribe.");
            if let Err(message) = email {
                error = error.with_field("email", "validation_invalid_email", message);
            }
            if let Err(message) = name {
                error = error.with_field("name", "validation_invalid_name", &message);
            }
            return Err(error);
        }
    };
    let (mail, settings) = (state.mail.clone(), state.settings.mail.newsletter.clone());
    let queued = state
        .db
        .transact::<_, NewsletterError, _>(move |txn| {
            Box::pin(async move {
                newsletter::subscribe(txn, &mail, &settings, &email, name.as_ref(), now_millis())
                    .await
            })
        })
        .await
        .map_err(api_error)?;
    if queued.is_some() {
        state.mailer.wake();
    }
    Ok(HttpResponse::Accepted().json(NewsletterMessage {
        message: SUBSCRIBED,
    }))
}

/// Confirm a subscription: the link of the confirmation mail.
///
/// The link works once and until it expires (`mail.newsletter.confirm_ttl`). Browsers
/// (`Accept: text/html`) get a small page, other clients JSON.
#[utoipa::path(get, path = "/api/newsletter/confirm", tag = "newsletter",
    params(TokenQuery),
    responses(
        (status = 200, description = "The subscription is confirmed", body = NewsletterMessage),
        (status = 400, description = "`invalid_token` (unknown, used or expired) or `invalid_query`", body = crate::error::ErrorBody),
    ))]
pub async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = query.into_inner().token;
    state
        .db
        .transact::<_, NewsletterError, _>(move |txn| {
            Box::pin(async move { newsletter::confirm(txn, &token, now_millis()).await })
        })
        .await
        .map_err(api_error)?;
    Ok(answer(
        &request,
        "Subscription confirmed.",
        "Your subscription is confirmed. Thank you!",
    ))
}

/// The page behind the unsubscribe link of a campaign mail.
///
/// It does not unsubscribe by itself — link scanners follow links in mail — but shows
/// a button that sends the `POST` below.
#[utoipa::path(get, path = "/api/newsletter/unsubscribe", tag = "newsletter",
    params(TokenQuery),
    responses((status = 200, description = "An HTML page with an unsubscribe button", content_type = "text/html")))]
pub async fn unsubscribe_page(query: web::Query<TokenQuery>) -> HttpResponse {
    let token = escape_html(&query.token);
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page(
            "Unsubscribe",
            &format!(
                "<p>Stop receiving the newsletter?</p>\
                 <form method=\"post\" action=\"/api/newsletter/unsubscribe?token={token}\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>"
            ),
        ))
}

/// Unsubscribe at once (RFC 8058 one-click: mail clients `POST`
/// `List-Unsubscribe=One-Click` to the `List-Unsubscribe` URL).
///
/// Campaign mail already queued for the address is withdrawn. Repeating it is harmless.
#[utoipa::path(post, path = "/api/newsletter/unsubscribe", tag = "newsletter",
    params(TokenQuery),
    responses(
        (status = 200, description = "Unsubscribed", body = NewsletterMessage),
        (status = 400, description = "`invalid_token` or `invalid_query`", body = crate::error::ErrorBody),
    ))]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = query.into_inner().token;
    state
        .db
        .transact::<_, NewsletterError, _>(move |txn| {
            Box::pin(async move { newsletter::unsubscribe(txn, &token, now_millis()).await })
        })
        .await
        .map_err(api_error)?;
    Ok(answer(
        &request,
        "Unsubscribed.",
        "You are unsubscribed and will get no more newsletters.",
    ))
}

fn api_error(err: NewsletterError) -> ApiError {
    match err {
        NewsletterError::InvalidToken => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "The link is invalid, expired or has already been used.",
        ),
        NewsletterError::Template(err) => super::internal(&err),
        NewsletterError::Database(err) => err.into(),
    }
}

/// JSON for API clients, a small page for people following a link in a browser.
fn answer(request: &HttpRequest, message: &'static str, sentence: &str) -> HttpResponse {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        HttpResponse::Ok()
            .content_type(ContentType::html())
            .body(page(message, &format!("<p>{}</p>", escape_html(sentence))))
    } else {
        HttpResponse::Ok().json(NewsletterMessage { message })
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
         {body}</body></html>",
        escape_html(title)
    )
}
