//! Collections: named, typed tables with access rules, in PocketBase's model.
//!
//! A collection is a row of `_collections` (its definition) plus a real table with one
//! column per field. The [`Registry`] keeps every definition in memory; readers take
//! a snapshot without locking and writers swap in a new one after a change commits.

pub mod definition;
pub mod fields;
pub mod record;
pub mod schema;
pub mod store;
pub mod validate;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::filter::{self, CollectionSchema, FieldSchema, SchemaLookup};

pub use fields::{Field, FieldKind, Storage};

/// PocketBase's id of the `_superusers` collection, which the SDKs check.
pub const SUPERUSERS_ID: &str = "pbc_3142635823";
pub const SUPERUSERS: &str = "_superusers";
/// PocketBase's id of the default `users` collection.
pub const USERS_ID: &str = "_pb_users_auth_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    Base,
    Auth,
}

/// A collection definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub kind: CollectionKind,
    pub system: bool,
    pub list_rule: Option<String>,
    pub view_rule: Option<String>,
    pub create_rule: Option<String>,
    pub update_rule: Option<String>,
    pub delete_rule: Option<String>,
    pub fields: Vec<Field>,
    pub indexes: Vec<String>,
    pub options: CollectionOptions,
    pub created: String,
    pub updated: String,
}

/// Settings of auth collections (ignored for base collections), stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectionOptions {
    pub auth_rule: Option<String>,
    pub manage_rule: Option<String>,
    pub password_auth: PasswordAuth,
    pub oauth2: OAuth2Options,
    pub auth_token: TokenConfig,
    pub verification_token: TokenConfig,
    pub password_reset_token: TokenConfig,
    pub email_change_token: TokenConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PasswordAuth {
    pub enabled: bool,
    pub identity_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct OAuth2Options {
    pub enabled: bool,
}

/// Lifetime of one kind of token, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenConfig {
    pub duration: u64,
}

impl Default for CollectionOptions {
    fn default() -> Self {
        Self {
            auth_rule: Some(String::new()),
            manage_rule: None,
            password_auth: PasswordAuth::default(),
            oauth2: OAuth2Options::default(),
            // PocketBase's default lifetimes: auth 5 days, verification 1 day,
            // password reset and email change 30 minutes.
            auth_token: TokenConfig { duration: 432_000 },
            verification_token: TokenConfig { duration: 86_400 },
            password_reset_token: TokenConfig { duration: 1_800 },
            email_change_token: TokenConfig { duration: 1_800 },
        }
    }
}

impl Default for PasswordAuth {
    fn default() -> Self {
        Self {
            enabled: true,
            identity_fields: vec!["email".into()],
        }
    }
}

impl Collection {
    pub fn is_auth(&self) -> bool {
        self.kind == CollectionKind::Auth
    }

    pub fn is_superusers(&self) -> bool {
        self.id == SUPERUSERS_ID
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// The collection as the filter compiler sees it.
    pub fn filter_schema(&self) -> CollectionSchema {
        CollectionSchema {
            id: self.id.clone(),
            name: self.name.clone(),
            auth: self.is_auth(),
            list_rule: self.list_rule.clone(),
            fields: self
                .fields
                .iter()
                .map(|field| FieldSchema {
                    name: field.name.clone(),
                    kind: match &field.kind {
                        FieldKind::Text { .. } => filter::FieldKind::Text,
                        FieldKind::Number { .. } => filter::FieldKind::Number,
                        FieldKind::Bool {} => filter::FieldKind::Bool,
                        FieldKind::Email { .. } => filter::FieldKind::Email,
                        FieldKind::Url { .. } => filter::FieldKind::Url,
                        FieldKind::Editor { .. } => filter::FieldKind::Editor,
                        FieldKind::Date { .. } => filter::FieldKind::Date,
                        FieldKind::Autodate { .. } => filter::FieldKind::Autodate,
                        FieldKind::Select { .. } => filter::FieldKind::Select,
                        FieldKind::Json { .. } => filter::FieldKind::Json,
                        FieldKind::Relation { .. } => filter::FieldKind::Relation,
                        FieldKind::Password { .. } => filter::FieldKind::Password,
                    },
                    multiple: field.kind.is_multiple(),
                    relation_collection: match &field.kind {
                        FieldKind::Relation { collection_id, .. } => Some(collection_id.clone()),
                        _ => None,
                    },
                    hidden: field.hidden,
                })
                .collect(),
        }
    }

    /// The definition in PocketBase's JSON shape (`GET /api/collections/{c}`).
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "id": self.id,
            "name": self.name,
            "type": self.kind,
            "system": self.system,
            "listRule": self.list_rule,
            "viewRule": self.view_rule,
            "createRule": self.create_rule,
            "updateRule": self.update_rule,
            "deleteRule": self.delete_rule,
            "fields": self.fields,
            "indexes": self.indexes,
            "created": self.created,
            "updated": self.updated,
        });
        if self.is_auth() {
            if let (Value::Object(out), Ok(Value::Object(options))) =
                (&mut out, serde_json::to_value(&self.options))
            {
                out.extend(options);
            }
        }
        out
    }
}

/// Every collection definition, by id and by name.
#[derive(Default)]
pub struct Registry {
    snapshot: ArcSwap<Snapshot>,
}

#[derive(Default)]
struct Snapshot {
    by_id: HashMap<String, Arc<Collection>>,
    by_name: HashMap<String, Arc<Collection>>,
    /// What the filter compiler sees of each collection, by id and by name.
    schemas: HashMap<String, Arc<CollectionSchema>>,
}

impl Registry {
    pub fn new(collections: Vec<Collection>) -> Self {
        let registry = Self::default();
        registry.replace(collections);
        registry
    }

    /// Replaces every definition at once.
    pub fn replace(&self, collections: Vec<Collection>) {
        let mut snapshot = Snapshot::default();
        for collection in collections {
            let collection = Arc::new(collection);
            let schema = Arc::new(collection.filter_schema());
            snapshot
                .schemas
                .insert(collection.id.clone(), schema.clone());
            snapshot.schemas.insert(collection.name.clone(), schema);
            snapshot
                .by_name
                .insert(collection.name.clone(), collection.clone());
            snapshot.by_id.insert(collection.id.clone(), collection);
        }
        self.snapshot.store(Arc::new(snapshot));
    }

    /// What the filter compiler sees of a collection (by id or name).
    pub fn collection_schema(&self, id_or_name: &str) -> Option<Arc<CollectionSchema>> {
        self.snapshot.load().schemas.get(id_or_name).cloned()
    }

    /// Every collection, in no particular order.
    pub fn all(&self) -> Vec<Arc<Collection>> {
        self.snapshot.load().by_id.values().cloned().collect()
    }

    /// A collection by id or name, as the API accepts either.
    pub fn get(&self, id_or_name: &str) -> Option<Arc<Collection>> {
        let snapshot = self.snapshot.load();
        snapshot
            .by_id
            .get(id_or_name)
            .or_else(|| snapshot.by_name.get(id_or_name))
            .cloned()
    }
}

impl SchemaLookup for Registry {
    fn collection(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>> {
        self.collection_schema(name_or_id)
    }
}
