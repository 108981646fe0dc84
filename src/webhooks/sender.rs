//! One webhook delivery round: claim due deliveries, post them signed a few at a time,
//! log each attempt and record its outcome. The webhook actor runs rounds; this is the
//! work itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::deliveries::{self, AttemptRecord, Delivery};
use super::endpoints::{self, Endpoint};
use super::signing;
use super::ssrf::{AddressPolicy, GuardedResolver, Refused};
use crate::actors::database::DbError;
use crate::queue::{now_millis, to_millis, Claim, Outcome, RoundReport, Status, Worker};
use crate::telemetry::Metrics;

/// Delivers webhook deliveries: the HTTP client, the SSRF policy and the queue's settings.
pub struct WebhookSender {
    pub worker: Worker,
    pub client: reqwest::Client,
    pub policy: Arc<AddressPolicy>,
    /// An endpoint whose deliveries all failed for this long is disabled.
    pub disable_after: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// How much of an answer's body the attempt log keeps.
    pub excerpt_bytes: usize,
    pub metrics: Arc<Metrics>,
}

/// The pooled client webhooks are posted with: no redirects followed, no proxy from the
/// environment, names resolved only through the SSRF guard, connect and total timeouts.
pub fn client(
    policy: Arc<AddressPolicy>,
    connect_timeout: Duration,
    timeout: Duration,
    pool_per_host: usize,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(pool_per_host)
        .user_agent(concat!("Gatehouse-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What one attempt came to.
struct Attempt {
    outcome: Outcome,
    status_code: Option<u16>,
    excerpt: String,
    /// A `Retry-After` answer: not before this time (milliseconds).
    not_before: Option<i64>,
}

impl Attempt {
    fn refused(reason: String) -> Self {
        Self {
            outcome: Outcome::Permanent(reason),
            status_code: None,
            excerpt: String::new(),
            not_before: None,
        }
    }
}

impl WebhookSender {
    /// Claims one batch of due deliveries and delivers it.
    pub async fn deliver_due(&self) -> Result<RoundReport, DbError> {
        self.worker
            .round(
                |claim, delivery: Delivery| async move { self.deliver_one(&claim, delivery).await },
            )
            .await
    }

    /// Delivers one claimed row; answers its new status, or `None` when the claim was
    /// lost meanwhile.
    async fn deliver_one(
        &self,
        claim: &Claim,
        delivery: Delivery,
    ) -> Result<Option<Status>, DbError> {
        let (queue, claim) = (self.worker.queue.clone(), claim.clone());
        let endpoint_id = delivery.endpoint_id.clone();
        let endpoint = self
            .worker
            .db
            .read::<_, DbError, _>(move |txn| {
                Box::pin(async move { Ok(endpoints::find(txn, &endpoint_id).await?) })
            })
            .await?;
        let started_at = now_millis();
        let started = Instant::now();
        let attempt = match &endpoint {
            None => Attempt::refused("the endpoint was deleted".into()),
            Some(endpoint) if !endpoint.enabled => Attempt::refused(format!(
                "the endpoint is disabled{}",
                endpoint
                    .disabled_reason
                    .as_deref()
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default()
            )),
            Some(endpoint) => self.post(endpoint, &delivery).await,
        };
        let latency_ms = to_millis(started.elapsed());
        let error = match &attempt.outcome {
            Outcome::Done => None,
            Outcome::Transient(error) | Outcome::Permanent(error) => Some(error.clone()),
        };
        match &attempt.outcome {
            Outcome::Done => tracing::debug!(id = %delivery.id, "webhook delivered"),
            Outcome::Transient(error) => tracing::warn!(
                id = %delivery.id, attempt = delivery.attempts, %error,
                "webhook delivery failed; will retry"
            ),
            Outcome::Permanent(error) => {
                tracing::warn!(id = %delivery.id, %error, "webhook delivery failed permanently")
            }
        }
        let log = AttemptRecord {
            attempt: delivery.attempts,
            started_at,
            status_code: attempt.status_code,
            latency_ms,
            error: error.clone(),
            response_excerpt: attempt.excerpt,
        };
        let disable_after = to_millis(self.disable_after);
        let (outcome, not_before) = (attempt.outcome, attempt.not_before);
        let endpoint_known = endpoint.is_some_and(|endpoint| endpoint.enabled);
        let recorded = self
            .worker
            .db
            .transact::<_, DbError, _>(move |txn| {
                Box::pin(async move {
                    let now = now_millis();
                    deliveries::log_attempt(txn, &delivery.id, log).await?;
                    let status = queue
                        .record_not_before(txn, &claim, &delivery, &outcome, not_before, now)
                        .await?;
                    if endpoint_known {
                        match &error {
                            None => endpoints::delivered(txn, &delivery.endpoint_id).await?,
                            Some(error) => {
                                if endpoints::failed(
                                    txn,
                                    &delivery.endpoint_id,
                                    error,
                                    disable_after,
                                    now,
                                )
                                .await?
                                {
                                    tracing::warn!(
                                        endpoint = %delivery.endpoint_id,
                                        "webhook endpoint disabled after failing too long"
                                    );
                                }
                            }
                        }
                    }
                    Ok(status)
                })
            })
            .await?;
        let label = match recorded {
            Some(Status::Sent) => "delivered",
            Some(Status::Pending) => "retrying",
            _ => "failed",
        };
        self.metrics
            .webhook_attempts
            .with_label_values(&[label])
            .inc();
        Ok(recorded)
    }

    /// Posts the delivery, signed, and judges the answer.
    async fn post(&self, endpoint: &Endpoint, delivery: &Delivery) -> Attempt {
        let url = match endpoints::parse_url(&endpoint.url) {
            Ok(url) => url,
            Err(reason) => return Attempt::refused(format!("endpoint URL: {reason}")),
        };
        if let Err(refused) = self.policy.check_url(&url) {
            return Attempt::refused(refused.to_string());
        }
        let key = match signing::secret_key(&endpoint.secret) {
            Ok(key) => key,
            Err(reason) => return Attempt::refused(format!("endpoint secret: {reason}")),
        };
        let timestamp = now_millis() / 1000;
        let signature = signing::sign(&key, &delivery.id, timestamp, delivery.payload.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("webhook-id", delivery.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(delivery.payload.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(response) => response,
            Err(err) => {
                let text = error_chain(&err);
                return if refused_by_guard(&err) {
                    Attempt::refused(text)
                } else {
                    Attempt {
                        outcome: Outcome::Transient(text),
                        status_code: None,
                        excerpt: String::new(),
                        not_before: None,
                    }
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, std::time::SystemTime::now()))
            .map(|wait| now_millis().saturating_add(to_millis(wait.min(self.max_retry_after))));
        let mut excerpt = Vec::new();
        while excerpt.len() < self.excerpt_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                _ => break,
            }
        }
        excerpt.truncate(self.excerpt_bytes);
        let excerpt = String::from_utf8_lossy(&excerpt).into_owned();
        let (outcome, not_before) = judge(status, retry_after);
        Attempt {
            outcome,
            status_code: Some(status.as_u16()),
            excerpt,
            not_before,
        }
    }
}

/// 2xx delivered; 429 and 5xx retried (not before `Retry-After`); anything else, the
/// other 4xx and redirects (never followed), fails at once.
fn judge(status: StatusCode, retry_after: Option<i64>) -> (Outcome, Option<i64>) {
    let text = format!("HTTP {status}");
    if status.is_success() {
        (Outcome::Done, None)
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        (Outcome::Transient(text), retry_after)
    } else if status.is_redirection() {
        (
            Outcome::Permanent(format!("{text}: redirects are not followed")),
            None,
        )
    } else {
        (Outcome::Permanent(text), None)
    }
}

/// A `Retry-After` value: delay seconds or an HTTP date.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn refused_by_guard(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause.downcast_ref::<Refused>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_as_the_spec_says() {
        let ok = |code: u16| judge(StatusCode::from_u16(code).unwrap(), Some(5)).0;
        assert_eq!(ok(200), Outcome::Done);
        assert_eq!(ok(204), Outcome::Done);
        assert!(matches!(ok(429), Outcome::Transient(_)));
        assert!(matches!(ok(500), Outcome::Transient(_)));
        assert!(matches!(ok(503), Outcome::Transient(_)));
        assert!(matches!(ok(410), Outcome::Permanent(_)));
        assert!(matches!(ok(400), Outcome::Permanent(_)));
        assert!(matches!(ok(302), Outcome::Permanent(_)));
        assert_eq!(judge(StatusCode::SERVICE_UNAVAILABLE, Some(5)).1, Some(5));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }
}
