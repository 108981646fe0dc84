//! How a pool orders its servers for one request: one small file per strategy.
//!
//! A [`Selector`] is built by the balancer actor from the servers that are healthy at
//! the time (so per-strategy tables such as the hash ring are computed off the request
//! path) and published in a snapshot that HTTP workers read without locks. For each
//! request it yields every healthy server in order of preference; the proxy takes the
//! first that is not passively ejected and, on retries, the next ones.

mod consistent;
mod least_connections;
mod random_two_choices;
mod round_robin;
mod weighted;

pub use consistent::{client_key, ConsistentHash};
pub use least_connections::LeastConnections;
pub use random_two_choices::RandomTwoChoices;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use super::Member;
use crate::config::Strategy;

/// Orders a pool's healthy servers for one request.
pub trait Selector: Send + Sync {
    /// Indices into `members`, most preferred first, each healthy server once.
    /// `key` is the hash of the client address (used by `ip_hash` only).
    fn candidates(&self, members: &[Member], key: u64) -> Vec<usize>;
}

/// The selector of `strategy` over the `healthy` members (indices into `members`).
pub fn build(strategy: Strategy, members: &[Member], healthy: Vec<usize>) -> Box<dyn Selector> {
    match strategy {
        Strategy::RoundRobin => Box::new(RoundRobin::new(healthy)),
        Strategy::Weighted => Box::new(Weighted::new(members, healthy)),
        Strategy::LeastConnections => Box::new(LeastConnections::new(healthy)),
        Strategy::IpHash => Box::new(ConsistentHash::new(members, &healthy)),
        Strategy::RandomTwoChoices => Box::new(RandomTwoChoices::new(healthy)),
    }
}

/// `healthy` rotated to start at `start` (modulo its length).
fn rotated(healthy: &[usize], start: usize) -> Vec<usize> {
    if healthy.is_empty() {
        return Vec::new();
    }
    let start = start % healthy.len();
    healthy[start..]
        .iter()
        .chain(&healthy[..start])
        .copied()
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::super::{Member, UpstreamUrl};

    /// Members named `http://127.0.0.1:<1000+i>` with the given weights.
    pub fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, weight)| {
                Member::new(
                    UpstreamUrl::parse(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap(),
                    *weight,
                )
            })
            .collect()
    }

    /// How often each member came first over `rounds` selections.
    pub fn first_picks(
        selector: &dyn super::Selector,
        members: &[Member],
        rounds: usize,
        key: impl Fn(usize) -> u64,
    ) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for round in 0..rounds {
            counts[selector.candidates(members, key(round))[0]] += 1;
        }
        counts
    }
}
