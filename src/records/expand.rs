//! `?expand=a,b.c,comments_via_post`: related records inlined under `expand`, loaded
//! one query per relation and level, each through the related collection's view rule
//! (records the requester may not see are left out, as PocketBase does).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::sea_query::{Alias, Expr, SimpleExpr};
use sea_orm::ConnectionTrait;
use serde_json::{Map, Value};

use super::read::{fetch, select_all};
use super::visibility::viewers;
use super::{dialect, RecordError, RecordsEnv, Requester};
use crate::collections::record::Record;
use crate::collections::schema::is_identifier;
use crate::collections::{Collection, FieldKind};
use crate::domain::filter::{array_has_any, Dialect, MAX_NESTED_RELATIONS};

/// The requested expand paths, each a list of relation names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpandPaths(Vec<Vec<String>>);

impl ExpandPaths {
    /// Parses `a,b.c`; at most six levels, plain names only.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let mut paths = Vec::new();
        for path in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let segments: Vec<String> = path.split('.').map(str::to_string).collect();
            if segments.len() > MAX_NESTED_RELATIONS || !segments.iter().all(|s| is_identifier(s)) {
                return Err(RecordError::BadParam {
                    param: "expand",
                    reason: format!(
                        "{path:?} is not a relation path of up to {MAX_NESTED_RELATIONS} names"
                    ),
                });
            }
            paths.push(segments);
        }
        Ok(Self(paths))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Paths grouped by their first name, with what remains of each.
    fn by_first(&self) -> Vec<(String, ExpandPaths)> {
        let mut groups: Vec<(String, ExpandPaths)> = Vec::new();
        for path in &self.0 {
            let (first, rest) = path.split_first().expect("paths are never empty");
            let group = match groups.iter_mut().find(|(name, _)| name == first) {
                Some(group) => group,
                None => {
                    groups.push((first.clone(), ExpandPaths::default()));
                    groups.last_mut().expect("just pushed")
                }
            };
            if !rest.is_empty() {
                group.1 .0.push(rest.to_vec());
            }
        }
        groups
    }
}

/// How one expand name relates records.
enum Relation {
    /// A relation field of the records themselves.
    Forward {
        field: String,
        target: Arc<Collection>,
        multiple: bool,
    },
    /// `<collection>_via_<field>`: records of another collection pointing here.
    Back {
        source: Arc<Collection>,
        field: String,
        multiple: bool,
    },
}

fn resolve(env: &RecordsEnv, collection: &Collection, name: &str) -> Option<Relation> {
    if let Some(field) = collection.field(name) {
        if let FieldKind::Relation { collection_id, .. } = &field.kind {
            return Some(Relation::Forward {
                field: name.to_string(),
                target: env.registry.get(collection_id)?,
                multiple: field.kind.is_multiple(),
            });
        }
        return None;
    }
    let (source, field) = name.split_once("_via_")?;
    let source = env.registry.get(source)?;
    let field_def = source.field(field)?;
    match &field_def.kind {
        FieldKind::Relation { collection_id, .. } if *collection_id == collection.id => {
            Some(Relation::Back {
                multiple: field_def.kind.is_multiple(),
                field: field.to_string(),
                source,
            })
        }
        _ => None,
    }
}

