//! Who should own a shard: rendezvous (highest random weight) hashing over the live nodes. Every
//! node computes the same answer from the same live set, a node joining takes about 1/N of the
//! shards from the others, and a node leaving moves only its own shards.

/// FNV-1a: a hash that is the same on every node and every build (std's is seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A finaliser that spreads close inputs far apart.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The node among `nodes` that should own `shard`; `None` when no node is live.
pub fn owner(shard: u32, nodes: &[String]) -> Option<&str> {
    nodes
        .iter()
        .max_by_key(|node| {
            (
                mix(fnv1a(node.as_bytes()) ^ mix(u64::from(shard))),
                node.as_str(),
            )
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn shards_spread_over_the_nodes() {
        let nodes = names(3);
        let mut counts = [0u32; 3];
        for shard in 0..300 {
            let owner = owner(shard, &nodes).expect("owner");
            let index = nodes.iter().position(|n| n == owner).expect("known");
            counts[index] += 1;
        }
        assert!(counts.iter().all(|c| (60..=140).contains(c)), "{counts:?}");
        assert_eq!(owner(0, &[]), None);
    }

    proptest! {
        #[test]
        fn a_leaving_node_moves_only_its_own_shards(n in 2usize..8, leaver in 0usize..8, shard in 0u32..1024) {
            let nodes = names(n);
            let leaver = leaver % n;
            let before = owner(shard, &nodes).expect("owner").to_owned();
            let mut rest = nodes.clone();
            let gone = rest.remove(leaver);
            let after = owner(shard, &rest).expect("owner");
            if before != gone {
                prop_assert_eq!(before.as_str(), after);
            }
        }

        #[test]
        fn a_joining_node_takes_shards_only_for_itself(n in 1usize..8, shard in 0u32..1024) {
            let nodes = names(n);
            let before = owner(shard, &nodes).expect("owner").to_owned();
            let mut more = nodes.clone();
            more.push("newcomer".into());
            let after = owner(shard, &more).expect("owner");
            prop_assert!(after == before || after == "newcomer");
        }

        #[test]
        fn the_order_of_the_live_set_does_not_matter(n in 1usize..8, shard in 0u32..1024) {
            let nodes = names(n);
            let mut reversed = nodes.clone();
            reversed.reverse();
            prop_assert_eq!(owner(shard, &nodes), owner(shard, &reversed));
        }
    }
}
