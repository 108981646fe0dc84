//! What several Gatehouse instances share through Redis (PostgreSQL holds the data):
//! a message bus for invalidations, rate-limit buckets, and run-once locks.
//!
//! Redis may be down when an instance starts or go away later: [`Redis`] keeps
//! reconnecting in the background, readiness reports it, and everything that uses
//! it degrades (limits fail open, the bus misses messages, caches expire on their
//! own) instead of failing requests.

pub mod bus;
pub mod cache_tier;
pub mod limiter;
pub mod lock;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis server shared by the instances of a cluster.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: Arc<ArcSwapOption<ConnectionManager>>,
    prefix: Arc<str>,
}

impl Redis {
    /// Starts connecting to `url` in the background; commands fail until connected.
    pub fn start(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let redis = Self {
            client: redis::Client::open(url)?,
            manager: Arc::new(ArcSwapOption::empty()),
            prefix: prefix.into(),
        };
        let background = redis.clone();
        actix_web::rt::spawn(async move { background.keep_connected().await });
        Ok(redis)
    }

    /// Connects, then lets the connection manager reconnect by itself; retries the
    /// first connection with backoff for as long as it takes.
    async fn keep_connected(self) {
        let mut delay = Duration::from_millis(100);
        loop {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_max_delay(Duration::from_secs(2));
            match self.client.get_connection_manager_with_config(config).await {
                Ok(manager) => {
                    self.manager.store(Some(Arc::new(manager)));
                    tracing::info!("connected to Redis");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?delay, "Redis is not reachable");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// A connection for commands, or an error while Redis has never been reached.
    pub fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.manager
            .load_full()
            .map(|manager| manager.as_ref().clone())
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "not connected to Redis yet"))
            })
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A key in this cluster's namespace: `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Readiness: Redis answers PING.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.connection()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }
}
