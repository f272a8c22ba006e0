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
//!   is applied wins, the others read the winner. A profile's row is written before its claim,
//!   so a claim always points at a row (a row whose claim lost is nobody's, removed at once). An
//!   unpaid-order claim comes before its order and is stamped: it is taken over only once its
//!   order moved on, or never came and its writer has certainly given up (see `orders.rs`).
//! - **An order's version** is a compare-and-set: `UPDATE orders .. IF version = ?`. A rider's
//!   current order is taken with `IF current_order_id = null` (or from an order that no longer
//!   holds the rider, by the unpaid claim's rule) and released with
//!   `IF current_order_id = <this order>`.
//! - **One clock per cell.** Paxos writes and plain writes take their timestamps from different
//!   clocks, so a plain write can silently win over a later conditional one (ScyllaDB issues
//!   #7975, #11442). A row that any lightweight transaction writes (users, restaurants, menu
//!   items, riders, orders, claims) is written only by lightweight transactions, creation
//!   included; the one exception is a rider's position, soft state a rider re-sends.
//! - **One change across tables** is written in an order that a replay converges from, because
//!   there is no transaction to roll back: lookup rows (a customer's orders, a restaurant's, a
//!   shard's open orders) are written *before* the row they point to and are checked against it
//!   on every read, so a crash leaves at most a pointer to nothing or to an order that moved
//!   on, which reads skip and the next write repairs. The rider's take is written before the
//!   order (undone if the order's compare-and-set fails), its release before the order too; the
//!   cart is cleared after the paid order is stored. Whatever a client was told was stored is
//!   stored: the answer comes after the order's own write.
//! - **Bookkeeping after the write a request is about** (a lookup's tidying, the cart cleared
//!   after payment, a statistics counter, the change feed's record) is best effort: a failure
//!   is logged and the request's answer stands, since reads check what it tidies.
//! - **Expiry** is a TTL: revoked tokens (until shortly after the token's own expiry),
//!   idempotency keys (a day) and the change feed (an hour). Nodes run no periodic purge on
//!   this backend (it would only add a tombstone to each expired cell); the purges work when
//!   called.
//! - **Counts** for the admin statistics are counter columns, kept beside the writes that change
//!   them. Counters are not idempotent: a node killed between a write and its counter update
//!   leaves a count one off, and a counter update is never retried; the statistics are for
//!   watching, not accounting.
//! - **Errors a client can act on**: what the cluster may answer later (timeouts, overload,
//!   unavailable replicas, a server error) is `Unavailable`, a 503 with `Retry-After`; every
//!   failed call logs the driver's kind of error and the statement. Reads and plain writes are
//!   marked idempotent so the driver may retry them; no call waits longer than 25 s in all.
//!
//! ScyllaDB and Cassandra differ in what we rely on in one place: the result of a lightweight
//! transaction. ScyllaDB always answers `[applied]` with the current row; Cassandra sends the row
//! only when the condition failed. Only column 0 (`[applied]`) is read, and the current values,
//! when needed, by a serial read. ScyllaDB keyspaces are created with tablets off, because
//! lightweight transactions need it.

use std::sync::Arc;

use async_trait::async_trait;
use tomato_store::{Backend, StoreError, Stores};

// First, for its `cql!` macro.
#[macro_use]
mod db;
mod changes;
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
    db.prepare_all().await?;
    let store = Arc::new(ScyllaStore {
        db,
        origin: uuid::Uuid::new_v4(),
    });
    Ok(Stores::over(store))
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

    fn expires_by_itself(&self) -> bool {
        // Revocations, idempotency keys and the feed's rows are all written with a TTL.
        true
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run(cql!("SELECT release_version FROM system.local"), ())
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
        lookup: db::Cql,
        key: impl scylla::serialize::row::SerializeRow,
        fetch: F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        let ids: Vec<(String,)> = self.db.rows(lookup, key).await?;
        let found = bounded(ids, |(id,)| fetch(id)).await?;
        Ok(found.into_iter().flatten().collect())
    }
}

impl ScyllaStore {
    /// Claims `owner`'s one profile for `id` by the statements of `claim`, the profile's row
    /// being written already. Answers `None` when the
    /// claim is `id`'s (now, or from an earlier try of the same create), or the id of the
    /// profile that holds it. Rows are written before their claim, so a claim always points at a
    /// row; one that does not (left by a version that claimed first, then failed to write) is
    /// taken over with `IF <id_col> = <holder>`, so an owner is never locked out.
    pub(crate) async fn claim_profile(
        &self,
        claim: &ProfileClaim,
        owner: &str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        for _ in 0..4 {
            if self.db.applied(claim.insert, (owner, id)).await? {
                return Ok(None);
            }
            let holder: Vec<(String,)> = self.db.serial_rows(claim.holder, (owner,)).await?;
            let Some((holder,)) = holder.into_iter().next() else {
                continue;
            };
            if holder == id {
                return Ok(None);
            }
            let row: Option<(String,)> = self.db.row(claim.row, (&holder,)).await?;
            if row.is_some() {
                return Ok(Some(holder));
            }
            if self
                .db
                .applied(claim.take_over, (id, owner, &holder))
                .await?
            {
                return Ok(None);
            }
        }
        Err(StoreError::Unavailable(
            "the owner's profile claim keeps changing".into(),
        ))
    }
}

/// The statements of one kind of profile's claim (one per owner).
pub(crate) struct ProfileClaim {
    /// `INSERT INTO <claims> (<owner>, <id>) VALUES (?, ?) IF NOT EXISTS`
    pub(crate) insert: db::Cql,
    /// `SELECT <id> FROM <claims> WHERE <owner> = ?`, read at SERIAL.
    pub(crate) holder: db::Cql,
    /// `SELECT id FROM <rows> WHERE id = ?`: whether the holder's row exists.
    pub(crate) row: db::Cql,
    /// `UPDATE <claims> SET <id> = ? WHERE <owner> = ? IF <id> = ?`
    pub(crate) take_over: db::Cql,
}

/// At most this many statements of one call in flight at once: a fan-out of thousands (a month
/// of revenue quarters, a position snapshot of every rider, a long page of orders) would
/// otherwise queue on the connections and time out together.
pub(crate) const IN_FLIGHT: usize = 64;

/// Runs `each` over `items`, at most [`IN_FLIGHT`] at once, answering in the items' order.
pub(crate) async fn bounded<I, T, F, Fut>(items: I, each: F) -> Result<Vec<T>, StoreError>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(items)
        .map(each)
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// Bookkeeping after a request's own write has succeeded (a lookup's tidying, a cart cleared
/// after payment, a change recorded): a failure is logged and the request's answer stands,
/// since what it tidies is checked on read or repaired by the next write.
pub(crate) fn tidy<T>(what: &str, result: Result<T, StoreError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "{what} failed after the write it follows");
    }
}

/// Parses a stored value, calling a failure what it is: a corrupt record.
pub(crate) fn parse_col<T, E: std::fmt::Display>(
    what: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(raw).map_err(|err| StoreError::Corrupt(format!("{what} {raw:?}: {err}")))
}
