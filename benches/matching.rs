//! One batched-dispatch window solved: N orders waiting, each with its 8 nearest riders drawn
//! from a pool that is scarce (as many riders as orders) or plentiful (four times as many),
//! distances up to 5 km. What a window of a busy zone costs before any offer goes out.
//!
//! Run with `cargo bench --bench matching`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tomato_domain::{OrderId, RiderId};
use tomato_shards::matching::{Costs, Reach, Waiting, assign};

/// A fixed stream of numbers in [0, 1) (xorshift), so that every run solves the same windows.
fn stream(mut state: u64) -> impl FnMut() -> f64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn window(orders: usize, riders: usize, seed: u64) -> Vec<Waiting> {
    let mut next = stream(seed);
    let pool: Vec<RiderId> = (0..riders).map(|_| RiderId::new()).collect();
    (0..orders)
        .map(|_| Waiting {
            order: OrderId::new(),
            waited_s: next() * 30.0,
            riders: (0..8)
                .map(|_| Reach {
                    rider: pool[(next() * riders as f64) as usize % riders],
                    distance_m: next() * 5_000.0,
                })
                .collect(),
        })
        .collect()
}

fn bench_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    let costs = Costs {
        credit_m_per_s: 10.0,
        hold_m: 0.0,
    };
    for orders in [10usize, 50, 200] {
        for (pool, riders) in [("scarce", orders), ("plentiful", orders * 4)] {
            let waiting = window(orders, riders, 0x5eed ^ orders as u64);
            group.bench_function(BenchmarkId::new(format!("window_{pool}"), orders), |b| {
                b.iter(|| black_box(assign(&waiting, costs)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matching);
criterion_main!(benches);