fn ids_of(record: &Record, field: &str) -> Vec<String> {
    match record.values.get(field) {
        Some(Value::String(id)) if !id.is_empty() => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Rows of `source` whose relation `field` holds any of `ids`.
pub(super) fn points_at(
    source: &Collection,
    field: &str,
    multiple: bool,
    ids: &[String],
    dialect: Dialect,
) -> SimpleExpr {
    let column = Expr::col((Alias::new(&source.name), Alias::new(field)));
    if multiple {
        array_has_any(dialect, column.into(), ids)
    } else {
        column.is_in(ids.iter().cloned())
    }
}

/// Adds `expand` to each of `items` (the JSON of `records`, in the same order).
pub fn expand<'a, C: ConnectionTrait>(
    conn: &'a C,
    env: &'a RecordsEnv,
    requester: &'a Requester,
    records: &'a [Record],
    items: &'a mut [Value],
    paths: &'a ExpandPaths,
) -> Pin<Box<dyn Future<Output = Result<(), RecordError>> + Send + 'a>> {
    Box::pin(async move {
        let Some(collection) = records.first().map(|r| r.collection.clone()) else {
            return Ok(());
        };
        let dialect = dialect(conn);
        for (name, rest) in paths.by_first() {
            let Some(relation) = resolve(env, &collection, &name) else {
                continue;
            };
            let (related_collection, wanted) = match &relation {
                Relation::Forward { field, target, .. } => {
                    let mut ids: Vec<String> =
                        records.iter().flat_map(|r| ids_of(r, field)).collect();
                    ids.sort();
                    ids.dedup();
                    if ids.is_empty() {
                        continue;
                    }
                    let condition =
                        Expr::col((Alias::new(&target.name), Alias::new("id"))).is_in(ids);
                    (target.clone(), condition)
                }
                Relation::Back {
                    source,
                    field,
                    multiple,
                } => {
                    let ids: Vec<String> = records.iter().map(|r| r.id().to_string()).collect();
                    (
                        source.clone(),
                        points_at(source, field, *multiple, &ids, dialect),
                    )
                }
            };
            let view_rule = match env.rule_condition(
                &related_collection,
                "viewRule",
                related_collection.view_rule.as_deref(),
                requester,
                dialect,
            ) {
                Ok(condition) => condition,
                // Related records the requester may not view are silently left out.
                Err(RecordError::SuperusersOnly) => continue,
                Err(other) => return Err(other),
            };
            let mut select = select_all(&related_collection);
            select.and_where(wanted);
            if let Some(view_rule) = view_rule {
                select.and_where(view_rule);
            }
            let related = fetch(conn, &related_collection, &select).await?;
            let viewers = viewers(conn, env, requester, &related).await?;
            let mut related_json: Vec<Value> = related
                .iter()
                .zip(viewers)
                .map(|(record, viewer)| record.to_json(viewer))
                .collect();
            if !rest.is_empty() {
                expand(conn, env, requester, &related, &mut related_json, &rest).await?;
            }
            let by_id: HashMap<&str, &Value> = related
                .iter()
                .zip(&related_json)
                .map(|(record, json)| (record.id(), json))
                .collect();
            for (record, item) in records.iter().zip(items.iter_mut()) {
                let value = match &relation {
                    Relation::Forward {
                        field, multiple, ..
                    } => {
                        let found: Vec<Value> = ids_of(record, field)
                            .iter()
                            .filter_map(|id| by_id.get(id.as_str()).map(|v| (*v).clone()))
                            .collect();
                        if *multiple {
                            (!found.is_empty()).then_some(Value::Array(found))
                        } else {
                            found.into_iter().next()
                        }
                    }
                    Relation::Back { field, .. } => {
                        let found: Vec<Value> = related
                            .iter()
                            .zip(&related_json)
                            .filter(|(other, _)| {
                                ids_of(other, field).iter().any(|id| id == record.id())
                            })
                            .map(|(_, json)| json.clone())
                            .collect();
                        (!found.is_empty()).then_some(Value::Array(found))
                    }
                };
                if let (Some(value), Value::Object(item)) = (value, item) {
                    item.entry("expand")
                        .or_insert_with(|| Value::Object(Map::new()))
                        .as_object_mut()
                        .expect("expand is an object")
                        .insert(name.clone(), value);
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_grouped_by_their_first_relation() {
        let paths =
            ExpandPaths::parse("author, author.team ,tags,comments_via_post.author").unwrap();
        let groups = paths.by_first();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].0, "author");
        assert_eq!(groups[0].1, ExpandPaths(vec![vec!["team".into()]]));
        assert!(groups[1].1.is_empty());
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(ExpandPaths::parse("a.b.c.d.e.f.g").is_err());
        assert!(ExpandPaths::parse("a;drop").is_err());
        assert!(ExpandPaths::parse("a..b").is_err());
        assert!(ExpandPaths::parse("").unwrap().is_empty());
    }
}
