//! PocketBase's batch API: record creates, upserts, updates and deletes run in order
//! in one transaction, all or nothing, each under its own rules with the caller of the
//! outer request.

use std::time::Duration;

use percent_encoding::percent_decode_str;
use sea_orm::DatabaseTransaction;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::read::present;
use super::write::Passwords;
use super::{write, RecordError, RecordsEnv, Requester};
use crate::actors::database::DbError;
use crate::auth::{AuthError, AuthIdentity};
use crate::collections::definition::Errors;
use crate::collections::record::Record;
use crate::collections::validate::FieldError;
use crate::collections::{store, Registry};
use crate::realtime::{Action, RecordEvent};

/// The submitted batch: `{"requests": [{method, url, headers, body}, …]}`.
#[derive(Debug, Default, Deserialize)]
pub struct BatchInput {
    #[serde(default)]
    requests: Vec<ItemInput>,
}

#[derive(Debug, Deserialize)]
struct ItemInput {
    #[serde(default)]
    method: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<Map<String, Value>>,
}

/// What one batch item does, read from its method and URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Create,
    /// `PUT …/records`: update the record named by `body.id` when it exists, else create.
    Upsert,
    Update(String),
    Delete(String),
}

/// A routed batch item: `target` is `None` for a method and URL that name no record
/// operation (the item then fails as PocketBase's would).
#[derive(Debug, Clone)]
pub struct BatchItem {
    target: Option<(String, Operation)>,
    method: String,
    query: Map<String, Value>,
    headers: Map<String, Value>,
    body: Map<String, Value>,
    /// Hashed before the transaction (see [`prepare_passwords`]).
    passwords: Passwords,
}

/// Why one item failed.
#[derive(Debug, thiserror::Error)]
pub enum ItemFailure {
    #[error("no record operation at this method and URL")]
    Unsupported,
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Why a batch failed; nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("invalid batch request data")]
    Invalid(Errors),
    #[error("more than {max} requests")]
    TooMany { max: usize },
    #[error("batch request {index} failed: {failure}")]
    Item { index: usize, failure: ItemFailure },
    #[error("the batch did not finish within {0:?}")]
    Timeout(Duration),
    /// The caller was refused (a registration limit), or what a created account needs
    /// (its verification mail) could not be written.
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What a batch did: one `{status, body}` per item, and the records it created.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub answers: Vec<Value>,
    pub created: Vec<Record>,
    /// The record changes, for realtime subscribers once the batch committed.
    pub changes: Vec<RecordEvent>,
}

impl BatchInput {
    /// Checks the shape of every item and routes it; `max` is the most items allowed.
    pub fn into_items(self, max: usize) -> Result<Vec<BatchItem>, BatchError> {
        if self.requests.is_empty() {
            return Err(BatchError::Invalid(vec![(
                "requests".into(),
                FieldError::new("validation_required", "Cannot be blank."),
            )]));
        }
        if self.requests.len() > max {
            return Err(BatchError::TooMany { max });
        }
        let mut errors = Errors::new();
        for (index, item) in self.requests.iter().enumerate() {
            for (name, value) in [("method", &item.method), ("url", &item.url)] {
                if value.trim().is_empty() {
                    errors.push((
                        format!("requests.{index}.{name}"),
                        FieldError::new("validation_required", "Cannot be blank."),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(BatchError::Invalid(errors));
        }
        Ok(self.requests.into_iter().map(BatchItem::from).collect())
    }
}

impl BatchItem {
    /// The collection the item writes to, when it is a record write.
    pub fn collection(&self) -> Option<&str> {
        self.target
            .as_ref()
            .map(|(collection, _)| collection.as_str())
    }

    /// Whether the item may create a record of an auth collection (an account).
    pub fn may_register(&self, registry: &Registry) -> bool {
        matches!(
            &self.target,
            Some((collection, Operation::Create | Operation::Upsert))
                if registry.get(collection).is_some_and(|c| c.is_auth())
        )
    }
}

impl From<ItemInput> for BatchItem {
    fn from(input: ItemInput) -> Self {
        let method = input.method.trim().to_ascii_uppercase();
        let (path, query) = input.url.split_once('?').unwrap_or((&input.url, ""));
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), Value::String(value.into_owned())))
            .collect();
        let headers = input
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase().replace('-', "_"), value))
            .filter(|(name, _)| name != "authorization" && name != "cookie")
            .collect();
        Self {
            target: route(&method, path),
            method,
            query,
            headers,
            body: input.body.unwrap_or_default(),
            passwords: Passwords::default(),
        }
    }
}

