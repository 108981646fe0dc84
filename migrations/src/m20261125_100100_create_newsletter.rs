//! Newsletter subscribers (double opt-in), campaigns, and remembered idempotency keys.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NewsletterSubscribers {
    Table,
    Id,
    Email,
    Name,
    Status,
    ConfirmTokenHash,
    ConfirmExpiresAt,
    ConfirmationSentAt,
    UnsubscribeToken,
    CreatedAt,
    UpdatedAt,
    ConfirmedAt,
    UnsubscribedAt,
}

#[derive(DeriveIden)]
enum NewsletterCampaigns {
    Table,
    Id,
    Subject,
    TextBody,
    HtmlBody,
    Status,
    Recipients,
    CreatedAt,
    QueuedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    Key,
    RequestHash,
    ResponseStatus,
    ResponseBody,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use NewsletterSubscribers as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(
                        ColumnDef::new(S::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(S::Email)
                            .string_len(320)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(S::Name).string_len(200).null())
                    .col(ColumnDef::new(S::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(S::ConfirmTokenHash)
                            .string_len(64)
                            .null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(S::ConfirmExpiresAt).big_integer().null())
                    .col(ColumnDef::new(S::ConfirmationSentAt).big_integer().null())
                    .col(
                        ColumnDef::new(S::UnsubscribeToken)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(S::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(S::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(S::ConfirmedAt).big_integer().null())
                    .col(ColumnDef::new(S::UnsubscribedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_newsletter_subscribers_status")
                    .table(S::Table)
                    .col(S::Status)
                    .to_owned(),
            )
            .await?;

        use NewsletterCampaigns as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(
                        ColumnDef::new(C::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(C::Subject).text().not_null())
                    .col(ColumnDef::new(C::TextBody).text().not_null())
                    .col(ColumnDef::new(C::HtmlBody).text().not_null())
                    .col(ColumnDef::new(C::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(C::Recipients)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(C::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(C::QueuedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;

        use IdempotencyKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .col(ColumnDef::new(K::Scope).string_len(64).not_null())
                    .col(ColumnDef::new(K::Key).string_len(255).not_null())
                    .col(ColumnDef::new(K::RequestHash).string_len(64).not_null())
                    .col(ColumnDef::new(K::ResponseStatus).integer().not_null())
                    .col(ColumnDef::new(K::ResponseBody).text().not_null())
                    .col(ColumnDef::new(K::CreatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(K::Scope).col(K::Key))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            NewsletterCampaigns::Table.into_iden(),
            NewsletterSubscribers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
