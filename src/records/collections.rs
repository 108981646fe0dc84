//! The collections API (superusers only): definitions and their tables change
//! together, in one transaction, so a bad change touches nothing.

use std::sync::Arc;

use sea_orm::sea_query::{Alias, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};
use serde_json::Value;

use super::read::page_envelope;
use super::{dialect, RecordError, RecordsEnv};
use crate::collections::definition::{self, Change, CollectionInput, Errors};
use crate::collections::schema::{self, IndexSpec};
use crate::collections::validate::FieldError;
use crate::collections::{store, Collection, FieldKind, Registry};
use crate::domain::filter::{CollectionSchema, Compiler, Filter, RequestContext, SchemaLookup};
use crate::domain::ids::now;

/// The registry as it would be with `pending` saved, for checking its rules.
struct WithPending<'a> {
    registry: &'a Registry,
    pending: Arc<CollectionSchema>,
}

impl SchemaLookup for WithPending<'_> {
    fn collection(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>> {
        if name_or_id == self.pending.id || name_or_id == self.pending.name {
            Some(self.pending.clone())
        } else {
            self.registry.collection_schema(name_or_id)
        }
    }
}

/// Every collection, PocketBase's list envelope (oldest first).
pub fn list(env: &RecordsEnv) -> Value {
    let mut all = env.registry.all();
    all.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    let items: Vec<Value> = all.iter().map(|c| c.to_json()).collect();
    let count = items.len();
    page_envelope(1, count.max(1) as u64, count as i64, 1, items)
}

pub fn view(env: &RecordsEnv, id_or_name: &str) -> Result<Value, RecordError> {
    Ok(env
        .registry
        .get(id_or_name)
        .ok_or(RecordError::NotFound)?
        .to_json())
}

/// Creates (`current: None`) or changes a collection against `working`, which then
/// holds the result; the table follows the definition.
pub async fn save(
    txn: &DatabaseTransaction,
    working: &Registry,
    current: Option<&str>,
    input: &CollectionInput,
) -> Result<Collection, RecordError> {
    let message = if current.is_some() {
        "Failed to update collection."
    } else {
        "Failed to create collection."
    };
    let existing = match current {
        Some(id_or_name) => Some(working.get(id_or_name).ok_or(RecordError::NotFound)?),
        None => None,
    };
    let dialect = dialect(txn);
    let check_rule = |collection: &Collection, rule: &str| -> Result<(), String> {
        let schema = Arc::new(collection.filter_schema());
        let lookup = WithPending {
            registry: working,
            pending: schema.clone(),
        };
        let filter = Filter::parse(rule).map_err(|err| err.to_string())?;
        let request = RequestContext::guest(chrono::Utc::now());
        Compiler::new(&lookup, &schema, &request, dialect)
            .rule(&filter)
            .map(|_| ())
            .map_err(|err| err.to_string())
    };
    let collection = definition::apply(input, existing.as_deref(), working, &check_rule, &now())
        .map_err(|fields| RecordError::Validation { message, fields })?;
    apply_schema(txn, existing.as_deref(), &collection).await?;
    match existing {
        Some(_) => store::update_collection(txn, &collection).await?,
        None => store::insert_collection(txn, &collection).await?,
    }
    let mut all: Vec<Collection> = working
        .all()
        .iter()
        .filter(|c| c.id != collection.id)
        .map(|c| c.as_ref().clone())
        .collect();
    all.push(collection.clone());
    working.replace(all);
    Ok(collection)
}

async fn execute<C: ConnectionTrait>(conn: &C, statement: sea_orm::Statement) -> Result<(), DbErr> {
    conn.execute(statement).await.map(|_| ())
}

/// Creates or alters the table of `new` to match it.
async fn apply_schema(
    txn: &DatabaseTransaction,
    old: Option<&Collection>,
    new: &Collection,
) -> Result<(), RecordError> {
    let backend = txn.get_database_backend();
    let Some(old) = old else {
        execute(txn, backend.build(&schema::create_table(new))).await?;
        for spec in new
            .indexes
            .iter()
            .filter_map(|sql| IndexSpec::parse(sql).ok())
        {
            execute(txn, backend.build(&spec.create(&new.name))).await?;
        }
        return Ok(());
    };
    for change in definition::plan(old, new) {
        let statement = match &change {
            Change::RenameTable { from, to } => backend.build(&schema::rename_table(from, to)),
            Change::DropIndex(spec) => backend.build(&spec.drop(&new.name)),
            Change::DropColumn(column) => backend.build(&schema::drop_column(&new.name, column)),
            Change::RenameColumn { from, to } => {
                backend.build(&schema::rename_column(&new.name, from, to))
            }
            Change::AddColumn(field) => backend.build(&schema::add_column(&new.name, field)),
            Change::CreateIndex(spec) => backend.build(&spec.create(&new.name)),
        };
        execute(txn, statement).await?;
    }
    Ok(())
}

