//! Rate limits shared by every instance: one token bucket per key in Redis, taken
//! atomically by a Lua script on Redis's own clock (no read-modify-write race, no
//! clock skew between instances).

use futures_util::future::BoxFuture;

use super::Redis;
use crate::auth::rate_limit::{Bucket, RateLimiter, RetryAfter};
use crate::config::AuthRateLimits;

/// KEYS[1] the bucket; ARGV capacity, refill interval per token (µs).
/// Returns 0 when a token was taken, else the microseconds until one is available.
const TAKE_TOKEN: &str = r#"
local capacity = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + (now - at) / interval)
if tokens < 1 then
  return math.ceil((1 - tokens) * interval)
end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * interval / 1000) + 1000)
return 0
"#;

/// Token buckets in Redis, behind the same interface as the in-process ones.
pub struct RedisLimiter {
    redis: Redis,
    limits: AuthRateLimits,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn new(redis: Redis, limits: AuthRateLimits) -> Self {
        Self {
            redis,
            limits,
            script: redis::Script::new(TAKE_TOKEN),
        }
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(&'a self, bucket: Bucket, key: &'a str) -> BoxFuture<'a, Result<(), RetryAfter>> {
        Box::pin(async move {
            let limit = bucket.limit(&self.limits);
            if limit.requests == 0 {
                return Ok(());
            }
            let interval_us = (limit.per.as_micros() / u128::from(limit.requests)).max(1) as u64;
            let redis_key = self.redis.key(&format!("ratelimit:{bucket:?}:{key}"));
            let taken = match self.redis.connection() {
                Ok(mut conn) => {
                    self.script
                        .key(redis_key)
                        .arg(limit.requests)
                        .arg(interval_us)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
                Err(err) => Err(err),
            };
            match taken {
                Ok(0) => Ok(()),
                Ok(wait_us) => Err(RetryAfter(std::time::Duration::from_micros(
                    wait_us.max(1) as u64
                ))),
                Err(err) => {
                    // Availability first: a limiter that cannot count lets requests through.
                    tracing::warn!(%err, ?bucket, "shared rate limit unavailable; allowing the request");
                    Ok(())
                }
            }
        })
    }
}
