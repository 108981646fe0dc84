//! Filter → parameterised sea-query condition, mirroring PocketBase's
//! `tools/search/filter.go` and `core/record_field_resolver*.go`.
//!
//! PocketBase LEFT JOINs every relation a filter walks onto the listed table and
//! evaluates the whole filter per joined row (with DISTINCT). Here the same joins
//! hang off a one-row driver inside `EXISTS (SELECT 1 FROM (SELECT 1) LEFT JOIN …
//! WHERE <filter>)`, correlated to the listed table, so the result is a plain
//! condition usable as `SELECT … FROM "<collection>" WHERE <condition>`. Top-level
//! `&&` parts that need no join stay outside the EXISTS so indexes keep working.
//! Multi-valued operands get PocketBase's extra "all items" check for plain
//! operators: `NOT EXISTS` over a second, private chain of the same joins.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, IntoIden, JoinType, Query, SelectStatement, SimpleExpr, TableRef,
};
use sea_orm::DbBackend;
use serde_json::{Map, Value as Json};

use super::ast::{BaseOp, Comparison, Expr as FilterExpr, Operand, Value};
use super::error::{ErrorKind, FilterError};
use super::request::RequestContext;
use super::schema::{CollectionSchema, FieldKind, FieldSchema, SchemaLookup};
use super::sql::{self, JsonAs};
use super::{at_char, Filter};

/// How many relations one path may walk through (PocketBase's `maxNestedRels`).
pub const MAX_NESTED_RELATIONS: usize = 6;

/// The SQL engine a condition is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl TryFrom<DbBackend> for Dialect {
    type Error = DbBackend;

    fn try_from(backend: DbBackend) -> Result<Self, DbBackend> {
        match backend {
            DbBackend::Sqlite => Ok(Dialect::Sqlite),
            DbBackend::Postgres => Ok(Dialect::Postgres),
            other => Err(other),
        }
    }
}

/// Compiles filters (and sorts) of one collection for one request.
pub struct Compiler<'a> {
    schema: &'a dyn SchemaLookup,
    collection: &'a CollectionSchema,
    request: &'a RequestContext,
    dialect: Dialect,
    next_alias: Cell<usize>,
}

/// The SQL type a comparison is carried out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Text,
    Number,
    Bool,
}

/// A resolved operand before the comparison picks the type to compare in.
#[derive(Debug, Clone)]
enum Term {
    Null,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A column or computed SQL value of a known type.
    Sql(SimpleExpr, Ty),
    /// A value inside a JSON column, read according to the other side.
    Json {
        column: SimpleExpr,
        path: Vec<String>,
        lower: bool,
    },
}

/// One LEFT JOIN of a chain.
#[derive(Debug, Clone)]
struct Join {
    table: TableRef,
    on: SimpleExpr,
}

/// A set of joins; the shared one reuses the join of a path seen before (the same
/// related row for every condition, as PocketBase's join aliases do).
#[derive(Debug, Default)]
struct Space {
    joins: Vec<Join>,
    keys: HashMap<String, String>,
    touched: bool,
}

/// A multi-valued operand's private chain and its value in that chain.
#[derive(Debug, Clone)]
struct Multi {
    joins: Vec<Join>,
    term: Term,
}

/// An operand resolved against the schema and the request.
#[derive(Debug, Clone)]
struct Resolved {
    term: Term,
    multi: Option<Multi>,
    /// Extra condition the comparison must also meet (email visibility).
    guard: Option<SimpleExpr>,
}

/// Where a path starts.
#[derive(Clone)]
enum Start {
    /// The listed record.
    Base,
    /// The authenticated record, joined by id.
    Auth(Arc<CollectionSchema>, String),
    /// Every record of a collection (`@collection.name[:alias]`).
    Collection(Arc<CollectionSchema>, String),
    /// The records a relation field of the body points to.
    BodyRelation(Arc<CollectionSchema>, Vec<String>, bool, String),
}

/// Where a path walk currently is.
struct Walk {
    collection: Arc<CollectionSchema>,
    table: String,
    key: String,
    multi: bool,
    allow_hidden: bool,
    nullify_missing: bool,
}

/// Whether an operand is known to be empty (`''`/NULL) when the query is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emptiness {
    Empty,
    NonEmpty,
    Unknown,
}

const PLAIN_AUTH_FIELDS: [&str; 6] = [
    "id",
    "collectionId",
    "collectionName",
    "email",
    "emailVisibility",
    "verified",
];

fn col(table: &str, column: &str) -> SimpleExpr {
    Expr::col((Alias::new(table), Alias::new(column))).into()
}

