//! Subscription strings as the SDKs send them: `posts/*`, `posts/RECORD_ID`, the
//! legacy `posts`, each optionally followed by `?options=<JSON>` carrying the query
//! parameters and headers the event is evaluated and shaped with.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// What a subscription watches within its collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `coll/*` and the legacy `coll`: every record the list rule shows.
    All,
    /// `coll/ID`: one record, through the view rule.
    Record(String),
}

/// The query parameters and headers of a subscription (`?options=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionOptions {
    pub query: BTreeMap<String, String>,
    /// Keys as rules read them: lower case, `-` as `_`.
    pub headers: BTreeMap<String, String>,
}

impl SubscriptionOptions {
    pub fn query_param(&self, key: &str) -> &str {
        self.query.get(key).map_or("", String::as_str)
    }
}

/// One subscription: the string exactly as sent (it names the SSE events), and
/// what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub raw: String,
    /// Collection name or id, as written.
    pub collection: String,
    pub target: Target,
    pub options: SubscriptionOptions,
}

#[derive(Deserialize, Default)]
struct RawOptions {
    #[serde(default)]
    query: serde_json::Map<String, Value>,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
}

/// A JSON value as the single string PocketBase keeps (its `cast.ToString`).
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

impl Subscription {
    /// Parses a subscription; `None` for the empty string, which PocketBase ignores.
    /// Options that are not valid JSON are ignored, as PocketBase ignores them.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() {
            return None;
        }
        let (topic, query) = raw.split_once('?').unwrap_or((raw, ""));
        let (collection, target) = match topic.split_once('/') {
            Some((collection, "*")) => (collection, Target::All),
            Some((collection, id)) => (collection, Target::Record(id.to_string())),
            None => (topic, Target::All),
        };
        let raw_options = url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "options")
            .and_then(|(_, value)| serde_json::from_str::<RawOptions>(&value).ok())
            .unwrap_or_default();
        let options = SubscriptionOptions {
            query: raw_options
                .query
                .iter()
                .map(|(key, value)| (key.clone(), as_text(value)))
                .collect(),
            headers: raw_options
                .headers
                .iter()
                .map(|(key, value)| (key.to_lowercase().replace('-', "_"), as_text(value)))
                .collect(),
        };
        Some(Self {
            raw: raw.to_string(),
            collection: collection.to_string(),
            target,
            options,
        })
    }

    /// Whether a change of record `id` in the collection named `name` (id `cid`)
    /// concerns this subscription.
    pub fn watches(&self, name: &str, cid: &str, id: &str) -> bool {
        (self.collection == name || self.collection == cid)
            && match &self.target {
                Target::All => true,
                Target::Record(watched) => watched == id,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_a_collection_and_a_target() {
        let all = Subscription::parse("posts/*").unwrap();
        assert_eq!(
            (all.collection.as_str(), &all.target),
            ("posts", &Target::All)
        );
        let legacy = Subscription::parse("posts").unwrap();
        assert_eq!(legacy.target, Target::All);
        let one = Subscription::parse("pbc_1/abc123").unwrap();
        assert_eq!(one.target, Target::Record("abc123".into()));
        assert!(one.watches("posts", "pbc_1", "abc123"));
        assert!(!one.watches("posts", "pbc_1", "other"));
        assert!(all.watches("posts", "pbc_1", "anything"));
        assert!(!all.watches("comments", "pbc_2", "anything"));
        assert_eq!(Subscription::parse(""), None);
    }

    #[test]
    fn options_carry_query_and_headers_and_keep_the_raw_string() {
        let options = r#"{"query":{"filter":"a = 1","expand":"author","n":5,"b":true},"headers":{"X-Token":"abc"}}"#;
        let raw = format!(
            "posts/*?options={}",
            percent_encoding::utf8_percent_encode(options, percent_encoding::NON_ALPHANUMERIC)
        );
        let sub = Subscription::parse(&raw).unwrap();
        assert_eq!(sub.raw, raw);
        assert_eq!(sub.target, Target::All);
        assert_eq!(sub.options.query_param("filter"), "a = 1");
        assert_eq!(sub.options.query_param("expand"), "author");
        assert_eq!(sub.options.query_param("n"), "5");
        assert_eq!(sub.options.query_param("b"), "true");
        assert_eq!(sub.options.headers["x_token"], "abc");
    }

    #[test]
    fn garbled_options_are_ignored() {
        let sub = Subscription::parse("posts/*?options=%7Bnot-json").unwrap();
        assert_eq!(sub.options, SubscriptionOptions::default());
    }
}
