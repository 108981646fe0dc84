//! Identifiers → operands: fields and relation paths through the schema, back
//! relations, `@collection`, `@request.*` and the date macros, following
//! PocketBase's `core/record_field_resolver_runner.go`.

use std::sync::Arc;

use sea_orm::sea_query::{Alias, Expr, IntoIden, Query, SimpleExpr, TableRef};
use serde_json::Value as Json;

use super::{
    col, is_word, number_text, table_alias, Compiler, Join, Multi, Resolved, Space, Term, Ty,
    MAX_NESTED_RELATIONS,
};
use crate::domain::filter::ast::{BaseOp, Operand, Value};
use crate::domain::filter::error::{ErrorKind, FilterError};
use crate::domain::filter::schema::{CollectionSchema, FieldKind, FieldSchema};
use crate::domain::filter::sql;

/// Where a path starts.
#[derive(Clone)]
pub(super) enum Start {
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

const PLAIN_AUTH_FIELDS: [&str; 6] = [
    "id",
    "collectionId",
    "collectionName",
    "email",
    "emailVisibility",
    "verified",
];

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

impl Compiler<'_> {
    /// Resolves one side of a comparison.
    pub(super) fn operand(
        &self,
        operand: &Operand,
        main: &mut Space,
    ) -> Result<Resolved, FilterError> {
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
                |alias| {
                    Ok(Join {
                        table: TableRef::FunctionCall(
                            sql::array_items_of_text(self.dialect, json.clone()),
                            Alias::new(alias).into_iden(),
                        ),
                        on: sql::constant(true),
                    })
                },
            )?;
            Ok(Term::Sql(col(&alias, "value"), Ty::Text))
        };
        let term = chain(main)?;
        let multi = if field.multiple {
            let mut private = Space::default();
            let term = chain(&mut private)?;
            Some(Multi {
                joins: private.joins,
                term,
            })
        } else {
            None
        };
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
        if field.hidden && self.restricted.get() {
            return Err(self.error(operand, ErrorKind::HiddenField(field.name.clone())));
        }
        let submitted = json_term(Some(value.clone()), field.kind == FieldKind::Number);
        let stored = self.column_term(&self.base_table, field, None)?;
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
    pub(super) fn path(
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

    fn start(
        &self,
        start: Start,
        operand: &Operand,
        space: &mut Space,
    ) -> Result<Walk, FilterError> {
        Ok(match start {
            Start::Base => Walk {
                collection: Arc::new(self.collection.clone()),
                table: self.base_table.clone(),
                key: String::new(),
                multi: false,
                allow_hidden: !self.restricted.get(),
                nullify_missing: false,
            },
            Start::Auth(collection, id) => {
                let table = space.join(
                    "@auth".into(),
                    || self.alias(),
                    |alias| {
                        let on = Expr::col((Alias::new(alias), Alias::new("id")))
                            .eq(sql::bind(self.dialect, id.clone()));
                        Ok(Join {
                            table: table_alias(&collection.name, alias),
                            on: self.visible(on, &collection, alias, operand)?,
                        })
                    },
                )?;
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
                    |alias| {
                        Ok(Join {
                            table: table_alias(&collection.name, alias),
                            on: self.visible(sql::constant(true), &collection, alias, operand)?,
                        })
                    },
                )?;
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
                    |alias| {
                        let on = Expr::col((Alias::new(alias), Alias::new("id")))
                            .is_in(ids.iter().map(|id| sql::bind(self.dialect, id.clone())));
                        Ok(Join {
                            table: table_alias(&collection.name, alias),
                            on: self.visible(on, &collection, alias, operand)?,
                        })
                    },
                )?;
                Walk {
                    collection,
                    table,
                    key,
                    multi: multiple,
                    allow_hidden: true,
                    nullify_missing: true,
                }
            }
        })
    }

    /// One walk of `props` from `start` in `space`: (value, multi-valued, guard).
    fn walk(
        &self,
        start: Start,
        props: &[&str],
        operand: &Operand,
        space: &mut Space,
    ) -> Result<(Term, bool, Option<SimpleExpr>), FilterError> {
        let Some(last) = props.len().checked_sub(1) else {
            return Err(self.error(operand, ErrorKind::UnknownField(String::new())));
        };
        let mut at = self.start(start, operand, space)?;
        for (i, prop) in props[..last].iter().enumerate() {
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
            let related_id = if field.multiple {
                let items = space.join(
                    format!("{key}:items"),
                    || self.alias(),
                    |alias| {
                        Ok(Join {
                            table: TableRef::FunctionCall(
                                sql::array_items(self.dialect, source.clone()),
                                Alias::new(alias).into_iden(),
                            ),
                            on: sql::constant(true),
                        })
                    },
                )?;
                col(&items, "value")
            } else {
                source
            };
            let table = space.join(
                key.clone(),
                || self.alias(),
                |alias| {
                    let on = Expr::col((Alias::new(alias), Alias::new("id"))).eq(related_id);
                    Ok(Join {
                        table: table_alias(&target.name, alias),
                        on: self.visible(on, &target, alias, operand)?,
                    })
                },
            )?;
            at = Walk {
                collection: target,
                table,
                key,
                multi: at.multi || field.multiple,
                ..at
            };
        }
        self.last_prop(&at, props[last], operand, space)
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
                Ok(Join {
                    table: table_alias(&back.name, alias),
                    on: self.visible(on, &back, alias, operand)?,
                })
            },
        )?;
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
                    |alias| {
                        Ok(Join {
                            table: TableRef::FunctionCall(
                                sql::array_items(self.dialect, column.clone()),
                                Alias::new(alias).into_iden(),
                            ),
                            on: sql::constant(true),
                        })
                    },
                )?;
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
