//! Listing and viewing records: pagination, `filter`, `sort`, `expand`, `fields`,
//! `skipTotal`, with the list or view rule compiled into the same query.

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::sea_query::{Alias, Expr, Func, Query, SelectStatement, SimpleExpr};
use sea_orm::{ConnectionTrait, QueryResult, Statement};
use serde_json::{Map, Value};

use super::expand::{expand, ExpandPaths};
use super::totals::{Ticket, Turn};
use super::visibility::viewers;
use super::{dialect, RecordError, RecordsEnv, Requester};
use crate::collections::record::Record;
use crate::collections::Collection;
use crate::domain::filter::{Compiler, Fields, Filter, Sort};

/// PocketBase's default page size, and the largest it allows.
pub const DEFAULT_PER_PAGE: u64 = 30;
pub const MAX_PER_PAGE: u64 = 1000;

/// The query parameters of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub page: u64,
    pub per_page: u64,
    pub sort: String,
    pub filter: String,
    pub expand: String,
    pub fields: String,
    pub skip_total: bool,
}

impl ListQuery {
    /// Reads PocketBase's parameters; unknown ones are ignored, as the SDKs send some.
    pub fn from_params(params: &HashMap<String, String>) -> Self {
        let number = |key: &str| params.get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let text = |key: &str| params.get(key).cloned().unwrap_or_default();
        Self {
            page: number("page").filter(|p| *p > 0).map_or(1, |p| p as u64),
            per_page: number("perPage")
                .filter(|p| *p > 0)
                .map_or(DEFAULT_PER_PAGE, |p| (p as u64).min(MAX_PER_PAGE)),
            sort: text("sort"),
            filter: text("filter"),
            expand: text("expand"),
            fields: text("fields"),
            skip_total: params
                .get("skipTotal")
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "t")),
        }
    }
}

/// Parses `?filter=` for a requester: 400 when malformed, 403 when a non-superuser
/// reaches for `@request.*` or `@collection.*`.
fn parse_filter(text: &str, requester: &Requester) -> Result<Option<Filter>, RecordError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let filter = Filter::parse(text).map_err(|err| RecordError::BadParam {
        param: "filter",
        reason: err.to_string(),
    })?;
    if !requester.superuser() && filter.superuser_only_identifier().is_some() {
        return Err(RecordError::Forbidden(
            "Only superusers can filter by @collection and @request fields.",
        ));
    }
    Ok(Some(filter))
}

fn parse_fields(text: &str) -> Result<Option<Fields>, RecordError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Fields::parse(text)
        .map(Some)
        .map_err(|err| RecordError::BadParam {
            param: "fields",
            reason: err.to_string(),
        })
}

/// `SELECT <every field> FROM "<collection>"`.
pub fn select_all(collection: &Collection) -> SelectStatement {
    Query::select()
        .columns(
            collection
                .fields
                .iter()
                .map(|f| (Alias::new(&collection.name), Alias::new(&f.name))),
        )
        .from(Alias::new(&collection.name))
        .to_owned()
}

/// Runs `select` and decodes the rows as records of `collection`.
pub async fn fetch<C: ConnectionTrait>(
    conn: &C,
    collection: &Arc<Collection>,
    select: &SelectStatement,
) -> Result<Vec<Record>, RecordError> {
    let rows = conn
        .query_all(conn.get_database_backend().build(select))
        .await?;
    decode(collection, &rows)
}

fn decode(collection: &Arc<Collection>, rows: &[QueryResult]) -> Result<Vec<Record>, RecordError> {
    rows.iter()
        .map(|row| Record::from_row(collection.clone(), row).map_err(RecordError::from))
        .collect()
}

