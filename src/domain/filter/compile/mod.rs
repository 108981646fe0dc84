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

use super::ast::{BaseOp, Comparison, Expr as FilterExpr, Operand, Value};
use super::error::{ErrorKind, FilterError};
use super::request::RequestContext;
use super::schema::{CollectionSchema, SchemaLookup};
use super::sql::{self, JsonAs};
use super::{at_char, Filter};

mod candidate;
mod resolve;

pub use candidate::candidate_row;
use resolve::Start;

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

/// Compiles filters, rules and sorts of one collection for one request.
pub struct Compiler<'a> {
    schema: &'a dyn SchemaLookup,
    collection: &'a CollectionSchema,
    request: &'a RequestContext,
    dialect: Dialect,
    /// How the listed table is named in the query: the collection, or the alias of
    /// a join when a related collection's list rule is compiled.
    base_table: String,
    alias_prefix: String,
    next_alias: Cell<usize>,
    /// Set per call: the expression comes from a client, not from a rule.
    restricted: Cell<bool>,
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

/// Whether an operand is known to be empty (`''`/NULL) when the query is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emptiness {
    Empty,
    NonEmpty,
    Unknown,
}

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

/// A number as text the way PocketBase's `cast.ToString` prints it (`5`, `0.25`).
fn number_text(n: f64) -> String {
    format!("{n}")
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
        make: impl FnOnce(&str) -> Result<Join, FilterError>,
    ) -> Result<String, FilterError> {
        self.touched = true;
        if let Some(alias) = self.keys.get(&key) {
            return Ok(alias.clone());
        }
        let alias = alias();
        self.joins.push(make(&alias)?);
        self.keys.insert(key, alias.clone());
        Ok(alias)
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
            base_table: collection.name.clone(),
            alias_prefix: "__f".into(),
            next_alias: Cell::new(0),
            restricted: Cell::new(false),
        }
    }

    /// The dialect conditions are built for.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A client-supplied filter (`?filter=`, realtime options) as a condition on
    /// rows of `FROM "<collection>"` (unaliased). Unless the request is a
    /// superuser's: hidden fields are refused, auth emails match only where
    /// `emailVisibility` is on, and related collections are seen only through
    /// their list rule (a related collection whose list rule is superusers-only
    /// cannot be filtered through), as in PocketBase.
    pub fn filter(&self, filter: &Filter) -> Result<SimpleExpr, FilterError> {
        self.restricted.set(!self.request.superuser);
        self.filter_expr(filter.expr())
            .map_err(|err| at_char(filter.source(), err))
    }

    /// A collection API rule (written by a superuser, so trusted): every field is
    /// visible. Same shape of condition as [`Compiler::filter`].
    pub fn rule(&self, rule: &Filter) -> Result<SimpleExpr, FilterError> {
        self.restricted.set(false);
        self.filter_expr(rule.expr())
            .map_err(|err| at_char(rule.source(), err))
    }

    /// `on`, further limited to the rows of `collection` (joined as `alias`) that
    /// the request may list, when the expression is a client's.
    fn visible(
        &self,
        on: SimpleExpr,
        collection: &CollectionSchema,
        alias: &str,
        operand: &Operand,
    ) -> Result<SimpleExpr, FilterError> {
        if !self.restricted.get() {
            return Ok(on);
        }
        let rule = match collection.list_rule.as_deref().map(str::trim) {
            None => {
                return Err(self.error(
                    operand,
                    ErrorKind::RestrictedCollection(collection.name.clone()),
                ))
            }
            Some("") => return Ok(on),
            Some(rule) => rule,
        };
        let invalid = |err: FilterError| {
            self.error(
                operand,
                ErrorKind::Invalid(format!("list rule of {:?}: {err}", collection.name)),
            )
        };
        let rule = Filter::parse(rule).map_err(invalid)?;
        // Compiled as a rule of the related collection, rooted at its join alias;
        // trusted, so it does not in turn restrict what it reads.
        let nested = Compiler {
            base_table: alias.to_string(),
            alias_prefix: format!("{alias}_"),
            ..Compiler::new(self.schema, collection, self.request, self.dialect)
        };
        let condition = nested.filter_expr(rule.expr()).map_err(invalid)?;
        Ok(on.and(condition))
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
        format!("{}{n}", self.alias_prefix)
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
                        let mut pattern = sql::like_pattern(&text);
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
        // Empty against a non-empty literal (`@request.auth.id != ''` for a signed-in
        // requester): decided here, so a rule of only such parts needs no SQL.
        if (l_e && r_empty == Emptiness::NonEmpty) || (r_e && l_empty == Emptiness::NonEmpty) {
            return sql::constant(!equal);
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
    /// it walks relations, and whether it can be NULL.
    pub(super) fn sort_value(&self, operand: &Operand) -> Result<(SimpleExpr, bool), FilterError> {
        self.restricted.set(!self.request.superuser);
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
            // A bare column is a text, number or bool field of the collection's own row
            // (JSON and multi-valued fields render as expressions): those columns are
            // NOT NULL by the storage contract.
            let nullable = !matches!(value, SimpleExpr::Column(_));
            return Ok((value, nullable));
        }
        let mut select = driver(&main.joins);
        select.clear_selects();
        select.expr(value);
        Ok((
            SimpleExpr::SubQuery(None, Box::new(select.into_sub_query_statement())),
            true,
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
