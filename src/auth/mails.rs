//! Account mails — verification, password reset, email change: a single-purpose token
//! signed with the record's token key, put into a link, rendered from the operator's
//! templates, ready to be queued in the caller's transaction.

use std::sync::Arc;

use serde_json::json;

use super::tokens::{Claims, TokenKind, TokenSigner};
use super::AuthError;
use crate::collections::record::Record;
use crate::config::AuthLinks;
use crate::mail::{MailContext, MailKind, OutgoingMail};

#[derive(Clone)]
pub struct AccountMails {
    signer: TokenSigner,
    mail: Arc<MailContext>,
    links: AuthLinks,
}

impl AccountMails {
    pub fn new(signer: TokenSigner, mail: Arc<MailContext>, links: AuthLinks) -> Self {
        Self {
            signer,
            mail,
            links,
        }
    }

    /// A token of `kind` for `record`, living as long as its collection says. Email
    /// change tokens also carry the new address.
    pub fn token(&self, kind: TokenKind, record: &Record, new_email: Option<&str>) -> String {
        let options = &record.collection.options;
        let lifetime = match kind {
            TokenKind::Verification => options.verification_token.duration,
            TokenKind::PasswordReset => options.password_reset_token.duration,
            TokenKind::EmailChange => options.email_change_token.duration,
            TokenKind::Auth => options.auth_token.duration,
        };
        let claims = Claims {
            kind: kind.claim().to_string(),
            id: record.id().to_string(),
            collection_id: record.collection.id.clone(),
            exp: chrono::Utc::now().timestamp() + lifetime as i64,
            refreshable: None,
            sid: None,
            jti: None,
            email: Some(record.text("email").to_string()),
            new_email: new_email.map(str::to_string),
        };
        self.signer.sign(kind, record.text("tokenKey"), &claims)
    }

    fn link(&self, kind: TokenKind, token: &str) -> String {
        let pattern = match kind {
            TokenKind::PasswordReset => &self.links.password_reset,
            TokenKind::EmailChange => &self.links.email_change,
            _ => &self.links.verification,
        };
        let link = pattern.replace("{token}", token);
        if link.starts_with('/') {
            self.mail.link(&link)
        } else {
            link
        }
    }

    /// The mail that carries a fresh `kind` token for `record` to `to`.
    pub fn mail(
        &self,
        kind: TokenKind,
        record: &Record,
        to: &str,
        new_email: Option<&str>,
    ) -> Result<OutgoingMail, AuthError> {
        let mail_kind = match kind {
            TokenKind::PasswordReset => MailKind::PasswordReset,
            TokenKind::EmailChange => MailKind::EmailChange,
            _ => MailKind::Verification,
        };
        let token = self.token(kind, record, new_email);
        let name = record
            .values
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty());
        let content = self
            .mail
            .templates
            .render(
                mail_kind,
                &json!({
                    "app_name": self.mail.app_name,
                    "email": to,
                    "name": name,
                    "link": self.link(kind, &token),
                }),
            )
            .map_err(|err| AuthError::Mail(err.to_string()))?;
        Ok(OutgoingMail {
            to: to.to_string(),
            to_name: name.map(str::to_string),
            kind: mail_kind,
            content,
            headers: Vec::new(),
        })
    }

    /// Checks a link token of `kind` against its record: signature (with the current
    /// token key), expiry, and that the email it was issued for is still the record's.
    pub fn verify(&self, kind: TokenKind, record: &Record, token: &str) -> Option<Claims> {
        let claims = self.signer.verify(kind, record.text("tokenKey"), token)?;
        (claims.id == record.id()
            && claims.collection_id == record.collection.id
            && claims.email.as_deref() == Some(record.text("email")))
        .then_some(claims)
    }
}
