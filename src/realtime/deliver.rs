//! Who gets a record change, and how it looks to them.
//!
//! Subscribers are grouped by what decides their answer — their auth record, the rule
//! their topic uses (list or view) and their subscription options — so a change costs
//! one rule check per group, not per client: ten thousand guests watching `posts/*`
//! cost one query. Every group is checked in one read transaction, against the
//! record's values as committed (so a deleted record is checked as it was).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sea_orm::sea_query::{Alias, Expr, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Map, Value};

use super::subscription::{SubscriptionOptions, Target};
use super::{Action, Client, Hub, Message, RecordEvent};
use crate::actors::database::Db;
use crate::auth::AuthIdentity;
use crate::collections::record::Record;
use crate::domain::filter::{candidate_row, Compiler, Filter};
use crate::records::read::present;
use crate::records::{dialect, RecordError, RecordsEnv, Requester};

/// What decides whether, and how, a subscriber sees a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    /// (collection id, record id) of the client's auth record.
    auth: Option<(String, String)>,
    /// The view rule (`coll/ID`) rather than the list rule (`coll/*`, `coll`).
    view: bool,
    options: SubscriptionOptions,
}

/// Subscribers sharing a [`GroupKey`]: the request their checks run as, and each
/// member with the event name (subscription string) it is sent under.
struct Group {
    requester: Requester,
    view: bool,
    options: SubscriptionOptions,
    members: Vec<(Arc<Client>, Arc<str>)>,
}

fn requester(auth: Option<AuthIdentity>, options: &SubscriptionOptions) -> Requester {
    let to_json = |map: &std::collections::BTreeMap<String, String>| -> Map<String, Value> {
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    };
    let mut requester = Requester::new(
        auth,
        "GET",
        to_json(&options.query),
        to_json(&options.headers),
    );
    requester.request.context = "realtime".into();
    requester
}

/// Sorts the clients that watch `record` into groups. Clients whose session was
/// revoked continue as guests.
fn group(hub: &Hub, env: &RecordsEnv, record: &Record) -> Vec<Group> {
    let collection = &record.collection;
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    for client in hub.clients() {
        let mut state = client.state();
        if state
            .auth
            .as_ref()
            .is_some_and(|auth| env.sessions.is_revoked(&auth.session_id))
        {
            state.auth = None;
        }
        for subscription in &state.subscriptions {
            if !subscription.watches(&collection.name, &collection.id, record.id()) {
                continue;
            }
            let view = matches!(subscription.target, Target::Record(_));
            let key = GroupKey {
                auth: state.auth.as_ref().map(|auth| {
                    (
                        auth.record.collection.id.clone(),
                        auth.record.id().to_string(),
                    )
                }),
                view,
                options: subscription.options.clone(),
            };
            groups
                .entry(key)
                .or_insert_with(|| Group {
                    requester: requester(state.auth.clone(), &subscription.options),
                    view,
                    options: subscription.options.clone(),
                    members: Vec::new(),
                })
                .members
                .push((client.clone(), subscription.raw.as_str().into()));
        }
    }
    groups.into_values().collect()
}