fn all(mut parts: Vec<SimpleExpr>) -> Option<SimpleExpr> {
    let first = (!parts.is_empty()).then(|| parts.remove(0))?;
    Some(parts.into_iter().fold(first, |acc, e| acc.and(e)))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `-?[0-9.]+`-style number printed as PocketBase's `cast.ToString` would.
fn number_text(n: f64) -> String {
    format!("{n}")
}

/// `name:modifier` → (name, modifier); only PocketBase's modifiers are accepted.
fn split_modifier(prop: &str) -> Result<(&str, Option<&str>), String> {
    let parts: Vec<&str> = prop.split(':').collect();
    if parts.len() != 2 {
        return Ok((prop, None));
    }
    match parts[1] {
        "isset" | "each" | "length" | "lower" | "changed" => Ok((parts[0], Some(parts[1]))),
        _ => Err(prop.to_string()),
    }
}

/// PocketBase's `wrapLikeParams`: `%…%` around the text with `\`, `%` and `_`
/// escaped, unless the text already holds an unescaped `%`.
fn like_pattern(text: &str) -> String {
    let mut pattern = if contains_unescaped(text, '%') {
        text.to_string()
    } else {
        format!("%{}%", escape_unescaped(text, &['\\', '%', '_']))
    };
    // A lone trailing escape character is an error in PostgreSQL and matches
    // nothing in SQLite; both then match a literal backslash instead.
    let trailing = pattern.chars().rev().take_while(|c| *c == '\\').count();
    if trailing % 2 == 1 {
        pattern.push('\\');
    }
    pattern
}

fn contains_unescaped(text: &str, wanted: char) -> bool {
    let mut prev = '\0';
    for c in text.chars() {
        if c == wanted && prev != '\\' {
            return true;
        }
        prev = if c == '\\' && prev == '\\' { '\0' } else { c };
    }
    false
}

fn escape_unescaped(text: &str, escapes: &[char]) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(chars.len() + 4);
    let mut pending = false;
    for i in (0..chars.len()).rev() {
        if pending {
            if chars[i] != '\\' {
                out.push('\\');
            }
            pending = false;
        } else {
            pending = escapes.contains(&chars[i]);
        }
        out.push(chars[i]);
        if i == 0 && pending {
            out.push('\\');
        }
    }
    out.into_iter().rev().collect()
}

/// A date as PocketBase prints it: `2024-05-01 10:20:30.123Z`.
fn date_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

/// The value of a date macro at `now`.
fn macro_value(name: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Term> {
    use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Timelike};
    let day_at = |date: NaiveDate, time: NaiveTime| date.and_time(time).and_utc();
    let start = NaiveTime::MIN;
    let end = NaiveTime::from_hms_milli_opt(23, 59, 59, 999)?;
    let today = now.date_naive();
    let month_start = today.with_day(1)?;
    let next_month = if today.month() == 12 {
        NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)?
    };
    let term = match name {
        "@now" => Term::Text(date_text(now)),
        "@yesterday" => Term::Text(date_text(now - Duration::days(1))),
        "@tomorrow" => Term::Text(date_text(now + Duration::days(1))),
        "@todayStart" => Term::Text(date_text(day_at(today, start))),
        "@todayEnd" => Term::Text(date_text(day_at(today, end))),
        "@monthStart" => Term::Text(date_text(day_at(month_start, start))),
        "@monthEnd" => Term::Text(date_text(day_at(next_month.pred_opt()?, end))),
        "@yearStart" => Term::Text(date_text(day_at(today.with_ordinal(1)?, start))),
        "@yearEnd" => Term::Text(date_text(day_at(
            NaiveDate::from_ymd_opt(today.year(), 12, 31)?,
            end,
        ))),
        "@second" => Term::Number(now.second().into()),
        "@minute" => Term::Number(now.minute().into()),
        "@hour" => Term::Number(now.hour().into()),
        "@day" => Term::Number(now.day().into()),
        "@month" => Term::Number(now.month().into()),
        "@year" => Term::Number(now.year().into()),
        "@weekday" => Term::Number(now.weekday().num_days_from_sunday().into()),
        _ => return None,
    };
    Some(term)
}

/// A JSON value from the request as an operand.
fn json_term(value: Option<Json>, number_field: bool) -> Term {
    match value {
        None | Some(Json::Null) => Term::Null,
        Some(Json::Bool(b)) => Term::Bool(b),
        Some(Json::Number(n)) => n.as_f64().map_or(Term::Null, Term::Number),
        Some(Json::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) if number_field => Term::Number(n),
            _ => Term::Text(s),
        },
        Some(other) => Term::Text(other.to_string()),
    }
}

/// A one-row `SELECT 1 FROM (SELECT 1) AS "__d"` that `joins` are LEFT JOINed to.
fn driver(joins: &[Join]) -> SelectStatement {
    let mut select = Query::select();
    select.expr(Expr::cust("1")).from_subquery(
        Query::select().expr(Expr::cust("1")).to_owned(),
        Alias::new("__d"),
    );
    for join in joins {
        select.join(JoinType::LeftJoin, join.table.clone(), join.on.clone());
    }
    select
}

impl Space {
    /// The alias of the join registered under `key`, adding it when new.
    fn join(
        &mut self,
        key: String,
        alias: impl FnOnce() -> String,
        make: impl FnOnce(&str) -> Join,
    ) -> String {
        self.touched = true;
        if let Some(alias) = self.keys.get(&key) {
            return alias.clone();
        }
        let alias = alias();
        self.joins.push(make(&alias));
        self.keys.insert(key, alias.clone());
        alias
    }
}

impl<'a> Compiler<'a> {
    /// A compiler for filters over `collection`, evaluated for `request`.
    pub fn new(
        schema: &'a dyn SchemaLookup,
        collection: &'a CollectionSchema,
        request: &'a RequestContext,
        dialect: Dialect,
    ) -> Self {
        Self {
            schema,
            collection,
            request,
            dialect,
            next_alias: Cell::new(0),
        }
    }

    /// The dialect conditions are built for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The filter as a condition on rows of `FROM "<collection>"` (unaliased).
    pub fn filter(&self, filter: &Filter) -> Result<SimpleExpr, FilterError> {
        self.filter_expr(filter.expr())
            .map_err(|err| at_char(filter.source(), err))
    }

