//! Creating, updating and deleting records: every field validated, relations and
//! unique indexes checked, the create/update/delete rule applied in SQL, auth
//! records' passwords hashed, relations to deleted records cascaded or cleared.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use sea_orm::sea_query::{Alias, Expr, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseTransaction, SqlErr};
use serde_json::{Map, Value};

use super::expand::points_at;
use super::read::{fetch, find_visible, select_all};
use super::{dialect, RecordError, RecordsEnv, Requester};
use crate::auth::passwords::{hash_password, verify_password};
use crate::auth::sessions;
use crate::collections::definition::Errors;
use crate::collections::record::Record;
use crate::collections::schema::IndexSpec;
use crate::collections::validate::{self, FieldError};
use crate::collections::{store, Collection, FieldKind};
use crate::domain::filter::{candidate_row, constant_truth, Dialect};
use crate::domain::ids::{new_record_id, now, random_alphanumeric};
use crate::domain::password::Password;
use crate::realtime::{Action, RecordEvent};
use crate::webhooks::{self, Event, EventKind};

/// A password to hash and store, from a create or update of an auth record.
struct NewPassword(Password);

/// Password work done before a write's transaction begins. Argon2id takes tens of
/// milliseconds of a core; inside the transaction it would hold the write turn for all
/// that time (on SQLite, the one writer and every write grouped with it). What is
/// prepared here is used when the transaction meets the same password and stored hash;
/// anything else is still hashed or checked inside, so no outcome depends on it.
#[derive(Clone, Default)]
pub struct Passwords {
    /// The submitted password and its hash.
    hashed: Option<(String, String)>,
    /// The stored hash the submitted `oldPassword` was checked against, and the verdict.
    old_checked: Option<(String, bool)>,
}

/// Never shows the password, its hash or the stored hash.
impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("hashed", &self.hashed.is_some())
            .field("old_checked", &self.old_checked.is_some())
            .finish()
    }
}

impl Passwords {
    /// For a create in auth `collection`: hashes a valid, confirmed password, unless the
    /// create is refused to the requester outright.
    pub async fn for_create(
        env: &RecordsEnv,
        requester: &Requester,
        collection: &str,
        body: &Map<String, Value>,
    ) -> Result<Self, RecordError> {
        let password = settable(env, requester, collection, body, |c| {
            c.create_rule.is_some()
        });
        Self::hashing(env, password).await
    }

    /// For an update of record `id` in auth `collection`: hashes the password it sets,
    /// leaving `oldPassword` to the transaction. Ahead of the transaction only for a
    /// superuser or an account changing its own password: for anyone else the update
    /// rule decides first, as hashing for callers it refuses would hand out argon2's
    /// cost for free.
    pub async fn hash_for_update(
        env: &RecordsEnv,
        requester: &Requester,
        (collection, id): (&str, &str),
        body: &Map<String, Value>,
    ) -> Result<Self, RecordError> {
        Self::hashing(
            env,
            settable_by_update(env, requester, (collection, id), body),
        )
        .await
    }

    /// Like [`Self::hash_for_update`], and for an account changing its own password
    /// first checks `oldPassword` against the stored hash, read here outside the
    /// transaction: the new password is hashed only if it matched.
    pub async fn for_update(
        conn: &impl ConnectionTrait,
        env: &RecordsEnv,
        requester: &Requester,
        (collection, id): (&str, &str),
        body: &Map<String, Value>,
    ) -> Result<Self, RecordError> {
        let password = settable_by_update(env, requester, (collection, id), body);
        if password.is_none() || requester.superuser() {
            return Self::hashing(env, password).await;
        }
        let stored = store::find_by(conn, &env.collection(collection)?, "id", id)
            .await?
            .map(|record| record.text("password").to_string())
            .filter(|hash| !hash.is_empty());
        let matches = verify_password(
            &env.hasher,
            stored.clone(),
            submitted(body, "oldPassword").into(),
        )
        .await?;
        let mut prepared = Self::hashing(env, password.filter(|_| matches)).await?;
        prepared.old_checked = stored.map(|stored| (stored, matches));
        Ok(prepared)
    }

    async fn hashing(env: &RecordsEnv, password: Option<Password>) -> Result<Self, RecordError> {
        let hashed = match password {
            Some(password) => {
                let plain = password.expose().to_string();
                Some((plain, hash_password(&env.hasher, password).await?))
            }
            None => None,
        };
        Ok(Self {
            hashed,
            old_checked: None,
        })
    }