/// The response JSON of records: expanded, shown as the requester may see them, and
/// trimmed to `fields`. Without `expand` each record becomes its JSON in place
/// ([`Record::into_json`]); expansion reads the records after they are shown.
pub async fn present<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    records: Vec<Record>,
    expand_param: &str,
    fields_param: &str,
) -> Result<Vec<Value>, RecordError> {
    let fields = parse_fields(fields_param)?;
    let paths = ExpandPaths::parse(expand_param)?;
    let viewers = viewers(conn, env, requester, &records).await?;
    let mut items: Vec<Value> = if paths.is_empty() {
        records
            .into_iter()
            .zip(viewers)
            .map(|(record, viewer)| record.into_json(viewer))
            .collect()
    } else {
        let mut items: Vec<Value> = records
            .iter()
            .zip(viewers)
            .map(|(record, viewer)| record.to_json(viewer))
            .collect();
        expand(conn, env, requester, &records, &mut items, &paths).await?;
        items
    };
    if let Some(fields) = fields {
        for item in &mut items {
            fields.apply(item);
        }
    }
    Ok(items)
}

/// A page of records the requester may list.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    query: &ListQuery,
) -> Result<Value, RecordError> {
    let collection = env.collection(collection)?;
    let dialect = dialect(conn);
    let rule = env.rule_condition(
        &collection,
        "listRule",
        collection.list_rule.as_deref(),
        requester,
        dialect,
    )?;
    let filter = parse_filter(&query.filter, requester)?;
    let sort = (!query.sort.trim().is_empty())
        .then(|| Sort::parse(&query.sort))
        .transpose()
        .map_err(|err| RecordError::BadParam {
            param: "sort",
            reason: err.to_string(),
        })?;
    if !requester.superuser()
        && sort
            .as_ref()
            .is_some_and(|s| s.superuser_only_identifier().is_some())
    {
        return Err(RecordError::Forbidden(
            "Only superusers can sort by @collection and @request fields.",
        ));
    }
    let schema = env
        .registry
        .collection_schema(&collection.id)
        .ok_or(RecordError::MissingCollection)?;
    // The compiler is not `Send`: every statement is built before the first await.
    let (mut select, count) = {
        let compiler = Compiler::new(env.registry.as_ref(), &schema, &requester.request, dialect);
        let mut conditions: Vec<SimpleExpr> = rule.into_iter().collect();
        if let Some(filter) = &filter {
            conditions.push(
                compiler
                    .filter(filter)
                    .map_err(|err| RecordError::BadParam {
                        param: "filter",
                        reason: err.to_string(),
                    })?,
            );
        }
        let terms = match &sort {
            Some(sort) => compiler.sort(sort).map_err(|err| RecordError::BadParam {
                param: "sort",
                reason: err.to_string(),
            })?,
            None => Vec::new(),
        };
        let mut select = select_all(&collection);
        let mut count = Query::select();
        count
            .expr_as(
                Func::count(Expr::col(sea_orm::sea_query::Asterisk)),
                Alias::new("total"),
            )
            .from(Alias::new(&collection.name));
        for condition in conditions {
            select.and_where(condition.clone());
            count.and_where(condition);
        }
        for term in &terms {
            term.apply(&mut select);
        }
        select
            .limit(query.per_page)
            .offset((query.page - 1).saturating_mul(query.per_page));
        (select, count)
    };
    let backend = conn.get_database_backend();
    // The count's statement names the total a request shares with others (see
    // `totals`), and runs when the request counts apart from its page.
    let ticket = (!query.skip_total).then(|| {
        let statement = backend.build(&count);
        let key = format!("{}\0{:?}", statement.sql, statement.values);
        (statement, env.totals.join(key))
    });
    // A request that leads its total's count has it ride on every row of the page as a
    // subquery: one statement, one round trip and one snapshot for both. Only a page
    // with no rows counts apart.
    if let Some((_, Ticket::Lead(_))) = ticket {
        select.expr(SimpleExpr::SubQuery(
            None,
            Box::new(count.into_sub_query_statement()),
        ));
    }
    let rows = conn.query_all(backend.build(&select)).await?;
    let records = decode(&collection, &rows)?;

    let total = match ticket {
        None => None,
        Some((statement, Ticket::Lead(lead))) => {
            let total = match rows.first() {
                // The subquery's column follows the collection's fields.
                Some(row) => row.try_get_by_index(collection.fields.len())?,
                None if query.page == 1 => 0,
                None => count_rows(conn, statement).await?,
            };
            lead.finish(total);
            Some(total)
        }
        Some((statement, Ticket::Follow(told))) => Some(match told.await {
            Ok(Turn::Total(total)) => total,
            Ok(Turn::Lead(lead)) => {
                let total = count_rows(conn, statement).await?;
                lead.finish(total);
                total
            }
            // The count this request waited for failed: it counts for itself.
            Err(_) => count_rows(conn, statement).await?,
        }),
    };
    let (total_items, total_pages) = match total {
        None => (-1, -1),
        Some(total) => (
            total,
            (total + query.per_page as i64 - 1) / query.per_page as i64,
        ),
    };
    let items = present(conn, env, requester, records, &query.expand, &query.fields).await?;
    Ok(page_envelope(
        query.page,
        query.per_page,
        total_items,
        total_pages,
        items,
    ))
}

