//! The collection registry `_collections` and the two built-in auth collections,
//! `_superusers` and `users`, with PocketBase's ids, fields and rules.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_system_collections"
    }
}

/// The fields both auth collections start with, as PocketBase defines them.
const AUTH_FIELDS: &str = r#"[
  {"id":"text3208210256","name":"id","type":"text","system":true,"hidden":false,"presentable":false,"required":true,"min":15,"max":15,"pattern":"^[a-z0-9]+$","autogeneratePattern":"[a-z0-9]{15}","primaryKey":true},
  {"id":"password901924565","name":"password","type":"password","system":true,"hidden":true,"presentable":false,"required":true,"min":8,"max":0,"pattern":""},
  {"id":"text2504183744","name":"tokenKey","type":"text","system":true,"hidden":true,"presentable":false,"required":true,"min":30,"max":60,"pattern":"","autogeneratePattern":"[a-zA-Z0-9]{50}","primaryKey":false},
  {"id":"email3885137012","name":"email","type":"email","system":true,"hidden":false,"presentable":false,"required":true,"onlyDomains":[],"exceptDomains":[]},
  {"id":"bool1547992806","name":"emailVisibility","type":"bool","system":true,"hidden":false,"presentable":false,"required":false},
  {"id":"bool256245529","name":"verified","type":"bool","system":true,"hidden":false,"presentable":false,"required":false}"#;

const NAME_FIELD: &str = r#",
  {"id":"text1579384326","name":"name","type":"text","system":false,"hidden":false,"presentable":false,"required":false,"min":0,"max":255,"pattern":"","autogeneratePattern":"","primaryKey":false}"#;

const DATE_FIELDS: &str = r#",
  {"id":"autodate2990389176","name":"created","type":"autodate","system":false,"hidden":false,"presentable":false,"onCreate":true,"onUpdate":false},
  {"id":"autodate3332085495","name":"updated","type":"autodate","system":false,"hidden":false,"presentable":false,"onCreate":true,"onUpdate":true}
]"#;

const OPTIONS: &str = r#"{"authRule":"","manageRule":null,"passwordAuth":{"enabled":true,"identityFields":["email"]},"oauth2":{"enabled":false},"authToken":{"duration":AUTH_DURATION},"verificationToken":{"duration":86400},"passwordResetToken":{"duration":1800},"emailChangeToken":{"duration":1800}}"#;

struct AuthCollection {
    id: &'static str,
    table: &'static str,
    with_name: bool,
    /// listRule, viewRule, createRule, updateRule, deleteRule (None = superusers only).
    rules: [Option<&'static str>; 5],
    auth_token_seconds: u32,
}

const SUPERUSERS: AuthCollection = AuthCollection {
    id: "pbc_3142635823",
    table: "_superusers",
    with_name: false,
    rules: [None, None, None, None, None],
    auth_token_seconds: 86_400,
};

const USERS: AuthCollection = AuthCollection {
    id: "_pb_users_auth_",
    table: "users",
    with_name: true,
    rules: [
        Some("id = @request.auth.id"),
        Some("id = @request.auth.id"),
        Some(""),
        Some("id = @request.auth.id"),
        Some("id = @request.auth.id"),
    ],
    auth_token_seconds: 432_000,
};

fn text(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .text()
        .not_null()
        .default("")
        .to_owned()
}

fn boolean(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}

impl AuthCollection {
    fn indexes(&self) -> [String; 2] {
        [
            format!(
                "CREATE UNIQUE INDEX \"idx_tokenKey_{id}\" ON \"{table}\" (\"tokenKey\")",
                id = self.id,
                table = self.table
            ),
            format!(
                "CREATE UNIQUE INDEX \"idx_email_{id}\" ON \"{table}\" (\"email\") WHERE \"email\" != ''",
                id = self.id,
                table = self.table
            ),
        ]
    }

    async fn create(&self, manager: &SchemaManager<'_>) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(Alias::new(self.table))
            .col(
                ColumnDef::new(Alias::new("id"))
                    .text()
                    .not_null()
                    .primary_key(),
            )
            .col(text("password"))
            .col(text("tokenKey"))
            .col(text("email"))
            .col(boolean("emailVisibility"))
            .col(boolean("verified"));
        if self.with_name {
            table.col(text("name"));
        }
        table.col(text("created")).col(text("updated"));
        manager.create_table(table.to_owned()).await?;
        let conn = manager.get_connection();
        for index in self.indexes() {
            conn.execute_unprepared(&index).await?;
        }

        let fields = format!(
            "{AUTH_FIELDS}{}{DATE_FIELDS}",
            if self.with_name { NAME_FIELD } else { "" }
        );
        let options = OPTIONS.replace("AUTH_DURATION", &self.auth_token_seconds.to_string());
        let indexes = serde_json_array(&self.indexes());
        let now = "2026-11-25 00:00:00.000Z";
        let [list, view, create, update, delete] = self.rules;
        let insert = Query::insert()
            .into_table(Alias::new("_collections"))
            .columns(
                [
                    "id",
                    "name",
                    "type",
                    "system",
                    "listRule",
                    "viewRule",
                    "createRule",
                    "updateRule",
                    "deleteRule",
                    "fields",
                    "indexes",
                    "options",
                    "created",
                    "updated",
                ]
                .map(Alias::new),
            )
            .values_panic([
                self.id.into(),
                self.table.into(),
                "auth".into(),
                (self.table == "_superusers").into(),
                list.map(str::to_string).into(),
                view.map(str::to_string).into(),
                create.map(str::to_string).into(),
                update.map(str::to_string).into(),
                delete.map(str::to_string).into(),
                fields.into(),
                indexes.into(),
                options.into(),
                now.into(),
                now.into(),
            ])
            .to_owned();
        manager.exec_stmt(insert).await
    }
}

/// A JSON array of strings, escaped by hand to keep this crate free of serde.
fn serde_json_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(","))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("_collections"))
                    .col(
                        ColumnDef::new(Alias::new("id"))
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("name"))
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(text("type"))
                    .col(boolean("system"))
                    .col(ColumnDef::new(Alias::new("listRule")).text().null())
                    .col(ColumnDef::new(Alias::new("viewRule")).text().null())
                    .col(ColumnDef::new(Alias::new("createRule")).text().null())
                    .col(ColumnDef::new(Alias::new("updateRule")).text().null())
                    .col(ColumnDef::new(Alias::new("deleteRule")).text().null())
                    .col(
                        ColumnDef::new(Alias::new("fields"))
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .col(
                        ColumnDef::new(Alias::new("indexes"))
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .col(
                        ColumnDef::new(Alias::new("options"))
                            .text()
                            .not_null()
                            .default("{}"),
                    )
                    .col(text("created"))
                    .col(text("updated"))
                    .to_owned(),
            )
            .await?;
        SUPERUSERS.create(manager).await?;
        USERS.create(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["users", "_superusers", "_collections"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
