//! Active health checks: the state machine that turns probe results into "healthy" and
//! "unhealthy" with thresholds, and the probe itself.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use super::Member;
use crate::http::upstream_client::open;

/// What the balancer knows about one server from its probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    /// Consecutive probes agreeing with the opposite state.
    streak: u32,
    /// A probe of this server is running; the next interval skips it.
    pub probing: bool,
}

impl Default for HealthState {
    /// Servers start healthy, so that a pool serves before its first probe.
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
            probing: false,
        }
    }
}

impl HealthState {
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one probe; returns the new state when it changed.
    pub fn observe(
        &mut self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if passed {
            healthy_threshold
        } else {
            unhealthy_threshold
        };
        if self.streak < threshold {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// `GET path` on `member` (over TLS for `https://` members), on a connection of its
/// own: passes on a 2xx or 3xx answer within `timeout`.
pub async fn probe(member: &Member, path: &str, timeout: Duration) -> Result<(), String> {
    let check = async {
        let mut sender = open::<Empty<Bytes>>(member, timeout)
            .await
            .map_err(|err| err.to_string())?;
        let request = http::Request::get(member.url.path_for(path))
            .header(http::header::HOST, member.url.authority())
            .header(http::header::CONNECTION, "close")
            .body(Empty::new())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_leaves_after_the_unhealthy_threshold_and_returns_after_the_healthy_one() {
        let mut state = HealthState::default();
        assert_eq!(state.observe(false, 2, 3), None);
        assert_eq!(state.observe(false, 2, 3), None);
        assert_eq!(state.observe(false, 2, 3), Some(false));
        assert!(!state.is_healthy());
        assert_eq!(state.observe(true, 2, 3), None);
        assert_eq!(state.observe(true, 2, 3), Some(true));
        assert!(state.is_healthy());
    }

    #[test]
    fn a_single_good_probe_resets_the_failure_streak() {
        let mut state = HealthState::default();
        state.observe(false, 2, 2);
        state.observe(true, 2, 2);
        assert_eq!(state.observe(false, 2, 2), None);
        assert!(state.is_healthy());
    }
}
