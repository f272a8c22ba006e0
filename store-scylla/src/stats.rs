//! The admin statistics over CQL, without a scan: totals and orders by status are counter
//! columns kept beside the writes that change them, and revenue is counted per quarter hour of
//! placement (so "since" is exact to the quarter hour, which local midnights of every time zone
//! fall on).
//!
//! Every write to a counter goes to one of [`BUCKETS`] partitions of its name, status or
//! quarter, chosen at random: one counter row per status would put every order transition of
//! the whole service on a handful of partitions (a counter update reads before it writes, on
//! one replica leader), and a quarter hour's revenue on one. Reads add the buckets up, with the
//! tables of unbucketed counts that versions before the buckets wrote.

use std::collections::BTreeMap;

use async_trait::async_trait;
use scylla::value::{Counter, CqlValue, Row};
use time::{Duration, OffsetDateTime};
use tomato_domain::{Money, Order, OrderStatus};
use tomato_store::{OrderSummary, StatsStore, StoreError, Totals};

use crate::ScyllaStore;
use crate::db::Cql;
use crate::orders::quarter_of;

/// Partitions each counter is spread over.
const BUCKETS: u32 = 16;
/// Every bucket, as a CQL list.
macro_rules! all_buckets {
    () => {
        "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)"
    };
}

/// A bucket for one counter update.
fn bucket() -> i32 {
    i32::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(BUCKETS)).unwrap_or(0)
}

impl ScyllaStore {
    /// Adds `delta` to the total `name` (users, restaurants, riders).
    pub(crate) async fn count(&self, name: &str, delta: i64) {
        self.tally(
            cql!("UPDATE totals_by_bucket SET n = n + ? WHERE name = ? AND bucket = ?"),
            (Counter(delta), name, bucket()),
        )
        .await;
    }

    pub(crate) async fn count_status(&self, status: OrderStatus, delta: i64) {
        self.tally(
            cql!("UPDATE order_counts_by_bucket SET orders = orders + ? WHERE status = ? AND bucket = ?"),
            (Counter(delta), status.as_str(), bucket()),
        )
        .await;
    }

    /// Adds (`sign` 1) or takes back (-1) the order's money in its quarter of placement.
    pub(crate) async fn count_revenue(&self, order: &Order, sign: i64) {
        self.tally(
            cql!(
                "UPDATE revenue_by_quarter_bucket SET total = total + ?, fees = fees + ?
             WHERE quarter = ? AND bucket = ?"
            ),
            (
                Counter(sign * order.total_amount.minor()),
                Counter(sign * order.platform_fee.minor()),
                quarter_of(order.created_at),
                bucket(),
            ),
        )
        .await;
    }

    /// One counter update, after the write it counts has succeeded: a failure is logged (by
    /// the session) and the request goes on, since its write stands and a count is for
    /// watching. Never retried: a counter update is not idempotent.
    async fn tally(&self, cql: Cql, values: impl scylla::serialize::row::SerializeRow) {
        if self.db.run_once(cql, values).await.is_err() {
            tracing::warn!("a statistics counter missed an update");
        }
    }

    /// The sums of the `N` counter columns `cql` answers over every bucket of one key, and of
    /// the unbucketed `legacy` row of that key.
    async fn summed<const N: usize>(
        &self,
        cql: Cql,
        legacy: Cql,
        key: impl scylla::serialize::row::SerializeRow + Copy,
    ) -> Result<[i64; N], StoreError> {
        let mut rows: Vec<Row> = self.db.rows(cql, key).await?;
        rows.extend(self.db.rows::<Row>(legacy, key).await?);
        let mut sums = [0i64; N];
        for row in rows {
            for (sum, value) in sums.iter_mut().zip(row.columns) {
                if let Some(CqlValue::Counter(Counter(n))) = value {
                    *sum += n;
                }
            }
        }
        Ok(sums)
    }
}

fn non_negative(Counter(n): Counter) -> u64 {
    n.max(0).unsigned_abs()
}

#[async_trait]
impl StatsStore for ScyllaStore {
    async fn totals(&self) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        for (name, total) in [
            ("users", &mut totals.users),
            ("restaurants", &mut totals.restaurants),
            ("riders", &mut totals.riders),
        ] {
            let [n] = self
                .summed(
                    cql!(concat!(
                        "SELECT n FROM totals_by_bucket WHERE name = ? AND bucket IN ",
                        all_buckets!()
                    )),
                    cql!("SELECT n FROM totals WHERE name = ?"),
                    (name,),
                )
                .await?;
            *total = non_negative(Counter(n));
        }
        Ok(totals)
    }

    async fn orders_since(&self, since: OffsetDateTime) -> Result<OrderSummary, StoreError> {
        let mut by_status = BTreeMap::new();
        for &status in OrderStatus::ALL {
            let [n] = self
                .summed(
                    cql!(concat!(
                        "SELECT orders FROM order_counts_by_bucket WHERE status = ? AND bucket IN ",
                        all_buckets!()
                    )),
                    cql!("SELECT orders FROM order_counts WHERE status = ?"),
                    (status.as_str(),),
                )
                .await?;
            let n = non_negative(Counter(n));
            if n > 0 {
                by_status.insert(status, n);
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
        let sums = crate::bounded(quarters, |quarter| async move {
            self.summed::<2>(
                cql!(concat!(
                    "SELECT total, fees FROM revenue_by_quarter_bucket WHERE quarter = ? \
                     AND bucket IN ",
                    all_buckets!()
                )),
                cql!("SELECT total, fees FROM revenue_by_quarter WHERE quarter = ?"),
                (quarter,),
            )
            .await
        })
        .await?;
        let (mut revenue, mut fees) = (0i64, 0i64);
        for [total, fee] in sums {
            revenue += total;
            fees += fee;
        }
        Ok(OrderSummary {
            by_status,
            revenue: Money::from_minor(revenue),
            platform_fees: Money::from_minor(fees),
        })
    }
}
