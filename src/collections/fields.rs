//! Collection fields in PocketBase's JSON shape: common flags plus type options.

use serde::{Deserialize, Serialize};

/// One field of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub presentable: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(flatten)]
    pub kind: FieldKind,
}

/// The type of a field with its type-specific options (PocketBase's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FieldKind {
    #[serde(rename_all = "camelCase")]
    Text {
        #[serde(default)]
        min: u32,
        #[serde(default)]
        max: u32,
        #[serde(default)]
        pattern: String,
        #[serde(default)]
        autogenerate_pattern: String,
        #[serde(default)]
        primary_key: bool,
    },
    #[serde(rename_all = "camelCase")]
    Number {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
        #[serde(default)]
        only_int: bool,
    },
    Bool {},
    #[serde(rename_all = "camelCase")]
    Email {
        #[serde(default)]
        only_domains: Vec<String>,
        #[serde(default)]
        except_domains: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Url {
        #[serde(default)]
        only_domains: Vec<String>,
        #[serde(default)]
        except_domains: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Editor {
        #[serde(default)]
        max_size: u64,
    },
    Date {
        #[serde(default)]
        min: String,
        #[serde(default)]
        max: String,
    },
    #[serde(rename_all = "camelCase")]
    Autodate {
        #[serde(default)]
        on_create: bool,
        #[serde(default)]
        on_update: bool,
    },
    #[serde(rename_all = "camelCase")]
    Select {
        #[serde(default)]
        values: Vec<String>,
        #[serde(default)]
        max_select: u32,
    },
    #[serde(rename_all = "camelCase")]
    Json {
        #[serde(default)]
        max_size: u64,
    },
    #[serde(rename_all = "camelCase")]
    Relation {
        #[serde(default)]
        collection_id: String,
        #[serde(default)]
        cascade_delete: bool,
        #[serde(default)]
        min_select: u32,
        #[serde(default)]
        max_select: u32,
    },
    #[serde(rename_all = "camelCase")]
    Password {
        #[serde(default)]
        min: u32,
        #[serde(default)]
        max: u32,
        #[serde(default)]
        pattern: String,
    },
}

/// How a field's values are stored in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `TEXT NOT NULL DEFAULT ''`.
    Text,
    /// `REAL` / `DOUBLE PRECISION NOT NULL DEFAULT 0`.
    Number,
    /// `BOOLEAN NOT NULL DEFAULT FALSE`.
    Bool,
    /// Nullable JSON (`TEXT` on SQLite, `JSONB` on PostgreSQL).
    Json,
    /// A JSON array of strings, default `[]`.
    StringArray,
}

impl FieldKind {
    /// The PocketBase type name (`"text"`, `"number"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Number { .. } => "number",
            Self::Bool {} => "bool",
            Self::Email { .. } => "email",
            Self::Url { .. } => "url",
            Self::Editor { .. } => "editor",
            Self::Date { .. } => "date",
            Self::Autodate { .. } => "autodate",
            Self::Select { .. } => "select",
            Self::Json { .. } => "json",
            Self::Relation { .. } => "relation",
            Self::Password { .. } => "password",
        }
    }

    /// Whether the field holds several values (a JSON array).
    pub fn is_multiple(&self) -> bool {
        match self {
            Self::Select { max_select, .. } | Self::Relation { max_select, .. } => *max_select > 1,
            _ => false,
        }
    }

    pub fn storage(&self) -> Storage {
        match self {
            Self::Number { .. } => Storage::Number,
            Self::Bool {} => Storage::Bool,
            Self::Json { .. } => Storage::Json,
            _ if self.is_multiple() => Storage::StringArray,
            _ => Storage::Text,
        }
    }
}

impl Field {
    /// A field with PocketBase's id scheme (`<type><crc32 of name>`).
    pub fn new(name: &str, kind: FieldKind) -> Self {
        Self {
            id: field_id(kind.type_name(), name),
            name: name.to_string(),
            system: false,
            hidden: false,
            presentable: false,
            required: false,
            kind,
        }
    }

    pub fn system(mut self) -> Self {
        self.system = true;
        self
    }

    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The primary key every collection has: 15 characters of `[a-z0-9]`.
    pub fn primary_key() -> Self {
        Self::new(
            "id",
            FieldKind::Text {
                min: 15,
                max: 15,
                pattern: "^[a-z0-9]+$".into(),
                autogenerate_pattern: "[a-z0-9]{15}".into(),
                primary_key: true,
            },
        )
        .system()
        .required()
    }

    /// `created`/`updated` autodate fields.
    pub fn autodate(name: &str, on_update: bool) -> Self {
        Self::new(
            name,
            FieldKind::Autodate {
                on_create: true,
                on_update,
            },
        )
    }
}

/// PocketBase's field id: the type name followed by the CRC-32 of the field name.
pub fn field_id(type_name: &str, name: &str) -> String {
    format!("{type_name}{}", crc32fast::hash(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_pocketbase_json() {
        let json = serde_json::json!({
            "id": "select1", "name": "tags", "type": "select", "system": false,
            "hidden": false, "presentable": false, "required": true,
            "values": ["a", "b"], "maxSelect": 2
        });
        let field: Field = serde_json::from_value(json.clone()).unwrap();
        assert!(field.kind.is_multiple());
        assert_eq!(field.kind.storage(), Storage::StringArray);
        assert_eq!(serde_json::to_value(&field).unwrap(), json);
    }

    #[test]
    fn missing_options_take_zero_values() {
        let field: Field =
            serde_json::from_value(serde_json::json!({"name": "n", "type": "number"})).unwrap();
        assert_eq!(
            field.kind,
            FieldKind::Number {
                min: None,
                max: None,
                only_int: false
            }
        );
    }

    #[test]
    fn ids_follow_pocketbase() {
        // PocketBase's own id field is "text3208210256".
        assert_eq!(Field::primary_key().id, "text3208210256");
    }
}
