//! Newsletter campaigns: an administrator writes one (subject, text, HTML) and sends it
//! to every confirmed subscriber. Sending fans out into the outbox in one transaction —
//! one mail per subscriber, all or none — so a crash mid-campaign loses and duplicates
//! nothing; the mailer delivers them like any other mail.

use sea_orm::entity::prelude::*;
use sea_orm::{QueryFilter, QueryOrder, Set};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::newsletter::{self, state};
use super::outbox::{self, rfc3339, DeliveryCounts, OutgoingMail};
use super::{MailContext, MailKind, TemplateError};
use crate::actors::database::DbError;

/// Why a campaign request failed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("no such campaign")]
    NotFound,
    #[error("the campaign has already been sent")]
    AlreadySent,
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<DbErr> for CampaignError {
    fn from(err: DbErr) -> Self {
        Self::Database(DbError::Query(err))
    }
}

/// Campaign states.
pub mod status {
    pub const DRAFT: &str = "draft";
    pub const QUEUED: &str = "queued";
}

/// A validated new campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCampaign {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl NewCampaign {
    /// Checks each field; errors are (field, message) pairs.
    pub fn parse(
        subject: &str,
        text: &str,
        html: &str,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let subject = subject.trim();
        if subject.is_empty() {
            errors.push(("subject", "Cannot be blank.".to_string()));
        } else if subject.chars().count() > 200 {
            errors.push(("subject", "Must be at most 200 characters.".to_string()));
        }
        if text.trim().is_empty() {
            errors.push(("text", "Cannot be blank.".to_string()));
        }
        if html.trim().is_empty() {
            errors.push(("html", "Cannot be blank.".to_string()));
        }
        if errors.is_empty() {
            Ok(Self {
                subject: subject.to_string(),
                text: text.to_string(),
                html: html.to_string(),
            })
        } else {
            Err(errors)
        }
    }
}

/// The `newsletter_campaigns` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "newsletter_campaigns")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub subject: String,
        pub text_body: String,
        pub html_body: String,
        pub status: String,
        pub recipients: i32,
        pub created_at: i64,
        pub queued_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A campaign as the admin API shows it, with the state of its mails.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    pub id: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `draft` until sent, then `queued`.
    #[schema(example = "draft")]
    pub status: String,
    /// Confirmed subscribers the campaign was queued for.
    pub recipients: i32,
    pub created_at: String,
    pub queued_at: Option<String>,
    pub counts: DeliveryCounts,
}

impl Campaign {
    fn from_row(row: entity::Model, counts: DeliveryCounts) -> Self {
        Self {
            id: row.id,
            subject: row.subject,
            text: row.text_body,
            html: row.html_body,
            status: row.status,
            recipients: row.recipients,
            created_at: rfc3339(row.created_at),
            queued_at: row.queued_at.map(rfc3339),
            counts,
        }
    }
}

/// Stores a new draft campaign.
pub async fn create<C: ConnectionTrait>(
    conn: &C,
    campaign: &NewCampaign,
    now: i64,
) -> Result<Campaign, CampaignError> {
    let row = entity::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        subject: Set(campaign.subject.clone()),
        text_body: Set(campaign.text.clone()),
        html_body: Set(campaign.html.clone()),
        status: Set(status::DRAFT.to_string()),
        recipients: Set(0),
        created_at: Set(now),
        queued_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(Campaign::from_row(row, DeliveryCounts::default()))
}

/// A campaign with its delivery counts.
pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Campaign, CampaignError> {
    let row = entity::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(CampaignError::NotFound)?;
    let counts = outbox::campaign_counts(conn, id).await?;
    Ok(Campaign::from_row(row, counts))
}

/// Queues one mail per confirmed subscriber, each with its own one-click unsubscribe
/// link (body and `List-Unsubscribe` header). A campaign is sent once: the draft →
/// queued switch is a conditional update, so a second send finds nothing to switch.
pub async fn send<C: ConnectionTrait>(
    conn: &C,
    mail: &MailContext,
    id: &str,
    now: i64,
) -> Result<Campaign, CampaignError> {
    let switched = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(status::QUEUED))
        .col_expr(entity::Column::QueuedAt, Expr::value(now))
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Status.eq(status::DRAFT))
        .exec(conn)
        .await?;
    if switched.rows_affected == 0 {
        let exists = entity::Entity::find_by_id(id).one(conn).await?.is_some();
        return Err(if exists {
            CampaignError::AlreadySent
        } else {
            CampaignError::NotFound
        });
    }
    let campaign = entity::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(CampaignError::NotFound)?;
    let subscribers = newsletter::entity::Entity::find()
        .filter(newsletter::entity::Column::Status.eq(state::CONFIRMED))
        .order_by_asc(newsletter::entity::Column::CreatedAt)
        .all(conn)
        .await?;
    for subscriber in &subscribers {
        let unsubscribe_url = newsletter::unsubscribe_link(mail, &subscriber.unsubscribe_token);
        let content = mail.templates.render(
            MailKind::Campaign,
            &json!({
                "app_name": mail.app_name,
                "email": subscriber.email,
                "name": subscriber.name,
                "subject": campaign.subject,
                "text": campaign.text_body,
                "html": campaign.html_body,
                "unsubscribe_url": unsubscribe_url,
            }),
        )?;
        let outgoing = OutgoingMail {
            to: subscriber.email.clone(),
            to_name: subscriber.name.clone(),
            kind: MailKind::Campaign,
            content,
            headers: vec![
                // RFC 2369 and RFC 8058: mail clients show an unsubscribe button that
                // POSTs "List-Unsubscribe=One-Click" to the URL.
                ("List-Unsubscribe".into(), format!("<{unsubscribe_url}>")),
                (
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                ),
                (
                    "List-Id".into(),
                    format!(
                        "{} newsletter <newsletter.{}>",
                        mail.app_name,
                        list_host(mail)
                    ),
                ),
                ("Precedence".into(), "bulk".into()),
            ],
        };
        outbox::insert(conn, &outgoing, Some(id)).await?;
    }
    let recipients = i32::try_from(subscribers.len()).unwrap_or(i32::MAX);
    let mut update: entity::ActiveModel = campaign.into();
    update.recipients = Set(recipients);
    let row = update.update(conn).await?;
    let counts = outbox::campaign_counts(conn, id).await?;
    Ok(Campaign::from_row(row, counts))
}

/// The host of the public URL, for the List-Id header.
fn list_host(mail: &MailContext) -> String {
    url::Url::parse(&mail.link("/"))
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaigns_need_every_field() {
        let errors = NewCampaign::parse(" ", "", "<p>x</p>").unwrap_err();
        let fields: Vec<_> = errors.iter().map(|(field, _)| *field).collect();
        assert_eq!(fields, ["subject", "text"]);
        let ok = NewCampaign::parse(" News ", "text", "<p>x</p>").unwrap();
        assert_eq!(ok.subject, "News");
    }
}