/// Deletes a collection and its table; refused for system collections and for
/// collections other collections still relate to.
pub async fn delete(
    txn: &DatabaseTransaction,
    working: &Registry,
    id_or_name: &str,
) -> Result<(), RecordError> {
    let collection = working.get(id_or_name).ok_or(RecordError::NotFound)?;
    let refuse = |message: &str| RecordError::Validation {
        message: "Failed to delete collection.",
        fields: vec![(
            "collection".into(),
            FieldError::new("validation_collection_in_use", message),
        )],
    };
    if collection.system {
        return Err(refuse("System collections cannot be deleted."));
    }
    let referenced_by = working.all().into_iter().find(|other| {
        other.id != collection.id
            && other.fields.iter().any(|f| {
                matches!(&f.kind, FieldKind::Relation { collection_id, .. } if *collection_id == collection.id)
            })
    });
    if let Some(other) = referenced_by {
        return Err(refuse(&format!(
            "The collection is referenced by {}.",
            other.name
        )));
    }
    let backend = txn.get_database_backend();
    execute(txn, backend.build(&schema::drop_table(&collection.name))).await?;
    store::delete_collection(txn, &collection.id).await?;
    let rest: Vec<Collection> = working
        .all()
        .iter()
        .filter(|c| c.id != collection.id)
        .map(|c| c.as_ref().clone())
        .collect();
    working.replace(rest);
    Ok(())
}

/// Applies several definitions at once (`PUT /api/collections/import`): existing
/// ones (by id, then name) are updated, others created; with `delete_missing`, user
/// collections not in the import are deleted. All or nothing.
pub async fn import(
    txn: &DatabaseTransaction,
    working: &Registry,
    inputs: &[CollectionInput],
    delete_missing: bool,
) -> Result<(), RecordError> {
    let mut errors: Errors = Vec::new();
    let mut kept = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let current = input
            .id
            .as_deref()
            .and_then(|id| working.get(id))
            .or_else(|| input.name.as_deref().and_then(|name| working.get(name)))
            .map(|c| c.id.clone());
        match save(txn, working, current.as_deref(), input).await {
            Ok(saved) => kept.push(saved.id),
            Err(RecordError::Validation { fields, .. }) => {
                errors.extend(
                    fields
                        .into_iter()
                        .map(|(key, err)| (format!("collections.{i}.{key}"), err)),
                );
            }
            Err(other) => return Err(other),
        }
    }
    if !errors.is_empty() {
        return Err(RecordError::Validation {
            message: "Failed to import collections.",
            fields: errors,
        });
    }
    if delete_missing {
        for collection in working.all() {
            if !collection.system && !kept.contains(&collection.id) {
                delete(txn, working, &collection.id).await?;
            }
        }
    }
    Ok(())
}

/// Deletes every record of a collection (and, for auth collections, their sessions).
pub async fn truncate(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    id_or_name: &str,
) -> Result<(), RecordError> {
    let collection = env.registry.get(id_or_name).ok_or(RecordError::NotFound)?;
    let backend = txn.get_database_backend();
    if collection.is_auth() {
        let sessions = Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("_sessions"))
            .and_where(
                sea_orm::sea_query::Expr::col(Alias::new("collectionRef"))
                    .eq(collection.id.as_str()),
            )
            .to_owned();
        let ids: Vec<String> = txn
            .query_all(backend.build(&sessions))
            .await?
            .iter()
            .map(|row| row.try_get::<String>("", "id"))
            .collect::<Result<_, _>>()?;
        env.sessions.forget(&ids);
        for table in ["_sessions", "_externalAuths"] {
            let delete = Query::delete()
                .from_table(Alias::new(table))
                .and_where(
                    sea_orm::sea_query::Expr::col(Alias::new("collectionRef"))
                        .eq(collection.id.as_str()),
                )
                .to_owned();
            execute(txn, backend.build(&delete)).await?;
        }
    }
    let delete = Query::delete()
        .from_table(Alias::new(&collection.name))
        .to_owned();
    execute(txn, backend.build(&delete)).await?;
    Ok(())
}
