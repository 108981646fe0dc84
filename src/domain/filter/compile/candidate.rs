//! A record that does not exist yet, as a one-row table, for create rules.

use sea_orm::sea_query::{Alias, Expr, Query, SelectStatement, SimpleExpr};
use serde_json::{Map, Value as Json};

use super::Dialect;
use crate::domain::filter::schema::{CollectionSchema, FieldKind};
use crate::domain::filter::sql;

/// A one-row `SELECT` of `record`'s values typed as `collection`'s columns, to use
/// as `FROM (<row>) AS "<collection>"` when checking a create rule before the
/// record exists. Missing fields get their zero value.
pub fn candidate_row(
    collection: &CollectionSchema,
    record: &Map<String, Json>,
    dialect: Dialect,
) -> SelectStatement {
    let mut select = Query::select();
    for field in &collection.fields {
        let value = record.get(&field.name);
        let expr: SimpleExpr = match field.kind {
            FieldKind::Number => {
                let n = match value {
                    Some(Json::Number(n)) => n.as_f64().unwrap_or(0.0),
                    Some(Json::String(s)) => s.trim().parse().unwrap_or(0.0),
                    Some(Json::Bool(b)) => f64::from(u8::from(*b)),
                    _ => 0.0,
                };
                sql::bind(dialect, n)
            }
            FieldKind::Bool => {
                let b = match value {
                    Some(Json::Bool(b)) => *b,
                    Some(Json::String(s)) => s == "true" || s == "1",
                    Some(Json::Number(n)) => n.as_f64() != Some(0.0),
                    _ => false,
                };
                sql::bind(dialect, b)
            }
            FieldKind::Json => match value {
                None | Some(Json::Null) => match dialect {
                    Dialect::Sqlite => sql::null(),
                    Dialect::Postgres => sql::null().cast_as(Alias::new("jsonb")),
                },
                Some(v) => json_text(dialect, v.to_string()),
            },
            _ if field.multiple => {
                let items = match value {
                    None | Some(Json::Null) => Json::Array(Vec::new()),
                    Some(Json::Array(items)) => Json::Array(items.clone()),
                    Some(Json::String(s)) if s.is_empty() => Json::Array(Vec::new()),
                    Some(other) => Json::Array(vec![other.clone()]),
                };
                json_text(dialect, items.to_string())
            }
            _ => {
                let text = match value {
                    None | Some(Json::Null) => String::new(),
                    Some(Json::String(s)) => s.clone(),
                    Some(Json::Array(items)) => items
                        .first()
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    Some(other) => other.to_string(),
                };
                sql::bind(dialect, text)
            }
        };
        select.expr_as(expr, Alias::new(&field.name));
    }
    select
}

fn json_text(dialect: Dialect, text: String) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => sql::bind(dialect, text),
        Dialect::Postgres => Expr::val(text).cast_as(Alias::new("jsonb")),
    }
}