    fn filter_expr(&self, expr: &FilterExpr) -> Result<SimpleExpr, FilterError> {
        let conjuncts: Vec<&FilterExpr> = match expr {
            FilterExpr::And(parts) => parts.iter().collect(),
            other => vec![other],
        };
        let mut main = Space::default();
        let mut outside = Vec::new();
        let mut inside = Vec::new();
        for part in conjuncts {
            main.touched = false;
            let condition = self.expr(part, &mut main)?;
            if main.touched {
                inside.push(condition);
            } else {
                outside.push(condition);
            }
        }
        if let Some(joined) = all(inside) {
            let mut select = driver(&main.joins);
            select.and_where(joined);
            outside.push(Expr::exists(select));
        }
        Ok(all(outside).unwrap_or_else(|| sql::constant(true)))
    }

    fn expr(&self, expr: &FilterExpr, main: &mut Space) -> Result<SimpleExpr, FilterError> {
        match expr {
            FilterExpr::Compare(c) => self.comparison(c, main),
            FilterExpr::And(parts) | FilterExpr::Or(parts) => {
                let mut compiled = Vec::with_capacity(parts.len());
                for part in parts {
                    compiled.push(self.expr(part, main)?);
                }
                let first = compiled.remove(0);
                Ok(compiled.into_iter().fold(first, |acc, e| {
                    if matches!(expr, FilterExpr::And(_)) {
                        acc.and(e)
                    } else {
                        acc.or(e)
                    }
                }))
            }
        }
    }

    fn comparison(&self, c: &Comparison, main: &mut Space) -> Result<SimpleExpr, FilterError> {
        let left = self.operand(&c.left, main)?;
        let right = self.operand(&c.right, main)?;
        let op = c.op.base;
        let mut result = self.compare(&left.term, op, &right.term);
        if !c.op.any {
            let all_items = match (&left.multi, &right.multi) {
                (Some(l), Some(r)) => {
                    let joins: Vec<Join> = l.joins.iter().chain(&r.joins).cloned().collect();
                    let cmp = self.compare(&l.term, op, &r.term);
                    Some(self.no_item_fails(joins, cmp, op, &[&l.term, &r.term]))
                }
                (Some(l), None) => {
                    let cmp = self.compare(&l.term, op, &right.term);
                    Some(self.no_item_fails(l.joins.clone(), cmp, op, &[&l.term]))
                }
                (None, Some(r)) => {
                    let cmp = self.compare(&left.term, op, &r.term);
                    Some(self.no_item_fails(r.joins.clone(), cmp, op, &[&r.term]))
                }
                (None, None) => None,
            };
            if let Some(all_items) = all_items {
                result = result.and(all_items);
            }
        }
        for guard in [left.guard, right.guard].into_iter().flatten() {
            result = result.and(guard);
        }
        Ok(result)
    }

    /// PocketBase's multi-match check: no item of the chain fails `cmp` (and for
    /// operators other than `=`, no item is missing).
    fn no_item_fails(
        &self,
        joins: Vec<Join>,
        cmp: SimpleExpr,
        op: BaseOp,
        items: &[&Term],
    ) -> SimpleExpr {
        let mut fails = cmp.not();
        if op != BaseOp::Eq {
            for item in items {
                let (value, _) = self.render(item, Ty::Text);
                fails = fails.or(value.is_null());
            }
        }
        let mut select = driver(&joins);
        select.and_where(fails);
        Expr::exists(select).not()
    }

    fn alias(&self) -> String {
        let n = self.next_alias.get() + 1;
        self.next_alias.set(n);
        format!("__f{n}")
    }

    fn error(&self, operand: &Operand, kind: ErrorKind) -> FilterError {
        FilterError::new(operand.start, kind)
    }

