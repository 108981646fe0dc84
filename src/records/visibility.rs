//! Who sees what of a record: superusers everything, the owner of an auth record and
//! whoever its collection's `manageRule` lets manage it its email, everyone else the
//! email only when `emailVisibility` is on. Shared by the records API, expansion and
//! realtime events, so that all three show a record the same way.

use std::collections::HashSet;

use sea_orm::sea_query::{Alias, Expr, Query, UnionType};
use sea_orm::ConnectionTrait;

use super::{dialect, RecordError, RecordsEnv, Requester};
use crate::collections::record::{Record, Viewer};
use crate::domain::filter::candidate_row;

/// Records checked against the manage rule in one statement (bounds its parameters).
const MANAGE_CHECK_CHUNK: usize = 100;

/// How `requester` sees each of `records` (all of one collection), in order.
pub async fn viewers<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    records: &[Record],
) -> Result<Vec<Viewer>, RecordError> {
    let mut viewers: Vec<Viewer> = records.iter().map(|r| requester.viewer_of(r)).collect();
    let managed = managed_ids(conn, env, requester, records, &viewers).await?;
    for (viewer, record) in viewers.iter_mut().zip(records) {
        if managed.contains(record.id()) {
            *viewer = Viewer::Manager;
        }
    }
    Ok(viewers)
}

/// The ids of the records whose email only the manage rule can reveal and that the
/// rule lets `requester` manage. Checked on the records' values as given (so an
/// event about a deleted record is checked as the record was), as PocketBase checks
/// it: an empty or unset rule manages nothing, and a rule that no longer compiles
/// manages nothing either (it is logged).
async fn managed_ids<C: ConnectionTrait>(
    conn: &C,
    env: &RecordsEnv,
    requester: &Requester,
    records: &[Record],
    viewers: &[Viewer],
) -> Result<HashSet<String>, RecordError> {
    let mut managed = HashSet::new();
    let Some(collection) = records.first().map(|r| &r.collection) else {
        return Ok(managed);
    };
    let Some(rule) = collection.options.manage_rule.as_deref() else {
        return Ok(managed);
    };
    if !collection.is_auth() || rule.trim().is_empty() || requester.superuser() {
        return Ok(managed);
    }
    let hidden: Vec<&Record> = records
        .iter()
        .zip(viewers)
        .filter(|(record, viewer)| **viewer == Viewer::Other && !record.bool("emailVisibility"))
        .map(|(record, _)| record)
        .collect();
    if hidden.is_empty() {
        return Ok(managed);
    }
    let dialect = dialect(conn);
    // Never `None` here (superusers and empty rules returned above).
    let condition =
        match env.rule_condition(collection, "manageRule", Some(rule), requester, dialect) {
            Ok(condition) => condition,
            Err(err) => {
                tracing::warn!(%err, collection = %collection.name, "manage rule not applied");
                return Ok(managed);
            }
        };
    let schema = env
        .registry
        .collection_schema(&collection.id)
        .ok_or(RecordError::MissingCollection)?;
    let table = Alias::new(&collection.name);
    for chunk in hidden.chunks(MANAGE_CHECK_CHUNK) {
        let mut rows = candidate_row(&schema, &chunk[0].values, dialect);
        for record in &chunk[1..] {
            rows.union(
                UnionType::All,
                candidate_row(&schema, &record.values, dialect),
            );
        }
        let mut check = Query::select();
        check
            .expr(Expr::col((table.clone(), Alias::new("id"))))
            .from_subquery(rows, table.clone());
        if let Some(condition) = &condition {
            check.and_where(condition.clone());
        }
        for row in conn
            .query_all(conn.get_database_backend().build(&check))
            .await?
        {
            managed.insert(row.try_get_by_index::<String>(0)?);
        }
    }
    Ok(managed)
}
