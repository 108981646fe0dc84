//! Revocable sessions behind auth tokens, and external (OAuth2) identities.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_auth_sessions"
    }
}

fn text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .default("")
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("_sessions"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(text("collectionRef"))
                    .col(text("recordRef"))
                    // SHA-256 of the token's signature: the session row alone cannot
                    // be turned back into a working token.
                    .col(text("tokenHash"))
                    .col(text("userAgent"))
                    .col(text("ip"))
                    .col(text("created"))
                    .col(text("refreshed"))
                    .col(text("expires"))
                    .col(
                        ColumnDef::new(Alias::new("revoked"))
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_record")
                    .table(Alias::new("_sessions"))
                    .col(Alias::new("collectionRef"))
                    .col(Alias::new("recordRef"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("_externalAuths"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(text("collectionRef"))
                    .col(text("recordRef"))
                    .col(text("provider"))
                    .col(text("providerId"))
                    .col(text("created"))
                    .col(text("updated"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_externalAuths_provider")
                    .table(Alias::new("_externalAuths"))
                    .col(Alias::new("collectionRef"))
                    .col(Alias::new("provider"))
                    .col(Alias::new("providerId"))
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_externalAuths_record")
                    .table(Alias::new("_externalAuths"))
                    .col(Alias::new("collectionRef"))
                    .col(Alias::new("recordRef"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["_externalAuths", "_sessions"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
