//! Token-bucket limits on abuse-prone auth endpoints, per client IP and per account.
//!
//! [`RateLimiter`] is the interface; [`InProcessLimiter`] keeps buckets in this
//! process. A Redis-backed implementation for clusters can stand behind the same trait.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{AuthRateLimits, RateLimit};

/// Which limit a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    LoginPerIp,
    LoginPerAccount,
    RegisterPerIp,
    RequestPerIp,
    RequestPerAccount,
}

impl Bucket {
    pub fn limit(self, limits: &AuthRateLimits) -> RateLimit {
        match self {
            Self::LoginPerIp => limits.login_per_ip,
            Self::LoginPerAccount => limits.login_per_account,
            Self::RegisterPerIp => limits.register_per_ip,
            Self::RequestPerIp => limits.request_per_ip,
            Self::RequestPerAccount => limits.request_per_account,
        }
    }
}

/// The bucket is empty; try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

pub trait RateLimiter: Send + Sync {
    /// Takes one token from `bucket` for `key`.
    fn check<'a>(&'a self, bucket: Bucket, key: &'a str) -> BoxFuture<'a, Result<(), RetryAfter>>;
}

/// Buckets kept in memory (governor's GCRA, equivalent to a token bucket).
pub struct InProcessLimiter {
    limiters: HashMap<Bucket, DefaultKeyedRateLimiter<String>>,
}

/// Above this many tracked keys, buckets that refilled completely are dropped.
const HOUSEKEEPING_THRESHOLD: usize = 10_000;

impl InProcessLimiter {
    pub fn new(limits: &AuthRateLimits) -> Self {
        let limiters = [
            Bucket::LoginPerIp,
            Bucket::LoginPerAccount,
            Bucket::RegisterPerIp,
            Bucket::RequestPerIp,
            Bucket::RequestPerAccount,
        ]
        .into_iter()
        .filter_map(|bucket| {
            quota(bucket.limit(limits)).map(|q| (bucket, governor::RateLimiter::keyed(q)))
        })
        .collect();
        Self { limiters }
    }
}

/// `requests` per `per` as a burst of `requests` refilled evenly; `None` when disabled.
fn quota(limit: RateLimit) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.requests)?;
    let period = (limit.per / limit.requests).max(Duration::from_nanos(1));
    Quota::with_period(period).map(|quota| quota.allow_burst(burst))
}

impl RateLimiter for InProcessLimiter {
    fn check<'a>(&'a self, bucket: Bucket, key: &'a str) -> BoxFuture<'a, Result<(), RetryAfter>> {
        let result = match self.limiters.get(&bucket) {
            None => Ok(()),
            Some(limiter) => {
                if limiter.len() > HOUSEKEEPING_THRESHOLD {
                    limiter.retain_recent();
                }
                limiter.check_key(&key.to_string()).map_err(|not_until| {
                    RetryAfter(not_until.wait_time_from(DefaultClock::default().now()))
                })
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u32) -> AuthRateLimits {
        let limit = RateLimit {
            requests,
            per: Duration::from_secs(60),
        };
        AuthRateLimits {
            login_per_ip: limit,
            login_per_account: limit,
            register_per_ip: limit,
            request_per_ip: limit,
            request_per_account: limit,
        }
    }

    #[actix_web::test]
    async fn a_bucket_allows_its_burst_then_says_when_to_retry() {
        let limiter = InProcessLimiter::new(&limits(3));
        for _ in 0..3 {
            assert!(limiter.check(Bucket::LoginPerIp, "1.2.3.4").await.is_ok());
        }
        let RetryAfter(wait) = limiter
            .check(Bucket::LoginPerIp, "1.2.3.4")
            .await
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Other keys and other buckets are independent.
        assert!(limiter.check(Bucket::LoginPerIp, "5.6.7.8").await.is_ok());
        assert!(limiter
            .check(Bucket::LoginPerAccount, "1.2.3.4")
            .await
            .is_ok());
    }

    #[actix_web::test]
    async fn zero_requests_disables_a_limit() {
        let limiter = InProcessLimiter::new(&limits(0));
        for _ in 0..100 {
            assert!(limiter.check(Bucket::RegisterPerIp, "k").await.is_ok());
        }
    }
}
