//! PocketBase's filter language: `?filter=`, API rules, `?sort=` and `?fields=`.
//!
//! [`Filter::parse`] checks the syntax (fexpr's grammar); a [`Compiler`] resolves the
//! identifiers through a [`SchemaLookup`] and turns the filter into a parameterised
//! sea-query condition for SQLite or PostgreSQL. Identifiers only ever become SQL
//! through the schema (quoted by sea-query); every value is a bound parameter.
//!
//! For a list request the records API ANDs [`Compiler::rule`] of the list rule
//! (trusted) with [`Compiler::filter`] of `?filter=` (a client's: hidden fields,
//! private emails and related collections' list rules apply), after answering 403
//! when [`Filter::superuser_only_identifier`] finds `@request.`/`@collection.` in a
//! non-superuser's filter. A create rule is checked on [`candidate_row`] aliased
//! as the collection. PostgreSQL should use a `C`/`C.UTF-8` collation so that text
//! ordering is byte order, as in SQLite.
//!
//! ```
//! # use std::sync::Arc;
//! # use gatehouse::domain::filter::*;
//! # struct Registry(Arc<CollectionSchema>);
//! # impl SchemaLookup for Registry {
//! #     fn collection(&self, n: &str) -> Option<Arc<CollectionSchema>> {
//! #         (n == self.0.name || n == self.0.id).then(|| self.0.clone())
//! #     }
//! # }
//! use sea_orm::sea_query::{Alias, Query, SqliteQueryBuilder};
//! let posts = Arc::new(CollectionSchema {
//!     id: "pbc_posts".into(),
//!     name: "posts".into(),
//!     auth: false,
//!     list_rule: Some(String::new()),
//!     fields: vec![
//!         FieldSchema::new("id", FieldKind::Text),
//!         FieldSchema::new("title", FieldKind::Text),
//!     ],
//! });
//! let registry = Registry(posts.clone());
//! let request = RequestContext::guest(chrono::Utc::now());
//! let compiler = Compiler::new(&registry, &posts, &request, Dialect::Sqlite);
//! let filter = Filter::parse("title ~ 'rust' && id != ''").unwrap();
//! let condition = compiler.filter(&filter).unwrap();
//! let (sql, values) = Query::select()
//!     .column(Alias::new("id"))
//!     .from(Alias::new("posts"))
//!     .and_where(condition)
//!     .build(SqliteQueryBuilder);
//! assert!(sql.contains(r#""posts"."title" LIKE ?"#));
//! assert_eq!(values.0.len(), 2);
//! ```

mod ast;
mod compile;
mod error;
mod fields;
mod lexer;
mod parser;
mod request;
mod schema;
mod sort;
mod sql;

pub use ast::{BaseOp, Comparison, Expr, Op, Operand, Value};
pub use compile::{candidate_row, Compiler, Dialect, MAX_NESTED_RELATIONS};
pub use error::{ErrorKind, FilterError};
pub use fields::{excerpt_text, Excerpt, FieldPick, Fields};
pub use parser::MAX_DEPTH;
pub use request::RequestContext;
pub use schema::{CollectionSchema, FieldKind, FieldSchema, SchemaLookup};
pub use sort::{Sort, SortField, SortTerm};
pub use sql::{array_has_any, constant_truth};

/// The longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 8 * 1024;

/// Prefixes of identifiers that PocketBase lets only superusers use in `?filter=`
/// and `?sort=` (others get 403).
pub const SUPERUSER_ONLY_PREFIXES: [&str; 2] = ["@collection.", "@request."];

/// A syntactically valid filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    source: String,
    expr: Expr,
}

impl Filter {
    /// Parses `input`; errors say where (in characters) and why.
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.len() > MAX_LENGTH {
            return Err(FilterError::new(0, ErrorKind::TooLong { max: MAX_LENGTH }));
        }
        let expr = lexer::tokenize(input)
            .and_then(|tokens| parser::parse(&tokens, input.len()))
            .map_err(|err| at_char(input, err))?;
        Ok(Filter {
            source: input.to_string(),
            expr,
        })
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The first identifier starting with `@request.` or `@collection.`, which only
    /// superusers may use in a client-supplied `?filter=` (PocketBase answers 403).
    /// Unlike PocketBase's substring check, quoted texts do not count.
    pub fn superuser_only_identifier(&self) -> Option<&str> {
        self.expr.comparisons().into_iter().find_map(|c| {
            [&c.left, &c.right]
                .into_iter()
                .find_map(|o| match &o.value {
                    Value::Identifier(name)
                        if SUPERUSER_ONLY_PREFIXES.iter().any(|p| name.starts_with(p)) =>
                    {
                        Some(name.as_str())
                    }
                    _ => None,
                })
        })
    }
}

/// Turns an error's byte offset into `source` into a character position.
fn at_char(source: &str, mut err: FilterError) -> FilterError {
    let byte = err.position.min(source.len());
    err.position = source.char_indices().take_while(|(i, _)| *i < byte).count();
    err
}

#[cfg(test)]
mod tests;
