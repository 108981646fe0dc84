//! `weighted`: smooth weighted round robin (nginx's), lock-free.
//!
//! The smooth sequence — a server of weight 5 next to two of weight 1 is picked
//! `a a b a c a a` rather than `a a a a a b c` — is computed once when the snapshot is
//! built; requests only bump an atomic index into it.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Member, Selector};

pub struct Weighted {
    sequence: Vec<usize>,
    healthy: Vec<usize>,
    next: AtomicUsize,
}

impl Weighted {
    pub fn new(members: &[Member], healthy: Vec<usize>) -> Self {
        Self {
            sequence: smooth_sequence(members, &healthy),
            healthy,
            next: AtomicUsize::new(0),
        }
    }
}

/// One full cycle of smooth weighted round robin: each server appears `weight` times.
fn smooth_sequence(members: &[Member], healthy: &[usize]) -> Vec<usize> {
    let weights: Vec<i64> = healthy
        .iter()
        .map(|&i| i64::from(members[i].weight))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; healthy.len()];
    (0..total)
        .map(|_| {
            for (current, weight) in current.iter_mut().zip(&weights) {
                *current += weight;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, value)| (**value, std::cmp::Reverse(*i)))
                .expect("a non-empty cycle has servers");
            current[best] -= total;
            healthy[best]
        })
        .collect()
}

impl Selector for Weighted {
    fn candidates(&self, _: &[Member], _: u64) -> Vec<usize> {
        if self.sequence.is_empty() {
            return Vec::new();
        }
        let first = self.sequence[self.next.fetch_add(1, Ordering::Relaxed) % self.sequence.len()];
        std::iter::once(first)
            .chain(self.healthy.iter().copied().filter(|&i| i != first))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{first_picks, members};
    use super::*;

    #[test]
    fn shares_follow_the_weights() {
        let members = members(&[5, 1, 2]);
        let selector = Weighted::new(&members, vec![0, 1, 2]);
        assert_eq!(
            first_picks(&selector, &members, 800, |_| 0),
            [500, 100, 200]
        );
    }

    #[test]
    fn heavy_servers_are_interleaved_not_bunched() {
        let members = members(&[5, 1, 1]);
        assert_eq!(smooth_sequence(&members, &[0, 1, 2]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn unhealthy_servers_drop_out_of_the_cycle() {
        let members = members(&[5, 1, 2]);
        let selector = Weighted::new(&members, vec![1, 2]);
        assert_eq!(first_picks(&selector, &members, 300, |_| 0), [0, 100, 200]);
    }
}
