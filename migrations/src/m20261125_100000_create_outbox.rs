//! The mail outbox: one row per mail, written in the transaction of the change that
//! causes it and delivered by the mailer actor.

use sea_orm_migration::prelude::*;

use crate::queue_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Kind,
    Recipient,
    RecipientName,
    Subject,
    TextBody,
    HtmlBody,
    Headers,
    CampaignId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(Outbox::Table)
            .col(
                ColumnDef::new(Outbox::Id)
                    .string_len(36)
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(Outbox::Kind).string_len(32).not_null())
            .col(ColumnDef::new(Outbox::Recipient).string_len(320).not_null())
            .col(ColumnDef::new(Outbox::RecipientName).string_len(200).null())
            .col(ColumnDef::new(Outbox::Subject).text().not_null())
            .col(ColumnDef::new(Outbox::TextBody).text().not_null())
            .col(ColumnDef::new(Outbox::HtmlBody).text().not_null())
            .col(ColumnDef::new(Outbox::Headers).text().not_null())
            .col(ColumnDef::new(Outbox::CampaignId).string_len(36).null());
        queue_columns::add(&mut table);
        manager.create_table(table).await?;
        manager
            .create_index(queue_columns::due_index("outbox"))
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_campaign")
                    .table(Outbox::Table)
                    .col(Outbox::CampaignId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_recipient")
                    .table(Outbox::Table)
                    .col(Outbox::Recipient)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}
