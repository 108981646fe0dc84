//! The few SQL shapes that differ between SQLite and PostgreSQL, written once so
//! that a filter means the same on both. Templates are constants of this file and
//! never contain user input: everything variable goes in as a sea-query expression.

use sea_orm::sea_query::{Alias, Expr, Func, FunctionCall, Keyword, SimpleExpr, Value};

use super::compile::Dialect;

/// A constant SQL template with `$` marking where `args` go, in order.
pub fn template(dialect: Dialect, text: &str, args: Vec<SimpleExpr>) -> SimpleExpr {
    let mut out = String::with_capacity(text.len() + 8);
    let mut n = 0;
    for c in text.chars() {
        if c == '$' {
            n += 1;
            match dialect {
                Dialect::Sqlite => out.push('?'),
                Dialect::Postgres => out.push_str(&format!("${n}")),
            }
        } else {
            out.push(c);
        }
    }
    debug_assert_eq!(n, args.len(), "template {text:?}");
    Expr::cust_with_exprs(out, args)
}

/// A bound parameter. PostgreSQL gets an explicit cast: the server then never has
/// to infer a type, and the same SQL text never carries parameters of different
/// types (sqlx caches prepared statements by their text).
pub fn bind(dialect: Dialect, value: impl Into<Value>) -> SimpleExpr {
    let value: Value = value.into();
    let pg_type = match &value {
        Value::Bool(_) => "BOOLEAN",
        Value::Double(_) | Value::Float(_) => "DOUBLE PRECISION",
        _ => "TEXT",
    };
    match dialect {
        Dialect::Sqlite => Expr::val(value).into(),
        Dialect::Postgres => Expr::val(value).cast_as(Alias::new(pg_type)),
    }
}

/// SQL `NULL`.
pub fn null() -> SimpleExpr {
    SimpleExpr::Keyword(Keyword::Null)
}

/// A condition that always holds (`truth`) or never does.
pub fn constant(truth: bool) -> SimpleExpr {
    Expr::cust(if truth { "1 = 1" } else { "1 = 0" })
}

/// Whether `condition` is one that [`constant`] built, and which.
pub fn constant_truth(condition: &SimpleExpr) -> Option<bool> {
    [true, false]
        .into_iter()
        .find(|truth| *condition == constant(*truth))
}

/// `a IS b`: equality where NULL equals NULL.
pub fn is_not_distinct(dialect: Dialect, a: SimpleExpr, b: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => Expr::expr(a).is(b),
        Dialect::Postgres => template(dialect, "($ IS NOT DISTINCT FROM $)", vec![a, b]),
    }
}

/// `a IS NOT b`: inequality where NULL differs from every value but NULL.
pub fn is_distinct(dialect: Dialect, a: SimpleExpr, b: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => Expr::expr(a).is_not(b),
        Dialect::Postgres => template(dialect, "($ IS DISTINCT FROM $)", vec![a, b]),
    }
}

/// ASCII-only lowercasing, as SQLite's `lower()` does (PostgreSQL's `lower()`
/// would also fold non-ASCII letters).
pub fn ascii_lower(dialect: Dialect, x: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => Func::lower(x).into(),
        Dialect::Postgres => template(
            dialect,
            "translate($, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')",
            vec![x],
        ),
    }
}

/// `x LIKE pattern ESCAPE '\'`, ASCII case-insensitive on both engines (SQLite's
/// LIKE already is; PostgreSQL compares ASCII-lowered sides). `pattern` must already
/// be ASCII-lowered when it is a constant.
pub fn like(
    dialect: Dialect,
    x: SimpleExpr,
    pattern: SimpleExpr,
    pattern_is_lowered: bool,
    negated: bool,
) -> SimpleExpr {
    let text = if negated {
        "$ NOT LIKE $ ESCAPE '\\'"
    } else {
        "$ LIKE $ ESCAPE '\\'"
    };
    match dialect {
        Dialect::Sqlite => template(dialect, text, vec![x, pattern]),
        Dialect::Postgres => {
            let pattern = if pattern_is_lowered {
                pattern
            } else {
                ascii_lower(dialect, pattern)
            };
            template(dialect, text, vec![ascii_lower(dialect, x), pattern])
        }
    }
}

/// `'%' || x || '%'` with backslashes in `x` doubled, so that a column used as a
/// `~` pattern can never end with a lone escape character (an error in PostgreSQL).
pub fn contains_pattern(dialect: Dialect, x: SimpleExpr) -> SimpleExpr {
    template(dialect, "('%' || replace($, '\\', '\\\\') || '%')", vec![x])
}

/// A REAL / DOUBLE PRECISION as text the same way on both engines for integral
/// values (`5`, not SQLite's `5.0`).
pub fn number_to_text(dialect: Dialect, x: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => template(
            dialect,
            "(CASE WHEN $ = CAST($ AS INTEGER) THEN CAST(CAST($ AS INTEGER) AS TEXT) ELSE CAST($ AS TEXT) END)",
            vec![x.clone(), x.clone(), x.clone(), x],
        ),
        Dialect::Postgres => template(dialect, "CAST($ AS TEXT)", vec![x]),
    }
}