    fn lookup(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>> {
        if name_or_id == self.collection.name || name_or_id == self.collection.id {
            return Some(Arc::new(self.collection.clone()));
        }
        self.schema.collection(name_or_id)
    }

    /// Resolves one side of a comparison.
    fn operand(&self, operand: &Operand, main: &mut Space) -> Result<Resolved, FilterError> {
        let plain = |term| Resolved {
            term,
            multi: None,
            guard: None,
        };
        match &operand.value {
            Value::Text(t) => Ok(plain(Term::Text(t.clone()))),
            Value::Number(n) => Ok(plain(Term::Number(*n))),
            Value::Identifier(name) => {
                if let Some(term) = macro_value(name, self.request.now) {
                    return Ok(plain(term));
                }
                match self.identifier(name, operand, main) {
                    Ok(resolved) => Ok(resolved),
                    Err(err) => match name.to_ascii_lowercase().as_str() {
                        "null" => Ok(plain(Term::Null)),
                        "true" => Ok(plain(Term::Bool(true))),
                        "false" => Ok(plain(Term::Bool(false))),
                        _ => Err(err),
                    },
                }
            }
        }
    }

    fn identifier(
        &self,
        name: &str,
        operand: &Operand,
        main: &mut Space,
    ) -> Result<Resolved, FilterError> {
        let props: Vec<&str> = name.split('.').collect();
        let unknown = || self.error(operand, ErrorKind::UnknownField(name.to_string()));
        match props[0] {
            "@collection" => {
                if props.len() < 3 {
                    return Err(unknown());
                }
                let (collection_name, alias) = match props[1].split_once(':') {
                    Some((c, a)) if is_word(a) => (c, a),
                    Some(_) => return Err(unknown()),
                    None => (props[1], props[1]),
                };
                let collection = self.lookup(collection_name).ok_or_else(|| {
                    self.error(
                        operand,
                        ErrorKind::UnknownCollection(collection_name.into()),
                    )
                })?;
                let start = Start::Collection(collection, alias.to_string());
                self.path(start, &props[2..], operand, main)
            }
            "@request" => self.request_field(name, &props, operand, main),
            first if first.starts_with('@') || first.starts_with('#') => Err(unknown()),
            _ => self.path(Start::Base, &props, operand, main),
        }
    }

    fn request_field(
        &self,
        name: &str,
        props: &[&str],
        operand: &Operand,
        main: &mut Space,
    ) -> Result<Resolved, FilterError> {
        let unknown = || self.error(operand, ErrorKind::UnknownField(name.to_string()));
        let plain = |term| Resolved {
            term,
            multi: None,
            guard: None,
        };
        match (props.get(1).copied(), props.len()) {
            (Some("method" | "context"), 2) => {}
            (Some("auth" | "body" | "query" | "headers"), n) if n >= 3 => {}
            _ => return Err(unknown()),
        }
        if props[1] == "auth" {
            let Some(auth) = &self.request.auth else {
                return Ok(plain(Term::Null));
            };
            if props.len() == 3 && PLAIN_AUTH_FIELDS.contains(&props[2]) {
                return self.static_field(&props[1..], operand).map(plain);
            }
            let id = auth.get("id").and_then(Json::as_str).unwrap_or_default();
            let collection = auth
                .get("collectionId")
                .and_then(Json::as_str)
                .and_then(|c| self.lookup(c));
            let Some(collection) = collection else {
                return Ok(plain(Term::Null));
            };
            return self.path(
                Start::Auth(collection, id.to_string()),
                &props[2..],
                operand,
                main,
            );
        }
        if props[1] == "body" {
            let (field_name, modifier) = split_modifier(props[2])
                .map_err(|m| self.error(operand, ErrorKind::InvalidModifier(m)))?;
            if let Some(field) = self.collection.field(field_name) {
                let value = self.request.body.get(field_name);
                if field.kind == FieldKind::Relation && props.len() > 3 {
                    let ids = relation_ids(value);
                    let target = field
                        .relation_collection
                        .as_deref()
                        .and_then(|c| self.lookup(c));
                    let (Some(target), false) = (target, ids.is_empty()) else {
                        return Ok(plain(Term::Null));
                    };
                    let start =
                        Start::BodyRelation(target, ids, field.multiple, field.name.clone());
                    return self.path(start, &props[3..], operand, main);
                }
                if props.len() == 3 {
                    match modifier {
                        Some("each") => return self.body_each(field, operand, main),
                        Some("length") => {
                            if !field.kind.is_multi_valuer() {
                                return Err(self
                                    .error(operand, ErrorKind::InvalidModifier(props[2].into())));
                            }
                            let count = match value {
                                None | Some(Json::Null) => 0,
                                Some(Json::Array(items)) => items.len(),
                                Some(_) => 1,
                            };
                            return Ok(plain(Term::Number(count as f64)));
                        }
                        Some("lower") => {
                            let text = match value {
                                None | Some(Json::Null) => String::new(),
                                Some(Json::String(s)) => s.clone(),
                                Some(Json::Number(n)) => n.to_string(),
                                Some(Json::Bool(b)) => b.to_string(),
                                Some(_) => String::new(),
                            };
                            return Ok(plain(Term::Text(text.to_ascii_lowercase())));
                        }
                        Some("changed") => return self.body_changed(field, operand).map(plain),
                        _ => {}
                    }
                }
            }
        }
        self.static_field(&props[1..], operand).map(plain)
    }

    /// A plain `@request.*` value (bound as a parameter) or `:isset`.
    fn static_field(&self, path: &[&str], operand: &Operand) -> Result<Term, FilterError> {
        let last = path[path.len() - 1];
        let (last_name, modifier) =
            split_modifier(last).map_err(|m| self.error(operand, ErrorKind::InvalidModifier(m)))?;
        let mut keys = path.to_vec();
        let n = keys.len();
        keys[n - 1] = last_name;
        let value = self.request.lookup(&keys);
        if modifier == Some("isset") {
            return Ok(Term::Bool(value.is_some()));
        }
        let number_field = self
            .collection
            .field(last_name)
            .is_some_and(|f| f.kind == FieldKind::Number);
        let term = json_term(value, number_field);
        match modifier {
            None => Ok(term),
            Some("lower") => Ok(match term {
                Term::Null => Term::Null,
                Term::Text(s) => Term::Text(s.to_ascii_lowercase()),
                Term::Number(n) => Term::Text(number_text(n)),
                Term::Bool(b) => Term::Text(if b { "1" } else { "0" }.into()),
                other => other,
            }),
            Some(other) => Err(self.error(
                operand,
                ErrorKind::InvalidModifier(format!("{last_name}:{other}")),
            )),
        }
    }

    /// `@request.body.field:each`: the submitted items, any/all like a multi field.
    fn body_each(
        &self,
        field: &FieldSchema,
        operand: &Operand,
        main: &mut Space,
    ) -> Result<Resolved, FilterError> {
        if !field.kind.is_multi_valuer() {
            return Err(self.error(
                operand,
                ErrorKind::InvalidModifier(format!("{}:each", field.name)),
            ));
        }
        let items = match self.request.body.get(&field.name) {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
        };
        let json = Json::Array(items).to_string();
        let chain = |space: &mut Space| {
            let alias = space.join(
                format!("@body_each:{}", field.name),
                || self.alias(),
                |alias| Join {
                    table: TableRef::FunctionCall(
                        sql::array_items_of_text(self.dialect, json.clone()),
                        Alias::new(alias).into_iden(),
                    ),
                    on: sql::constant(true),
                },
            );
            Term::Sql(col(&alias, "value"), Ty::Text)
        };
        let term = chain(main);
        let multi = field.multiple.then(|| {
            let mut private = Space::default();
            let term = chain(&mut private);
            Multi {
                joins: private.joins,
                term,
            }
        });
        Ok(Resolved {
            term,
            multi,
            guard: None,
        })
    }

    /// `@request.body.field:changed`: submitted, and different from the stored value.
    fn body_changed(&self, field: &FieldSchema, operand: &Operand) -> Result<Term, FilterError> {
        let Some(value) = self.request.body.get(&field.name) else {
            return Ok(Term::Bool(false));
        };
        if field.hidden && !self.request.superuser {
            return Err(self.error(operand, ErrorKind::HiddenField(field.name.clone())));
        }
        let submitted = json_term(Some(value.clone()), field.kind == FieldKind::Number);
        let stored = self.column_term(&self.collection.name, field, None)?;
        Ok(Term::Sql(
            self.compare(&submitted, BaseOp::Neq, &stored),
            Ty::Bool,
        ))
    }

    /// The value of `field` of the row `table`, with an optional `:lower`.
    fn column_term(
        &self,
        table: &str,
        field: &FieldSchema,
        modifier: Option<&str>,
    ) -> Result<Term, FilterError> {
        let column = col(table, &field.name);
        let term = match field.kind {
            FieldKind::Number => Term::Sql(column, Ty::Number),
            FieldKind::Bool => Term::Sql(column, Ty::Bool),
            FieldKind::Json => Term::Json {
                column,
                path: Vec::new(),
                lower: false,
            },
            _ if field.multiple => Term::Sql(sql::array_text(self.dialect, column), Ty::Text),
            _ => Term::Sql(column, Ty::Text),
        };
        Ok(if modifier == Some("lower") {
            self.lower(term)
        } else {
            term
        })
    }

    fn lower(&self, term: Term) -> Term {
        match term {
            Term::Json { column, path, .. } => Term::Json {
                column,
                path,
                lower: true,
            },
            other => {
                let (text, _) = self.render(&other, Ty::Text);
                Term::Sql(sql::ascii_lower(self.dialect, text), Ty::Text)
            }
        }
    }

    /// Walks a field path from `start`, in the shared join space and, when the
    /// path is multi-valued, again in a private one for the all-items check.
    fn path(
        &self,
        start: Start,
        props: &[&str],
        operand: &Operand,
        main: &mut Space,
    ) -> Result<Resolved, FilterError> {
        let (term, multi, guard) = self.walk(start.clone(), props, operand, main)?;
        let multi = if multi {
            let mut private = Space::default();
            let (term, _, _) = self.walk(start, props, operand, &mut private)?;
            Some(Multi {
                joins: private.joins,
                term,
            })
        } else {
            None
        };
        Ok(Resolved { term, multi, guard })
    }

    fn start(&self, start: Start, space: &mut Space) -> Walk {
        let superuser = self.request.superuser;
        match start {
            Start::Base => Walk {
                collection: Arc::new(self.collection.clone()),
                table: self.collection.name.clone(),
                key: String::new(),
                multi: false,
                allow_hidden: superuser,
                nullify_missing: false,
            },
            Start::Auth(collection, id) => {
                let table = space.join(
                    "@auth".into(),
                    || self.alias(),
                    |alias| Join {
                        table: table_alias(&collection.name, alias),
                        on: Expr::col((Alias::new(alias), Alias::new("id")))
                            .eq(sql::bind(self.dialect, id.clone())),
                    },
                );
                Walk {
                    collection,
                    table,
                    key: "@auth".into(),
                    multi: false,
                    allow_hidden: true,
                    nullify_missing: true,
                }
            }
            Start::Collection(collection, alias_name) => {
                let key = format!("@collection:{alias_name}");
                let table = space.join(
                    key.clone(),
                    || self.alias(),
                    |alias| Join {
                        table: table_alias(&collection.name, alias),
                        on: sql::constant(true),
                    },
                );
                Walk {
                    collection,
                    table,
                    key,
                    multi: true,
                    allow_hidden: true,
                    nullify_missing: false,
                }
            }
            Start::BodyRelation(collection, ids, multiple, field) => {
                let key = format!("@body:{field}");
                let table = space.join(
                    key.clone(),
                    || self.alias(),
                    |alias| Join {
                        table: table_alias(&collection.name, alias),
                        on: Expr::col((Alias::new(alias), Alias::new("id")))
                            .is_in(ids.iter().map(|id| sql::bind(self.dialect, id.clone()))),
                    },
                );
                Walk {
                    collection,
                    table,
                    key,
                    multi: multiple,
                    allow_hidden: true,
                    nullify_missing: true,
                }
            }
        }
    }

    /// One walk of `props` from `start` in `space`: (value, multi-valued, guard).
    fn walk(
        &self,
        start: Start,
        props: &[&str],
        operand: &Operand,
        space: &mut Space,
    ) -> Result<(Term, bool, Option<SimpleExpr>), FilterError> {
        let mut at = self.start(start, space);
        let last = props.len() - 1;
        for (i, prop) in props.iter().enumerate() {
            if i == last {
                return self.last_prop(&at, prop, operand, space);
            }
            let field = at.collection.field(prop).cloned();
            if let Some(field) = &field {
                if field.hidden && !at.allow_hidden {
                    return Err(self.error(operand, ErrorKind::HiddenField(field.name.clone())));
                }
                if field.kind == FieldKind::Json {
                    return self.json_path(&at, field, &props[i + 1..], operand);
                }
            }
            if i >= MAX_NESTED_RELATIONS {
                return Err(self.error(
                    operand,
                    ErrorKind::TooManyRelations {
                        max: MAX_NESTED_RELATIONS,
                    },
                ));
            }
            let Some(field) = field else {
                match self.back_relation(&at, prop, operand, space)? {
                    Some(next) => {
                        at = next;
                        continue;
                    }
                    None => return Ok((Term::Null, false, None)),
                }
            };
            if field.kind != FieldKind::Relation {
                return Err(self.error(operand, ErrorKind::NotARelation(field.name.clone())));
            }
            let target_id = field.relation_collection.clone().unwrap_or_default();
            let target = self.lookup(&target_id).ok_or_else(|| {
                self.error(operand, ErrorKind::UnknownCollection(target_id.clone()))
            })?;
            // `rel.id` of a single relation is the stored id itself: no join.
            if !field.multiple && i + 1 == last && props[last] == "id" {
                return self.last_prop(&at, prop, operand, space);
            }
            let key = format!("{}.{}", at.key, field.name);
            let source = col(&at.table, &field.name);
            let table = if field.multiple {
                let items = space.join(
                    format!("{key}:items"),
                    || self.alias(),
                    |alias| Join {
                        table: TableRef::FunctionCall(
                            sql::array_items(self.dialect, source.clone()),
                            Alias::new(alias).into_iden(),
                        ),
                        on: sql::constant(true),
                    },
                );
                space.join(
                    key.clone(),
                    || self.alias(),
                    |alias| Join {
                        table: table_alias(&target.name, alias),
                        on: Expr::col((Alias::new(alias), Alias::new("id")))
                            .eq(col(&items, "value")),
                    },
                )
            } else {
                space.join(
                    key.clone(),
                    || self.alias(),
                    |alias| Join {
                        table: table_alias(&target.name, alias),
                        on: Expr::col((Alias::new(alias), Alias::new("id"))).eq(source.clone()),
                    },
                )
            };
            at = Walk {
                collection: target,
                table,
                key,
                multi: at.multi || field.multiple,
                ..at
            };
        }
        unreachable!("a path has at least one prop")
    }

    /// `collection_via_field`: the records of `collection` whose relation `field`
    /// points at the current one. `Ok(None)` means "resolves to NULL".
    fn back_relation(
        &self,
        at: &Walk,
        prop: &str,
        operand: &Operand,
        space: &mut Space,
    ) -> Result<Option<Walk>, FilterError> {
        let unknown = |kind| {
            if at.nullify_missing {
                Ok(None)
            } else {
                Err(self.error(operand, kind))
            }
        };
        let Some((collection_name, field_name)) = prop.rsplit_once("_via_") else {
            return unknown(ErrorKind::UnknownField(prop.into()));
        };
        if !is_word(collection_name) || !is_word(field_name) {
            return unknown(ErrorKind::UnknownField(prop.into()));
        }
        let Some(back) = self.lookup(collection_name) else {
            return unknown(ErrorKind::UnknownCollection(collection_name.into()));
        };
        let Some(field) = back.field(field_name).cloned() else {
            return unknown(ErrorKind::UnknownField(prop.into()));
        };
        let points_here = field
            .relation_collection
            .as_deref()
            .is_some_and(|c| c == at.collection.id || c == at.collection.name);
        if field.kind != FieldKind::Relation || !points_here {
            return unknown(ErrorKind::NotARelation(prop.into()));
        }
        if field.hidden && !at.allow_hidden {
            return Err(self.error(operand, ErrorKind::HiddenField(field.name.clone())));
        }
        let key = format!("{}.{prop}", at.key);
        let here = col(&at.table, "id");
        let table = space.join(
            key.clone(),
            || self.alias(),
            |alias| {
                let on = if field.multiple {
                    let items = self.alias();
                    let mut sub = Query::select();
                    sub.column((Alias::new(&items), Alias::new("value")))
                        .from_function(
                            sql::array_items(self.dialect, col(alias, &field.name)),
                            Alias::new(&items),
                        );
                    Expr::expr(here.clone()).in_subquery(sub)
                } else {
                    Expr::col((Alias::new(alias), Alias::new(&field.name))).eq(here.clone())
                };
                Join {
                    table: table_alias(&back.name, alias),
                    on,
                }
            },
        );
        Ok(Some(Walk {
            collection: back,
            table,
            key,
            multi: true,
            allow_hidden: at.allow_hidden,
            nullify_missing: at.nullify_missing,
        }))
    }

    fn json_path(
        &self,
        at: &Walk,
        field: &FieldSchema,
        rest: &[&str],
        operand: &Operand,
    ) -> Result<(Term, bool, Option<SimpleExpr>), FilterError> {
        let mut path: Vec<String> = rest.iter().map(|p| p.to_string()).collect();
        let mut lower = false;
        if let Some(last) = path.last_mut() {
            if let Some((key, modifier)) = last.split_once(':') {
                if modifier != "lower" {
                    return Err(self.error(operand, ErrorKind::InvalidModifier(last.clone())));
                }
                *last = key.to_string();
                lower = true;
            }
        }
        if path.iter().any(|p| p.contains(':')) {
            return Err(self.error(operand, ErrorKind::UnknownField(rest.join("."))));
        }
        let term = Term::Json {
            column: col(&at.table, &field.name),
            path,
            lower,
        };
        Ok((term, at.multi, None))
    }

    fn last_prop(
        &self,
        at: &Walk,
        prop: &str,
        operand: &Operand,
        space: &mut Space,
    ) -> Result<(Term, bool, Option<SimpleExpr>), FilterError> {
        let (name, modifier) =
            split_modifier(prop).map_err(|m| self.error(operand, ErrorKind::InvalidModifier(m)))?;
        let Some(field) = at.collection.field(name).cloned() else {
            if at.nullify_missing {
                return Ok((Term::Null, false, None));
            }
            return Err(self.error(operand, ErrorKind::UnknownField(name.into())));
        };
        if field.hidden && !at.allow_hidden {
            return Err(self.error(operand, ErrorKind::HiddenField(field.name.clone())));
        }
        let column = col(&at.table, &field.name);
        let term = match modifier {
            Some("length") if field.kind.is_multi_valuer() => {
                let length = if field.multiple {
                    sql::array_length(self.dialect, column)
                } else {
                    Expr::case(Expr::expr(column).eq(""), 0).finally(1).into()
                };
                Term::Sql(length, Ty::Number)
            }
            Some("each") if field.kind.is_multi_valuer() => {
                if !field.multiple {
                    return Ok((Term::Sql(column, Ty::Text), at.multi, None));
                }
                let items = space.join(
                    format!("{}.{}:each", at.key, field.name),
                    || self.alias(),
                    |alias| Join {
                        table: TableRef::FunctionCall(
                            sql::array_items(self.dialect, column.clone()),
                            Alias::new(alias).into_iden(),
                        ),
                        on: sql::constant(true),
                    },
                );
                return Ok((Term::Sql(col(&items, "value"), Ty::Text), true, None));
            }
            None | Some("lower") => self.column_term(&at.table, &field, modifier)?,
            Some(_) => return Err(self.error(operand, ErrorKind::InvalidModifier(prop.into()))),
        };
        let guard = (field.name == "email" && at.collection.auth && !at.allow_hidden).then(|| {
            Expr::col((Alias::new(&at.table), Alias::new("emailVisibility")))
                .eq(sql::bind(self.dialect, true))
        });
        Ok((term, at.multi, guard))
    }

    /// The type both sides of a non-LIKE comparison are compared in.
    fn common_type(left: &Term, right: &Term) -> Ty {
        let hint = |t: &Term| match t {
            Term::Null | Term::Json { .. } => None,
            Term::Text(_) => Some(Ty::Text),
            Term::Number(_) => Some(Ty::Number),
            Term::Bool(_) => Some(Ty::Bool),
            Term::Sql(_, ty) => Some(*ty),
        };
        let constant = |t: &Term| {
            matches!(
                t,
                Term::Text(_) | Term::Number(_) | Term::Bool(_) | Term::Null
            )
        };
        match (hint(left), hint(right)) {
            (None, None) => Ty::Text,
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) if a == b => a,
            (Some(Ty::Text), Some(_)) => {
                if constant(left) {
                    Ty::Number
                } else {
                    Ty::Text
                }
            }
            (Some(_), Some(Ty::Text)) => {
                if constant(right) {
                    Ty::Number
                } else {
                    Ty::Text
                }
            }
            _ => Ty::Number,
        }
    }