/// The collection and operation of a batch item's method and path, as PocketBase
/// allows them in a batch: record writes only.
fn route(method: &str, path: &str) -> Option<(String, Operation)> {
    let rest = path.strip_prefix("/api/collections/")?;
    let segments: Vec<String> = rest
        .split('/')
        .map(|segment| {
            percent_decode_str(segment)
                .decode_utf8()
                .map(|s| s.into_owned())
        })
        .collect::<Result<_, _>>()
        .ok()?;
    match (method, segments.as_slice()) {
        ("POST", [collection, records]) if records == "records" => {
            Some((collection.clone(), Operation::Create))
        }
        ("PUT", [collection, records]) if records == "records" => {
            Some((collection.clone(), Operation::Upsert))
        }
        ("PATCH", [collection, records, id]) if records == "records" && !id.is_empty() => {
            Some((collection.clone(), Operation::Update(id.clone())))
        }
        ("DELETE", [collection, records, id]) if records == "records" && !id.is_empty() => {
            Some((collection.clone(), Operation::Delete(id.clone())))
        }
        _ => None,
    }
}

/// How many of a batch's hashes wait on the hasher pool at once: enough to keep its
/// threads busy, few enough that logins get their turns in between.
const HASHES_AT_ONCE: usize = 4;

/// Hashes the passwords `items` set, a few at a time on the hasher pool, before their
/// transaction begins (see [`Passwords`]): a batch creating many accounts would
/// otherwise hold the write turn for one hash after another.
pub async fn prepare_passwords(
    items: &mut [BatchItem],
    env: &RecordsEnv,
    identity: &Option<AuthIdentity>,
) -> Result<(), BatchError> {
    use futures_util::{StreamExt, TryStreamExt};

    let requester = Requester::new(identity.clone(), "POST", Map::new(), Map::new());
    let prepared: Vec<Passwords> =
        futures_util::stream::iter(items.iter().enumerate().map(|(index, item)| {
            let requester = &requester;
            async move {
                let prepared = match &item.target {
                    Some((collection, Operation::Create | Operation::Upsert)) => {
                        Passwords::for_create(env, requester, collection, &item.body).await
                    }
                    Some((collection, Operation::Update(id))) => {
                        Passwords::hash_for_update(env, requester, (collection, id), &item.body)
                            .await
                    }
                    _ => Ok(Passwords::default()),
                };
                prepared.map_err(|err| BatchError::Item {
                    index,
                    failure: err.into(),
                })
            }
        }))
        .buffered(HASHES_AT_ONCE)
        .try_collect()
        .await?;
    for (item, passwords) in items.iter_mut().zip(prepared) {
        item.passwords = passwords;
    }
    Ok(())
}

/// Runs `items` in order in `txn`, each as the outer request's caller (`identity`,
/// with the outer `headers` under the item's own). The first failure, or running past
/// `timeout`, fails the whole batch.
pub async fn run(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    identity: Option<AuthIdentity>,
    headers: Map<String, Value>,
    items: Vec<BatchItem>,
    timeout: Duration,
) -> Result<BatchOutcome, BatchError> {
    let work = async {
        let mut outcome = BatchOutcome::default();
        for (index, item) in items.into_iter().enumerate() {
            let mut item_headers = headers.clone();
            item_headers.extend(item.headers.clone());
            let requester = Requester::new(
                identity.clone(),
                &item.method,
                item.query.clone(),
                item_headers,
            );
            let answer = run_item(txn, env, &requester, item, &mut outcome)
                .await
                .map_err(|failure| BatchError::Item { index, failure })?;
            outcome.answers.push(answer);
        }
        Ok(outcome)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| BatchError::Timeout(timeout))?
}