/// A boolean as `'1'` / `'0'` (SQLite's own rendering).
pub fn bool_to_text(dialect: Dialect, x: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => template(dialect, "CAST($ AS TEXT)", vec![x]),
        Dialect::Postgres => template(dialect, "CAST(CAST($ AS INTEGER) AS TEXT)", vec![x]),
    }
}

/// A boolean as the number 1 / 0.
pub fn bool_to_number(dialect: Dialect, x: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => x,
        Dialect::Postgres => template(dialect, "CAST($ AS INTEGER)", vec![x]),
    }
}

/// The items of a JSON array of strings, as rows with a `value` column.
pub fn array_items(dialect: Dialect, array: SimpleExpr) -> FunctionCall {
    match dialect {
        Dialect::Sqlite => Func::cust(Alias::new("json_each")).arg(array),
        Dialect::Postgres => Func::cust(Alias::new("jsonb_array_elements_text")).arg(array),
    }
}

/// Whether a stored JSON array of strings holds any of `values` (the records API
/// uses it for back-relations and for clearing references).
pub fn array_has_any(dialect: Dialect, array: SimpleExpr, values: &[String]) -> SimpleExpr {
    let items = Alias::new("__has");
    let subquery = sea_orm::sea_query::Query::select()
        .expr(Expr::val(1))
        .from_function(array_items(dialect, array), items.clone())
        .and_where(
            Expr::col((items, Alias::new("value")))
                .is_in(values.iter().map(|v| bind(dialect, v.clone()))),
        )
        .to_owned();
    Expr::exists(subquery)
}

/// The items of a JSON array given as bound JSON text.
pub fn array_items_of_text(dialect: Dialect, json: String) -> FunctionCall {
    match dialect {
        Dialect::Sqlite => Func::cust(Alias::new("json_each")).arg(bind(dialect, json)),
        Dialect::Postgres => Func::cust(Alias::new("jsonb_array_elements_text"))
            .arg(Expr::val(json).cast_as(Alias::new("jsonb"))),
    }
}

/// The number of items of a stored JSON array (0 for NULL).
pub fn array_length(dialect: Dialect, array: SimpleExpr) -> SimpleExpr {
    let text = match dialect {
        Dialect::Sqlite => "COALESCE(json_array_length($), 0)",
        Dialect::Postgres => "COALESCE(jsonb_array_length($), 0)",
    };
    template(dialect, text, vec![array])
}

/// A stored JSON array as compact JSON text (`["a","b"]`); SQLite stores it so.
pub fn array_text(dialect: Dialect, array: SimpleExpr) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => array,
        Dialect::Postgres => template(
            dialect,
            "(SELECT COALESCE('[' || string_agg(to_jsonb(\"__e\".\"value\")::text, ',' ORDER BY \"__e\".\"n\") || ']', '[]') FROM jsonb_array_elements_text($) WITH ORDINALITY AS \"__e\"(\"value\", \"n\"))",
            vec![array],
        ),
    }
}

/// How a JSON value is read for a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonAs {
    /// Strings as themselves, numbers and containers as their JSON text, booleans
    /// as `true`/`false`, JSON null and missing keys as NULL.
    Text,
    /// Numbers only; anything else is NULL.
    Number,
    /// Booleans only; anything else is NULL.
    Bool,
}

/// The value at `path` (keys; all-digit keys index arrays) inside the JSON column
/// `column`, read `as_`.
pub fn json_value(
    dialect: Dialect,
    column: SimpleExpr,
    path: &[String],
    as_: JsonAs,
) -> SimpleExpr {
    match dialect {
        Dialect::Sqlite => {
            let mut json_path = String::from("$");
            for key in path {
                if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
                    json_path.push_str(&format!("[{key}]"));
                } else {
                    json_path.push_str(&format!(".\"{key}\""));
                }
            }
            let p = bind(dialect, json_path);
            let text = match as_ {
                JsonAs::Text => "(CASE json_type($, $) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN NULL ELSE CAST(json_extract($, $) AS TEXT) END)",
                JsonAs::Number => "(CASE WHEN json_type($, $) IN ('integer', 'real') THEN json_extract($, $) END)",
                JsonAs::Bool => "(CASE json_type($, $) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)",
            };
            let args = match as_ {
                JsonAs::Bool => vec![column, p],
                _ => vec![column.clone(), p.clone(), column, p],
            };
            template(dialect, text, args)
        }
        Dialect::Postgres => {
            let value: SimpleExpr = if path.is_empty() {
                column
            } else {
                let mut call = Func::cust(Alias::new("jsonb_extract_path")).arg(column);
                for key in path {
                    call = call.arg(bind(dialect, key.clone()));
                }
                call.into()
            };
            let text = match as_ {
                JsonAs::Text => "(CASE WHEN jsonb_typeof($) = 'null' THEN NULL ELSE $ #>> '{}' END)",
                JsonAs::Number => "(CASE WHEN jsonb_typeof($) = 'number' THEN CAST($ #>> '{}' AS DOUBLE PRECISION) END)",
                JsonAs::Bool => "(CASE WHEN jsonb_typeof($) = 'boolean' THEN CAST($ #>> '{}' AS BOOLEAN) END)",
            };
            template(dialect, text, vec![value.clone(), value])
        }
    }
}

/// PocketBase's `wrapLikeParams`: `%…%` around the text with `\`, `%` and `_`
/// escaped, unless the text already holds an unescaped `%`.
pub fn like_pattern(text: &str) -> String {
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
