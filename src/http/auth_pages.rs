//! The small pages the links in account mails open by default
//! (`auth.links.*`): plain HTML forms, no JavaScript, that post the token back and
//! show what happened. Sites with a front end of their own point the links there
//! instead and call the `confirm-*` API themselves.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::AppState;
use crate::actors::auth::{ConfirmEmailChange, ConfirmPasswordReset, ConfirmVerification};
use crate::auth::tokens;
use crate::auth::AuthError;
use crate::error::ApiError;

/// What a link page does with its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Verification,
    PasswordReset,
    EmailChange,
}

impl Purpose {
    fn title(self) -> &'static str {
        match self {
            Self::Verification => "Confirm your email address",
            Self::PasswordReset => "Choose a new password",
            Self::EmailChange => "Confirm your new email address",
        }
    }

    fn fields(self) -> &'static str {
        match self {
            Self::Verification => "",
            Self::PasswordReset => {
                r#"<label>New password <input type="password" name="password" autocomplete="new-password" required minlength="8"></label>
<label>Repeat it <input type="password" name="passwordConfirm" autocomplete="new-password" required minlength="8"></label>"#
            }
            Self::EmailChange => {
                r#"<label>Your password <input type="password" name="password" autocomplete="current-password" required></label>"#
            }
        }
    }

    fn button(self) -> &'static str {
        match self {
            Self::Verification => "Confirm my address",
            Self::PasswordReset => "Set the new password",
            Self::EmailChange => "Confirm the change",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Verification => "Your email address is confirmed. You can close this page.",
            Self::PasswordReset => "Your password was changed and every session was signed out. You can sign in with the new password now.",
            Self::EmailChange => "Your email address was changed and every session was signed out. Sign in with the new address.",
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page; `body` is trusted HTML built in this file, with every value escaped.
fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // The token is in the URL: never cache the page or send it on as a referrer.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ))
        .body(format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:30rem;margin:4rem auto;padding:0 1rem;color:#1d2433}}label{{display:block;margin:.75rem 0}}input{{display:block;width:100%;padding:.4rem;margin-top:.25rem}}button{{padding:.5rem 1rem;margin-top:.5rem}}.error{{color:#a51d2d}}</style>
</head><body><main><h1>{title}</h1>
{body}
</main></body></html>"#,
            title = escape(title),
        ))
}

fn invalid_link() -> HttpResponse {
    page(
        actix_web::http::StatusCode::BAD_REQUEST,
        "This link does not work",
        "<p class=\"error\">The link is invalid, was already used, or has expired. Ask for a new mail and use the link in it.</p>",
    )
}

/// The collection a token was issued for, read (unverified) from its claims; the
/// auth actor checks the token itself.
fn collection_of(token: &str) -> Option<String> {
    tokens::peek(token).map(|claims| claims.collection_id)
}

fn form(purpose: Purpose, errors: &[String]) -> HttpResponse {
    let messages: String = errors
        .iter()
        .map(|error| format!("<p class=\"error\">{}</p>", escape(error)))
        .collect();
    page(
        if errors.is_empty() {
            actix_web::http::StatusCode::OK
        } else {
            actix_web::http::StatusCode::BAD_REQUEST
        },
        purpose.title(),
        &format!(
            "{messages}<form method=\"post\">{}\n<button type=\"submit\">{}</button></form>",
            purpose.fields(),
            purpose.button()
        ),
    )
}

async fn show(purpose: Purpose, token: String) -> HttpResponse {
    match collection_of(&token) {
        Some(_) => form(purpose, &[]),
        None => invalid_link(),
    }
}

async fn submit(
    state: web::Data<AppState>,
    purpose: Purpose,
    token: String,
    fields: HashMap<String, String>,
) -> HttpResponse {
    let Some(collection) = collection_of(&token) else {
        return invalid_link();
    };
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let auth = state.auth.pick();
    let result = match purpose {
        Purpose::Verification => auth.send(ConfirmVerification { collection, token }).await,
        Purpose::PasswordReset => {
            auth.send(ConfirmPasswordReset {
                collection,
                token,
                password: field("password"),
                password_confirm: field("passwordConfirm"),
            })
            .await
        }
        Purpose::EmailChange => {
            auth.send(ConfirmEmailChange {
                collection,
                token,
                password: field("password"),
            })
            .await
        }
    };
    match result {
        Ok(Ok(())) => page(
            actix_web::http::StatusCode::OK,
            purpose.title(),
            &format!("<p>{}</p>", escape(purpose.done())),
        ),
        Ok(Err(AuthError::InvalidToken)) => invalid_link(),
        Ok(Err(AuthError::Validation(errors))) => {
            let messages: Vec<String> = errors
                .iter()
                .map(|(field, error)| format!("{}: {}", label(field), error.message))
                .collect();
            form(purpose, &messages)
        }
        Ok(Err(other)) => {
            let api = ApiError::from(other);
            page(
                api.status,
                "Something went wrong",
                &format!("<p class=\"error\">{}</p>", escape(&api.message)),
            )
        }
        Err(_) => page(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "<p class=\"error\">The service is restarting. Please try again in a moment.</p>",
        ),
    }
}

fn label(field: &str) -> &str {
    match field {
        "passwordConfirm" => "Repeated password",
        "password" => "Password",
        "newEmail" => "New email",
        other => other,
    }
}

pub async fn verification_page(token: web::Path<String>) -> HttpResponse {
    show(Purpose::Verification, token.into_inner()).await
}

pub async fn verification_submit(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    submit(
        state,
        Purpose::Verification,
        token.into_inner(),
        form.into_inner(),
    )
    .await
}

pub async fn password_reset_page(token: web::Path<String>) -> HttpResponse {
    show(Purpose::PasswordReset, token.into_inner()).await
}

pub async fn password_reset_submit(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    submit(
        state,
        Purpose::PasswordReset,
        token.into_inner(),
        form.into_inner(),
    )
    .await
}

pub async fn email_change_page(token: web::Path<String>) -> HttpResponse {
    show(Purpose::EmailChange, token.into_inner()).await
}

pub async fn email_change_submit(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    submit(
        state,
        Purpose::EmailChange,
        token.into_inner(),
        form.into_inner(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<b a=\"x\">&'</b>"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;&lt;/b&gt;"
        );
    }
}