    /// `term` as SQL of type `ty`, and whether it is known to be empty.
    fn render(&self, term: &Term, ty: Ty) -> (SimpleExpr, Emptiness) {
        let d = self.dialect;
        match term {
            Term::Null => (sql::null(), Emptiness::Empty),
            Term::Text(s) => match ty {
                Ty::Text => {
                    let e = if s.is_empty() {
                        Emptiness::Empty
                    } else {
                        Emptiness::NonEmpty
                    };
                    (sql::bind(d, s.clone()), e)
                }
                _ => match s.trim().parse::<f64>() {
                    Ok(n) => (sql::bind(d, n), Emptiness::NonEmpty),
                    Err(_) => (sql::null(), Emptiness::Empty),
                },
            },
            Term::Number(n) => match ty {
                Ty::Text => (sql::bind(d, number_text(*n)), Emptiness::NonEmpty),
                _ => (sql::bind(d, *n), Emptiness::NonEmpty),
            },
            Term::Bool(b) => match ty {
                Ty::Text => (
                    sql::bind(d, if *b { "1" } else { "0" }),
                    Emptiness::NonEmpty,
                ),
                Ty::Number => (
                    sql::bind(d, if *b { 1.0 } else { 0.0 }),
                    Emptiness::NonEmpty,
                ),
                Ty::Bool => (sql::bind(d, *b), Emptiness::NonEmpty),
            },
            Term::Sql(e, from) => {
                let e = match (from, ty) {
                    (Ty::Number, Ty::Text) => sql::number_to_text(d, e.clone()),
                    (Ty::Bool, Ty::Text) => sql::bool_to_text(d, e.clone()),
                    (Ty::Bool, Ty::Number) => sql::bool_to_number(d, e.clone()),
                    _ => e.clone(),
                };
                (e, Emptiness::Unknown)
            }
            Term::Json {
                column,
                path,
                lower,
            } => {
                let as_ = match ty {
                    Ty::Text => JsonAs::Text,
                    Ty::Number => JsonAs::Number,
                    Ty::Bool => JsonAs::Bool,
                };
                let mut e = sql::json_value(d, column.clone(), path, as_);
                if *lower && ty == Ty::Text {
                    e = sql::ascii_lower(d, e);
                }
                (e, Emptiness::Unknown)
            }
        }
    }

