//! Shared-cache rules (RFC 9111) as plain functions: whether a response may be stored,
//! for how long it is fresh, and how long it may be served stale.

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::http::StatusCode;

/// The directives of every `Cache-Control` line of a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        let directives = headers
            .get_all(header::CACHE_CONTROL)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for directive in directives {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || value.and_then(|v| v.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "max-age" => cc.max_age = seconds(),
                "s-maxage" => cc.s_maxage = seconds(),
                "no-store" => cc.no_store = true,
                // `no-cache="Set-Cookie"` (qualified) is treated as plain no-cache.
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                "stale-while-revalidate" => cc.stale_while_revalidate = seconds(),
                "stale-if-error" => cc.stale_if_error = seconds(),
                _ => {}
            }
        }
        cc
    }
}

/// How a stored response may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePolicy {
    /// How long it is fresh from the moment it was received (its age already deducted).
    pub fresh_for: Duration,
    /// After that, how long it may be served while a background fetch refreshes it.
    pub stale_while_revalidate: Duration,
    /// After that, how long it may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// Request headers that select among variants (`Vary`), lower-case.
    pub vary: Vec<HeaderName>,
}

/// Statuses a shared cache may store when the response says how long it is fresh.
fn status_is_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The policy of a response to a GET request, or `None` when a shared cache must not
/// store it: `no-store`, `private`, `Vary: *`, `Set-Cookie`, an uncacheable status, no
/// explicit freshness (Gatehouse guesses no heuristic lifetimes), an `Authorization`ed
/// request without `public`/`s-maxage`/`must-revalidate`, or `no-cache` without a
/// validator to revalidate with.
pub fn storage_policy(
    request_had_authorization: bool,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<StoragePolicy> {
    let cc = CacheControl::parse(headers);
    if cc.no_store || cc.private || !status_is_cacheable(status) {
        return None;
    }
    if headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    if request_had_authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return None;
    }
    let vary = vary_headers(headers)?;
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let lifetime = if cc.no_cache {
        if !has_validator {
            return None;
        }
        Duration::ZERO
    } else if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        Duration::from_secs(seconds)
    } else if let Some(expires) = headers.get(header::EXPIRES) {
        // An invalid Expires (often "0") means "already expired".
        let expires = expires
            .to_str()
            .ok()
            .and_then(|value| httpdate::parse_http_date(value).ok());
        let date = headers
            .get(header::DATE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| httpdate::parse_http_date(value).ok())
            .unwrap_or(now);
        expires
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else {
        return None;
    };
    let age = headers
        .get(header::AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let fresh_for = lifetime.saturating_sub(age);
    if fresh_for.is_zero() && !has_validator {
        // Stale on arrival and impossible to revalidate: storing would help nobody,
        // unless it may still be served stale.
        if cc.stale_while_revalidate.is_none() && cc.stale_if_error.is_none() {
            return None;
        }
    }
    let stale = |seconds: Option<u64>| {
        if cc.must_revalidate || cc.no_cache {
            Duration::ZERO
        } else {
            seconds.map_or(Duration::ZERO, Duration::from_secs)
        }
    };
    Some(StoragePolicy {
        fresh_for,
        stale_while_revalidate: stale(cc.stale_while_revalidate),
        stale_if_error: stale(cc.stale_if_error),
        vary,
    })
}

/// The header names of `Vary`, or `None` for `Vary: *` (never matches a later request).
pub fn vary_headers(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn policy(pairs: &[(&str, &str)]) -> Option<StoragePolicy> {
        storage_policy(false, StatusCode::OK, &headers(pairs), SystemTime::now())
    }

    #[test]
    fn directives_are_parsed_across_lines_and_case() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "Public, max-age=60"),
            (
                "cache-control",
                "stale-while-revalidate=\"30\", S-MAXAGE=120",
            ),
        ]));
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert_eq!(cc.stale_while_revalidate, Some(30));
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_age_is_deducted() {
        let p = policy(&[("cache-control", "max-age=10, s-maxage=100"), ("age", "40")]).unwrap();
        assert_eq!(p.fresh_for, Duration::from_secs(60));
    }

    #[test]
    fn expires_counts_from_the_date_header() {
        let p = policy(&[
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Sun, 06 Nov 1994 08:51:37 GMT"),
        ])
        .unwrap();
        assert_eq!(p.fresh_for, Duration::from_secs(120));
        assert!(policy(&[("expires", "0")]).is_none());
    }

    #[test]
    fn unstorable_responses_are_refused() {
        assert!(policy(&[("cache-control", "no-store, max-age=60")]).is_none());
        assert!(policy(&[("cache-control", "private, max-age=60")]).is_none());
        assert!(policy(&[("cache-control", "max-age=60"), ("vary", "*")]).is_none());
        assert!(policy(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]).is_none());
        assert!(policy(&[]).is_none(), "no explicit freshness");
        assert!(
            policy(&[("cache-control", "no-cache")]).is_none(),
            "no validator"
        );
        let teapot = storage_policy(
            false,
            StatusCode::IM_A_TEAPOT,
            &headers(&[("cache-control", "max-age=60")]),
            SystemTime::now(),
        );
        assert!(teapot.is_none());
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_but_always_revalidated() {
        let p = policy(&[
            ("cache-control", "no-cache, stale-if-error=60"),
            ("etag", "\"v1\""),
        ])
        .unwrap();
        assert_eq!(p.fresh_for, Duration::ZERO);
        assert_eq!(p.stale_if_error, Duration::ZERO);
    }

    #[test]
    fn authorized_requests_are_stored_only_when_the_response_allows_it() {
        let private_by_default = headers(&[("cache-control", "max-age=60")]);
        let now = SystemTime::now();
        assert!(storage_policy(true, StatusCode::OK, &private_by_default, now).is_none());
        let shared = headers(&[("cache-control", "public, max-age=60")]);
        assert!(storage_policy(true, StatusCode::OK, &shared, now).is_some());
    }

    #[test]
    fn stale_windows_are_kept_unless_revalidation_is_required() {
        let p = policy(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=30, stale-if-error=300",
        )])
        .unwrap();
        assert_eq!(p.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(p.stale_if_error, Duration::from_secs(300));
        let strict = policy(&[(
            "cache-control",
            "max-age=1, must-revalidate, stale-if-error=300",
        )])
        .unwrap();
        assert_eq!(strict.stale_if_error, Duration::ZERO);
    }

    #[test]
    fn vary_names_are_normalised() {
        let names =
            vary_headers(&headers(&[("vary", "Accept-Encoding, accept-language")])).unwrap();
        assert_eq!(names, ["accept-encoding", "accept-language"]);
    }
}
