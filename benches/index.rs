//! The location hot path: rider position updates applied to a shard's spatial index, and the
//! nearest-5-within-5-km search dispatch runs, over a 20 x 20 km city of 10 k and 100 k riders.
//! Also prints the index's memory per rider and the search's p50/p99 (criterion reports means
//! and medians; dispatch cares about the tail).
//!
//! Run with `cargo bench --bench index`.

// The only unsafe code in the workspace: a counting wrapper around the system allocator, to
// measure the index's bytes per rider.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use tomato_domain::{LatLon, RiderId};
use tomato_shards::index::SpatialIndex;
use tomato_shards::{RiderIndex, ShardId, ShardMap};

/// Counts live heap bytes, to measure the index's footprint.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A deterministic pseudo-random stream (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A point in a 20 x 20 km square around Bengaluru's centre.
    fn point(&mut self) -> LatLon {
        let lat = 12.88 + self.next_f64() * 0.18;
        let lon = 77.50 + self.next_f64() * 0.184;
        LatLon::new(lat, lon).expect("in range")
    }
}

fn city(riders: usize, rng: &mut Rng) -> (SpatialIndex, Vec<(RiderId, LatLon)>) {
    let mut index = SpatialIndex::default();
    let mut placed = Vec::with_capacity(riders);
    for _ in 0..riders {
        let (id, at) = (RiderId::new(), rng.point());
        index.upsert(id, at, 1_000, true);
        placed.push((id, at));
    }
    (index, placed)
}

fn report_memory_and_tail(riders: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let points: Vec<LatLon> = (0..riders).map(|_| rng.point()).collect();
    let ids: Vec<RiderId> = (0..riders).map(|_| RiderId::new()).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut index = SpatialIndex::default();
    for (id, at) in ids.iter().zip(&points) {
        index.upsert(*id, *at, 1_000, true);
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;

    let mut samples: Vec<u128> = (0..20_000)
        .map(|_| {
            let at = rng.point();
            let started = Instant::now();
            black_box(index.nearest(at, 5_000.0, 5, |seen, ok| ok && seen >= 900));
            started.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    eprintln!(
        "{riders} riders: {:.0} bytes per rider in the index; nearest-5 within 5 km: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        bytes as f64 / riders as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}

fn bench_index(c: &mut Criterion) {
    for riders in [10_000, 100_000] {
        report_memory_and_tail(riders);
    }

    let mut group = c.benchmark_group("index");
    for riders in [10_000usize, 100_000] {
        let mut rng = Rng(42);
        let (mut index, placed) = city(riders, &mut rng);

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("nearest_5_within_5km", riders), |b| {
            b.iter(|| {
                let at = rng.point();
                black_box(index.nearest(at, 5_000.0, 5, |seen, ok| ok && seen >= 900))
            })
        });

        // A rider moving ~50 m between 5 s updates: mostly the same cell, sometimes the next.
        let mut i = 0usize;
        let mut seen = 1_000u32;
        group.bench_function(BenchmarkId::new("location_update", riders), |b| {
            b.iter(|| {
                let (id, at) = placed[i % placed.len()];
                i += 1;
                seen = seen.wrapping_add(1);
                let step = (i % 7) as f64 * 0.0001;
                let moved = LatLon::new(at.lat() + step, at.lon() + step).expect("in range");
                black_box(index.upsert(id, moved, seen, true))
            })
        });

        // The same search as the node runs it: over the node's shard slices (64 shards over
        // zones at resolution 5, at 7, the default that spreads a city over shards, and at the
        // finer 8), taking their locks.
        for zone in [5u8, 7, 8] {
            let map = ShardMap::new(zone, 5, 64).expect("a map");
            let sharded = RiderIndex::new(map);
            for shard in 0..map.count() {
                sharded.open(ShardId(shard));
            }
            let now = OffsetDateTime::now_utc();
            for (id, at) in &placed {
                sharded.update(*id, *at, now, Some(true)).expect("open");
            }
            group.bench_function(
                BenchmarkId::new(format!("nearest_5_within_5km_zones_{zone}"), riders),
                |b| {
                    b.iter(|| {
                        let at = rng.point();
                        black_box(sharded.nearest(at, 5_000.0, 5, |_, ok| ok))
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_index);
criterion_main!(benches);
