//! Webhooks: endpoints, one delivery row per event and endpoint (delivered through the
//! shared durable queue), a log row per delivery attempt, and the ids of inbound events
//! already stored (so that a replay changes nothing).

use sea_orm_migration::prelude::*;

use crate::queue_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Name,
    Url,
    Events,
    Secret,
    Description,
    Enabled,
    FromConfig,
    DisabledReason,
    FailingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventType,
    Payload,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    Attempt,
    StartedAt,
    StatusCode,
    LatencyMs,
    Error,
    ResponseExcerpt,
}

#[derive(DeriveIden)]
enum WebhookInboundEvents {
    Table,
    Hook,
    EventId,
    RecordId,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookEndpoints as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(
                        ColumnDef::new(E::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(E::Name).string_len(100).null().unique_key())
                    .col(ColumnDef::new(E::Url).text().not_null())
                    .col(ColumnDef::new(E::Events).text().not_null())
                    .col(ColumnDef::new(E::Secret).string_len(200).not_null())
                    .col(ColumnDef::new(E::Description).text().not_null().default(""))
                    .col(ColumnDef::new(E::Enabled).boolean().not_null())
                    .col(ColumnDef::new(E::FromConfig).boolean().not_null())
                    .col(ColumnDef::new(E::DisabledReason).text().null())
                    .col(ColumnDef::new(E::FailingSince).big_integer().null())
                    .col(ColumnDef::new(E::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(E::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;

        use WebhookDeliveries as D;
        let mut table = Table::create();
        table
            .table(D::Table)
            .col(
                ColumnDef::new(D::Id)
                    .string_len(64)
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(D::EndpointId).string_len(36).not_null())
            .col(ColumnDef::new(D::EventType).string_len(64).not_null())
            .col(ColumnDef::new(D::Payload).text().not_null());
        queue_columns::add(&mut table);
        manager.create_table(table).await?;
        manager
            .create_index(queue_columns::due_index("webhook_deliveries"))
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_endpoint")
                    .table(D::Table)
                    .col(D::EndpointId)
                    .to_owned(),
            )
            .await?;

        use WebhookAttempts as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(
                        ColumnDef::new(A::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(A::DeliveryId).string_len(64).not_null())
                    .col(ColumnDef::new(A::Attempt).integer().not_null())
                    .col(ColumnDef::new(A::StartedAt).big_integer().not_null())
                    .col(ColumnDef::new(A::StatusCode).integer().null())
                    .col(ColumnDef::new(A::LatencyMs).big_integer().not_null())
                    .col(ColumnDef::new(A::Error).text().null())
                    .col(ColumnDef::new(A::ResponseExcerpt).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_attempts_delivery")
                    .table(A::Table)
                    .col(A::DeliveryId)
                    .col(A::StartedAt)
                    .to_owned(),
            )
            .await?;

        use WebhookInboundEvents as I;
        manager
            .create_table(
                Table::create()
                    .table(I::Table)
                    .col(ColumnDef::new(I::Hook).string_len(100).not_null())
                    .col(ColumnDef::new(I::EventId).string_len(200).not_null())
                    .col(ColumnDef::new(I::RecordId).string_len(64).null())
                    .col(ColumnDef::new(I::ReceivedAt).big_integer().not_null())
                    .primary_key(Index::create().col(I::Hook).col(I::EventId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookInboundEvents::Table.into_iden(),
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
