//! The columns every table delivered through Gatehouse's durable queue (`src/queue.rs`)
//! has, so that each such table (the outbox, webhook deliveries, …) declares them the same
//! way. Times are milliseconds since the Unix epoch in a BIGINT, compared as numbers on
//! SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum QueueColumn {
    Status,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    ClaimedUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

/// Adds the queue columns to `table` (which must have a string primary key `id`).
pub fn add(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
    table
        .col(
            ColumnDef::new(QueueColumn::Status)
                .string_len(16)
                .not_null()
                .default("pending"),
        )
        .col(
            ColumnDef::new(QueueColumn::Attempts)
                .integer()
                .not_null()
                .default(0),
        )
        .col(
            ColumnDef::new(QueueColumn::NextAttemptAt)
                .big_integer()
                .not_null(),
        )
        .col(ColumnDef::new(QueueColumn::ClaimedBy).string_len(64).null())
        .col(
            ColumnDef::new(QueueColumn::ClaimedUntil)
                .big_integer()
                .null(),
        )
        .col(ColumnDef::new(QueueColumn::LastError).text().null())
        .col(
            ColumnDef::new(QueueColumn::CreatedAt)
                .big_integer()
                .not_null(),
        )
        .col(
            ColumnDef::new(QueueColumn::UpdatedAt)
                .big_integer()
                .not_null(),
        )
        .col(ColumnDef::new(QueueColumn::FinishedAt).big_integer().null())
}

/// The index the claim query walks: due rows by status and time.
pub fn due_index(table: &str) -> IndexCreateStatement {
    Index::create()
        .name(format!("idx_{table}_due"))
        .table(Alias::new(table))
        .col(QueueColumn::Status)
        .col(QueueColumn::NextAttemptAt)
        .to_owned()
}