    async fn hash(&self, env: &RecordsEnv, password: NewPassword) -> Result<String, RecordError> {
        match &self.hashed {
            Some((plain, hash)) if plain == password.0.expose() => Ok(hash.clone()),
            _ => Ok(hash_password(&env.hasher, password.0).await?),
        }
    }

    async fn old_matches(
        &self,
        env: &RecordsEnv,
        stored: Option<String>,
        old: String,
    ) -> Result<bool, RecordError> {
        match (&self.old_checked, &stored) {
            (Some((checked, matches)), Some(stored)) if checked == stored => Ok(*matches),
            _ => Ok(verify_password(&env.hasher, stored, old).await?),
        }
    }
}

/// The valid, confirmed password `body` sets in auth `collection`, for a superuser or a
/// requester `allowed` to write there (others are left to the transaction, which
/// refuses them or hashes as before).
fn settable(
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    body: &Map<String, Value>,
    allowed: impl Fn(&Collection) -> bool,
) -> Option<Password> {
    let collection = env.collection(collection).ok()?;
    if !collection.is_auth() || !(requester.superuser() || allowed(&collection)) {
        return None;
    }
    let password = submitted(body, "password");
    let confirmed = submitted(body, "passwordConfirm") == password;
    Password::parse(password).ok().filter(|_| confirmed)
}

/// [`settable`] for an update of record `id`: by a superuser or the account itself.
fn settable_by_update(
    env: &RecordsEnv,
    requester: &Requester,
    (collection, id): (&str, &str),
    body: &Map<String, Value>,
) -> Option<Password> {
    settable(env, requester, collection, body, |c| {
        c.update_rule.is_some()
            && requester.identity.as_ref().is_some_and(|identity| {
                identity.record.collection.id == c.id && identity.record.id() == id
            })
    })
}

/// The text `body` submits for `field`; empty when it is missing or not text.
fn submitted<'a>(body: &'a Map<String, Value>, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or("")
}

fn field_error(name: &str, code: &'static str, message: &str) -> (String, FieldError) {
    (name.to_string(), FieldError::new(code, message))
}

/// Applies submitted `body` to `record`. On create every field is set (missing ones
/// to their zero value, so required ones are caught); on update only submitted keys
/// change. Auth records' password, email and verified flag follow PocketBase's
/// rules. Errors are collected for every field at once.
fn apply_body(
    record: &mut Record,
    existing: Option<&Record>,
    body: &Map<String, Value>,
    requester: &Requester,
    errors: &mut Errors,
) -> Option<NewPassword> {
    let collection = record.collection.clone();
    let creating = existing.is_none();
    let superuser = requester.superuser();
    let stamp = now();
    for field in &collection.fields {
        let name = field.name.as_str();
        match &field.kind {
            _ if name == "id" => {}
            _ if collection.is_auth() && matches!(name, "tokenKey" | "password") => {}
            FieldKind::Autodate {
                on_create,
                on_update,
            } if (creating && *on_create) || (!creating && *on_update) => {
                record.set(name, stamp.clone());
            }
            FieldKind::Autodate { .. } => {}
            _ if collection.is_auth() && name == "verified" && !superuser => {
                let changes = body.contains_key(name)
                    && existing.is_some_and(|e| Some(&e.values[name]) != body.get(name));
                if changes {
                    errors.push(field_error(
                        name,
                        "validation_values_mismatch",
                        "Only superusers can change the verified state.",
                    ));
                }
            }
            _ if creating || body.contains_key(name) => {
                match validate::normalise(field, body.get(name).unwrap_or(&Value::Null)) {
                    Ok(value) => {
                        let changes_email = collection.is_auth()
                            && name == "email"
                            && existing.is_some_and(|e| e.values.get(name) != Some(&value));
                        if changes_email && !superuser {
                            errors.push(field_error(
                                name,
                                "validation_values_mismatch",
                                "Use request-email-change to change the email.",
                            ));
                        } else {
                            record.set(name, value);
                        }
                    }
                    Err(err) => errors.push((name.to_string(), err)),
                }
            }
            _ => {}
        }
    }
    if !collection.is_auth() {
        return None;
    }
    if creating {
        record.set("tokenKey", random_alphanumeric(50));
    }
    let new_password = submitted(body, "password");
    if !creating && new_password.is_empty() {
        return None;
    }
    let password = match Password::parse(new_password) {
        Ok(password) => Some(password),
        Err(err) => {
            errors.push(field_error("password", err.code(), &err.message()));
            None
        }
    };
    if submitted(body, "passwordConfirm") != new_password {
        errors.push(field_error(
            "passwordConfirm",
            "validation_values_mismatch",
            "Values don't match.",
        ));
    }
    password.map(NewPassword)
}