async fn run_item(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    requester: &Requester,
    item: BatchItem,
    outcome: &mut BatchOutcome,
) -> Result<Value, ItemFailure> {
    let (collection, operation) = item.target.ok_or(ItemFailure::Unsupported)?;
    let operation = match operation {
        Operation::Upsert => {
            let id = item.body.get("id").and_then(Value::as_str).unwrap_or("");
            let found = if id.is_empty() {
                None
            } else {
                store::find_by(txn, &env.collection(&collection)?, "id", id)
                    .await
                    .map_err(RecordError::from)?
            };
            match found {
                Some(record) => Operation::Update(record.id().to_string()),
                None => Operation::Create,
            }
        }
        other => other,
    };
    let record = match operation {
        Operation::Create => {
            let record =
                write::create(txn, env, requester, &collection, item.body, &item.passwords).await?;
            outcome
                .changes
                .push(RecordEvent::new(Action::Create, &record));
            outcome.created.push(record.clone());
            record
        }
        Operation::Update(id) => {
            let record = write::update(
                txn,
                env,
                requester,
                &collection,
                &id,
                item.body,
                &item.passwords,
            )
            .await?;
            outcome
                .changes
                .push(RecordEvent::new(Action::Update, &record));
            record
        }
        Operation::Delete(id) => {
            let changes = write::delete(txn, env, requester, &collection, &id).await?;
            outcome.changes.extend(changes);
            return Ok(json!({"status": 204, "body": null}));
        }
        Operation::Upsert => unreachable!("an upsert was resolved above"),
    };
    let text = |key: &str| {
        item.query
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut shown = present(
        txn,
        env,
        requester,
        vec![record],
        &text("expand"),
        &text("fields"),
    )
    .await?;
    let mut answer = Map::with_capacity(2);
    answer.insert("status".into(), 200.into());
    answer.insert("body".into(), shown.remove(0));
    Ok(Value::Object(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_record_writes_only() {
        let collection = |op| Some(("posts".to_string(), op));
        assert_eq!(
            route("POST", "/api/collections/posts/records"),
            collection(Operation::Create)
        );
        assert_eq!(
            route("PUT", "/api/collections/posts/records"),
            collection(Operation::Upsert)
        );
        assert_eq!(
            route("PATCH", "/api/collections/posts/records/abc"),
            collection(Operation::Update("abc".into()))
        );
        assert_eq!(
            route("DELETE", "/api/collections/posts/records/abc"),
            collection(Operation::Delete("abc".into()))
        );
        assert_eq!(
            route("POST", "/api/collections/my%20posts/records"),
            Some(("my posts".to_string(), Operation::Create))
        );
        assert_eq!(route("GET", "/api/collections/posts/records"), None);
        assert_eq!(route("POST", "/api/health"), None);
        assert_eq!(route("DELETE", "/api/collections/posts/records/"), None);
        assert_eq!(route("PATCH", "/api/collections/posts/records"), None);
        assert_eq!(route("POST", "/api/collections/posts"), None);
    }

    #[test]
    fn items_carry_their_query_and_lower_case_headers_without_credentials() {
        let input: BatchInput = serde_json::from_value(json!({"requests": [{
            "method": "post",
            "url": "/api/collections/posts/records?expand=author&fields=id%2Ctitle",
            "headers": {"X-Custom": "1", "Authorization": "someone else"},
            "body": {"title": "a"}
        }]}))
        .unwrap();
        let items = input.into_items(5).unwrap();
        let item = &items[0];
        assert_eq!(item.target, Some(("posts".into(), Operation::Create)));
        assert_eq!(item.query["fields"], "id,title");
        assert_eq!(item.query["expand"], "author");
        assert_eq!(item.headers.get("x_custom"), Some(&json!("1")));
        assert!(!item.headers.contains_key("authorization"));
    }

    #[test]
    fn empty_oversized_and_incomplete_batches_are_refused() {
        let empty: BatchInput = serde_json::from_value(json!({})).unwrap();
        assert!(matches!(empty.into_items(5), Err(BatchError::Invalid(e)) if e[0].0 == "requests"));

        let item = json!({"method": "POST", "url": "/api/collections/a/records"});
        let many: BatchInput =
            serde_json::from_value(json!({"requests": [item, item, item]})).unwrap();
        assert!(matches!(
            many.into_items(2),
            Err(BatchError::TooMany { max: 2 })
        ));

        let incomplete: BatchInput =
            serde_json::from_value(json!({"requests": [item, {"url": "/x"}, {"method": "PUT"}]}))
                .unwrap();
        let Err(BatchError::Invalid(errors)) = incomplete.into_items(5) else {
            panic!("an item without method or url is invalid");
        };
        let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["requests.1.method", "requests.2.url"]);
    }
}
