//! Admin statistics in SQLite: counts by index, sums over one day's paid orders.

use std::collections::BTreeMap;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::{Money, OrderStatus};

use crate::{EmbeddedStore, parse_col, to_millis};
use tomato_store::{OrderSummary, StatsStore, StoreError, Totals};

#[async_trait]
impl StatsStore for EmbeddedStore {
    async fn totals(&self) -> Result<Totals, StoreError> {
        self.db
            .read(|conn| {
                let count = |table: &str| -> Result<u64, StoreError> {
                    let n: i64 =
                        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                            row.get(0)
                        })?;
                    Ok(n.unsigned_abs())
                };
                Ok(Totals {
                    users: count("users")?,
                    restaurants: count("restaurants")?,
                    riders: count("riders")?,
                })
            })
            .await
    }

    async fn orders_since(&self, since: OffsetDateTime) -> Result<OrderSummary, StoreError> {
        let since = to_millis(since);
        self.db
            .read(move |conn| {
                let mut by_status = BTreeMap::new();
                let mut statement =
                    conn.prepare_cached("SELECT status, COUNT(*) FROM orders GROUP BY status")?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (status, count) = row?;
                    by_status.insert(
                        parse_col("order status", &status, str::parse::<OrderStatus>)?,
                        count.unsigned_abs(),
                    );
                }
                let (revenue, fees): (i64, i64) = conn.query_row(
                    "SELECT COALESCE(SUM(json_extract(data, '$.totalAmount')), 0),
                            COALESCE(SUM(json_extract(data, '$.platformFee')), 0)
                     FROM orders WHERE payment_status = 'paid' AND created_at >= ?1",
                    [since],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                Ok(OrderSummary {
                    by_status,
                    revenue: Money::from_minor(revenue),
                    platform_fees: Money::from_minor(fees),
                })
            })
            .await
    }
}