/// The create rule, checked on the submitted record before it is written.
async fn check_create_rule(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    requester: &Requester,
    record: &Record,
) -> Result<(), RecordError> {
    let collection = &record.collection;
    if requester.superuser() {
        return Ok(());
    }
    let dialect = dialect(txn);
    let Some(condition) = env.rule_condition(
        collection,
        "createRule",
        collection.create_rule.as_deref(),
        requester,
        dialect,
    )?
    else {
        return Ok(());
    };
    // A rule decided by the request alone (`@request.auth.id != ''`) reads no row.
    let allowed = match constant_truth(&condition) {
        Some(allowed) => allowed,
        None => candidate_passes(txn, env, record, condition, dialect).await?,
    };
    if allowed {
        Ok(())
    } else {
        Err(RecordError::CreateRuleFailed)
    }
}

/// Whether the submitted `record`, as a one-row table, meets `condition`.
async fn candidate_passes(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    record: &Record,
    condition: SimpleExpr,
    dialect: Dialect,
) -> Result<bool, RecordError> {
    let collection = &record.collection;
    let schema = env
        .registry
        .collection_schema(&collection.id)
        .ok_or(RecordError::MissingCollection)?;
    let check = Query::select()
        .expr(Expr::val(1))
        .from_subquery(
            candidate_row(&schema, &record.values, dialect),
            Alias::new(&collection.name),
        )
        .and_where(condition)
        .to_owned();
    Ok(txn
        .query_one(txn.get_database_backend().build(&check))
        .await?
        .is_some())
}

