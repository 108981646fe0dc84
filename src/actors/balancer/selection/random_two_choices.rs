//! `random_two_choices`: two servers at random, the less busy one wins ("power of two
//! choices": near least-connections balance without every worker piling onto the
//! same momentarily idle server).

use super::{Member, Selector};

pub struct RandomTwoChoices {
    healthy: Vec<usize>,
}

impl RandomTwoChoices {
    pub fn new(healthy: Vec<usize>) -> Self {
        Self { healthy }
    }
}

impl Selector for RandomTwoChoices {
    fn candidates(&self, members: &[Member], _: u64) -> Vec<usize> {
        let n = self.healthy.len();
        if n < 2 {
            return self.healthy.clone();
        }
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        let (first, second) =
            if members[self.healthy[b]].in_flight() < members[self.healthy[a]].in_flight() {
                (self.healthy[b], self.healthy[a])
            } else {
                (self.healthy[a], self.healthy[b])
            };
        [first, second]
            .into_iter()
            .chain(
                self.healthy
                    .iter()
                    .copied()
                    .filter(|&i| i != first && i != second),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{first_picks, members};
    use super::*;

    #[test]
    fn the_busiest_server_is_never_first_of_three() {
        let members = members(&[1, 1, 1]);
        members[1].begin_request();
        members[1].begin_request();
        let selector = RandomTwoChoices::new(vec![0, 1, 2]);
        let counts = first_picks(&selector, &members, 600, |_| 0);
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > 100 && counts[2] > 100, "{counts:?}");
    }

    #[test]
    fn candidates_cover_every_healthy_server_once() {
        let members = members(&[1, 1, 1, 1]);
        let mut order = RandomTwoChoices::new(vec![0, 1, 3]).candidates(&members, 0);
        order.sort_unstable();
        assert_eq!(order, [0, 1, 3]);
    }
}
