//! `?sort=`: `-field` descending, `field` / `+field` ascending, `@random`, relation
//! paths; compiled through the same schema resolution as filters.

use sea_orm::sea_query::{Func, NullOrdering, Order, SelectStatement, SimpleExpr};

use super::ast::{Operand, Value};
use super::compile::Compiler;
use super::error::{ErrorKind, FilterError};
use super::{at_char, MAX_LENGTH, SUPERUSER_ONLY_PREFIXES};

/// A parsed sort expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    source: String,
    fields: Vec<SortField>,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortField {
    /// The field path, or `@random`.
    pub name: String,
    pub descending: bool,
    /// Byte offset of the name in the sort expression.
    start: usize,
}

/// One compiled `ORDER BY` term.
#[derive(Debug, Clone)]
pub struct SortTerm {
    pub expr: SimpleExpr,
    pub order: Order,
    /// Whether `expr` can be NULL: a relation path or a JSON value can, a field's own
    /// column and `@random` cannot.
    pub nullable: bool,
}

impl Sort {
    /// Parses `-a,+b,c.d,@random` (PocketBase's `ParseSortFromString`); names must be
    /// identifiers of the filter language.
    pub fn parse(input: &str) -> Result<Sort, FilterError> {
        if input.len() > MAX_LENGTH {
            return Err(FilterError::new(0, ErrorKind::TooLong { max: MAX_LENGTH }));
        }
        let mut fields = Vec::new();
        let mut offset = 0;
        for raw in input.split(',') {
            let trimmed_start = offset + (raw.len() - raw.trim_start().len());
            let item = raw.trim();
            let (name, descending, skip) = match item.as_bytes().first() {
                Some(b'-') => (&item[1..], true, 1),
                Some(b'+') => (&item[1..], false, 1),
                _ => (item, false, 0),
            };
            let start = trimmed_start + skip;
            let valid = !name.is_empty()
                && name.as_bytes()[0] != b'.'
                && !name.ends_with('.')
                && !name.ends_with(':')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@'));
            if !valid {
                let err = FilterError::new(
                    start,
                    ErrorKind::Invalid(format!("invalid sort field {name:?}")),
                );
                return Err(at_char(input, err));
            }
            fields.push(SortField {
                name: name.to_string(),
                descending,
                start,
            });
            offset += raw.len() + 1;
        }
        Ok(Sort {
            source: input.to_string(),
            fields,
        })
    }

    /// The sort keys in order.
    pub fn fields(&self) -> &[SortField] {
        &self.fields
    }

    /// The first key naming `@request.*` or `@collection.*` (superusers only in
    /// PocketBase's `?sort=`).
    pub fn superuser_only_identifier(&self) -> Option<&str> {
        self.fields
            .iter()
            .map(|f| f.name.as_str())
            .find(|n| SUPERUSER_ONLY_PREFIXES.iter().any(|p| n.starts_with(p)))
    }
}

impl SortTerm {
    /// Adds the term to `select`, with NULLs first when ascending and last when
    /// descending on both engines (SQLite's own order, explicit for PostgreSQL).
    /// A term that cannot be NULL goes without the NULLS clause: PostgreSQL's btree
    /// index on a column can then be read backwards for `DESC`, where `DESC NULLS
    /// LAST` (the reverse of the index order) would make it sort every matching row.
    pub fn apply(&self, select: &mut SelectStatement) {
        if !self.nullable {
            select.order_by_expr(self.expr.clone(), self.order.clone());
            return;
        }
        let nulls = match self.order {
            Order::Desc => NullOrdering::Last,
            _ => NullOrdering::First,
        };
        select.order_by_expr_with_nulls(self.expr.clone(), self.order.clone(), nulls);
    }
}

impl Compiler<'_> {
    /// The sort as ORDER BY terms; paths may walk single relations only.
    pub fn sort(&self, sort: &Sort) -> Result<Vec<SortTerm>, FilterError> {
        sort.fields
            .iter()
            .map(|field| {
                let order = if field.descending {
                    Order::Desc
                } else {
                    Order::Asc
                };
                let (expr, nullable) = if field.name == "@random" {
                    (Func::random().into(), false)
                } else {
                    let operand = Operand {
                        value: Value::Identifier(field.name.clone()),
                        start: field.start,
                        end: field.start + field.name.len(),
                    };
                    self.sort_value(&operand)
                        .map_err(|err| at_char(&sort.source, err))?
                };
                Ok(SortTerm {
                    expr,
                    order,
                    nullable,
                })
            })
            .collect()
    }
}
