//! Records: a collection's row as typed JSON values, and their public JSON shape.

use std::sync::Arc;

use sea_orm::sea_query;
use sea_orm::{DbErr, QueryResult};
use serde_json::{Map, Value};

use super::{Collection, Field, FieldKind, Storage};

/// One row of a collection, every field by name.
#[derive(Debug, Clone)]
pub struct Record {
    pub collection: Arc<Collection>,
    pub values: Map<String, Value>,
}

/// Who looks at a record decides which fields they see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Superuser,
    /// The auth record itself.
    Owner,
    /// Someone its auth collection's `manageRule` lets manage it: sees its email.
    Manager,
    Other,
}

impl Record {
    /// A record with every field at its zero value.
    pub fn new(collection: Arc<Collection>) -> Self {
        let values = collection
            .fields
            .iter()
            .map(|field| (field.name.clone(), zero_value(field)))
            .collect();
        Self { collection, values }
    }

    pub fn id(&self) -> &str {
        self.text("id")
    }

    /// A text-like field's value, "" when missing.
    pub fn text(&self, field: &str) -> &str {
        self.values.get(field).and_then(Value::as_str).unwrap_or("")
    }

    pub fn bool(&self, field: &str) -> bool {
        self.values
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn set(&mut self, field: &str, value: impl Into<Value>) {
        self.values.insert(field.to_string(), value.into());
    }

    /// Decodes a row selected with every column of the collection, in field order
    /// (columns are read by position: no lookup of each name in the row).
    pub fn from_row(collection: Arc<Collection>, row: &QueryResult) -> Result<Self, DbErr> {
        // Room for the collection's id and name that `into_json` adds.
        let mut values = Map::with_capacity(collection.fields.len() + 2);
        for (index, field) in collection.fields.iter().enumerate() {
            let value = match field.kind.storage() {
                Storage::Text => Value::String(row.try_get_by_index::<String>(index)?),
                Storage::Number => number(row.try_get_by_index::<f64>(index)?),
                Storage::Bool => Value::Bool(row.try_get_by_index::<bool>(index)?),
                Storage::Json => row
                    .try_get_by_index::<Option<Value>>(index)?
                    .unwrap_or(Value::Null),
                Storage::StringArray => row
                    .try_get_by_index::<Option<Value>>(index)?
                    .filter(Value::is_array)
                    .unwrap_or_else(|| Value::Array(Vec::new())),
            };
            values.insert(field.name.clone(), value);
        }
        Ok(Self { collection, values })
    }

    /// The column values to write, in field order, for INSERT and UPDATE.
    pub fn column_values(&self) -> Vec<(&str, sea_query::SimpleExpr)> {
        self.collection
            .fields
            .iter()
            .map(|field| {
                let value = self.values.get(&field.name).unwrap_or(&Value::Null);
                (field.name.as_str(), sql_value(field, value).into())
            })
            .collect()
    }

    /// The record as the API shows it to `viewer`: no password or token key ever,
    /// hidden fields only for superusers, the email of an auth record only when it is
    /// visible or the viewer is the owner, a manager or a superuser.
    pub fn to_json(&self, viewer: Viewer) -> Value {
        let mut out = Map::with_capacity(self.values.len() + 2);
        out.insert(
            "collectionId".into(),
            Value::String(self.collection.id.clone()),
        );
        out.insert(
            "collectionName".into(),
            Value::String(self.collection.name.clone()),
        );
        let email_visible = self.email_visible(viewer);
        for field in &self.collection.fields {
            if shows(&self.collection, field, viewer, email_visible) {
                let value = self.values.get(&field.name).cloned().unwrap_or(Value::Null);
                out.insert(field.name.clone(), value);
            }
        }
        Value::Object(out)
    }

    /// [`Record::to_json`] that reuses the record's map, keys and values: when it holds
    /// exactly the collection's fields in field order (as a record read from a row
    /// does), fields the viewer may not see are dropped in place and the collection's
    /// id and name put in front, with no key copied or looked up.
    pub fn into_json(self, viewer: Viewer) -> Value {
        let in_field_order = self.values.len() == self.collection.fields.len()
            && self
                .values
                .keys()
                .zip(&self.collection.fields)
                .all(|(key, field)| *key == field.name);
        if !in_field_order {
            return self.to_json(viewer);
        }
        let email_visible = self.email_visible(viewer);
        let Record {
            collection,
            values: mut out,
        } = self;
        let mut fields = collection.fields.iter();
        out.retain(|_, _| {
            fields
                .next()
                .is_some_and(|field| shows(&collection, field, viewer, email_visible))
        });
        out.shift_insert(
            0,
            "collectionId".into(),
            Value::String(collection.id.clone()),
        );
        out.shift_insert(
            1,
            "collectionName".into(),
            Value::String(collection.name.clone()),
        );
        Value::Object(out)
    }

    fn email_visible(&self, viewer: Viewer) -> bool {
        viewer != Viewer::Other || self.bool("emailVisibility")
    }
}

/// Whether `viewer` sees `field` of a record of `collection` (`email_visible`: whether
/// they see its email).
fn shows(collection: &Collection, field: &Field, viewer: Viewer, email_visible: bool) -> bool {
    match &field.kind {
        FieldKind::Password { .. } => false,
        _ if field.name == "tokenKey" && collection.is_auth() => false,
        _ if field.name == "email" && collection.is_auth() => email_visible,
        _ => !field.hidden || viewer == Viewer::Superuser,
    }
}

/// A field's value when nothing was set: "" for text-like fields, 0, false, null for
/// JSON, and [] for multi-valued fields.
pub fn zero_value(field: &Field) -> Value {
    match field.kind.storage() {
        Storage::Text => Value::String(String::new()),
        Storage::Number => Value::from(0),
        Storage::Bool => Value::Bool(false),
        Storage::Json => Value::Null,
        Storage::StringArray => Value::Array(Vec::new()),
    }
}

/// Whole numbers print without a fraction, as PocketBase prints them.
pub fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.007_199_254_740_992e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn sql_value(field: &Field, value: &Value) -> sea_query::Value {
    match field.kind.storage() {
        Storage::Text => match value {
            Value::String(text) => text.clone().into(),
            Value::Null => String::new().into(),
            other => other.to_string().into(),
        },
        Storage::Number => value.as_f64().unwrap_or(0.0).into(),
        Storage::Bool => value.as_bool().unwrap_or(false).into(),
        Storage::Json if value.is_null() => sea_query::Value::Json(None),
        Storage::Json | Storage::StringArray => {
            sea_query::Value::Json(Some(Box::new(value.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::{CollectionKind, CollectionOptions};

    fn users() -> Arc<Collection> {
        Arc::new(Collection {
            id: "_pb_users_auth_".into(),
            name: "users".into(),
            kind: CollectionKind::Auth,
            system: false,
            list_rule: None,
            view_rule: None,
            create_rule: None,
            update_rule: None,
            delete_rule: None,
            fields: vec![
                Field::primary_key(),
                Field::new(
                    "password",
                    FieldKind::Password {
                        min: 8,
                        max: 0,
                        pattern: String::new(),
                    },
                )
                .hidden(),
                Field::new(
                    "tokenKey",
                    FieldKind::Text {
                        min: 30,
                        max: 60,
                        pattern: String::new(),
                        autogenerate_pattern: String::new(),
                        primary_key: false,
                    },
                )
                .hidden(),
                Field::new(
                    "email",
                    FieldKind::Email {
                        only_domains: vec![],
                        except_domains: vec![],
                    },
                ),
                Field::new("emailVisibility", FieldKind::Bool {}),
                Field::new(
                    "secretNote",
                    FieldKind::Text {
                        min: 0,
                        max: 0,
                        pattern: String::new(),
                        autogenerate_pattern: String::new(),
                        primary_key: false,
                    },
                )
                .hidden(),
                Field::new(
                    "score",
                    FieldKind::Number {
                        min: None,
                        max: None,
                        only_int: false,
                    },
                ),
            ],
            indexes: vec![],
            options: CollectionOptions::default(),
            created: String::new(),
            updated: String::new(),
        })
    }

    const VIEWERS: [Viewer; 4] = [
        Viewer::Other,
        Viewer::Owner,
        Viewer::Manager,
        Viewer::Superuser,
    ];

    /// A user with a password, a token key, an email it keeps private and a hidden field.
    fn user_with_secrets() -> Record {
        let mut record = Record::new(users());
        record.set("id", "abc");
        record.set("password", "$argon2id$…");
        record.set("tokenKey", "key");
        record.set("email", "a@b.co");
        record.set("secretNote", "note");
        record
    }

    #[test]
    fn zero_values_follow_pocketbase() {
        let record = Record::new(users());
        assert_eq!(record.values["email"], "");
        assert_eq!(record.values["score"], 0);
        assert_eq!(record.values["emailVisibility"], false);
    }

    #[test]
    fn secrets_and_hidden_fields_and_private_email_are_not_shown() {
        let mut record = user_with_secrets();
        for viewer in VIEWERS {
            let json = record.to_json(viewer);
            assert!(json.get("password").is_none());
            assert!(json.get("tokenKey").is_none());
            assert_eq!(json["collectionName"], "users");
        }
        assert!(record.to_json(Viewer::Other).get("email").is_none());
        assert_eq!(record.to_json(Viewer::Owner)["email"], "a@b.co");
        assert!(record.to_json(Viewer::Owner).get("secretNote").is_none());
        assert_eq!(record.to_json(Viewer::Manager)["email"], "a@b.co");
        assert!(record.to_json(Viewer::Manager).get("secretNote").is_none());
        assert_eq!(record.to_json(Viewer::Superuser)["secretNote"], "note");
        record.set("emailVisibility", true);
        assert_eq!(record.to_json(Viewer::Other)["email"], "a@b.co");
    }

    #[test]
    fn into_json_shows_what_to_json_shows_in_the_same_order() {
        let record = user_with_secrets();
        let mut unordered = record.clone();
        unordered.values.shift_remove("id");
        unordered.set("id", "abc");
        let mut extra = record.clone();
        extra.set("notAField", 1);
        for record in [record, unordered, extra] {
            for viewer in VIEWERS {
                let shown = record.to_json(viewer);
                let owned = record.clone().into_json(viewer);
                let keys = |json: &Value| {
                    json.as_object()
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                };
                assert_eq!(keys(&owned), keys(&shown));
                assert_eq!(owned, shown);
            }
        }
    }

    #[test]
    fn whole_numbers_print_without_fraction() {
        assert_eq!(number(3.0).to_string(), "3");
        assert_eq!(number(2.5).to_string(), "2.5");
    }
}
