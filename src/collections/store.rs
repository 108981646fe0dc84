//! Reading and writing collection definitions and records. Every statement is built
//! with sea-query: identifiers come from definitions, values are bound parameters.

use std::sync::Arc;

use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use super::record::Record;
use super::{Collection, CollectionKind};

/// Every collection definition, oldest first.
pub async fn load_collections<C: ConnectionTrait>(conn: &C) -> Result<Vec<Collection>, DbErr> {
    let query = Query::select()
        .column(sea_orm::sea_query::Asterisk)
        .from(Alias::new("_collections"))
        .order_by(Alias::new("created"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    let rows = conn
        .query_all(conn.get_database_backend().build(&query))
        .await?;
    rows.iter().map(collection_from_row).collect()
}

fn collection_from_row(row: &QueryResult) -> Result<Collection, DbErr> {
    let kind = match row.try_get::<String>("", "type")?.as_str() {
        "auth" => CollectionKind::Auth,
        _ => CollectionKind::Base,
    };
    Ok(Collection {
        id: row.try_get("", "id")?,
        name: row.try_get("", "name")?,
        kind,
        system: row.try_get("", "system")?,
        list_rule: row.try_get("", "listRule")?,
        view_rule: row.try_get("", "viewRule")?,
        create_rule: row.try_get("", "createRule")?,
        update_rule: row.try_get("", "updateRule")?,
        delete_rule: row.try_get("", "deleteRule")?,
        fields: json_column(row, "fields")?,
        indexes: json_column(row, "indexes")?,
        options: json_column(row, "options")?,
        created: row.try_get("", "created")?,
        updated: row.try_get("", "updated")?,
    })
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &QueryResult,
    column: &str,
) -> Result<T, DbErr> {
    let text: String = row.try_get("", column)?;
    serde_json::from_str(&text)
        .map_err(|err| DbErr::Custom(format!("_collections.{column} is not valid JSON: {err}")))
}

/// The record of `collection` whose `field` equals `value`, if any.
pub async fn find_by<C: ConnectionTrait>(
    conn: &C,
    collection: &Arc<Collection>,
    field: &str,
    value: &str,
) -> Result<Option<Record>, DbErr> {
    let query = Query::select()
        .columns(collection.fields.iter().map(|f| Alias::new(&f.name)))
        .from(Alias::new(&collection.name))
        .and_where(Expr::col(Alias::new(field)).eq(value))
        .limit(1)
        .to_owned();
    let row = conn
        .query_one(conn.get_database_backend().build(&query))
        .await?;
    row.map(|row| Record::from_row(collection.clone(), &row))
        .transpose()
}

pub async fn insert<C: ConnectionTrait>(conn: &C, record: &Record) -> Result<(), DbErr> {
    let (columns, values): (Vec<_>, Vec<_>) = record
        .column_values()
        .into_iter()
        .map(|(name, value)| (Alias::new(name), value))
        .unzip();
    let insert = Query::insert()
        .into_table(Alias::new(&record.collection.name))
        .columns(columns)
        .values(values)
        .map_err(|err| DbErr::Custom(err.to_string()))?
        .to_owned();
    conn.execute(conn.get_database_backend().build(&insert))
        .await?;
    Ok(())
}

/// Writes every field of an existing record.
pub async fn update<C: ConnectionTrait>(conn: &C, record: &Record) -> Result<(), DbErr> {
    let update = Query::update()
        .table(Alias::new(&record.collection.name))
        .values(
            record
                .column_values()
                .into_iter()
                .filter(|(name, _)| *name != "id")
                .map(|(name, value)| (Alias::new(name), value)),
        )
        .and_where(Expr::col(Alias::new("id")).eq(record.id()))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&update))
        .await?;
    if result.rows_affected() == 0 {
        return Err(DbErr::RecordNotUpdated);
    }
    Ok(())
}

fn collection_values(
    collection: &Collection,
) -> Result<Vec<sea_orm::sea_query::SimpleExpr>, DbErr> {
    let json =
        |value: serde_json::Result<String>| value.map_err(|err| DbErr::Custom(err.to_string()));
    Ok(vec![
        collection.id.clone().into(),
        collection.name.clone().into(),
        match collection.kind {
            CollectionKind::Auth => "auth",
            CollectionKind::Base => "base",
        }
        .into(),
        collection.system.into(),
        collection.list_rule.clone().into(),
        collection.view_rule.clone().into(),
        collection.create_rule.clone().into(),
        collection.update_rule.clone().into(),
        collection.delete_rule.clone().into(),
        json(serde_json::to_string(&collection.fields))?.into(),
        json(serde_json::to_string(&collection.indexes))?.into(),
        json(serde_json::to_string(&collection.options))?.into(),
        collection.created.clone().into(),
        collection.updated.clone().into(),
    ])
}

const COLLECTION_COLUMNS: [&str; 14] = [
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
];

pub async fn insert_collection<C: ConnectionTrait>(
    conn: &C,
    collection: &Collection,
) -> Result<(), DbErr> {
    let insert = Query::insert()
        .into_table(Alias::new("_collections"))
        .columns(COLLECTION_COLUMNS.map(Alias::new))
        .values(collection_values(collection)?)
        .map_err(|err| DbErr::Custom(err.to_string()))?
        .to_owned();
    conn.execute(conn.get_database_backend().build(&insert))
        .await?;
    Ok(())
}

pub async fn update_collection<C: ConnectionTrait>(
    conn: &C,
    collection: &Collection,
) -> Result<(), DbErr> {
    let update = Query::update()
        .table(Alias::new("_collections"))
        .values(
            COLLECTION_COLUMNS
                .iter()
                .zip(collection_values(collection)?)
                .skip(1)
                .map(|(column, value)| (Alias::new(*column), value)),
        )
        .and_where(Expr::col(Alias::new("id")).eq(collection.id.as_str()))
        .to_owned();
    conn.execute(conn.get_database_backend().build(&update))
        .await?;
    Ok(())
}

pub async fn delete_collection<C: ConnectionTrait>(conn: &C, id: &str) -> Result<(), DbErr> {
    let delete = Query::delete()
        .from_table(Alias::new("_collections"))
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    conn.execute(conn.get_database_backend().build(&delete))
        .await?;
    Ok(())
}
