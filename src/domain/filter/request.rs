//! The request a filter or rule is evaluated for: the values behind `@request.*`,
//! the clock behind the date macros, and who is asking.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Everything `@request.*` and the macros can read.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The authenticated record as a JSON object with all its fields (hidden ones
    /// included) plus `id`, `collectionId` and `collectionName`; `None` for guests.
    pub auth: Option<Map<String, Value>>,
    /// The submitted body (JSON, or multipart fields already decoded).
    pub body: Map<String, Value>,
    /// Query parameters.
    pub query: Map<String, Value>,
    /// Headers, keys lowercased with `-` turned into `_` (as PocketBase does).
    pub headers: Map<String, Value>,
    /// `GET`, `POST`, …
    pub method: String,
    /// `default`, `oauth2`, `otp`, `password`, `realtime`, `protectedFile`, …
    pub context: String,
    /// The instant `@now` and the other date macros are computed from.
    pub now: DateTime<Utc>,
    /// Superusers may filter on hidden fields and see every email.
    pub superuser: bool,
}

impl RequestContext {
    /// A guest request at `now` with an empty body, query and headers.
    pub fn guest(now: DateTime<Utc>) -> Self {
        Self {
            auth: None,
            body: Map::new(),
            query: Map::new(),
            headers: Map::new(),
            method: "GET".into(),
            context: "default".into(),
            now,
            superuser: false,
        }
    }

    /// The same request, authenticated as `record` (id, collectionId, … included).
    pub fn with_auth(mut self, record: Map<String, Value>) -> Self {
        self.auth = Some(record);
        self
    }

    /// The value at `path` under `@request.` (`["auth", "id"]`, `["body", "tags",
    /// "0"]`, …): objects are indexed by key, arrays by position. `None` when missing.
    pub fn lookup(&self, path: &[&str]) -> Option<Value> {
        let (first, rest) = path.split_first()?;
        let root = match *first {
            "method" | "context" => {
                let text = if *first == "method" {
                    &self.method
                } else {
                    &self.context
                };
                return rest.is_empty().then(|| Value::String(text.clone()));
            }
            "auth" => self.auth.as_ref()?,
            "body" => &self.body,
            "query" => &self.query,
            "headers" => &self.headers,
            _ => return None,
        };
        let (key, rest) = rest.split_first()?;
        let mut value = root.get(*key)?;
        for key in rest {
            value = match value {
                Value::Object(map) => map.get(*key)?,
                Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value.clone())
    }
}
