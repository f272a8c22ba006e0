//! The schema, designed per query, and its migrations. Each table serves named queries by
//! partition key; nothing is read with `ALLOW FILTERING` or a scan on a request path. Lookup
//! tables (`*_by_*`, claims) are written before the row they point to and checked against it on
//! read (see the crate's docs).
//!
//! Migrations are numbered and recorded in `schema_versions`; a node applies the ones missing at
//! start, under a lease row taken with a lightweight transaction so that nodes starting together
//! do not race one DDL against another (concurrent `CREATE TABLE` on two coordinators can leave
//! two table ids behind), and every statement is idempotent (`IF NOT EXISTS`), so a node killed
//! half-way simply runs the rest next time.

use std::time::Duration;

use tomato_store::StoreError;
use uuid::Uuid;

use crate::db::{Db, ScyllaConfig};

/// How long a node may hold the schema lease before another may take it.
const LEASE_TTL_S: i32 = 120;

/// Schema versions, oldest first. Never edit a shipped one: add the next.
pub const MIGRATIONS: &[&[&str]] = &[
    &[
        // Users: by id; e-mails are claimed once.
        "CREATE TABLE IF NOT EXISTS users (
        id text PRIMARY KEY, email text, name text, image text, role text,
        role_version bigint, created_at timestamp)",
        "CREATE TABLE IF NOT EXISTS users_by_email (email text PRIMARY KEY, user_id text)",
        // Revoked tokens live until shortly after the token's own expiry (TTL); the purge looks in
        // the hour buckets of recent expiries.
        "CREATE TABLE IF NOT EXISTS revoked_tokens (jti uuid PRIMARY KEY, expires_at timestamp)",
        "CREATE TABLE IF NOT EXISTS revoked_by_hour (
        hour timestamp, jti uuid, expires_at timestamp, PRIMARY KEY (hour, jti))",
        // Restaurants: by id, claimed once per owner, verified ones by H3 cell for the nearby
        // search, pending ones oldest first in one small partition.
        "CREATE TABLE IF NOT EXISTS restaurants (
        id text PRIMARY KEY, owner_id text, name text, description text, image text,
        phone text, lat double, lon double, formatted_address text, is_open boolean,
        is_verified boolean, created_at timestamp, cell bigint)",
        "CREATE TABLE IF NOT EXISTS restaurants_by_owner (owner_id text PRIMARY KEY, restaurant_id text)",
        "CREATE TABLE IF NOT EXISTS restaurants_by_cell (
        cell bigint, restaurant_id text, PRIMARY KEY (cell, restaurant_id))",
        "CREATE TABLE IF NOT EXISTS restaurants_pending (
        bucket int, restaurant_id text, PRIMARY KEY (bucket, restaurant_id))",
        // Menus: items by id, and a restaurant's items in the order added (ids are time-ordered).
        "CREATE TABLE IF NOT EXISTS menu_items (
        id text PRIMARY KEY, restaurant_id text, name text, description text, price bigint,
        image text, category text, is_available boolean)",
        "CREATE TABLE IF NOT EXISTS menu_by_restaurant (
        restaurant_id text, item_id text, PRIMARY KEY (restaurant_id, item_id))",
        // Carts: a customer's lines in the order added, and who holds an item (for its deletion).
        "CREATE TABLE IF NOT EXISTS cart_lines (
        user_id text, line_id text, item_id text, restaurant_id text, quantity int,
        PRIMARY KEY (user_id, line_id))",
        "CREATE TABLE IF NOT EXISTS carts_by_item (
        item_id text, user_id text, PRIMARY KEY (item_id, user_id))",
        // Addresses: by id, a user's newest first.
        "CREATE TABLE IF NOT EXISTS addresses (
        id text PRIMARY KEY, user_id text, formatted_address text, mobile text, lat double,
        lon double, created_at timestamp)",
        "CREATE TABLE IF NOT EXISTS addresses_by_user (
        user_id text, address_id text, PRIMARY KEY (user_id, address_id))
        WITH CLUSTERING ORDER BY (address_id DESC)",
        // Orders: the whole order by id with its version (the compare-and-set) and the columns the
        // lookups check; a customer's and a restaurant's newest first; a shard's open orders; one
        // unpaid order per customer; orders by day of placement for the statistics.
        "CREATE TABLE IF NOT EXISTS orders (
        id text PRIMARY KEY, user_id text, restaurant_id text, status text,
        payment_status text, version bigint, shard int, created_at timestamp, data text)",
        "CREATE TABLE IF NOT EXISTS orders_by_customer (
        user_id text, order_id text, PRIMARY KEY (user_id, order_id))
        WITH CLUSTERING ORDER BY (order_id DESC)",
        "CREATE TABLE IF NOT EXISTS orders_by_restaurant (
        restaurant_id text, order_id text, PRIMARY KEY (restaurant_id, order_id))
        WITH CLUSTERING ORDER BY (order_id DESC)",
        "CREATE TABLE IF NOT EXISTS open_orders (shard int, order_id text, PRIMARY KEY (shard, order_id))",
        "CREATE TABLE IF NOT EXISTS unpaid_orders (user_id text PRIMARY KEY, order_id text)",
        "CREATE TABLE IF NOT EXISTS order_counts (status text PRIMARY KEY, orders counter)",
        "CREATE TABLE IF NOT EXISTS revenue_by_quarter (
        quarter timestamp PRIMARY KEY, total counter, fees counter)",
        // Idempotent responses: a day (TTL), and by hour for the purge.
        "CREATE TABLE IF NOT EXISTS idempotency (
        user_id text, route text, key text, request_hash text, status int, body text,
        created_at timestamp, PRIMARY KEY ((user_id, route, key)))",
        "CREATE TABLE IF NOT EXISTS idempotency_by_hour (
        hour timestamp, user_id text, route text, key text, created_at timestamp,
        PRIMARY KEY (hour, user_id, route, key))",
        // Riders: by id (current order is compare-and-set), claimed once per user, pending ones.
        "CREATE TABLE IF NOT EXISTS riders (
        id text PRIMARY KEY, user_id text, name text, phone_number text, aadhar_number text,
        driving_license_number text, picture text, is_verified boolean, is_available boolean,
        lat double, lon double, last_seen_at timestamp, current_order_id text,
        created_at timestamp)",
        "CREATE TABLE IF NOT EXISTS riders_by_user (user_id text PRIMARY KEY, rider_id text)",
        "CREATE TABLE IF NOT EXISTS riders_pending (
        bucket int, rider_id text, PRIMARY KEY (bucket, rider_id))",
        // Totals of accounts, for the statistics.
        "CREATE TABLE IF NOT EXISTS totals (name text PRIMARY KEY, n counter)",
        // Payments: provider orders claimed once, found by our order (newest first); events once.
        "CREATE TABLE IF NOT EXISTS payment_orders (
        provider text, provider_order text, order_id text, payment_id text,
        PRIMARY KEY ((provider, provider_order)))",
        "CREATE TABLE IF NOT EXISTS payment_orders_by_order (
        provider text, order_id text, created_at timestamp, provider_order text,
        PRIMARY KEY ((provider, order_id), created_at, provider_order))
        WITH CLUSTERING ORDER BY (created_at DESC, provider_order ASC)",
        "CREATE TABLE IF NOT EXISTS payment_events (
        provider text, event_id text, received_at timestamp, PRIMARY KEY ((provider, event_id)))",
    ],
    &[
        // Refunds owed until the provider confirms them: the row by (order, payment), and the
        // lookup of all owed ones oldest first in one small partition (refunds are rare); who is
        // opening an order's provider order, for as long as the claim's TTL.
        "CREATE TABLE IF NOT EXISTS refunds (
        order_id text, payment text, amount bigint, created_at timestamp, attempts int,
        next_attempt_at timestamp, last_error text, PRIMARY KEY ((order_id, payment)))",
        "CREATE TABLE IF NOT EXISTS refunds_owed (
        bucket int, created_at timestamp, order_id text, payment text,
        PRIMARY KEY (bucket, created_at, order_id, payment))",
        "CREATE TABLE IF NOT EXISTS payment_openings (
        provider text, order_id text, claimed_at timestamp, PRIMARY KEY ((provider, order_id)))",
    ],
    &[
        // Admins made so by `auth.admin_emails` (not granted): demoted when the list drops
        // them.
        "CREATE TABLE IF NOT EXISTS config_admins (user_id text PRIMARY KEY)",
    ],
    &[
        // The change feed authentication caches follow: a partition per minute, rows in the
        // writer's clock order, gone after an hour (see `changes.rs`).
        "CREATE TABLE IF NOT EXISTS auth_changes (
        minute bigint, at timestamp, id uuid, origin uuid, user_id text, jti uuid,
        expires_at timestamp,
        PRIMARY KEY (minute, at, id))",
    ],
    &[
        // When a claim was taken: a claim whose order does not show it yet is left to its
        // writer for a grace period before another may take it over (see `orders.rs`).
        "ALTER TABLE unpaid_orders ADD claimed_at timestamp",
        "ALTER TABLE riders ADD current_order_at timestamp",
        // The change feed's rows all expire an hour after they are written: compacted by time
        // window, whole expired windows are dropped instead of read past as tombstones.
        "ALTER TABLE auth_changes WITH default_time_to_live = 3600 AND compaction = {
        'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'MINUTES',
        'compaction_window_size': 10}",
        // Queues whose entries are deleted when done, and whose every read checks an entry
        // against the row it points at (skipping, and removing, one that moved on): a
        // deletion that a replica missed and that comes back after its tombstone is purged
        // is harmless there, so their tombstones need not be kept for the default 10 days,
        // where a shard's takeover or an admin's list would step over all of them.
        "ALTER TABLE open_orders WITH gc_grace_seconds = 3600",
        "ALTER TABLE restaurants_pending WITH gc_grace_seconds = 3600",
        "ALTER TABLE riders_pending WITH gc_grace_seconds = 3600",
        "ALTER TABLE carts_by_item WITH gc_grace_seconds = 3600",
        "ALTER TABLE refunds_owed WITH gc_grace_seconds = 3600",
        // A restaurant's orders of one status, newest first: what a dashboard polls. Entries
        // move as orders do and every read checks them against the order, so tombstones
        // are kept an hour (see above). Filled for the orders already stored when this
        // version is applied (`backfill`).
        "CREATE TABLE IF NOT EXISTS orders_by_restaurant_status (
        restaurant_id text, status text, order_id text,
        PRIMARY KEY ((restaurant_id, status), order_id))
        WITH CLUSTERING ORDER BY (order_id DESC) AND gc_grace_seconds = 3600",
        // Counters spread over buckets (see `stats.rs`): the unbucketed tables above keep what
        // was counted before, and reads add both.
        "CREATE TABLE IF NOT EXISTS totals_by_bucket (
        name text, bucket int, n counter, PRIMARY KEY ((name, bucket)))",
        "CREATE TABLE IF NOT EXISTS order_counts_by_bucket (
        status text, bucket int, orders counter, PRIMARY KEY ((status, bucket)))",
        "CREATE TABLE IF NOT EXISTS revenue_by_quarter_bucket (
        quarter timestamp, bucket int, total counter, fees counter,
        PRIMARY KEY ((quarter, bucket)))",
    ],
    &[
        // The epoch fence (see `orders.rs`): each shard's epoch, raised by every node that
        // takes the shard, and the epoch under which each order was last written or fenced.
        "CREATE TABLE IF NOT EXISTS shard_epochs (shard int PRIMARY KEY, epoch bigint)",
        "ALTER TABLE orders ADD owner_epoch bigint",
    ],
];