/// Keeps clients' auth in step with their auth record: updated on update, dropped
/// on delete (PocketBase does the same).
fn follow_auth_record(hub: &Hub, record: &Record, action: Action) {
    for client in hub.clients() {
        let mut state = client.state();
        let Some(auth) = state.auth.as_mut() else {
            continue;
        };
        if auth.record.collection.id != record.collection.id || auth.record.id() != record.id() {
            continue;
        }
        match action {
            Action::Delete => state.auth = None,
            _ => {
                for (name, value) in &record.values {
                    if !matches!(name.as_str(), "password" | "tokenKey") {
                        auth.record.values.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }
}

/// Whether the group may see `record`: its topic's rule, then the subscription's
/// own `filter`, checked on the record's values in SQL.
async fn allowed(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    record: &Record,
    group: &Group,
) -> Result<bool, RecordError> {
    let collection = &record.collection;
    let (rule_name, rule) = if group.view {
        ("viewRule", collection.view_rule.as_deref())
    } else {
        ("listRule", collection.list_rule.as_deref())
    };
    let dialect = dialect(txn);
    let requester = &group.requester;
    let Ok(rule) = env.rule_condition(collection, rule_name, rule, requester, dialect) else {
        return Ok(false);
    };
    let schema = env
        .registry
        .collection_schema(&collection.id)
        .ok_or(RecordError::MissingCollection)?;
    let mut conditions: Vec<SimpleExpr> = rule.into_iter().collect();
    let filter_text = group.options.query_param("filter");
    if !filter_text.trim().is_empty() {
        let Ok(filter) = Filter::parse(filter_text) else {
            return Ok(false);
        };
        if !requester.superuser() && filter.superuser_only_identifier().is_some() {
            return Ok(false);
        }
        // The compiler is not `Send`: done before the query is awaited.
        let compiled = Compiler::new(env.registry.as_ref(), &schema, &requester.request, dialect)
            .filter(&filter);
        match compiled {
            Ok(condition) => conditions.push(condition),
            Err(_) => return Ok(false),
        }
    }
    if conditions.is_empty() {
        return Ok(true);
    }
    let mut check = Query::select();
    check.expr(Expr::val(1)).from_subquery(
        candidate_row(&schema, &record.values, dialect),
        Alias::new(&collection.name),
    );
    for condition in conditions {
        check.and_where(condition);
    }
    Ok(txn
        .query_one(txn.get_database_backend().build(&check))
        .await?
        .is_some())
}

/// The event data for the group: `{"record":…,"action":…}` (PocketBase's key order),
/// the record expanded and trimmed per the options; bad `expand`/`fields` options are
/// ignored, as PocketBase ignores them.
async fn render(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    record: &Record,
    action: Action,
    group: &Group,
) -> Result<Bytes, RecordError> {
    let records = || vec![record.clone()];
    let expand = group.options.query_param("expand");
    let fields = group.options.query_param("fields");
    let shown = match present(txn, env, &group.requester, records(), expand, fields).await {
        Ok(mut shown) => shown.remove(0),
        Err(_) => present(txn, env, &group.requester, records(), "", "")
            .await?
            .remove(0),
    };
    let mut data = Map::with_capacity(2);
    data.insert("record".into(), shown);
    data.insert("action".into(), action.as_str().into());
    Ok(Bytes::from(
        serde_json::to_vec(&data).expect("JSON values serialize"),
    ))
}

/// Evaluates every group in one transaction: the data each may see, or `None`.
async fn evaluate(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    record: &Record,
    action: Action,
    groups: &[Group],
) -> Result<Vec<Option<Bytes>>, RecordError> {
    let mut payloads = Vec::with_capacity(groups.len());
    for group in groups {
        let payload = if allowed(txn, env, record, group).await? {
            Some(render(txn, env, record, action, group).await?)
        } else {
            None
        };
        payloads.push(payload);
    }
    Ok(payloads)
}

/// Delivers one committed change to the clients of this instance that may see it.
pub async fn deliver(hub: &Hub, db: &Db, env: &Arc<RecordsEnv>, event: RecordEvent) {
    let Some(collection) = env.registry.get(&event.collection) else {
        return;
    };
    let record = Record {
        collection: collection.clone(),
        values: event.record,
    };
    let action = event.action;
    if collection.is_auth() {
        follow_auth_record(hub, &record, action);
    }
    let groups = Arc::new(group(hub, env, &record));
    if groups.is_empty() {
        return;
    }
    let evaluated = {
        let (env, groups) = (env.clone(), groups.clone());
        db.read(move |txn| {
            Box::pin(async move { evaluate(txn, &env, &record, action, &groups).await })
        })
        .await
    };
    let payloads: Vec<Option<Bytes>> = match evaluated {
        Ok(payloads) => payloads,
        Err(err) => {
            tracing::warn!(%err, collection = %collection.name, "could not evaluate a realtime event");
            return;
        }
    };
    for (group, payload) in groups.iter().zip(payloads) {
        let Some(data) = payload else { continue };
        for (client, name) in &group.members {
            hub.send(
                client,
                Arc::new(Message {
                    name: name.clone(),
                    data: data.clone(),
                }),
            );
        }
    }
}
