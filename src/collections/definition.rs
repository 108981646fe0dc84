//! Turning a submitted collection (`POST`/`PATCH /api/collections`, import) into a
//! checked definition, and planning the schema change from the old one to the new.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer};

use super::schema::{is_identifier, IndexSpec};
use super::validate::FieldError;
use super::{
    Collection, CollectionKind, CollectionOptions, Field, FieldKind, OAuth2Options, PasswordAuth,
    Registry, TokenConfig,
};
use crate::collections::fields::field_id;

/// A collection as submitted; absent keys keep their current value on update.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionInput {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub fields: Option<Vec<Field>>,
    pub indexes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub list_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub view_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub create_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub update_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub delete_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub auth_rule: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub manage_rule: Option<Option<String>>,
    pub password_auth: Option<PasswordAuth>,
    pub oauth2: Option<OAuth2Options>,
    pub auth_token: Option<TokenConfig>,
    pub verification_token: Option<TokenConfig>,
    pub password_reset_token: Option<TokenConfig>,
    pub email_change_token: Option<TokenConfig>,
}

/// Tells `null` (present, no value) from an absent key.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Field errors keyed by dotted paths (`name`, `fields.2.name`, `indexes.0`).
pub type Errors = Vec<(String, FieldError)>;

/// Checks a rule against the collection it belongs to (filter syntax and fields).
pub type RuleCheck<'a> = &'a dyn Fn(&Collection, &str) -> Result<(), String>;

const RESERVED_FIELDS: [&str; 3] = ["expand", "collectionId", "collectionName"];

/// The system fields every collection of `kind` starts with.
pub fn system_fields(kind: CollectionKind) -> Vec<Field> {
    let mut fields = vec![Field::primary_key()];
    if kind == CollectionKind::Auth {
        fields.extend([
            Field::new(
                "password",
                FieldKind::Password {
                    min: 8,
                    max: 0,
                    pattern: String::new(),
                },
            )
            .system()
            .hidden()
            .required(),
            Field::new(
                "tokenKey",
                FieldKind::Text {
                    min: 30,
                    max: 60,
                    pattern: String::new(),
                    autogenerate_pattern: "[a-zA-Z0-9]{50}".into(),
                    primary_key: false,
                },
            )
            .system()
            .hidden()
            .required(),
            Field::new(
                "email",
                FieldKind::Email {
                    only_domains: vec![],
                    except_domains: vec![],
                },
            )
            .system()
            .required(),
            Field::new("emailVisibility", FieldKind::Bool {}).system(),
            Field::new("verified", FieldKind::Bool {}).system(),
        ]);
    }
    fields
}

/// The unique indexes auth collections need on `email` and `tokenKey`.
fn auth_indexes(id: &str) -> Vec<IndexSpec> {
    ["tokenKey", "email"]
        .iter()
        .map(|column| IndexSpec {
            name: format!("idx_{column}_{id}"),
            unique: true,
            columns: vec![column.to_string()],
            where_not_empty: (*column == "email").then(|| column.to_string()),
        })
        .collect()
}