    /// One comparison with PocketBase's NULL / empty-string rules.
    fn compare(&self, left: &Term, op: BaseOp, right: &Term) -> SimpleExpr {
        let d = self.dialect;
        match op {
            BaseOp::Like | BaseOp::NotLike => {
                let (l, _) = self.render(left, Ty::Text);
                let negated = op == BaseOp::NotLike;
                let constant = match right {
                    Term::Text(s) => Some(s.clone()),
                    Term::Number(n) => Some(number_text(*n)),
                    Term::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
                    _ => None,
                };
                match (constant, right) {
                    (Some(text), _) => {
                        let mut pattern = like_pattern(&text);
                        if d == Dialect::Postgres {
                            pattern = pattern.to_ascii_lowercase();
                        }
                        sql::like(d, l, sql::bind(d, pattern), true, negated)
                    }
                    (None, Term::Null) => sql::like(d, l, sql::null(), true, negated),
                    (None, _) => {
                        let (r, _) = self.render(right, Ty::Text);
                        sql::like(d, l, sql::contains_pattern(d, r), false, negated)
                    }
                }
            }
            BaseOp::Eq | BaseOp::Neq => self.equality(left, op == BaseOp::Eq, right),
            _ => {
                let ty = Self::common_type(left, right);
                let (l, _) = self.render(left, ty);
                let (r, _) = self.render(right, ty);
                match op {
                    BaseOp::Lt => Expr::expr(l).lt(r),
                    BaseOp::Lte => Expr::expr(l).lte(r),
                    BaseOp::Gt => Expr::expr(l).gt(r),
                    _ => Expr::expr(l).gte(r),
                }
            }
        }
    }

