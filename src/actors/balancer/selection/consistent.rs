//! `ip_hash`: consistent hashing of the client address on a ring of virtual nodes
//! (ketama), so that a client keeps its server and, when a server leaves or joins,
//! only the clients of that server move.

use xxhash_rust::xxh3::xxh3_64;

use super::{Member, Selector};

/// Virtual nodes per unit of weight: enough for an even spread of a few servers.
const POINTS_PER_WEIGHT: u32 = 160;

pub struct ConsistentHash {
    /// (point, member index), sorted by point.
    ring: Vec<(u64, usize)>,
    servers: usize,
}

impl ConsistentHash {
    pub fn new(members: &[Member], healthy: &[usize]) -> Self {
        let mut ring: Vec<(u64, usize)> = healthy
            .iter()
            .flat_map(|&i| {
                let name = members[i].url.to_string();
                (0..POINTS_PER_WEIGHT * members[i].weight)
                    .map(move |point| (xxh3_64(format!("{name}#{point}").as_bytes()), i))
            })
            .collect();
        ring.sort_unstable();
        Self {
            ring,
            servers: healthy.len(),
        }
    }
}

/// The hash of a client address, as used for the ring.
pub fn client_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => xxh3_64(&v4.octets()),
        std::net::IpAddr::V6(v6) => xxh3_64(&v6.octets()),
    }
}

impl Selector for ConsistentHash {
    fn candidates(&self, _: &[Member], key: u64) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.servers);
        if self.ring.is_empty() {
            return order;
        }
        let start = self.ring.partition_point(|(point, _)| *point < key);
        for (_, member) in self.ring[start..].iter().chain(&self.ring[..start]) {
            if !order.contains(member) {
                order.push(*member);
                if order.len() == self.servers {
                    break;
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::members;
    use super::*;

    fn key(i: usize) -> u64 {
        client_key(std::net::IpAddr::from([
            10,
            0,
            (i / 256) as u8,
            (i % 256) as u8,
        ]))
    }

    #[test]
    fn a_client_always_gets_the_same_server() {
        let members = members(&[1, 1, 1]);
        let ring = ConsistentHash::new(&members, &[0, 1, 2]);
        for client in 0..50 {
            assert_eq!(
                ring.candidates(&members, key(client))[0],
                ring.candidates(&members, key(client))[0]
            );
        }
    }

    #[test]
    fn clients_spread_over_the_servers() {
        let members = members(&[1, 1, 1]);
        let ring = ConsistentHash::new(&members, &[0, 1, 2]);
        let mut counts = [0; 3];
        for client in 0..3000 {
            counts[ring.candidates(&members, key(client))[0]] += 1;
        }
        assert!(counts.iter().all(|&n| n > 700), "{counts:?}");
    }

    #[test]
    fn removing_a_server_moves_only_its_own_clients() {
        let members = members(&[1, 1, 1, 1]);
        let before = ConsistentHash::new(&members, &[0, 1, 2, 3]);
        let after = ConsistentHash::new(&members, &[0, 1, 3]);
        for client in 0..2000 {
            let old = before.candidates(&members, key(client))[0];
            let new = after.candidates(&members, key(client))[0];
            if old != 2 {
                assert_eq!(old, new, "client {client} moved although its server stayed");
            }
        }
    }

    #[test]
    fn the_fallback_order_lists_every_server_once() {
        let members = members(&[1, 2, 1]);
        let ring = ConsistentHash::new(&members, &[0, 1, 2]);
        let mut order = ring.candidates(&members, 42);
        order.sort_unstable();
        assert_eq!(order, [0, 1, 2]);
    }
}
