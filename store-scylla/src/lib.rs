//! The ScyllaDB backend: every store trait over CQL, for a cluster of nodes sharing one store.
//! It runs on any CQL database with lightweight transactions (ScyllaDB in production, Apache
//! Cassandra in the test suite) through the `scylla` driver: one session, statements prepared
//! once and cached, token-aware routing, the consistency of `store.scylla.consistency` (and the
//! matching serial consistency for lightweight transactions).
//!
//! Tables are designed per query (see [`schema`]): nothing on a request path scans a table or
//! filters server-side. What the embedded store gets from a transaction has a CQL answer here:
//!
//! - **Uniqueness** (one user per e-mail, one restaurant per seller, one rider profile per user,
//!   one unpaid order per customer, a provider order linked to one order, provider event ids,
//!   idempotency keys) is a claim row written with `INSERT .. IF NOT EXISTS`; whoever's claim
//!   is applied wins, the others read the winner.
//! - **An order's version** is a compare-and-set: `UPDATE orders .. IF version = ?`. A rider's
//!   current order is taken with `IF current_order_id = null` (or from an order that no longer
//!   holds the rider) and released with `IF current_order_id = <this order>`.
//! - **One change across tables** is written in an order that a replay converges from, because
//!   there is no transaction to roll back: lookup rows (a customer's orders, a restaurant's, a
//!   shard's open orders, an unpaid-order claim) are written *before* the row they point to and
//!   are checked against it on every read, so a crash leaves at most a pointer to nothing or to
//!   an order that moved on, which reads skip and the next write repairs. The rider's take is
//!   written before the order (undone if the order's compare-and-set fails), its release before
//!   the order too; the cart is cleared after the paid order is stored. Whatever a client was
//!   told was stored is stored: the answer comes after the order's own write.
//! - **Expiry** is a TTL: revoked tokens (until shortly after the token's own expiry) and
//!   idempotency keys (a day); the purges the node runs remove what is due before the TTL does.
//! - **Counts** for the admin statistics are counter columns, kept beside the writes that change
//!   them. Counters are not idempotent: a node killed between a write and its counter update
//!   leaves a count one off; the statistics are for watching, not accounting.
//!
//! ScyllaDB and Cassandra differ in what we rely on in one place: the result of a lightweight
//! transaction. ScyllaDB always answers `[applied]` with the current row; Cassandra sends the row
//! only when the condition failed. Only column 0 (`[applied]`) is read, and the current values,
//! when needed, by a serial read. ScyllaDB keyspaces are created with tablets off, because
//! lightweight transactions need it.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_store::{Backend, StoreError, Stores};

mod changes;
mod db;
mod marketplace;
mod orders;
mod payments;
mod riders;
pub mod schema;
mod stats;
mod tokens;
mod users;

use db::Db;
pub use db::{Consistency, ScyllaConfig};

/// Connects to the cluster, creates the keyspace when missing, brings the schema up to date
/// and returns every store over the one session.
pub async fn open(config: &ScyllaConfig) -> Result<Stores, StoreError> {
    let db = Db::connect(config).await?;
    schema::migrate(&db, config).await?;
    let store = Arc::new(ScyllaStore {
        db,
        origin: uuid::Uuid::new_v4(),
    });
    Ok(Stores {
        users: store.clone(),
        tokens: store.clone(),
        restaurants: store.clone(),
        menu: store.clone(),
        carts: store.clone(),
        addresses: store.clone(),
        orders: store.clone(),
        idempotency: store.clone(),
        riders: store.clone(),
        stats: store.clone(),
        payments: store.clone(),
        changes: store.clone(),
        backend: store,
    })
}

/// Every store trait over one CQL session.
pub(crate) struct ScyllaStore {
    db: Db,
    /// Stamped on the changes recorded through this store, so its feed can tell them apart.
    origin: uuid::Uuid,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl Backend for ScyllaStore {
    fn name(&self) -> &'static str {
        "scylla"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run("SELECT release_version FROM system.local", ())
            .await
            .map(drop)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every write is acknowledged by the cluster before its call returns: nothing is
        // buffered here. Later calls are refused.
        self.db.close();
        Ok(())
    }
}

impl ScyllaStore {
    /// The records a lookup partition points at, fetched in parallel; pointers to nothing (left
    /// by a write a crash cut short) are skipped.
    pub(crate) async fn follow<T, F, Fut>(
        &self,
        lookup: &str,
        key: impl scylla::serialize::row::SerializeRow,
        fetch: F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        let ids: Vec<(String,)> = self.db.rows(lookup, key).await?;
        let found =
            futures_util::future::try_join_all(ids.into_iter().map(|(id,)| fetch(id))).await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// Now, at the millisecond precision CQL timestamps keep, so a value handed back after a write
/// equals what a later read returns.
pub(crate) fn now_millis() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis_of(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Parses a stored value, calling a failure what it is: a corrupt record.
pub(crate) fn parse_col<T, E: std::fmt::Display>(
    what: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(raw).map_err(|err| StoreError::Corrupt(format!("{what} {raw:?}: {err}")))
}
