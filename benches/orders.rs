//! An order transition, persisted: the command goes to the order's actor on its shard's arbiter,
//! the actor runs the status machine, the embedded store commits the new order (WAL, one
//! writer), and the answer comes back to the async caller. This is the floor under every order
//! route's latency.
//!
//! Run with `cargo bench --bench orders`.

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::counter::Counter;
use time::{Duration, OffsetDateTime};
use tomato_actors::{DispatchPolicy, Offer, Withdrawn};
use tomato_domain::{
    DeliveryAddress, HistoryEntry, LatLon, MenuItemId, Money, Order, OrderCommand, OrderId,
    OrderLine, OrderStatus, PaymentMethod, PaymentStatus, RestaurantId, RiderId, UserId,
};
use tomato_shards::{
    ActorRuntime, DispatchHook, MatchingSettings, OrderPorts, OrderRef, RiderIndex, SearchSettings,
    ShardMap, ShardRouter, WindowReport,
};

/// Nobody listens, and there are no riders, in the benchmark.
struct Nobody;

impl tomato_actors::OrderEvents for Nobody {
    fn changed(&self, _before: &Order, _after: &Order) {}
}

impl DispatchHook for Nobody {
    fn offered(&self, _: &Order, _: &Offer, _: &[RiderId]) {}
    fn pending(&self, _: &Order, _: u32) {}
    fn withdrawn(&self, _: &Order, _: RiderId, _: Withdrawn) {}
    fn assigned(&self, _: &Order, _: RiderId) {}
    fn window(&self, _: &WindowReport) {}
    fn unmatched(&self, _: &Order) {}
    fn moved(&self, _: OrderId, _: UserId, _: LatLon, _: OffsetDateTime) {}
}

fn unpaid_order() -> Order {
    let now = OffsetDateTime::now_utc();
    let here = LatLon::new(12.9716, 77.5946).expect("point");
    Order {
        id: OrderId::new(),
        // Distinct customers: each may hold one unpaid order.
        user_id: UserId::new(),
        restaurant_id: RestaurantId::new(),
        restaurant_name: "Bench Kitchen".into(),
        pickup: here,
        rider_id: None,
        rider_name: None,
        rider_phone: None,
        items: vec![OrderLine {
            item_id: MenuItemId::new(),
            name: "Thali".into(),
            price: Money::from_minor(18000),
            quantity: 2,
        }],
        subtotal: Money::from_minor(36000),
        delivery_fee: Money::ZERO,
        platform_fee: Money::from_minor(700),
        total_amount: Money::from_minor(36700),
        currency: "INR".into(),
        rider_amount: Money::from_minor(3400),
        distance_km: 1.7,
        delivery_address: DeliveryAddress {
            formatted_address: "1 MG Road".into(),
            mobile: "+919845012345".into(),
            location: here,
        },
        status: OrderStatus::Placed,
        payment_status: PaymentStatus::Pending,
        payment_method: PaymentMethod::Test,
        expires_at: Some(now + Duration::minutes(15)),
        created_at: now,
        updated_at: now,
        history: vec![HistoryEntry {
            status: OrderStatus::Placed,
            at: now,
        }],
        version: 0,
        shard: 0,
    }
}

fn bench_transition(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = tomato_store_embedded::open(dir.path()).expect("store");
    let actors = Arc::new(ActorRuntime::start(1).expect("actors"));
    let map = ShardMap::new(5, 5, 64).expect("map");
    let router = ShardRouter::new(
        Arc::clone(&actors),
        map,
        Arc::new(RiderIndex::new(map)),
        OrderPorts {
            store: Arc::clone(&stores.orders),
            events: Arc::new(Nobody),
            hook: Arc::new(Nobody),
            search: SearchSettings {
                radius_m: 5_000.0,
                stale_after_s: 60,
            },
            policy: DispatchPolicy {
                batch: 3,
                offer_ttl: std::time::Duration::from_secs(15),
                max_backoff: std::time::Duration::from_secs(30),
                matched_ttl: None,
            },
            matching: MatchingSettings {
                window: std::time::Duration::from_secs(1),
                candidates: 8,
                hold_m: 0,
            },
            restarts: Counter::default(),
            rider_restarts: Counter::default(),
            entry_reads: Counter::default(),
        },
        Arc::clone(&stores.riders),
    );
    runtime.block_on(router.start_all()).expect("start");

    let (router, stores_ref) = (&router, &stores);
    c.bench_function("order_payment_confirmed_and_persisted", |b| {
        b.to_async(&runtime).iter_custom(|iters| async move {
            // Placing the orders is set-up, not measured.
            let mut ids = Vec::new();
            for _ in 0..iters {
                let order = unpaid_order();
                stores_ref.orders.create(&order).await.expect("create");
                router.place(order.clone()).await.expect("placed");
                ids.push(OrderRef::from(&order));
            }
            let started = Instant::now();
            for id in ids {
                router
                    .apply(id, OrderCommand::ConfirmPayment)
                    .await
                    .expect("paid");
            }
            started.elapsed()
        })
    });
    actors.stop();
    runtime.block_on(stores.backend.close()).expect("close");
}

criterion_group!(benches, bench_transition);
criterion_main!(benches);