/// Every relation id must name an existing record of its target collection.
async fn check_relations(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    record: &Record,
    errors: &mut Errors,
) -> Result<(), RecordError> {
    for field in &record.collection.fields {
        let FieldKind::Relation {
            collection_id,
            min_select,
            ..
        } = &field.kind
        else {
            continue;
        };
        let ids: Vec<String> = match record.values.get(&field.name) {
            Some(Value::String(id)) if !id.is_empty() => vec![id.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if ids.len() < *min_select as usize && (field.required || !ids.is_empty()) {
            errors.push(field_error(
                &field.name,
                "validation_not_enough_values",
                &format!("Select at least {min_select}."),
            ));
            continue;
        }
        if ids.is_empty() {
            continue;
        }
        let target = env.collection(collection_id)?;
        let select = Query::select()
            .column(Alias::new("id"))
            .from(Alias::new(&target.name))
            .and_where(Expr::col(Alias::new("id")).is_in(ids.clone()))
            .to_owned();
        let found = txn
            .query_all(txn.get_database_backend().build(&select))
            .await?
            .len();
        if found != ids.len() {
            errors.push(field_error(
                &field.name,
                "validation_missing_rel_records",
                "Failed to find all relation records with the provided ids.",
            ));
        }
    }
    Ok(())
}

/// Values taken by another record in a unique index are field errors.
async fn check_unique(
    txn: &DatabaseTransaction,
    record: &Record,
    errors: &mut Errors,
) -> Result<(), RecordError> {
    let collection = &record.collection;
    for spec in collection
        .indexes
        .iter()
        .filter_map(|sql| IndexSpec::parse(sql).ok())
    {
        if !spec.unique {
            continue;
        }
        // A partial index (`WHERE column != ''`) ignores rows where that column is empty.
        if spec
            .where_not_empty
            .as_deref()
            .is_some_and(|column| record.text(column).is_empty())
        {
            continue;
        }
        let mut select = Query::select();
        select
            .expr(Expr::val(1))
            .from(Alias::new(&collection.name))
            .and_where(Expr::col(Alias::new("id")).ne(record.id()))
            .limit(1);
        for column in &spec.columns {
            let Some((_, value)) = record
                .column_values()
                .into_iter()
                .find(|(name, _)| name == column)
            else {
                continue;
            };
            select.and_where(Expr::col(Alias::new(column)).eq(value));
        }
        if txn
            .query_one(txn.get_database_backend().build(&select))
            .await?
            .is_some()
        {
            for column in &spec.columns {
                if !errors.iter().any(|(name, _)| name == column) {
                    errors.push(field_error(
                        column,
                        "validation_not_unique",
                        "Value must be unique.",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn failed(message: &'static str, fields: Errors) -> RecordError {
    RecordError::Validation { message, fields }
}

/// Writes a new record; a unique violation that slipped past the check (a concurrent
/// write) is still a field error, never a 500.
async fn insert(
    txn: &DatabaseTransaction,
    record: &Record,
    message: &'static str,
) -> Result<(), RecordError> {
    match store::insert(txn, record).await {
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            let column = unique_columns(&record.collection)
                .next()
                .unwrap_or_else(|| "id".into());
            Err(failed(
                message,
                vec![field_error(
                    &column,
                    "validation_not_unique",
                    "Value must be unique.",
                )],
            ))
        }
        other => Ok(other?),
    }
}

fn unique_columns(collection: &Collection) -> impl Iterator<Item = String> + '_ {
    collection
        .indexes
        .iter()
        .filter_map(|sql| IndexSpec::parse(sql).ok())
        .filter(|spec| spec.unique && spec.columns != ["tokenKey"])
        .flat_map(|spec| spec.columns)
}

/// Creates a record of `collection` from `body`.
pub async fn create(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    body: Map<String, Value>,
    passwords: &Passwords,
) -> Result<Record, RecordError> {
    const MESSAGE: &str = "Failed to create record.";
    let collection = env.collection(collection)?;
    if !requester.superuser() && collection.create_rule.is_none() {
        return Err(RecordError::SuperusersOnly);
    }
    let mut requester = requester.clone();
    requester.request.body = body.clone();
    let mut record = Record::new(collection.clone());
    let mut errors = Errors::new();
    let chosen_id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    match chosen_id {
        Some(id) if validate::is_record_id(id) => record.set("id", id),
        Some(_) => errors.push(field_error(
            "id",
            "validation_invalid_format",
            "Must be 15 characters of a-z and 0-9.",
        )),
        None => record.set("id", new_record_id()),
    }
    let password = apply_body(&mut record, None, &body, &requester, &mut errors);
    if !errors.is_empty() {
        return Err(failed(MESSAGE, errors));
    }
    check_create_rule(txn, env, &requester, &record).await?;
    check_relations(txn, env, &record, &mut errors).await?;
    check_unique(txn, &record, &mut errors).await?;
    // A generated id is 15 random characters of 36: only an id the client chose can be
    // taken (and a collision of generated ones still fails the insert, as unique).
    if chosen_id.is_some()
        && store::find_by(txn, &collection, "id", record.id())
            .await?
            .is_some()
    {
        errors.push(field_error(
            "id",
            "validation_not_unique",
            "Value must be unique.",
        ));
    }
    if !errors.is_empty() {
        return Err(failed(MESSAGE, errors));
    }
    if let Some(password) = password {
        record.set("password", passwords.hash(env, password).await?);
    }
    insert(txn, &record, MESSAGE).await?;
    webhooks::emit(txn, &Event::for_record(EventKind::RecordCreated, &record)).await?;
    Ok(record)
}

/// Updates the submitted fields of a record the update rule lets the requester change.
pub async fn update(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    id: &str,
    body: Map<String, Value>,
    passwords: &Passwords,
) -> Result<Record, RecordError> {
    const MESSAGE: &str = "Failed to update record.";
    let collection = env.collection(collection)?;
    let mut requester = requester.clone();
    requester.request.body = body.clone();
    let existing = find_visible(
        txn,
        env,
        &requester,
        &collection,
        "updateRule",
        collection.update_rule.as_deref(),
        id,
    )
    .await?;
    let mut record = existing.clone();
    let mut errors = Errors::new();
    let password = apply_body(&mut record, Some(&existing), &body, &requester, &mut errors);
    if password.is_some() && !requester.superuser() {
        let stored = Some(existing.text("password").to_string()).filter(|h| !h.is_empty());
        let matches = passwords
            .old_matches(env, stored, submitted(&body, "oldPassword").into())
            .await?;
        if !matches {
            errors.push(field_error(
                "oldPassword",
                "validation_invalid_old_password",
                "Missing or invalid old password.",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(failed(MESSAGE, errors));
    }
    check_relations(txn, env, &record, &mut errors).await?;
    check_unique(txn, &record, &mut errors).await?;
    if !errors.is_empty() {
        return Err(failed(MESSAGE, errors));
    }
    let password_changed = password.is_some();
    if let Some(password) = password {
        record.set("password", passwords.hash(env, password).await?);
    }
    match store::update(txn, &record).await {
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            let column = unique_columns(&collection)
                .next()
                .unwrap_or_else(|| "id".into());
            return Err(failed(
                MESSAGE,
                vec![field_error(
                    &column,
                    "validation_not_unique",
                    "Value must be unique.",
                )],
            ));
        }
        other => other?,
    }
    webhooks::emit(txn, &Event::for_record(EventKind::RecordUpdated, &record)).await?;
    if password_changed {
        // A new password ends every other session of the account.
        let keep = requester
            .identity
            .as_ref()
            .filter(|identity| {
                identity.record.collection.id == collection.id && identity.record.id() == id
            })
            .map(|identity| identity.session_id.clone());
        let revoked = sessions::revoke_all(txn, &collection.id, id, keep.as_deref()).await?;
        env.sessions.forget(&revoked);
    }
    Ok(record)
}

/// Deletes a record the delete rule lets the requester remove, cascading to records
/// whose relation asks for it and clearing the references of the others. Answers
/// with every change made: the deletes, and the updates of records that pointed at
/// a deleted one.
pub async fn delete(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    requester: &Requester,
    collection: &str,
    id: &str,
) -> Result<Vec<RecordEvent>, RecordError> {
    let collection = env.collection(collection)?;
    let record = find_visible(
        txn,
        env,
        requester,
        &collection,
        "deleteRule",
        collection.delete_rule.as_deref(),
        id,
    )
    .await?;
    let mut visited = HashSet::new();
    let mut changes = Vec::new();
    remove(txn, env, &record, &mut visited, &mut changes).await?;
    Ok(changes)
}

/// Deletes `record` and handles what points at it, noting each change in `changes`;
/// `visited` stops relation cycles.
fn remove<'a>(
    txn: &'a DatabaseTransaction,
    env: &'a RecordsEnv,
    record: &'a Record,
    visited: &'a mut HashSet<(String, String)>,
    changes: &'a mut Vec<RecordEvent>,
) -> Pin<Box<dyn Future<Output = Result<(), RecordError>> + Send + 'a>> {
    Box::pin(async move {
        let collection = record.collection.clone();
        if !visited.insert((collection.id.clone(), record.id().to_string())) {
            return Ok(());
        }
        changes.push(RecordEvent::new(Action::Delete, record));
        let dialect = dialect(txn);
        for source in env.registry.all() {
            for field in &source.fields {
                let FieldKind::Relation {
                    collection_id,
                    cascade_delete,
                    ..
                } = &field.kind
                else {
                    continue;
                };
                if *collection_id != collection.id {
                    continue;
                }
                let mut select = select_all(&source);
                let ids = [record.id().to_string()];
                select.and_where(points_at(
                    &source,
                    &field.name,
                    field.kind.is_multiple(),
                    &ids,
                    dialect,
                ));
                for mut other in fetch(txn, &source, &select).await? {
                    if *cascade_delete {
                        remove(txn, env, &other, visited, changes).await?;
                        continue;
                    }
                    let remaining = match other.values.get(&field.name) {
                        Some(Value::Array(ids)) => Value::Array(
                            ids.iter()
                                .filter(|v| v.as_str() != Some(record.id()))
                                .cloned()
                                .collect(),
                        ),
                        _ => Value::String(String::new()),
                    };
                    let empty = remaining.as_str() == Some("")
                        || remaining.as_array().is_some_and(Vec::is_empty);
                    if field.required && empty {
                        return Err(RecordError::RequiredRelation);
                    }
                    other.set(&field.name, remaining);
                    store::update(txn, &other).await?;
                    changes.push(RecordEvent::new(Action::Update, &other));
                }
            }
        }
        let delete = Query::delete()
            .from_table(Alias::new(&collection.name))
            .and_where(Expr::col(Alias::new("id")).eq(record.id()))
            .to_owned();
        txn.execute(txn.get_database_backend().build(&delete))
            .await?;
        webhooks::emit(txn, &Event::for_record(EventKind::RecordDeleted, record)).await?;
        if collection.is_auth() {
            let revoked = sessions::revoke_all(txn, &collection.id, record.id(), None).await?;
            env.sessions.forget(&revoked);
            let external = Query::delete()
                .from_table(Alias::new("_externalAuths"))
                .and_where(Expr::col(Alias::new("collectionRef")).eq(collection.id.as_str()))
                .and_where(Expr::col(Alias::new("recordRef")).eq(record.id()))
                .to_owned();
            txn.execute(txn.get_database_backend().build(&external))
                .await?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::Passwords;

    #[test]
    fn prepared_passwords_never_show_in_debug_output() {
        let prepared = Passwords {
            hashed: Some(("hunter2-secret".into(), "$argon2id$v=19$new".into())),
            old_checked: Some(("$argon2id$v=19$stored".into(), true)),
        };
        let shown = format!("{prepared:?}");
        for secret in ["hunter2-secret", "$argon2id"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(shown, "Passwords { hashed: true, old_checked: true }");
    }
}
