//! The response cache's shared tier: entries in Redis that every instance of a cluster
//! reads when its own memory misses, so a response fetched by one instance (or before
//! a restart) answers on all of them.
//!
//! Values are a small binary encoding of status, headers, body, the time it was stored
//! and its freshness; validators (`ETag`, `Last-Modified`) travel in the headers. A value
//! that does not decode — written by something else, truncated, of another Redis type —
//! is logged, counted and treated as a miss. Keys are
//! `<prefix>:cache:<host> <path and query> <variant>`: hosts and request paths never
//! contain spaces, so a key splits back into its parts for purges (`SCAN`, never `KEYS`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Redis;
use crate::actors::cache::{CacheKey, CachedResponse, PurgeTarget};
use crate::cache_policy::StoragePolicy;
use crate::config::CacheRedisSettings;

const MAGIC: &[u8; 4] = b"GHC1";
const KIND_RESPONSE: u8 = 0;
const KIND_VARY: u8 = 1;

/// What a Redis value holds.
#[derive(Debug)]
pub enum Stored {
    Response(CachedResponse),
    /// The URL's responses vary on these request headers; each variant has its own key.
    Vary(Vec<HeaderName>),
}

/// Why a value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("Redis: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error("unreadable cache entry: {0}")]
    Garbled(&'static str),
}

/// The Redis tier of the response cache.
#[derive(Clone)]
pub struct RedisTier {
    redis: Redis,
    /// `<prefix>:cache:`, the start of every key.
    root: Arc<str>,
    max_ttl: Duration,
    max_entry_bytes: usize,
}

impl RedisTier {
    pub fn new(redis: Redis, settings: &CacheRedisSettings) -> Self {
        Self {
            root: redis.key("cache:").into(),
            redis,
            max_ttl: settings.max_ttl,
            max_entry_bytes: settings.max_entry_bytes,
        }
    }