/// Runs a `SELECT COUNT(*) AS total` statement.
async fn count_rows<C: ConnectionTrait>(conn: &C, count: Statement) -> Result<i64, RecordError> {
    Ok(conn
        .query_one(count)
        .await?
        .ok_or(RecordError::NotFound)?
        .try_get("", "total")?)
}

/// PocketBase's list envelope. Built by hand: `json!` would copy every item through
/// `serde_json::to_value`, a deep clone of the whole page.
pub fn page_envelope(
    page: u64,
    per_page: u64,
    total_items: i64,
    total_pages: i64,
    items: Vec<Value>,
) -> Value {
    let mut envelope = Map::with_capacity(5);
    envelope.insert("page".into(), page.into());
    envelope.insert("perPage".into(), per_page.into());
    envelope.insert("totalItems".into(), total_items.into());
    envelope.insert("totalPages".into(), total_pages.into());
    envelope.insert("items".into(), Value::Array(items));
    Value::Object(envelope)
}

/// Loads one record through `rule` (the view rule, or an update/delete rule):
/// `NotFound` when it does not exist or the rule hides it.
pub async fn find_visible<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &Arc<Collection>,
    rule_name: &'static str,
    rule: Option<&str>,
    id: &str,
) -> Result<Record, RecordError> {
    let condition = env.rule_condition(collection, rule_name, rule, requester, dialect(conn))?;
    let mut select = select_all(collection);
    select.and_where(Expr::col((Alias::new(&collection.name), Alias::new("id"))).eq(id));
    if let Some(condition) = condition {
        select.and_where(condition);
    }
    fetch(conn, collection, &select)
        .await?
        .into_iter()
        .next()
        .ok_or(RecordError::NotFound)
}

/// One record the requester may view.
pub async fn view<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    id: &str,
    expand_param: &str,
    fields_param: &str,
) -> Result<Value, RecordError> {
    let collection = env.collection(collection)?;
    let record = find_visible(
        conn,
        env,
        requester,
        &collection,
        "viewRule",
        collection.view_rule.as_deref(),
        id,
    )
    .await?;
    let mut items = present(
        conn,
        env,
        requester,
        vec![record],
        expand_param,
        fields_param,
    )
    .await?;
    Ok(items.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn list_parameters_follow_pocketbase_defaults_and_caps() {
        let query = ListQuery::from_params(&params(&[]));
        assert_eq!(
            (query.page, query.per_page, query.skip_total),
            (1, 30, false)
        );
        let query = ListQuery::from_params(&params(&[
            ("page", "3"),
            ("perPage", "5000"),
            ("skipTotal", "1"),
        ]));
        assert_eq!(
            (query.page, query.per_page, query.skip_total),
            (3, 1000, true)
        );
        let query = ListQuery::from_params(&params(&[("page", "-2"), ("perPage", "abc")]));
        assert_eq!((query.page, query.per_page), (1, 30));
    }
}
