//! `least_connections`: the server with the fewest requests in flight per unit of
//! weight; ties among the least loaded go round robin, so that an idle pool still
//! spreads its load evenly.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Member, Selector};

pub struct LeastConnections {
    healthy: Vec<usize>,
    next: AtomicUsize,
}

impl LeastConnections {
    pub fn new(healthy: Vec<usize>) -> Self {
        Self {
            healthy,
            next: AtomicUsize::new(0),
        }
    }
}

impl Selector for LeastConnections {
    fn candidates(&self, members: &[Member], _: u64) -> Vec<usize> {
        // Loads are read once: other workers change them while this one sorts.
        let mut loaded: Vec<(u64, usize)> = self
            .healthy
            .iter()
            .map(|&i| {
                let member = &members[i];
                let load =
                    u64::from(member.in_flight()) * 1_000_000 / u64::from(member.weight.max(1));
                (load, i)
            })
            .collect();
        loaded.sort_unstable();
        let Some(&(least, _)) = loaded.first() else {
            return Vec::new();
        };
        let tied = loaded.iter().take_while(|(load, _)| *load == least).count();
        loaded[..tied].rotate_left(self.next.fetch_add(1, Ordering::Relaxed) % tied);
        loaded.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{first_picks, members};
    use super::*;

    #[test]
    fn the_least_busy_server_is_chosen() {
        let members = members(&[1, 1, 1]);
        members[0].begin_request();
        members[0].begin_request();
        members[1].begin_request();
        let selector = LeastConnections::new(vec![0, 1, 2]);
        assert_eq!(selector.candidates(&members, 0), [2, 1, 0]);
    }

    #[test]
    fn ties_are_shared_evenly_while_a_server_is_busy() {
        let members = members(&[1, 1, 1]);
        members[0].begin_request();
        let selector = LeastConnections::new(vec![0, 1, 2]);
        assert_eq!(first_picks(&selector, &members, 10, |_| 0), [0, 5, 5]);
    }

    #[test]
    fn an_idle_pool_is_used_evenly() {
        let members = members(&[1, 1]);
        let selector = LeastConnections::new(vec![0, 1]);
        assert_eq!(first_picks(&selector, &members, 10, |_| 0), [5, 5]);
    }

    #[test]
    fn in_flight_counts_are_scaled_by_weight() {
        let members = members(&[4, 1]);
        members[0].begin_request();
        members[0].begin_request();
        members[1].begin_request();
        // 2 requests on weight 4 is a lighter load than 1 on weight 1.
        assert_eq!(
            LeastConnections::new(vec![0, 1]).candidates(&members, 0)[0],
            0
        );
    }
}