    fn key(&self, key: &CacheKey) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.root.len() + key.path().len() + 32);
        bytes.extend_from_slice(self.root.as_bytes());
        bytes.extend_from_slice(key.host().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(key.path().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(key.variant_id().as_bytes());
        bytes
    }

    /// The stored response for a request to `primary` with `request` headers.
    pub async fn get(
        &self,
        primary: &CacheKey,
        request: &HeaderMap,
    ) -> Result<Option<CachedResponse>, TierError> {
        let mut conn = self.redis.connection()?;
        let Some(value) = get_bytes(&mut conn, &self.key(primary)).await? else {
            return Ok(None);
        };
        match decode(&value, SystemTime::now())? {
            Stored::Response(response) => Ok(Some(response)),
            Stored::Vary(names) => {
                let variant = primary.variant(&names, request);
                let Some(value) = get_bytes(&mut conn, &self.key(&variant)).await? else {
                    return Ok(None);
                };
                match decode(&value, SystemTime::now())? {
                    Stored::Response(response) => Ok(Some(response)),
                    Stored::Vary(_) => Err(TierError::Garbled("a variant holds a Vary list")),
                }
            }
        }
    }

    /// Stores `response` for requests like `request` to `primary`, in the background;
    /// too large or already stale responses are left out. Failures are logged.
    pub fn store(&self, primary: &CacheKey, request: &HeaderMap, response: &CachedResponse) {
        if response.body.len() > self.max_entry_bytes {
            return;
        }
        let Some(ttl) = redis_ttl(response, self.max_ttl) else {
            return;
        };
        let vary = &response.policy().vary;
        let mut pipe = redis::pipe();
        if vary.is_empty() {
            pipe.cmd("SET")
                .arg(self.key(primary))
                .arg(encode_response(response, SystemTime::now()).as_ref())
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        } else {
            pipe.cmd("SET")
                .arg(self.key(primary))
                .arg(encode_vary(vary).as_ref())
                .arg("PX")
                .arg(self.max_ttl.as_millis() as u64)
                .ignore();
            pipe.cmd("SET")
                .arg(self.key(&primary.variant(vary, request)))
                .arg(encode_response(response, SystemTime::now()).as_ref())
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        let redis = self.redis.clone();
        actix_web::rt::spawn(async move {
            let result = match redis.connection() {
                Ok(mut conn) => pipe.query_async::<()>(&mut conn).await,
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::debug!(%err, "could not store a response in Redis");
            }
        });
    }

    /// Deletes the entries matching every target (on `host`, or all hosts); answers
    /// with the number of URLs removed (variants not counted separately).
    pub async fn purge(
        &self,
        targets: &[PurgeTarget],
        host: Option<&str>,
    ) -> Result<u64, redis::RedisError> {
        let mut conn = self.redis.connection()?;
        let mut removed = 0;
        for target in targets {
            let mut pattern = glob_escape(&self.root);
            pattern.push_str(&host.map_or("*".to_string(), glob_escape));
            pattern.push(' ');
            match target {
                PurgeTarget::Key(path) => {
                    pattern.push_str(&glob_escape(path));
                    pattern.push_str(" *");
                }
                PurgeTarget::Prefix(prefix) => {
                    pattern.push_str(&glob_escape(prefix));
                    pattern.push('*');
                }
            }
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                let doomed: Vec<(&Vec<u8>, bool)> = keys
                    .iter()
                    .filter_map(|key| {
                        let (key_host, path, variant) =
                            split_key(key.strip_prefix(self.root.as_bytes())?)?;
                        let host_matches =
                            host.is_none_or(|host| host.as_bytes().eq_ignore_ascii_case(key_host));
                        (host_matches && target.matches(&String::from_utf8_lossy(path)))
                            .then_some((key, variant.is_empty()))
                    })
                    .collect();
                if !doomed.is_empty() {
                    redis::cmd("UNLINK")
                        .arg(
                            doomed
                                .iter()
                                .map(|(key, _)| key.as_slice())
                                .collect::<Vec<_>>(),
                        )
                        .query_async::<u64>(&mut conn)
                        .await?;
                    removed += doomed.iter().filter(|(_, primary)| *primary).count() as u64;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

async fn get_bytes(
    conn: &mut redis::aio::ConnectionManager,
    key: &[u8],
) -> Result<Option<Vec<u8>>, TierError> {
    match redis::cmd("GET").arg(key).query_async(conn).await {
        Ok(value) => Ok(value),
        Err(err) if err.code() == Some("WRONGTYPE") => {
            Err(TierError::Garbled("the key holds another Redis type"))
        }
        Err(err) => Err(err.into()),
    }
}

/// `host`, `path` and `variant` of a key without its root.
fn split_key(rest: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut parts = rest.splitn(3, |&b| b == b' ');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// `text` matched literally by a Redis glob pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// How long an entry is worth keeping: while fresh or servable stale, and for as long
/// as the cap allows when it can be revalidated.
fn redis_ttl(response: &CachedResponse, max_ttl: Duration) -> Option<Duration> {
    let policy = response.policy();
    let servable = policy.fresh_for + policy.stale_while_revalidate.max(policy.stale_if_error);
    let revalidatable = response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED);
    let ttl = if revalidatable {
        max_ttl
    } else {
        servable.saturating_sub(response.age()).min(max_ttl)
    };
    (ttl >= Duration::from_millis(1)).then_some(ttl)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn put_names(out: &mut BytesMut, names: &[HeaderName]) {
    out.put_u16(names.len() as u16);
    for name in names {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
    }
}

/// A response as a Redis value; its age is kept as the wall-clock time it was stored.
pub fn encode_response(response: &CachedResponse, now: SystemTime) -> Bytes {
    let policy = response.policy();
    let stored_at = now
        .checked_sub(response.age())
        .unwrap_or(now)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(response.body.len() + 256);
    out.put_slice(MAGIC);
    out.put_u8(KIND_RESPONSE);
    out.put_u16(response.status.as_u16());
    out.put_u64(millis(stored_at));
    out.put_u64(millis(policy.fresh_for));
    out.put_u64(millis(policy.stale_while_revalidate));
    out.put_u64(millis(policy.stale_if_error));
    put_names(&mut out, &policy.vary);
    out.put_u16(response.headers.len() as u16);
    for (name, value) in &response.headers {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_u32(response.body.len() as u32);
    out.put_slice(&response.body);
    out.freeze()
}

/// A `Vary` list as a Redis value.
pub fn encode_vary(names: &[HeaderName]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(MAGIC);
    out.put_u8(KIND_VARY);
    put_names(&mut out, names);
    out.freeze()
}

fn take(buf: &mut &[u8], len: usize) -> Result<Bytes, TierError> {
    if buf.remaining() < len {
        return Err(TierError::Garbled("truncated"));
    }
    Ok(buf.copy_to_bytes(len))
}

fn short<T>(_: bytes::TryGetError) -> Result<T, TierError> {
    Err(TierError::Garbled("truncated"))
}

fn get_names(buf: &mut &[u8]) -> Result<Vec<HeaderName>, TierError> {
    let count = buf.try_get_u16().or_else(short)?;
    (0..count)
        .map(|_| {
            let len = buf.try_get_u16().or_else(short)?;
            HeaderName::from_bytes(&take(buf, len.into())?)
                .map_err(|_| TierError::Garbled("bad header name"))
        })
        .collect()
}

/// Reads a value written by [`encode_response`] or [`encode_vary`].
pub fn decode(value: &[u8], now: SystemTime) -> Result<Stored, TierError> {
    let mut buf = value;
    if take(&mut buf, MAGIC.len())? != MAGIC[..] {
        return Err(TierError::Garbled("not a Gatehouse cache entry"));
    }
    let kind = buf.try_get_u8().or_else(short)?;
    if kind == KIND_VARY {
        let names = get_names(&mut buf)?;
        return if buf.has_remaining() {
            Err(TierError::Garbled("trailing bytes"))
        } else {
            Ok(Stored::Vary(names))
        };
    }
    if kind != KIND_RESPONSE {
        return Err(TierError::Garbled("unknown entry kind"));
    }
    let status = StatusCode::from_u16(buf.try_get_u16().or_else(short)?)
        .map_err(|_| TierError::Garbled("bad status"))?;
    let stored_at = UNIX_EPOCH + Duration::from_millis(buf.try_get_u64().or_else(short)?);
    let fresh_for = Duration::from_millis(buf.try_get_u64().or_else(short)?);
    let stale_while_revalidate = Duration::from_millis(buf.try_get_u64().or_else(short)?);
    let stale_if_error = Duration::from_millis(buf.try_get_u64().or_else(short)?);
    let vary = get_names(&mut buf)?;
    let count = buf.try_get_u16().or_else(short)?;
    let mut headers = HeaderMap::with_capacity(count.into());
    for _ in 0..count {
        let len = buf.try_get_u16().or_else(short)?;
        let name = HeaderName::from_bytes(&take(&mut buf, len.into())?)
            .map_err(|_| TierError::Garbled("bad header name"))?;
        let len = buf.try_get_u32().or_else(short)?;
        let value = HeaderValue::from_maybe_shared(take(&mut buf, len as usize)?)
            .map_err(|_| TierError::Garbled("bad header value"))?;
        headers.append(name, value);
    }
    let len = buf.try_get_u32().or_else(short)?;
    let body = take(&mut buf, len as usize)?;
    if buf.has_remaining() {
        return Err(TierError::Garbled("trailing bytes"));
    }
    let policy = StoragePolicy {
        fresh_for,
        stale_while_revalidate,
        stale_if_error,
        vary,
    };
    let age = now.duration_since(stored_at).unwrap_or_default();
    Ok(Stored::Response(CachedResponse::aged(
        status, headers, body, policy, age,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        CachedResponse::aged(
            StatusCode::NOT_FOUND,
            headers,
            Bytes::from_static(b"\x00binary\xffbody"),
            StoragePolicy {
                fresh_for: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(7),
                vary: vec![header::ACCEPT_LANGUAGE],
            },
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_response_survives_the_round_trip_with_its_age() {
        let now = SystemTime::now();
        let encoded = encode_response(&sample(), now);
        let later = now + Duration::from_secs(5);
        let Stored::Response(decoded) = decode(&encoded, later).unwrap() else {
            panic!("a response");
        };
        assert_eq!(decoded.status, StatusCode::NOT_FOUND);
        assert_eq!(decoded.body, Bytes::from_static(b"\x00binary\xffbody"));
        assert_eq!(decoded.headers.get_all(header::SET_COOKIE).count(), 2);
        assert_eq!(decoded.headers.get(header::ETAG).unwrap(), "\"v1\"");
        assert_eq!(decoded.policy(), sample().policy());
        let age = decoded.age().as_secs();
        assert!((15..=16).contains(&age), "{age}");
    }

    #[test]
    fn a_vary_list_survives_the_round_trip() {
        let encoded = encode_vary(&[header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]);
        let Stored::Vary(names) = decode(&encoded, SystemTime::now()).unwrap() else {
            panic!("a vary list");
        };
        assert_eq!(names, [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]);
    }

    #[test]
    fn garbled_values_are_errors_not_panics() {
        let good = encode_response(&sample(), SystemTime::now());
        for cut in 0..good.len() {
            assert!(
                decode(&good[..cut], SystemTime::now()).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = good.to_vec();
        extra.push(0);
        assert!(decode(&extra, SystemTime::now()).is_err());
        assert!(decode(b"hello world", SystemTime::now()).is_err());
        let mut bad_kind = good.to_vec();
        bad_kind[4] = 9;
        assert!(decode(&bad_kind, SystemTime::now()).is_err());
    }

    #[test]
    fn keys_split_back_into_host_path_and_variant() {
        assert_eq!(
            split_key(b"example.com /a?b=1 accept-language=de x"),
            Some((
                &b"example.com"[..],
                &b"/a?b=1"[..],
                &b"accept-language=de x"[..]
            ))
        );
        assert_eq!(split_key(b"h /x "), Some((&b"h"[..], &b"/x"[..], &b""[..])));
        assert_eq!(glob_escape("/a*b?[c]\\"), "/a\\*b\\?\\[c\\]\\\\");
    }
}