/// Builds the definition `input` describes — a new collection when `current` is
/// `None` — and checks it completely; nothing is changed when it returns errors.
pub fn apply(
    input: &CollectionInput,
    current: Option<&Collection>,
    registry: &Registry,
    check_rule: RuleCheck<'_>,
    now: &str,
) -> Result<Collection, Errors> {
    let mut errors = Errors::new();
    let kind = match (input.kind.as_deref(), current) {
        (Some("base") | None, None) => CollectionKind::Base,
        (Some("auth"), None) => CollectionKind::Auth,
        (Some(other), None) => {
            let message = if other == "view" {
                "View collections are not supported."
            } else {
                "Must be base or auth."
            };
            errors.push((
                "type".into(),
                FieldError::new("validation_invalid_value", message),
            ));
            CollectionKind::Base
        }
        (Some(kind), Some(current)) if kind != type_name(current.kind) => {
            errors.push((
                "type".into(),
                FieldError::new(
                    "validation_collection_type_change",
                    "The collection type cannot be changed.",
                ),
            ));
            current.kind
        }
        (_, Some(current)) => current.kind,
    };

    let name = input
        .name
        .clone()
        .or_else(|| current.map(|c| c.name.clone()))
        .unwrap_or_default();
    check_name(&name, current, registry, &mut errors);

    let id = match current {
        Some(current) => current.id.clone(),
        None => match input.id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) if is_identifier(id) && registry.get(id).is_none() => id.to_string(),
            Some(_) => {
                errors.push((
                    "id".into(),
                    FieldError::new("validation_invalid_value", "Must be an unused identifier."),
                ));
                String::new()
            }
            None => format!(
                "pbc_{}",
                crc32fast::hash(format!("{}{name}", type_name(kind)).as_bytes())
            ),
        },
    };

    let fields = build_fields(input, current, kind, registry, &mut errors);
    let indexes = build_indexes(
        input,
        current,
        kind,
        &id,
        &name,
        &fields,
        registry,
        &mut errors,
    );

    let pick =
        |submitted: &Option<Option<String>>, existing: Option<&Option<String>>| match submitted {
            Some(rule) => rule.clone(),
            None => existing.cloned().unwrap_or(None),
        };
    let mut options = current.map(|c| c.options.clone()).unwrap_or_default();
    if let Some(rule) = &input.auth_rule {
        options.auth_rule = rule.clone();
    }
    if let Some(rule) = &input.manage_rule {
        options.manage_rule = rule.clone();
    }
    for (target, submitted) in [
        (&mut options.auth_token, input.auth_token),
        (&mut options.verification_token, input.verification_token),
        (
            &mut options.password_reset_token,
            input.password_reset_token,
        ),
        (&mut options.email_change_token, input.email_change_token),
    ] {
        if let Some(config) = submitted {
            *target = config;
        }
    }
    if let Some(password_auth) = &input.password_auth {
        options.password_auth = password_auth.clone();
    }
    if let Some(oauth2) = &input.oauth2 {
        options.oauth2 = oauth2.clone();
    }
    if kind == CollectionKind::Auth {
        for (i, identity) in options.password_auth.identity_fields.iter().enumerate() {
            if !fields.iter().any(|f| &f.name == identity) {
                errors.push((
                    format!("passwordAuth.identityFields.{i}"),
                    FieldError::new("validation_missing_field", "No such field."),
                ));
            }
        }
    }

    let collection = Collection {
        id,
        name,
        kind,
        system: current.is_some_and(|c| c.system),
        list_rule: pick(&input.list_rule, current.map(|c| &c.list_rule)),
        view_rule: pick(&input.view_rule, current.map(|c| &c.view_rule)),
        create_rule: pick(&input.create_rule, current.map(|c| &c.create_rule)),
        update_rule: pick(&input.update_rule, current.map(|c| &c.update_rule)),
        delete_rule: pick(&input.delete_rule, current.map(|c| &c.delete_rule)),
        fields,
        indexes,
        options: if kind == CollectionKind::Auth {
            options
        } else {
            CollectionOptions::default()
        },
        created: current.map_or_else(|| now.to_string(), |c| c.created.clone()),
        updated: now.to_string(),
    };
    if errors.is_empty() {
        let mut rules = vec![
            ("listRule", &collection.list_rule),
            ("viewRule", &collection.view_rule),
            ("createRule", &collection.create_rule),
            ("updateRule", &collection.update_rule),
            ("deleteRule", &collection.delete_rule),
        ];
        if kind == CollectionKind::Auth {
            rules.push(("authRule", &collection.options.auth_rule));
            rules.push(("manageRule", &collection.options.manage_rule));
        }
        for (key, rule) in rules {
            if let Some(rule) = rule.as_deref().filter(|r| !r.trim().is_empty()) {
                if let Err(reason) = check_rule(&collection, rule) {
                    errors.push((
                        key.into(),
                        FieldError::new(
                            "validation_invalid_rule",
                            format!("Invalid rule. Raw error: {reason}"),
                        ),
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(collection)
    } else {
        Err(errors)
    }
}

fn type_name(kind: CollectionKind) -> &'static str {
    match kind {
        CollectionKind::Base => "base",
        CollectionKind::Auth => "auth",
    }
}

fn check_name(name: &str, current: Option<&Collection>, registry: &Registry, errors: &mut Errors) {
    if name.is_empty() {
        errors.push(("name".into(), FieldError::required()));
        return;
    }
    if current.is_some_and(|c| c.system && c.name != name) {
        errors.push((
            "name".into(),
            FieldError::new(
                "validation_system_collection_change",
                "System collections cannot be renamed.",
            ),
        ));
        return;
    }
    if !is_identifier(name) || (name.starts_with('_') && current.is_none_or(|c| c.name != name)) {
        errors.push((
            "name".into(),
            FieldError::new(
                "validation_invalid_name",
                "Use letters, digits and _, starting with a letter (names starting with _ are reserved).",
            ),
        ));
        return;
    }
    if name.eq_ignore_ascii_case("seaql_migrations") {
        errors.push((
            "name".into(),
            FieldError::new("validation_invalid_name", "The name is reserved."),
        ));
        return;
    }
    let taken = registry.all().iter().any(|other| {
        other.name.eq_ignore_ascii_case(name) && current.is_none_or(|c| c.id != other.id)
    });
    if taken {
        errors.push((
            "name".into(),
            FieldError::new(
                "validation_collection_name_exists",
                "Collection name must be unique (case insensitive).",
            ),
        ));
    }
}

fn build_fields(
    input: &CollectionInput,
    current: Option<&Collection>,
    kind: CollectionKind,
    registry: &Registry,
    errors: &mut Errors,
) -> Vec<Field> {
    let system = current.map_or_else(
        || system_fields(kind),
        |c| c.fields.iter().filter(|f| f.system).cloned().collect(),
    );
    let Some(submitted) = &input.fields else {
        return current.map_or(system, |c| c.fields.clone());
    };
    let mut fields: Vec<Field> = Vec::with_capacity(submitted.len() + system.len());
    let mut used_ids = HashSet::new();
    for (i, field) in submitted.iter().enumerate() {
        let path = |key: &str| format!("fields.{i}.{key}");
        let existing = current.and_then(|c| {
            c.fields
                .iter()
                .find(|f| !field.id.is_empty() && f.id == field.id)
                .or_else(|| field.id.is_empty().then(|| c.field(&field.name)).flatten())
        });
        if let Some(system_field) = system.iter().find(|s| {
            Some(s.id.as_str()) == existing.map(|e| e.id.as_str()) || s.name == field.name
        }) {
            if field.name != system_field.name
                || field.kind.type_name() != system_field.kind.type_name()
            {
                errors.push((
                    path("name"),
                    FieldError::new(
                        "validation_system_field_change",
                        "System fields cannot be renamed or retyped.",
                    ),
                ));
            }
            continue;
        }
        let mut field = field.clone();
        field.system = false;
        if let Some(existing) = existing {
            if existing.kind.type_name() != field.kind.type_name() {
                errors.push((
                    path("type"),
                    FieldError::new(
                        "validation_field_type_change",
                        "The field type cannot be changed.",
                    ),
                ));
            }
            field.id = existing.id.clone();
        } else if field.id.is_empty()
            || current.is_some_and(|c| c.fields.iter().any(|f| f.id == field.id))
        {
            field.id = field_id(field.kind.type_name(), &field.name);
        }
        if !is_identifier(&field.name) || RESERVED_FIELDS.contains(&field.name.as_str()) {
            errors.push((
                path("name"),
                FieldError::new(
                    "validation_invalid_name",
                    "Use letters, digits and _, starting with a letter.",
                ),
            ));
        }
        if let Err(error) = check_options(&mut field, registry) {
            errors.push((path(error.0), error.1));
        }
        if !used_ids.insert(field.id.clone()) {
            errors.push((
                path("id"),
                FieldError::new("validation_duplicated_field_id", "Duplicated field id."),
            ));
        }
        fields.push(field);
    }
    let mut all = system;
    all.extend(fields);
    let mut names = HashSet::new();
    for (i, field) in all.iter().enumerate() {
        if !names.insert(field.name.to_ascii_lowercase()) {
            errors.push((
                format!("fields.{i}.name"),
                FieldError::new(
                    "validation_duplicated_field_name",
                    "Duplicated or invalid field name.",
                ),
            ));
        }
    }
    all
}

/// Normalises and checks a field's type options.
fn check_options(field: &mut Field, registry: &Registry) -> Result<(), (&'static str, FieldError)> {
    let invalid = |key: &'static str, message: &str| {
        Err((key, FieldError::new("validation_invalid_value", message)))
    };
    match &mut field.kind {
        FieldKind::Text {
            min, max, pattern, ..
        } => {
            if *max != 0 && *min > *max {
                return invalid("min", "Must not be larger than max.");
            }
            if !pattern.is_empty() && regex::Regex::new(pattern).is_err() {
                return invalid("pattern", "Invalid regular expression.");
            }
        }
        FieldKind::Number {
            min: Some(min),
            max: Some(max),
            ..
        } if *min > *max => {
            return invalid("min", "Must not be larger than max.");
        }
        FieldKind::Select { values, max_select } => {
            if values.is_empty() {
                return Err(("values", FieldError::required()));
            }
            *max_select = (*max_select).max(1);
        }
        FieldKind::Relation {
            collection_id,
            max_select,
            min_select,
            ..
        } => {
            let Some(target) = registry.get(collection_id) else {
                return invalid("collectionId", "No such collection.");
            };
            *collection_id = target.id.clone();
            *max_select = (*max_select).max(1);
            if *min_select > *max_select {
                return invalid("minSelect", "Must not be larger than maxSelect.");
            }
        }
        FieldKind::Password { .. } => {
            return invalid("type", "Password fields belong to auth collections.")
        }
        _ => {}
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_indexes(
    input: &CollectionInput,
    current: Option<&Collection>,
    kind: CollectionKind,
    id: &str,
    table: &str,
    fields: &[Field],
    registry: &Registry,
    errors: &mut Errors,
) -> Vec<String> {
    let submitted: Vec<String> = match (&input.indexes, current) {
        (Some(indexes), _) => indexes.clone(),
        (None, Some(current)) => current.indexes.clone(),
        (None, None) => Vec::new(),
    };
    let renamed = |column: &str| -> String {
        // A field renamed in this change keeps its indexes.
        current
            .and_then(|c| c.field(column))
            .and_then(|old| fields.iter().find(|f| f.id == old.id))
            .map_or_else(|| column.to_string(), |f| f.name.clone())
    };
    let mut specs = Vec::new();
    for (i, sql) in submitted.iter().enumerate() {
        match IndexSpec::parse(sql) {
            Ok(mut spec) => {
                spec.columns = spec.columns.iter().map(|c| renamed(c)).collect();
                spec.where_not_empty = spec.where_not_empty.as_deref().map(renamed);
                if let Some(missing) = spec
                    .columns
                    .iter()
                    .chain(&spec.where_not_empty)
                    .find(|c| !fields.iter().any(|f| &f.name == *c))
                {
                    errors.push((
                        format!("indexes.{i}"),
                        FieldError::new(
                            "validation_invalid_index",
                            format!("Unknown column {missing}."),
                        ),
                    ));
                }
                specs.push(spec);
            }
            Err(reason) => errors.push((
                format!("indexes.{i}"),
                FieldError::new(
                    "validation_invalid_index",
                    format!("Invalid index: {reason}."),
                ),
            )),
        }
    }
    if kind == CollectionKind::Auth {
        for required in auth_indexes(id) {
            if !specs.iter().any(|s| s.name == required.name) {
                specs.push(required);
            }
        }
    }
    let mut names = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let elsewhere = registry.all().iter().any(|other| {
            current.is_none_or(|c| c.id != other.id)
                && other
                    .indexes
                    .iter()
                    .filter_map(|sql| IndexSpec::parse(sql).ok())
                    .any(|s| s.name.eq_ignore_ascii_case(&spec.name))
        });
        if elsewhere || !names.insert(spec.name.to_ascii_lowercase()) {
            errors.push((
                format!("indexes.{i}"),
                FieldError::new("validation_invalid_index", "Index names must be unique."),
            ));
        }
    }
    specs.iter().map(|spec| spec.to_sql(table)).collect()
}

/// One step of turning the old table into the new one.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RenameTable { from: String, to: String },
    DropIndex(IndexSpec),
    DropColumn(String),
    RenameColumn { from: String, to: String },
    AddColumn(Field),
    CreateIndex(IndexSpec),
}

/// The steps from `old` to `new`, in an order both SQLite and PostgreSQL accept:
/// indexes that change go first, columns next, new indexes last.
pub fn plan(old: &Collection, new: &Collection) -> Vec<Change> {
    let old_indexes: Vec<IndexSpec> = old
        .indexes
        .iter()
        .filter_map(|i| IndexSpec::parse(i).ok())
        .collect();
    let new_indexes: Vec<IndexSpec> = new
        .indexes
        .iter()
        .filter_map(|i| IndexSpec::parse(i).ok())
        .collect();
    let mut changes = Vec::new();
    if old.name != new.name {
        changes.push(Change::RenameTable {
            from: old.name.clone(),
            to: new.name.clone(),
        });
    }
    let renamed_column = |column: &String| -> String {
        old.field(column)
            .and_then(|f| new.fields.iter().find(|n| n.id == f.id))
            .map_or_else(|| column.clone(), |f| f.name.clone())
    };
    // The same index after the change: same name and kind, columns renamed along.
    let equivalent = |before: &IndexSpec, after: &IndexSpec| {
        before.name == after.name
            && before.unique == after.unique
            && before
                .columns
                .iter()
                .map(renamed_column)
                .collect::<Vec<_>>()
                == after.columns
            && before.where_not_empty.as_ref().map(renamed_column) == after.where_not_empty
    };
    for index in &old_indexes {
        if !new_indexes.iter().any(|n| equivalent(index, n)) {
            changes.push(Change::DropIndex(index.clone()));
        }
    }
    for field in &old.fields {
        match new.fields.iter().find(|f| f.id == field.id) {
            None => changes.push(Change::DropColumn(field.name.clone())),
            Some(kept) if kept.name != field.name => changes.push(Change::RenameColumn {
                from: field.name.clone(),
                to: kept.name.clone(),
            }),
            Some(_) => {}
        }
    }
    for field in &new.fields {
        if !old.fields.iter().any(|f| f.id == field.id) {
            changes.push(Change::AddColumn(field.clone()));
        }
    }
    for index in &new_indexes {
        if !old_indexes.iter().any(|o| equivalent(o, index)) {
            changes.push(Change::CreateIndex(index.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(value: serde_json::Value) -> CollectionInput {
        serde_json::from_value(value).unwrap()
    }

    fn no_rules(_: &Collection, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn create(registry: &Registry, value: serde_json::Value) -> Result<Collection, Errors> {
        apply(
            &input(value),
            None,
            registry,
            &no_rules,
            "2026-01-01 00:00:00.000Z",
        )
    }

    fn codes(errors: &Errors) -> Vec<(&str, &str)> {
        errors.iter().map(|(k, e)| (k.as_str(), e.code)).collect()
    }

    #[test]
    fn a_new_collection_gets_system_fields_an_id_and_null_rules() {
        let registry = Registry::default();
        let posts = create(
            &registry,
            json!({"name": "posts", "fields": [{"name": "title", "type": "text"}]}),
        )
        .unwrap();
        assert_eq!(posts.kind, CollectionKind::Base);
        assert!(posts.id.starts_with("pbc_"));
        assert_eq!(posts.fields[0].name, "id");
        assert_eq!(posts.fields[1].name, "title");
        assert_eq!(posts.list_rule, None);

        let members = create(
            &registry,
            json!({"name": "members", "type": "auth", "listRule": ""}),
        )
        .unwrap();
        let names: Vec<&str> = members.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "password",
                "tokenKey",
                "email",
                "emailVisibility",
                "verified"
            ]
        );
        assert_eq!(members.list_rule.as_deref(), Some(""));
        assert_eq!(members.indexes.len(), 2, "unique email and tokenKey");
    }

    #[test]
    fn bad_definitions_name_every_problem() {
        let registry = Registry::new(vec![
            create(&Registry::default(), json!({"name": "posts"})).unwrap()
        ]);
        let errors = create(
            &registry,
            json!({"name": "POSTS", "type": "view", "fields": [
                {"name": "bad-name", "type": "text"},
                {"name": "tags", "type": "select", "values": []},
                {"name": "author", "type": "relation", "collectionId": "nope"},
                {"name": "expand", "type": "bool"}
            ], "indexes": ["CREATE INDEX idx ON x (missing)", "garbage"]}),
        )
        .unwrap_err();
        let codes = codes(&errors);
        assert!(
            codes.contains(&("type", "validation_invalid_value")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("name", "validation_collection_name_exists")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("fields.0.name", "validation_invalid_name")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("fields.1.values", "validation_required")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("fields.2.collectionId", "validation_invalid_value")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("fields.3.name", "validation_invalid_name")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("indexes.0", "validation_invalid_index")),
            "{codes:?}"
        );
        assert!(
            codes.contains(&("indexes.1", "validation_invalid_index")),
            "{codes:?}"
        );
        assert!(create(&registry, json!({"name": "_hidden"})).is_err());
    }

    #[test]
    fn rules_are_checked_with_the_new_fields() {
        let registry = Registry::default();
        let check = |collection: &Collection, rule: &str| -> Result<(), String> {
            if collection.field(rule).is_some() {
                Ok(())
            } else {
                Err(format!("unknown field {rule}"))
            }
        };
        let ok = apply(
            &input(
                json!({"name": "a", "listRule": "title", "fields": [{"name": "title", "type": "text"}]}),
            ),
            None,
            &registry,
            &check,
            "t",
        );
        assert!(ok.is_ok());
        let bad = apply(
            &input(json!({"name": "a", "viewRule": "nope"})),
            None,
            &registry,
            &check,
            "t",
        )
        .unwrap_err();
        assert_eq!(codes(&bad), [("viewRule", "validation_invalid_rule")]);
    }

    #[test]
    fn updates_keep_ids_plan_renames_and_refuse_type_changes() {
        let registry = Registry::default();
        let before = create(
            &registry,
            json!({"name": "posts", "fields": [
                {"name": "title", "type": "text"},
                {"name": "views", "type": "number"},
                {"name": "draft", "type": "bool"}
            ], "indexes": ["CREATE UNIQUE INDEX `idx_title` ON `posts` (`title`)"]}),
        )
        .unwrap();
        let title_id = before.field("title").unwrap().id.clone();
        let after = apply(
            &input(json!({"name": "articles", "fields": [
                {"id": title_id, "name": "headline", "type": "text"},
                {"name": "draft", "type": "bool"},
                {"name": "body", "type": "editor"}
            ]})),
            Some(&before),
            &registry,
            &no_rules,
            "t2",
        )
        .unwrap();
        assert_eq!(after.id, before.id);
        assert_eq!(after.field("headline").unwrap().id, title_id);
        assert_eq!(
            after.indexes,
            ["CREATE UNIQUE INDEX `idx_title` ON `articles` (`headline`)"]
        );
        let changes = plan(&before, &after);
        assert_eq!(
            changes[0],
            Change::RenameTable {
                from: "posts".into(),
                to: "articles".into()
            }
        );
        assert!(changes.contains(&Change::RenameColumn {
            from: "title".into(),
            to: "headline".into()
        }));
        assert!(changes.contains(&Change::DropColumn("views".into())));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::AddColumn(f) if f.name == "body")));
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::DropIndex(_) | Change::CreateIndex(_))),
            "{changes:?}"
        );

        let retyped = apply(
            &input(json!({"fields": [
                {"id": title_id, "name": "headline", "type": "text"},
                {"id": after.field("draft").unwrap().id, "name": "draft", "type": "text"}
            ]})),
            Some(&after),
            &registry,
            &no_rules,
            "t3",
        )
        .unwrap_err();
        assert_eq!(
            codes(&retyped),
            [("fields.1.type", "validation_field_type_change")]
        );
    }
}
