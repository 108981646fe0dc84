//! `round_robin`: each healthy server in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{rotated, Member, Selector};

pub struct RoundRobin {
    healthy: Vec<usize>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(healthy: Vec<usize>) -> Self {
        Self {
            healthy,
            next: AtomicUsize::new(0),
        }
    }
}

impl Selector for RoundRobin {
    fn candidates(&self, _: &[Member], _: u64) -> Vec<usize> {
        rotated(&self.healthy, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{first_picks, members};
    use super::*;

    #[test]
    fn every_healthy_server_gets_the_same_share() {
        let members = members(&[1, 1, 1, 1]);
        let selector = RoundRobin::new(vec![0, 2, 3]);
        assert_eq!(
            first_picks(&selector, &members, 300, |_| 0),
            [100, 0, 100, 100]
        );
        assert_eq!(selector.candidates(&members, 0).len(), 3);
    }

    #[test]
    fn no_healthy_server_means_no_candidate() {
        assert!(RoundRobin::new(vec![]).candidates(&[], 0).is_empty());
    }
}
