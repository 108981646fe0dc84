//! The outbox: mails waiting to be delivered, written in the transaction of the change
//! that causes them and delivered by the mailer actor through the shared [`Queue`].

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    Set,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::templates::{MailKind, RenderedMail};
use crate::queue::{now_millis, Listing, Queue, QueueRow, RetryPolicy, Status};

/// The outbox table's name, as the queue knows it.
pub const TABLE: &str = "outbox";

/// The delivery queue of the outbox table.
pub fn queue(policy: RetryPolicy) -> Queue {
    Queue::new(TABLE, policy)
}

/// A mail to queue: recipient, kind, rendered content and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub to: String,
    pub to_name: Option<String>,
    pub kind: MailKind,
    pub content: RenderedMail,
    /// Further header lines, e.g. `List-Unsubscribe`; the standard ones (From, To,
    /// Subject, Date, Message-ID, MIME) are set by the mailer and cannot be given here.
    pub headers: Vec<(String, String)>,
}

/// Headers the mailer writes itself.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "sender",
    "reply-to",
];

/// Queues a mail inside the caller's transaction; returns the outbox id.
///
/// Fails, writing nothing, when the recipient is not a mail address or a header is
/// malformed or reserved: such a mail could never be delivered.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, mail: &OutgoingMail) -> Result<String, DbErr> {
    insert(conn, mail, None).await
}

/// [`enqueue`], marking the mail as part of a newsletter campaign.
pub(crate) async fn insert<C: ConnectionTrait>(
    conn: &C,
    mail: &OutgoingMail,
    campaign_id: Option<&str>,
) -> Result<String, DbErr> {
    check(mail).map_err(|reason| DbErr::Custom(format!("cannot queue mail: {reason}")))?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_millis();
    entity::ActiveModel {
        id: Set(id.clone()),
        kind: Set(mail.kind.as_str().to_string()),
        recipient: Set(mail.to.clone()),
        recipient_name: Set(mail.to_name.clone()),
        subject: Set(mail.content.subject.clone()),
        text_body: Set(mail.content.text.clone()),
        html_body: Set(mail.content.html.clone()),
        headers: Set(serde_json::to_string(&mail.headers).expect("headers serialize")),
        campaign_id: Set(campaign_id.map(str::to_string)),
        status: Set(Status::Pending.as_str().to_string()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        claimed_by: Set(None),
        claimed_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(id)
}

fn check(mail: &OutgoingMail) -> Result<(), String> {
    mail.to
        .parse::<lettre::Address>()
        .map_err(|err| format!("recipient {:?}: {err}", mail.to))?;
    for (name, value) in &mail.headers {
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid_name {
            return Err(format!("header name {name:?} is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("header {name} is set by the mailer"));
        }
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name} contains a line break"));
        }
    }
    Ok(())
}

/// The outbox table (sea-orm entity).
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub recipient: String,
        pub recipient_name: Option<String>,
        pub subject: String,
        pub text_body: String,
        pub html_body: String,
        /// JSON array of `[name, value]` pairs.
        pub headers: String,
        pub campaign_id: Option<String>,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: i64,
        pub claimed_by: Option<String>,
        pub claimed_until: Option<i64>,
        pub last_error: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        pub finished_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A claimed outbox row, ready to be turned into a message.
pub type OutboxMail = entity::Model;

impl QueueRow for OutboxMail {
    fn id(&self) -> &str {
        &self.id
    }

    fn attempts(&self) -> u32 {
        u32::try_from(self.attempts).unwrap_or(0)
    }
}

impl OutboxMail {
    /// The extra headers stored with the mail.
    pub fn extra_headers(&self) -> Result<Vec<(String, String)>, serde_json::Error> {
        serde_json::from_str(&self.headers)
    }
}

/// An outbox row as the admin API shows it (bodies left out).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    pub id: String,
    #[schema(value_type = String, example = "verification")]
    pub kind: String,
    pub to: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub campaign_id: Option<String>,
    #[schema(value_type = String, example = "pending")]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// RFC 3339 times.
    pub next_attempt_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// RFC 3339 text of a queue time (milliseconds since the epoch).
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<entity::Model> for OutboxEntry {
    fn from(row: entity::Model) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            to: row.recipient,
            to_name: row.recipient_name,
            subject: row.subject,
            campaign_id: row.campaign_id,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: rfc3339(row.next_attempt_at),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            finished_at: row.finished_at.map(rfc3339),
        }
    }
}

