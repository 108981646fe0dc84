//! What the compiler needs to know about collections, and what it assumes about
//! their tables.
//!
//! Storage contract: each collection is a table named exactly as the collection,
//! `id TEXT PRIMARY KEY`; text-like fields, dates (`YYYY-MM-DD HH:MM:SS.sssZ`) and
//! single select/relation/file fields are `TEXT NOT NULL DEFAULT ''`; numbers are
//! `REAL`/`DOUBLE PRECISION NOT NULL DEFAULT 0`; bools `BOOLEAN NOT NULL DEFAULT
//! FALSE`; json is nullable JSON text (SQLite `TEXT`, PostgreSQL `JSONB`);
//! multi-valued select/relation/file fields are JSON arrays of strings (SQLite
//! `TEXT`, written compactly as `serde_json` does, PostgreSQL `JSONB`), default `[]`.

use std::sync::Arc;

/// Looks collections up by name or id; the records API implements it over its
/// collection registry.
pub trait SchemaLookup {
    /// The collection whose name or id is `name_or_id`.
    fn collection(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>>;
}

/// A collection as the filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSchema {
    pub id: String,
    pub name: String,
    /// An auth collection: its `email` field is filterable by non-superusers only
    /// on records whose `emailVisibility` is true.
    pub auth: bool,
    /// The list rule: `None` = superusers only, `Some("")` = everyone. Clients
    /// filtering through a relation into this collection see only the records it
    /// allows.
    pub list_rule: Option<String>,
    /// Every field including the system ones (`id`, and `created`/`updated`,
    /// `email`, `emailVisibility`, `verified`, … when the collection has them).
    pub fields: Vec<FieldSchema>,
}

/// A field as the filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    pub kind: FieldKind,
    /// maxSelect > 1 for select/relation/file: stored as a JSON array.
    pub multiple: bool,
    /// For relations: the id (or name) of the target collection.
    pub relation_collection: Option<String>,
    /// Only superusers may filter or sort on it.
    pub hidden: bool,
}

/// PocketBase's field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Number,
    Bool,
    Email,
    Url,
    Date,
    Autodate,
    Select,
    Json,
    Relation,
    File,
    Editor,
    Password,
}

impl FieldKind {
    /// Select, relation and file fields accept `:each` and `:length`.
    pub fn is_multi_valuer(self) -> bool {
        matches!(
            self,
            FieldKind::Select | FieldKind::Relation | FieldKind::File
        )
    }
}

impl CollectionSchema {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl FieldSchema {
    /// A field of `kind` called `name`, single-valued and visible.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Self {
            name: name.into(),
            kind,
            multiple: false,
            relation_collection: None,
            hidden: false,
        }
    }

    /// A single relation to the collection with id `target`.
    pub fn relation(name: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            relation_collection: Some(target.into()),
            ..Self::new(name, FieldKind::Relation)
        }
    }

    /// The same field, holding several values (maxSelect > 1).
    pub fn multiple(mut self) -> Self {
        self.multiple = true;
        self
    }

    /// The same field, hidden from non-superusers.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }
}