    /// PocketBase's `resolveEqualExpr`: `''` and NULL are the same for texts, and
    /// `!=` is NULL-safe.
    fn equality(&self, left: &Term, equal: bool, right: &Term) -> SimpleExpr {
        let d = self.dialect;
        let ty = Self::common_type(left, right);
        let (l, l_empty) = self.render(left, ty);
        let (r, r_empty) = self.render(right, ty);
        let null_safe = |l, r| {
            if equal {
                sql::is_not_distinct(d, l, r)
            } else {
                sql::is_distinct(d, l, r)
            }
        };
        let json = matches!(left, Term::Json { .. }) || matches!(right, Term::Json { .. });
        if json {
            return null_safe(l, r);
        }
        let (l_e, r_e) = (l_empty == Emptiness::Empty, r_empty == Emptiness::Empty);
        if l_e && r_e {
            return sql::constant(equal);
        }
        let empty_value = || sql::bind(d, "");
        // One side is empty: the other must be '' or NULL (texts) or NULL.
        if l_e || r_e {
            let other = if l_e { r } else { l };
            return match (ty, equal) {
                (Ty::Text, true) => Expr::expr(other.clone())
                    .eq(empty_value())
                    .or(other.is_null()),
                (Ty::Text, false) => Expr::expr(other.clone())
                    .ne(empty_value())
                    .and(other.is_not_null()),
                (_, true) => other.is_null(),
                (_, false) => other.is_not_null(),
            };
        }
        if l_empty == Emptiness::NonEmpty || r_empty == Emptiness::NonEmpty {
            return if equal {
                Expr::expr(l).eq(r)
            } else {
                null_safe(l, r)
            };
        }
        if ty == Ty::Text {
            let coalesce = |e: SimpleExpr| -> SimpleExpr {
                sea_orm::sea_query::Func::coalesce([e, empty_value()]).into()
            };
            let (l, r) = (coalesce(l), coalesce(r));
            return if equal {
                Expr::expr(l).eq(r)
            } else {
                Expr::expr(l).ne(r)
            };
        }
        null_safe(l, r)
    }