/// Whether `name` is a keyspace name CQL takes unquoted.
pub fn valid_keyspace(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// Creates the keyspace when missing and applies missing migrations. Statements name their
/// tables in full (the session qualifies them), so no connection needs `USE`.
pub(crate) async fn migrate(db: &Db, config: &ScyllaConfig) -> Result<(), StoreError> {
    let keyspace = &config.keyspace;
    if !valid_keyspace(keyspace) {
        return Err(StoreError::Invalid(format!(
            "store.scylla.keyspace {keyspace:?} must be letters, digits and _, starting with a letter"
        )));
    }
    // ScyllaDB answers with a shard map; lightweight transactions need tablets off there.
    let scylla = db
        .session()
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .any(|node| node.sharder().is_some());
    let tablets = if scylla {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    db.ddl(&format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}{tablets}",
        config.replication_factor
    ))
    .await?;
    agree(db).await?;
    db.ddl("CREATE TABLE IF NOT EXISTS schema_versions (version int PRIMARY KEY, applied_at timestamp)")
        .await?;
    db.ddl("CREATE TABLE IF NOT EXISTS schema_lease (id int PRIMARY KEY, holder uuid)")
        .await?;
    agree(db).await?;
    let me = Uuid::new_v4();
    let mut waited = Duration::ZERO;
    while !db
        .applied(
            cql!("INSERT INTO schema_lease (id, holder) VALUES (0, ?) IF NOT EXISTS USING TTL ?"),
            (me, LEASE_TTL_S),
        )
        .await?
    {
        if waited > Duration::from_secs(LEASE_TTL_S.unsigned_abs().into()) {
            return Err(StoreError::Unavailable(
                "another node holds the schema lease".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += Duration::from_millis(500);
    }
    let outcome = apply_missing(db).await;
    // Let the next node in at once; the TTL frees it anyway if this node dies here.
    let _ = db
        .applied(
            cql!("DELETE FROM schema_lease WHERE id = 0 IF holder = ?"),
            (me,),
        )
        .await;
    outcome
}

async fn apply_missing(db: &Db) -> Result<(), StoreError> {
    let applied: Vec<(i32,)> = db
        .rows(cql!("SELECT version FROM schema_versions"), ())
        .await?;
    for (index, statements) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        if applied.iter().any(|(v,)| *v == version) {
            continue;
        }
        for statement in *statements {
            match db.ddl(statement).await {
                Ok(()) => {}
                // A column added by a node killed before it recorded the version: CQL has no
                // `ADD IF NOT EXISTS` on every database we run on.
                Err(err) if adds_a_column(statement) && names_an_existing_column(&err) => {}
                Err(err) => return Err(err),
            }
        }
        agree(db).await?;
        backfill(db, version).await?;
        db.run(
            cql!("INSERT INTO schema_versions (version, applied_at) VALUES (?, ?)"),
            (version, tomato_domain::millis::now_ms()),
        )
        .await?;
        tracing::info!(version, "store schema migrated");
    }
    Ok(())
}

/// The version whose `orders_by_restaurant_status` is filled from the orders stored before it.
pub const STATUS_LISTS: i32 = 5;

/// Fills what a version's new tables need from what is stored already: once, at the upgrade,
/// under the schema lease, page by page (a node killed half-way fills it again next time; the
/// writes are idempotent).
async fn backfill(db: &Db, version: i32) -> Result<(), StoreError> {
    if version != STATUS_LISTS {
        return Ok(());
    }
    let orders: Vec<(String, Option<String>, Option<String>)> = db
        .all_rows(cql!("SELECT id, restaurant_id, status FROM orders"), ())
        .await?;
    let listed = orders
        .into_iter()
        .filter_map(|(id, restaurant, status)| Some((id, restaurant?, status?)));
    crate::bounded(listed, |(id, restaurant, status)| async move {
        db.run(
            cql!(
                "INSERT INTO orders_by_restaurant_status (restaurant_id, status, order_id)
             VALUES (?, ?, ?)"
            ),
            (restaurant, status, id),
        )
        .await
    })
    .await?;
    Ok(())
}

fn adds_a_column(statement: &str) -> bool {
    statement.starts_with("ALTER TABLE") && statement.contains(" ADD ")
}

/// Whether a schema change was refused because the column is there already (Cassandra: "...
/// already exists"; ScyllaDB: "... conflicts with an existing column").
fn names_an_existing_column(err: &StoreError) -> bool {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.contains("already exist") || text.contains("existing column")
}

/// Waits until every node has the same schema, so the next statement finds what was created.
async fn agree(db: &Db) -> Result<(), StoreError> {
    db.session()
        .await_schema_agreement()
        .await
        .map(drop)
        .map_err(|err| StoreError::Unavailable(format!("schema agreement: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_are_checked() {
        assert!(valid_keyspace("tomato"));
        assert!(valid_keyspace("t_2"));
        assert!(!valid_keyspace(""));
        assert!(!valid_keyspace("2t"));
        assert!(!valid_keyspace("a-b"));
        assert!(!valid_keyspace("x; DROP"));
        assert!(!valid_keyspace(&"a".repeat(49)));
    }
}
