//! Newsletter subscriptions with double opt-in: subscribe (a confirmation mail with a
//! single-use link), confirm, and one-click unsubscribe. Each function runs inside the
//! caller's transaction, so a subscription and its confirmation mail commit together.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{QueryFilter, Set};
use serde_json::json;

use super::outbox::{self, OutgoingMail};
use super::{new_token, token_hash, MailContext, MailKind, TemplateError};
use crate::actors::database::DbError;
use crate::config::NewsletterSettings;
use crate::domain::email::Email;
use crate::queue::to_millis;
use crate::webhooks::{self, Event};

/// Why a newsletter request failed.
#[derive(Debug, thiserror::Error)]
pub enum NewsletterError {
    #[error("the link is invalid, expired or already used")]
    InvalidToken,
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<DbErr> for NewsletterError {
    fn from(err: DbErr) -> Self {
        Self::Database(DbError::Query(err))
    }
}

/// A subscriber's optional display name: trimmed, at most 100 characters, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberName(String);

impl SubscriberName {
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > 100 {
            return Err("Must be at most 100 characters.".into());
        }
        if text.chars().any(char::is_control) {
            return Err("Must be one line of text.".into());
        }
        Ok(Some(Self(text.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Subscription states.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const CONFIRMED: &str = "confirmed";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
}

/// The `newsletter_subscribers` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "newsletter_subscribers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub email: String,
        pub name: Option<String>,
        pub status: String,
        pub confirm_token_hash: Option<String>,
        pub confirm_expires_at: Option<i64>,
        pub confirmation_sent_at: Option<i64>,
        /// Kept in clear: every campaign mail carries it, and it can only unsubscribe.
        pub unsubscribe_token: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub confirmed_at: Option<i64>,
        pub unsubscribed_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Subscribes `email`: a new or lapsed subscriber gets a confirmation mail; a confirmed
/// one, or a pending one mailed less than `resend_after` ago, gets nothing. Returns the
/// queued mail's outbox id, if one was queued; callers answer the same either way so
/// that the endpoint does not reveal who is subscribed.
pub async fn subscribe<C: ConnectionTrait>(
    conn: &C,
    mail: &MailContext,
    settings: &NewsletterSettings,
    email: &Email,
    name: Option<&SubscriberName>,
    now: i64,
) -> Result<Option<String>, NewsletterError> {
    let name = name.map(|name| name.as_str().to_string());
    let token = new_token();
    let expires_at = now.saturating_add(to_millis(settings.confirm_ttl));
    // Insert first: a write as the first statement makes SQLite take its write lock at
    // once (a read first could not be upgraded if another writer committed meanwhile),
    // and two first subscriptions of one address cannot both insert.
    let inserted = entity::Entity::insert(entity::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        email: Set(email.as_str().to_string()),
        name: Set(name.clone()),
        status: Set(state::PENDING.to_string()),
        confirm_token_hash: Set(Some(token_hash(&token))),
        confirm_expires_at: Set(Some(expires_at)),
        confirmation_sent_at: Set(Some(now)),
        unsubscribe_token: Set(new_token()),
        created_at: Set(now),
        updated_at: Set(now),
        confirmed_at: Set(None),
        unsubscribed_at: Set(None),
    })
    .on_conflict(
        OnConflict::column(entity::Column::Email)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?
        == 1;
    let found = entity::Entity::find()
        .filter(entity::Column::Email.eq(email.as_str()))
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("subscriber {}", email.as_str())))?;
    let resend_after = to_millis(settings.resend_after);
    let subscriber = if inserted {
        found
    } else if found.status == state::CONFIRMED
        || (found.status == state::PENDING
            && found
                .confirmation_sent_at
                .is_some_and(|sent| now < sent.saturating_add(resend_after)))
    {
        return Ok(None);
    } else {
        let mut update: entity::ActiveModel = found.into();
        update.status = Set(state::PENDING.to_string());
        if name.is_some() {
            update.name = Set(name);
        }
        update.confirm_token_hash = Set(Some(token_hash(&token)));
        update.confirm_expires_at = Set(Some(expires_at));
        update.confirmation_sent_at = Set(Some(now));
        update.updated_at = Set(now);
        update.update(conn).await?
    };
    let content = mail.templates.render(
        MailKind::NewsletterConfirmation,
        &json!({
            "app_name": mail.app_name,
            "email": subscriber.email,
            "name": subscriber.name,
            "link": mail.link(&format!("/api/newsletter/confirm?token={token}")),
        }),
    )?;
    let id = outbox::enqueue(
        conn,
        &OutgoingMail {
            to: subscriber.email,
            to_name: subscriber.name,
            kind: MailKind::NewsletterConfirmation,
            content,
            headers: Vec::new(),
        },
    )
    .await?;
    Ok(Some(id))
}

/// Confirms the subscription a confirmation link's `token` belongs to; the link works
/// once, and only until it expires.
pub async fn confirm<C: ConnectionTrait>(
    conn: &C,
    token: &str,
    now: i64,
) -> Result<(), NewsletterError> {
    // Who the link belongs to, for the newsletter.subscribed event.
    let subscriber = entity::Entity::find()
        .filter(entity::Column::ConfirmTokenHash.eq(token_hash(token)))
        .one(conn)
        .await?;
    // One conditional update: the link is used up by whichever request changes the row.
    let confirmed = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(state::CONFIRMED))
        .col_expr(
            entity::Column::ConfirmTokenHash,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            entity::Column::ConfirmExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(entity::Column::ConfirmedAt, Expr::value(now))
        .col_expr(entity::Column::UpdatedAt, Expr::value(now))
        .filter(entity::Column::ConfirmTokenHash.eq(token_hash(token)))
        .filter(entity::Column::Status.eq(state::PENDING))
        .filter(entity::Column::ConfirmExpiresAt.gt(now))
        .exec(conn)
        .await?;
    if confirmed.rows_affected == 1 {
        if let Some(subscriber) = subscriber {
            webhooks::emit(
                conn,
                &Event::newsletter_subscribed(&subscriber.email, subscriber.name.as_deref()),
            )
            .await?;
        }
        Ok(())
    } else {
        Err(NewsletterError::InvalidToken)
    }
}

/// Unsubscribes the owner of `token` at once: no further campaign mail, including
/// campaign mail already queued for them. Using a link again changes nothing.
pub async fn unsubscribe<C: ConnectionTrait>(
    conn: &C,
    token: &str,
    now: i64,
) -> Result<(), NewsletterError> {
    entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(state::UNSUBSCRIBED))
        .col_expr(
            entity::Column::ConfirmTokenHash,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            entity::Column::ConfirmExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(entity::Column::UnsubscribedAt, Expr::value(now))
        .col_expr(entity::Column::UpdatedAt, Expr::value(now))
        .filter(entity::Column::UnsubscribeToken.eq(token))
        .filter(entity::Column::Status.ne(state::UNSUBSCRIBED))
        .exec(conn)
        .await?;
    let found = entity::Entity::find()
        .filter(entity::Column::UnsubscribeToken.eq(token))
        .one(conn)
        .await?
        .ok_or(NewsletterError::InvalidToken)?;
    outbox::cancel_campaign_mail_to(conn, &found.email, now).await?;
    Ok(())
}

/// The link a campaign mail carries to unsubscribe with one click.
pub fn unsubscribe_link(mail: &MailContext, token: &str) -> String {
    mail.link(&format!("/api/newsletter/unsubscribe?token={token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_optional_single_lines() {
        assert_eq!(SubscriberName::parse("  ").unwrap(), None);
        assert_eq!(
            SubscriberName::parse(" Ann ").unwrap().unwrap().as_str(),
            "Ann"
        );
        assert!(SubscriberName::parse("Ann\r\nBcc: x").is_err());
        assert!(SubscriberName::parse(&"x".repeat(101)).is_err());
    }
}