/// One page of outbox entries, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxPage {
    pub page: u64,
    pub per_page: u64,
    pub total_items: u64,
    pub total_pages: u64,
    pub items: Vec<OutboxEntry>,
}

/// Lists one page of the outbox.
pub async fn list<C: ConnectionTrait>(conn: &C, listing: Listing) -> Result<OutboxPage, DbErr> {
    let (total_items, rows) = listing
        .fetch(
            conn,
            entity::Entity::find(),
            entity::Column::Status,
            entity::Column::CreatedAt,
            entity::Column::Id,
        )
        .await?;
    Ok(OutboxPage {
        page: listing.page,
        per_page: listing.per_page,
        total_items,
        total_pages: listing.total_pages(total_items),
        items: rows.into_iter().map(OutboxEntry::from).collect(),
    })
}

/// One outbox row.
pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<OutboxEntry>, DbErr> {
    Ok(entity::Entity::find_by_id(id)
        .one(conn)
        .await?
        .map(OutboxEntry::from))
}

/// Withdraws the not yet sent campaign mails to `recipient`, including claimed ones: a
/// claimed mail not yet handed to the server is not sent, and of one being sent right
/// now, a failed attempt is not retried and a successful one leaves the row withdrawn.
pub(crate) async fn cancel_campaign_mail_to<C: ConnectionTrait>(
    conn: &C,
    recipient: &str,
    now: i64,
) -> Result<u64, DbErr> {
    let result = entity::Entity::update_many()
        .col_expr(
            entity::Column::Status,
            sea_orm::sea_query::Expr::value(Status::Cancelled.as_str()),
        )
        .col_expr(
            entity::Column::LastError,
            sea_orm::sea_query::Expr::value("the recipient unsubscribed"),
        )
        .col_expr(
            entity::Column::FinishedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .col_expr(
            entity::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(entity::Column::Kind.eq(MailKind::Campaign.as_str()))
        .filter(entity::Column::Recipient.eq(recipient))
        .filter(entity::Column::Status.is_in([Status::Pending.as_str(), Status::Sending.as_str()]))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// How many mails of a campaign are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryCounts {
    /// Pending or being sent.
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    /// Withdrawn because the recipient unsubscribed first.
    pub cancelled: u64,
}

/// Counts a campaign's mails by state.
pub async fn campaign_counts<C: ConnectionTrait>(
    conn: &C,
    campaign_id: &str,
) -> Result<DeliveryCounts, DbErr> {
    let rows: Vec<(String, i64)> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Status)
        .column_as(entity::Column::Id.count(), "n")
        .filter(entity::Column::CampaignId.eq(campaign_id))
        .group_by(entity::Column::Status)
        .into_tuple()
        .all(conn)
        .await?;
    let mut counts = DeliveryCounts::default();
    for (status, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        match Status::parse(&status) {
            Some(Status::Pending | Status::Sending) => counts.queued += n,
            Some(Status::Sent) => counts.sent += n,
            Some(Status::Failed) => counts.failed += n,
            Some(Status::Cancelled) => counts.cancelled += n,
            None => {}
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> OutgoingMail {
        OutgoingMail {
            to: "ann@example.com".into(),
            to_name: None,
            kind: MailKind::Verification,
            content: RenderedMail {
                subject: "s".into(),
                text: "t".into(),
                html: "h".into(),
            },
            headers: vec![],
        }
    }

    #[test]
    fn mails_that_could_never_be_delivered_are_refused() {
        assert!(check(&mail()).is_ok());
        let bad_recipient = OutgoingMail {
            to: "not-an-address".into(),
            ..mail()
        };
        assert!(check(&bad_recipient).unwrap_err().contains("recipient"));
        let injected = OutgoingMail {
            headers: vec![("X-Tag".into(), "a\r\nBcc: victim@example.com".into())],
            ..mail()
        };
        assert!(check(&injected).unwrap_err().contains("line break"));
        let reserved = OutgoingMail {
            headers: vec![("Subject".into(), "other".into())],
            ..mail()
        };
        assert!(check(&reserved).unwrap_err().contains("set by the mailer"));
        let bad_name = OutgoingMail {
            headers: vec![("X Bad".into(), "v".into())],
            ..mail()
        };
        assert!(check(&bad_name).unwrap_err().contains("header name"));
    }
}
