//! Inbound signed hooks: an external service posts an event to `/api/hooks/{name}`; its
//! signature is checked, the event is stored once by its id, and a record is created
//! from it in the hook's collection (through the records write path, as a superuser, so
//! the collection's validation applies).

use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, Set};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::signing::{self, SignatureError};
use crate::config::{InboundHookSettings, InboundScheme};
use crate::domain::filter::RequestContext;
use crate::queue::now_millis;
use crate::records::write::Passwords;
use crate::records::{write, RecordError, RecordsEnv, Requester};

/// The table of inbound events already stored (sea-orm entity).
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_inbound_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hook: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub record_id: Option<String>,
        pub received_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Checks the signature of a request to `hook` and answers the event's id. `header`
/// looks a request header up by (lowercase) name; `now` is in Unix seconds.
pub fn verify<'h>(
    hook: &InboundHookSettings,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<String, SignatureError> {
    match hook.scheme {
        InboundScheme::Standard => {
            let id = header("webhook-id").ok_or(SignatureError::MissingHeader("webhook-id"))?;
            let timestamp = header("webhook-timestamp")
                .ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
            let signatures = header("webhook-signature")
                .ok_or(SignatureError::MissingHeader("webhook-signature"))?;
            let key =
                signing::secret_key(hook.secret.expose()).map_err(|_| SignatureError::Mismatch)?;
            signing::verify_standard(&key, id, timestamp, signatures, body, now, tolerance_secs)?;
            Ok(id.to_string())
        }
        InboundScheme::Github => {
            let signature = header("x-hub-signature-256")
                .ok_or(SignatureError::MissingHeader("X-Hub-Signature-256"))?;
            signing::verify_github(hook.secret.expose().as_bytes(), signature, body)?;
            // GitHub names each delivery; a sender that does not is identified by what
            // it sent.
            Ok(header("x-github-delivery")
                .map(str::to_string)
                .unwrap_or_else(|| hex::encode(Sha256::digest(body))))
        }
    }
}

/// The object of `payload` that becomes the record: the whole payload, or what
/// `pointer` (a JSON pointer) names.
pub fn record_body(payload: &Value, pointer: &str) -> Option<Map<String, Value>> {
    let target = if pointer.is_empty() {
        Some(payload)
    } else {
        payload.pointer(pointer)
    };
    target.and_then(Value::as_object).cloned()
}

/// What became of an inbound event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// New: the record was created.
    Created { record_id: String },
    /// Seen before: nothing changed.
    Replayed { record_id: Option<String> },
}

/// Stores event `event_id` of `hook` once and creates its record in `collection`, all
/// in `txn`: a replay, or a concurrent duplicate, changes nothing.
pub async fn store(
    txn: &DatabaseTransaction,
    env: &RecordsEnv,
    hook: &str,
    event_id: &str,
    collection: &str,
    body: Map<String, Value>,
) -> Result<Stored, RecordError> {
    // The event row first: whichever request inserts it owns the event, and a record
    // that fails validation rolls the row back with it.
    let inserted = entity::Entity::insert(entity::ActiveModel {
        hook: Set(hook.to_string()),
        event_id: Set(event_id.to_string()),
        record_id: Set(None),
        received_at: Set(now_millis()),
    })
    .on_conflict(
        OnConflict::columns([entity::Column::Hook, entity::Column::EventId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?
        == 1;
    if !inserted {
        let seen = entity::Entity::find_by_id((hook.to_string(), event_id.to_string()))
            .one(txn)
            .await?;
        return Ok(Stored::Replayed {
            record_id: seen.and_then(|row| row.record_id),
        });
    }
    let record =
        write::create(txn, env, &system(), collection, body, &Passwords::default()).await?;
    let record_id = record.id().to_string();
    txn.execute(
        txn.get_database_backend().build(
            sea_orm::sea_query::Query::update()
                .table(entity::Entity)
                .value(entity::Column::RecordId, record_id.clone())
                .and_where(sea_orm::sea_query::Expr::col(entity::Column::Hook).eq(hook))
                .and_where(sea_orm::sea_query::Expr::col(entity::Column::EventId).eq(event_id)),
        ),
    )
    .await?;
    Ok(Stored::Created { record_id })
}

/// Gatehouse itself, acting as a superuser.
fn system() -> Requester {
    let mut request = RequestContext::guest(chrono::Utc::now());
    request.method = "POST".into();
    request.superuser = true;
    Requester {
        identity: None,
        request,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Secret;

    fn hook(scheme: InboundScheme, secret: &str) -> InboundHookSettings {
        InboundHookSettings {
            name: "h".into(),
            scheme,
            secret: Secret::new(secret),
            collection: "events".into(),
            data_pointer: String::new(),
        }
    }

    #[test]
    fn standard_hooks_need_all_three_headers_and_a_fresh_timestamp() {
        let secret = signing::new_secret();
        let key = signing::secret_key(&secret).unwrap();
        let hook = hook(InboundScheme::Standard, &secret);
        let body = br#"{"a":1}"#;
        let signature = signing::sign(&key, "evt_1", 1000, body);
        let headers = |name: &str| match name {
            "webhook-id" => Some("evt_1"),
            "webhook-timestamp" => Some("1000"),
            "webhook-signature" => Some(signature.as_str()),
            _ => None,
        };
        assert_eq!(verify(&hook, headers, body, 1010, 300).unwrap(), "evt_1");
        assert_eq!(
            verify(&hook, headers, body, 5000, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&hook, |_| None, body, 1010, 300),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn github_hooks_are_named_by_their_delivery_or_their_body() {
        let hook = hook(InboundScheme::Github, "It's a Secret to Everybody");
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let named = |name: &str| match name {
            "x-hub-signature-256" => Some(signature),
            "x-github-delivery" => Some("d-1"),
            _ => None,
        };
        assert_eq!(verify(&hook, named, body, 0, 300).unwrap(), "d-1");
        let unnamed = |name: &str| (name == "x-hub-signature-256").then_some(signature);
        assert_eq!(verify(&hook, unnamed, body, 0, 300).unwrap().len(), 64);
    }

    #[test]
    fn the_record_is_the_object_the_pointer_names() {
        let payload = json!({"type": "paid", "data": {"amount": 5}});
        assert_eq!(
            record_body(&payload, "/data"),
            json!({"amount": 5}).as_object().cloned()
        );
        assert!(record_body(&payload, "").unwrap().contains_key("type"));
        assert_eq!(record_body(&payload, "/type"), None);
        assert_eq!(record_body(&payload, "/missing"), None);
    }
}
