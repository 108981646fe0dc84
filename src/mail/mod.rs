//! Outgoing mail: templates, the durable outbox, delivery, newsletters and campaigns.
//!
//! Code that sends mail renders it with [`MailTemplates::render`], queues it with
//! [`enqueue`] inside the transaction of the change that causes it, and after the commit
//! wakes the mailer actor ([`crate::actors::mailer::Mailer::wake`]). Nothing here talks
//! to a mail server from a request.

pub mod campaigns;
pub mod delivery;
pub mod idempotency;
pub mod message;
pub mod newsletter;
pub mod outbox;
pub mod templates;
pub mod transport;

use std::sync::Arc;

pub use outbox::{enqueue, OutgoingMail};
pub use templates::{MailKind, MailTemplates, RenderedMail, TemplateError};

/// What code that queues mail needs besides the database: templates, the product name
/// and the base URL of links.
#[derive(Debug, Clone)]
pub struct MailContext {
    pub templates: Arc<MailTemplates>,
    pub app_name: String,
    public_url: String,
}

impl MailContext {
    pub fn new(templates: Arc<MailTemplates>, app_name: String, public_url: &str) -> Self {
        Self {
            templates,
            app_name,
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    /// An absolute link to `path_and_query` (which starts with `/`) on the public URL.
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url)
    }
}

/// Random, URL-safe secret for links (256 bits, hex).
pub(crate) fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// How a token is stored: only its SHA-256, so a leaked table opens no links.
pub(crate) fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
