//! The admin statistics over CQL, without a scan: totals and orders by status are counter
//! columns kept beside the writes that change them, and revenue is counted per quarter hour of
//! placement (so "since" is exact to the quarter hour, which local midnights of every time zone
//! fall on).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use scylla::value::Counter;
use time::{Duration, OffsetDateTime};
use tomato_domain::{Money, Order, OrderStatus};
use tomato_store::{OrderSummary, StatsStore, StoreError, Totals};

use crate::orders::quarter_of;
use crate::{ScyllaStore, parse_col};

impl ScyllaStore {
    /// Adds `delta` to the total `name` (users, restaurants, riders).
    pub(crate) async fn count(&self, name: &str, delta: i64) {
        self.tally(
            "UPDATE totals SET n = n + ? WHERE name = ?",
            (Counter(delta), name),
        )
        .await;
    }

    pub(crate) async fn count_status(&self, status: OrderStatus, delta: i64) {
        self.tally(
            "UPDATE order_counts SET orders = orders + ? WHERE status = ?",
            (Counter(delta), status.as_str()),
        )
        .await;
    }

    /// Adds (`sign` 1) or takes back (-1) the order's money in its quarter of placement.
    pub(crate) async fn count_revenue(&self, order: &Order, sign: i64) {
        self.tally(
            "UPDATE revenue_by_quarter SET total = total + ?, fees = fees + ? WHERE quarter = ?",
            (
                Counter(sign * order.total_amount.minor()),
                Counter(sign * order.platform_fee.minor()),
                quarter_of(order.created_at),
            ),
        )
        .await;
    }

    /// One counter update, after the write it counts has succeeded: a failure is logged (by
    /// the session) and the request goes on, since its write stands and a count is for
    /// watching. Never retried: a counter update is not idempotent.
    async fn tally(&self, cql: &str, values: impl scylla::serialize::row::SerializeRow) {
        if self.db.run_once(cql, values).await.is_err() {
            tracing::warn!("a statistics counter missed an update");
        }
    }
}

fn non_negative(Counter(n): Counter) -> u64 {
    n.max(0).unsigned_abs()
}

#[async_trait]
impl StatsStore for ScyllaStore {
    async fn totals(&self) -> Result<Totals, StoreError> {
        let rows: Vec<(String, Counter)> = self
            .db
            .rows(
                "SELECT name, n FROM totals WHERE name IN ('users', 'restaurants', 'riders')",
                (),
            )
            .await?;
        let mut totals = Totals::default();
        for (name, n) in rows {
            let n = non_negative(n);
            match name.as_str() {
                "users" => totals.users = n,
                "restaurants" => totals.restaurants = n,
                "riders" => totals.riders = n,
                _ => {}
            }
        }
        Ok(totals)
    }

    async fn orders_since(&self, since: OffsetDateTime) -> Result<OrderSummary, StoreError> {
        let mut by_status = BTreeMap::new();
        let rows: Vec<(String, Counter)> = self
            .db
            .rows(
                "SELECT status, orders FROM order_counts WHERE status IN \
                 ('placed', 'accepted', 'preparing', 'ready_for_rider', 'rider_assigned', \
                  'picked_up', 'delivered', 'cancelled', 'expired')",
                (),
            )
            .await?;
        for (status, n) in rows {
            let n = non_negative(n);
            if n > 0 {
                by_status.insert(parse_col("order status", &status, str::parse)?, n);
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut quarters = Vec::new();
        let mut quarter = quarter_of(since);
        // A "since" years back would be thousands of reads: the statistics ask for today.
        let earliest = now - Duration::days(31);
        if quarter < earliest {
            quarter = quarter_of(earliest);
        }
        while quarter <= now {
            quarters.push(quarter);
            quarter += Duration::minutes(15);
        }
        let sums = try_join_all(quarters.iter().map(|quarter| {
            self.db.row::<(Option<Counter>, Option<Counter>)>(
                "SELECT total, fees FROM revenue_by_quarter WHERE quarter = ?",
                (*quarter,),
            )
        }))
        .await?;
        let (mut revenue, mut fees) = (0i64, 0i64);
        for (total, fee) in sums.into_iter().flatten() {
            revenue += total.map_or(0, |Counter(n)| n);
            fees += fee.map_or(0, |Counter(n)| n);
        }
        Ok(OrderSummary {
            by_status,
            revenue: Money::from_minor(revenue),
            platform_fees: Money::from_minor(fees),
        })
    }
}
