//! The records API's logic: listing with filters and rules, viewing, creating,
//! updating and deleting records, expanding relations, and managing collections.
//!
//! Every write is a function over one database transaction, so the database actor
//! can run it alone, and a batch can run many of them in one transaction; reads take
//! any connection (the pool, or the transaction of a write that answers with a record).
//! Access rules are compiled into the same SQL statement as the operation (see
//! [`crate::domain::filter`]), never evaluated by loading and filtering in memory.

pub mod batch;
pub mod collections;
pub mod expand;
pub mod read;
pub mod totals;
pub mod visibility;
pub mod write;

use std::sync::Arc;

use actix::Addr;
use sea_orm::sea_query::SimpleExpr;
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::{Map, Value};

use crate::actors::database::DbError;
use crate::auth::passwords::{HashError, PasswordHasher};
use crate::auth::sessions::SessionGuard;
use crate::auth::AuthIdentity;
use crate::cluster::bus::ClusterBus;
use crate::collections::definition::Errors;
use crate::collections::record::{Record, Viewer};
use crate::collections::{Collection, Registry};
use crate::domain::filter::{Compiler, Dialect, Filter, FilterError, RequestContext};
use crate::realtime::Hub;

/// What record operations share: the collection registry, the password hasher (for
/// auth collections) and the session guard (a password change ends sessions).
pub struct RecordsEnv {
    pub registry: Arc<Registry>,
    pub hasher: Addr<PasswordHasher>,
    pub sessions: Arc<SessionGuard>,
    /// Collection changes run one at a time, each from the registry as the previous
    /// one left it.
    pub schema_lock: tokio::sync::Mutex<()>,
    /// In a cluster, collection changes are told to the other instances.
    pub bus: Option<ClusterBus>,
    /// Committed record changes go to realtime subscribers through it.
    pub realtime: Arc<Hub>,
    /// List pages that need the same total share its count.
    pub totals: Arc<totals::SharedTotals>,
}

impl RecordsEnv {
    pub fn new(
        registry: Arc<Registry>,
        hasher: Addr<PasswordHasher>,
        sessions: Arc<SessionGuard>,
        bus: Option<ClusterBus>,
        realtime: Arc<Hub>,
    ) -> Self {
        Self {
            registry,
            hasher,
            sessions,
            schema_lock: tokio::sync::Mutex::new(()),
            bus,
            realtime,
            totals: Arc::default(),
        }
    }
}

/// Who is asking, and the `@request.*` values rules are evaluated with.
#[derive(Debug, Clone)]
pub struct Requester {
    pub identity: Option<AuthIdentity>,
    pub request: RequestContext,
}

impl Requester {
    /// A request by `identity` (or a guest) with the given method, query and headers;
    /// the body is added by write operations.
    pub fn new(
        identity: Option<AuthIdentity>,
        method: &str,
        query: Map<String, Value>,
        headers: Map<String, Value>,
    ) -> Self {
        let mut request = RequestContext::guest(chrono::Utc::now());
        request.method = method.to_string();
        request.query = query;
        request.headers = headers;
        if let Some(identity) = &identity {
            let mut auth = identity.record.values.clone();
            auth.insert(
                "collectionId".into(),
                Value::String(identity.record.collection.id.clone()),
            );
            auth.insert(
                "collectionName".into(),
                Value::String(identity.record.collection.name.clone()),
            );
            request.auth = Some(auth);
            request.superuser = identity.is_superuser();
        }
        Self { identity, request }
    }

    pub fn superuser(&self) -> bool {
        self.request.superuser
    }

    /// How this requester sees `record`.
    pub fn viewer_of(&self, record: &Record) -> Viewer {
        self.identity
            .as_ref()
            .map_or(Viewer::Other, |identity| identity.viewer_of(record))
    }
}

/// Why a records or collections operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no such collection")]
    MissingCollection,
    #[error("no such record, or not visible")]
    NotFound,
    #[error("only superusers may do this")]
    SuperusersOnly,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("invalid {param}: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("{message}")]
    Validation {
        message: &'static str,
        fields: Errors,
    },
    #[error("the create rule does not allow this record")]
    CreateRuleFailed,
    #[error("the record is part of a required relation")]
    RequiredRelation,
    #[error("the {rule} of {collection} cannot be compiled: {reason}")]
    BrokenRule {
        collection: String,
        rule: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

impl From<DbErr> for RecordError {
    fn from(err: DbErr) -> Self {
        Self::Database(DbError::Query(err))
    }
}

/// The SQL dialect of a connection.
pub fn dialect<C: ConnectionTrait>(conn: &C) -> Dialect {
    Dialect::try_from(conn.get_database_backend()).unwrap_or(Dialect::Sqlite)
}

impl RecordsEnv {
    pub fn collection(&self, name_or_id: &str) -> Result<Arc<Collection>, RecordError> {
        self.registry
            .get(name_or_id)
            .ok_or(RecordError::MissingCollection)
    }

    /// The condition a rule adds for `requester`: `None` when nothing is added
    /// (superusers, or an empty rule), an error for superusers-only rules.
    pub fn rule_condition(
        &self,
        collection: &Collection,
        rule_name: &'static str,
        rule: Option<&str>,
        requester: &Requester,
        dialect: Dialect,
    ) -> Result<Option<SimpleExpr>, RecordError> {
        if requester.superuser() {
            return Ok(None);
        }
        match rule {
            None => Err(RecordError::SuperusersOnly),
            Some(rule) if rule.trim().is_empty() => Ok(None),
            Some(rule) => {
                let broken = |err: FilterError| RecordError::BrokenRule {
                    collection: collection.name.clone(),
                    rule: rule_name,
                    reason: err.to_string(),
                };
                let schema = self
                    .registry
                    .collection_schema(&collection.id)
                    .ok_or(RecordError::MissingCollection)?;
                let filter = Filter::parse(rule).map_err(broken)?;
                Compiler::new(self.registry.as_ref(), &schema, &requester.request, dialect)
                    .rule(&filter)
                    .map(Some)
                    .map_err(broken)
            }
        }
    }
}
