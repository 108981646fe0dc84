//! Gatehouse's schema migrations, applied in order by `gatehouse migrate up` and on
//! `gatehouse serve`. A migration is a frozen snapshot: it never imports the
//! application's types, so later changes to them cannot change what it does.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_system_collections;
mod m20261125_000002_auth_sessions;
mod m20261125_100000_create_outbox;
mod m20261125_100100_create_newsletter;
mod m20261125_200000_create_webhooks;
pub mod queue_columns;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_system_collections::Migration),
            Box::new(m20261125_000002_auth_sessions::Migration),
            Box::new(m20261125_100000_create_outbox::Migration),
            Box::new(m20261125_100100_create_newsletter::Migration),
            Box::new(m20261125_200000_create_webhooks::Migration),
        ]
    }
}
