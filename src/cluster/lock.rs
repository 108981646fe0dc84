//! Work that must run on one instance only (periodic cleanup): a Redis lock with an
//! expiry, so a crashed holder cannot keep it, and a fencing token that tells the
//! order of holders.

use std::time::Duration;

use super::Redis;

/// A held lock, kept until it expires so that other instances skip this round; its
/// fencing token grows with every acquisition of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fencing_token: i64,
}

/// Takes `name` for `ttl` if nobody holds it; `None` when another instance does or
/// Redis is unavailable (the work is skipped this time).
pub async fn try_acquire(redis: &Redis, name: &str, ttl: Duration) -> Option<Lease> {
    let mut conn = redis.connection().ok()?;
    let key = redis.key(&format!("lock:{name}"));
    let owner = crate::domain::ids::random_alphanumeric(24);
    let acquired: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&owner)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(&mut conn)
        .await
        .map_err(|err| tracing::warn!(%err, name, "could not take a cluster lock"))
        .ok()?;
    acquired?;
    let fencing_token = redis::cmd("INCR")
        .arg(redis.key(&format!("fence:{name}")))
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(Lease { fencing_token })
}