    /// The single-valued value of a path for ORDER BY, as a scalar subquery when
    /// it walks relations.
    pub(super) fn sort_value(&self, operand: &Operand) -> Result<SimpleExpr, FilterError> {
        let mut main = Space::default();
        let resolved = match &operand.value {
            Value::Identifier(name) if !name.starts_with('@') => self.path(
                Start::Base,
                &name.split('.').collect::<Vec<_>>(),
                operand,
                &mut main,
            )?,
            Value::Identifier(name)
                if name.starts_with("@collection.") || name.starts_with("@request.") =>
            {
                return Err(self.error(
                    operand,
                    ErrorKind::Invalid(format!("cannot sort by {name:?}")),
                ))
            }
            _ => return Err(self.error(operand, ErrorKind::UnknownField(operand_text(operand)))),
        };
        if resolved.multi.is_some() {
            return Err(self.error(
                operand,
                ErrorKind::Invalid(format!(
                    "cannot sort by the multi-valued {:?}",
                    operand_text(operand)
                )),
            ));
        }
        if matches!(resolved.term, Term::Null) {
            return Err(self.error(operand, ErrorKind::UnknownField(operand_text(operand))));
        }
        let ty = match &resolved.term {
            Term::Sql(_, ty) => *ty,
            _ => Ty::Text,
        };
        let (value, _) = self.render(&resolved.term, ty);
        if main.joins.is_empty() {
            return Ok(value);
        }
        let mut select = driver(&main.joins);
        select.clear_selects();
        select.expr(value);
        Ok(SimpleExpr::SubQuery(
            None,
            Box::new(select.into_sub_query_statement()),
        ))
    }
}

fn operand_text(operand: &Operand) -> String {
    match &operand.value {
        Value::Identifier(s) | Value::Text(s) => s.clone(),
        Value::Number(n) => number_text(*n),
    }
}

fn table_alias(table: &str, alias: &str) -> TableRef {
    TableRef::TableAlias(Alias::new(table).into_iden(), Alias::new(alias).into_iden())
}

/// The ids a relation field of the body holds (one id or a list), deduplicated.
fn relation_ids(value: Option<&Json>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |v: &Json| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            if !ids.iter().any(|i| i == s) {
                ids.push(s.to_string());
            }
        }
    };
    match value {
        Some(Json::Array(items)) => items.iter().for_each(&mut push),
        Some(v) => push(v),
        None => {}
    }
    ids
}

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
