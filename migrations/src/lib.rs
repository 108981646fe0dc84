pub use sea_orm_migration::prelude::*;

mod m20261125_100000_create_outbox;
mod m20261125_100100_create_newsletter;
pub mod queue_columns;

pub struct Migrator;
#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_100000_create_outbox::Migration),
            Box::new(m20261125_100100_create_newsletter::Migration),
        ]
    }
}
