//! GET/HEAD on proxy routes with `cache = true`: answered from the response cache when
//! possible, otherwise fetched (one fetch for concurrent misses of a URL) and stored
//! while the body streams to the client.
//!
//! Every answer says how it was made in `X-Cache`: `HIT` (fresh copy), `STALE` (stale
//! copy, served under `stale-while-revalidate` or `stale-if-error`), `REVALIDATED`
//! (stale copy confirmed by the upstream with 304), `MISS` (fetched), `BYPASS`
//! (not cacheable: other methods).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};

use super::proxy::{self, BodyTee, Proxy, UpstreamRequest};
use crate::actors::balancer::Pool;
use crate::actors::cache::{
    CacheKey, CachedResponse, Fetch, FetchGuard, Freshness, ResponseCache, Tier,
};
use crate::cache_policy::{storage_policy, StoragePolicy};
use crate::error::ApiError;
use crate::routing::{request_host, Route};

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The cache key of a request: the URL as clients ask for it (what an operator purges).
pub fn request_key(req: &HttpRequest) -> CacheKey {
    CacheKey::primary(&key_host(request_host(req.head())), path_and_query(req))
}

/// The host as cache keys hold it: lowercase. Hosts nearly always are already: no copy
/// then.
fn key_host(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}

/// Answers a GET or HEAD on a caching proxy route; `host` is the request's, as
/// [`request_host`] finds it.
pub async fn forward_cached(
    req: &HttpRequest,
    host: &str,
    pool: &Arc<Pool>,
    route: &Route,
    strip_prefix: bool,
    proxy: &web::Data<Proxy>,
) -> Result<HttpResponse, ApiError> {
    let host = key_host(host);
    let key = CacheKey::lookup(&host, path_and_query(req));
    let found = proxy.cache.lookup(&key, req.headers()).await;
    let tier = found.as_ref().map_or(Tier::Memory, |(_, tier)| *tier);
    let response = answer(
        req,
        pool,
        route,
        strip_prefix,
        proxy,
        key,
        found.map(|(c, _)| c),
    )
    .await?;
    let label = response
        .headers()
        .get(X_CACHE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("MISS");
    let tier = if label == "MISS" { Tier::None } else { tier };
    proxy.cache.count_response(label, tier);
    Ok(response)
}

/// The answer from the cached copy, when there is a usable one, or from the upstream.
async fn answer(
    req: &HttpRequest,
    pool: &Arc<Pool>,
    route: &Route,
    strip_prefix: bool,
    proxy: &web::Data<Proxy>,
    key: CacheKey<&str>,
    cached: Option<Arc<CachedResponse>>,
) -> Result<HttpResponse, ApiError> {
    if let Some(cached) = &cached {
        if cached.freshness() == Freshness::Fresh {
            return Ok(from_cache(req, cached, "HIT"));
        }
    }
    let key = key.stored();
    let authorized = req.headers().contains_key(header::AUTHORIZATION);
    // Only now, for a fetch, is the upstream request built. The cache answers the
    // client's conditional requests itself; the upstream is asked with the cache's own
    // validators, never with a client's.
    let mut request = UpstreamRequest::from_client(req, route, strip_prefix, proxy);
    request.headers.remove(http::header::IF_NONE_MATCH);
    request.headers.remove(http::header::IF_MODIFIED_SINCE);

    if let Some(cached) = cached {
        match cached.freshness() {
            Freshness::Fresh => return Ok(from_cache(req, &cached, "HIT")),
            Freshness::StaleWhileRevalidate => {
                if let Some(guard) = proxy.cache.begin_refresh(&key) {
                    let proxy = proxy.clone();
                    let pool = pool.clone();
                    let client_headers = req.headers().clone();
                    let cached = cached.clone();
                    actix_web::rt::spawn(async move {
                        refresh(
                            &proxy,
                            &pool,
                            request,
                            &key,
                            &client_headers,
                            &cached,
                            authorized,
                        )
                        .await;
                        drop(guard);
                    });
                }
                return Ok(from_cache(req, &cached, "STALE"));
            }
            Freshness::Stale { stale_if_error } => {
                return revalidate(
                    req,
                    pool,
                    request,
                    proxy,
                    key,
                    cached,
                    stale_if_error,
                    authorized,
                )
                .await;
            }
        }
    }

    if *req.method() == Method::HEAD {
        // A HEAD answer has no body to store; it is forwarded as it is.
        let upstream = proxy::send(proxy, pool, request, None).await?;
        return Ok(labelled(
            proxy::into_response(upstream, req.method(), proxy.read_timeout, None),
            "MISS",
        ));
    }
    let guard = match proxy.cache.begin_fetch(&key) {
        Fetch::Leader(guard) => Some(guard),
        Fetch::Follower(mut done) => {
            // Err(_) is the leader finishing: the sender is dropped, never used.
            let _ = done.changed().await;
            if let Some(cached) = proxy.cache.get(&key.borrowed(), req.headers()) {
                if cached.freshness() == Freshness::Fresh {
                    return Ok(from_cache(req, &cached, "HIT"));
                }
            }
            None
        }
    };
    fetch(req, pool, request, proxy, key, guard, authorized).await
}

/// Fetches from the upstream and stores the answer as it streams, when it may be stored.
async fn fetch(
    req: &HttpRequest,
    pool: &Arc<Pool>,
    request: UpstreamRequest,
    proxy: &Proxy,
    key: CacheKey,
    guard: Option<FetchGuard>,
    authorized: bool,
) -> Result<HttpResponse, ApiError> {
    let upstream = proxy::send(proxy, pool, request, None).await?;
    let tee = storage_policy(
        authorized,
        upstream.status,
        &upstream.headers,
        SystemTime::now(),
    )
    .map(|policy| {
        Box::new(CacheFill {
            cache: proxy.cache.clone(),
            key,
            request_headers: req.headers().clone(),
            status: upstream.status,
            headers: upstream.headers.clone(),
            policy,
            body: BytesMut::new(),
            overflowed: false,
            _guard: guard,
        }) as Box<dyn BodyTee>
    });
    Ok(labelled(
        proxy::into_response(upstream, req.method(), proxy.read_timeout, tee),
        "MISS",
    ))
}

/// Asks the upstream whether a stale copy is still good (conditional GET).
#[allow(clippy::too_many_arguments)]
async fn revalidate(
    req: &HttpRequest,
    pool: &Arc<Pool>,
    mut request: UpstreamRequest,
    proxy: &Proxy,
    key: CacheKey,
    cached: Arc<CachedResponse>,
    stale_if_error: bool,
    authorized: bool,
) -> Result<HttpResponse, ApiError> {
    request.method = Method::GET;
    cached.ask_with_validators(&mut request.headers);
    match proxy::send(proxy, pool, request, None).await {
        Ok(upstream) if upstream.status == StatusCode::NOT_MODIFIED => {
            let fresh = refreshed(
                &proxy.cache,
                &key,
                req.headers(),
                &cached,
                &upstream.headers,
                authorized,
            );
            Ok(from_cache(req, &fresh, "REVALIDATED"))
        }
        Ok(upstream) if stale_if_error && upstream.status.is_server_error() => {
            Ok(from_cache(req, &cached, "STALE"))
        }
        Ok(upstream) => {
            let tee = storage_policy(
                authorized,
                upstream.status,
                &upstream.headers,
                SystemTime::now(),
            )
            .filter(|_| *req.method() == Method::GET)
            .map(|policy| {
                Box::new(CacheFill {
                    cache: proxy.cache.clone(),
                    key,
                    request_headers: req.headers().clone(),
                    status: upstream.status,
                    headers: upstream.headers.clone(),
                    policy,
                    body: BytesMut::new(),
                    overflowed: false,
                    _guard: None,
                }) as Box<dyn BodyTee>
            });
            let method = req.method();
            Ok(labelled(
                proxy::into_response(upstream, method, proxy.read_timeout, tee),
                "MISS",
            ))
        }
        Err(_) if stale_if_error => Ok(from_cache(req, &cached, "STALE")),
        Err(err) => Err(err.into()),
    }
}

/// Refreshes a copy in the background (`stale-while-revalidate`).
async fn refresh(
    proxy: &Proxy,
    pool: &Arc<Pool>,
    mut request: UpstreamRequest,
    key: &CacheKey,
    client_headers: &HeaderMap,
    cached: &CachedResponse,
    authorized: bool,
) {
    request.method = Method::GET;
    cached.ask_with_validators(&mut request.headers);
    let Ok(upstream) = proxy::send(proxy, pool, request, None).await else {
        return;
    };
    if upstream.status == StatusCode::NOT_MODIFIED {
        refreshed(
            &proxy.cache,
            key,
            client_headers,
            cached,
            &upstream.headers,
            authorized,
        );
        return;
    }
    let Some(policy) = storage_policy(
        authorized,
        upstream.status,
        &upstream.headers,
        SystemTime::now(),
    ) else {
        return;
    };
    let status = upstream.status;
    let headers = upstream.headers.clone();
    if let Some(body) = upstream.read_to_end(proxy.cache.max_object_bytes()).await {
        proxy.cache.insert(
            key,
            client_headers,
            CachedResponse::new(status, headers, body, policy),
        );
    }
}

/// Stores `cached` updated by a 304's (end-to-end) headers and answers with it.
fn refreshed(
    cache: &ResponseCache,
    key: &CacheKey,
    client_headers: &HeaderMap,
    cached: &CachedResponse,
    update: &HeaderMap,
    authorized: bool,
) -> Arc<CachedResponse> {
    let mut merged = cached.headers.clone();
    for (name, value) in update {
        merged.insert(name.clone(), value.clone());
    }
    match storage_policy(authorized, cached.status, &merged, SystemTime::now()) {
        Some(policy) => {
            let fresh = cached.revalidated(update, policy);
            cache.insert(key, client_headers, fresh);
            cache
                .get(&key.borrowed(), client_headers)
                .unwrap_or_else(|| Arc::new(cached.revalidated(update, no_reuse())))
        }
        None => Arc::new(cached.revalidated(update, no_reuse())),
    }
}

/// A policy for a copy that answers this one request and is not stored.
fn no_reuse() -> StoragePolicy {
    StoragePolicy {
        fresh_for: std::time::Duration::ZERO,
        stale_while_revalidate: std::time::Duration::ZERO,
        stale_if_error: std::time::Duration::ZERO,
        vary: Vec::new(),
    }
}

/// The client's answer from a cached copy: 304 when the client's own validators match.
pub fn from_cache(req: &HttpRequest, cached: &CachedResponse, label: &'static str) -> HttpResponse {
    // `HeaderValue::from(u64)` costs twice this: it formats into a growing `BytesMut`.
    let age = HeaderValue::from_str(itoa::Buffer::new().format(cached.age().as_secs()))
        .expect("digits are a header value");
    if client_copy_is_current(req.headers(), &cached.headers) {
        let mut builder = HttpResponse::NotModified();
        for name in [
            header::ETAG,
            header::LAST_MODIFIED,
            header::CACHE_CONTROL,
            header::EXPIRES,
            header::VARY,
        ] {
            if let Some(value) = cached.headers.get(&name) {
                builder.insert_header((name, value.clone()));
            }
        }
        return builder
            .insert_header((header::AGE, age))
            .insert_header((X_CACHE, HeaderValue::from_static(label)))
            .finish();
    }
    let mut response = HttpResponse::with_body(cached.status, cached.body.clone());
    let headers = response.headers_mut();
    *headers = cached.headers.clone();
    headers.insert(header::AGE, age);
    headers.insert(X_CACHE, HeaderValue::from_static(label));
    response.map_into_boxed_body()
}

/// `If-None-Match` (weak comparison) or, without it, `If-Modified-Since`.
fn client_copy_is_current(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(candidates) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        return candidates
            .split(',')
            .any(|candidate| candidate.trim() == "*" || opaque(candidate) == opaque(etag));
    }
    let date = |map: &HeaderMap, name| {
        map.get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (
        date(request, header::IF_MODIFIED_SINCE),
        date(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

fn labelled(mut response: HttpResponse, label: &'static str) -> HttpResponse {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(label));
    response
}

/// Collects a streaming body and stores it when it ends, unless it outgrew the
/// per-object limit. Dropping it (client gone, upstream error) stores nothing; either
/// way the coalescing guard goes with it and waiting requests wake.
struct CacheFill {
    cache: ResponseCache,
    key: CacheKey,
    request_headers: HeaderMap,
    status: StatusCode,
    headers: HeaderMap,
    policy: StoragePolicy,
    body: BytesMut,
    overflowed: bool,
    _guard: Option<FetchGuard>,
}

impl BodyTee for CacheFill {
    fn chunk(&mut self, chunk: &Bytes) {
        if self.overflowed {
            return;
        }
        if self.body.len() + chunk.len() > self.cache.max_object_bytes() {
            self.overflowed = true;
            self.body = BytesMut::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    fn finish(self: Box<Self>) {
        if self.overflowed {
            return;
        }
        let this = *self;
        let response =
            CachedResponse::new(this.status, this.headers, this.body.freeze(), this.policy);
        this.cache
            .insert(&this.key, &this.request_headers, response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn client_validators_are_compared_with_the_stored_copy() {
        let stored = map(&[
            (header::ETAG, "\"v2\""),
            (header::LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(client_copy_is_current(
            &map(&[(header::IF_NONE_MATCH, "\"v1\", W/\"v2\"")]),
            &stored
        ));
        assert!(!client_copy_is_current(
            &map(&[(header::IF_NONE_MATCH, "\"v1\"")]),
            &stored
        ));
        assert!(client_copy_is_current(
            &map(&[(header::IF_MODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT")]),
            &stored
        ));
        assert!(!client_copy_is_current(
            &map(&[(header::IF_MODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT")]),
            &stored
        ));
        assert!(!client_copy_is_current(&HeaderMap::new(), &stored));
    }
}
