//! The embedded backend: one SQLite file (`tomato.db`) under the data directory, in WAL mode,
//! migrated to the current schema at open. Zero set-up; the default for a single node.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite_migration::{M, Migrations};
use time::OffsetDateTime;

use tomato_store::{Backend, StoreError, Stores};
use uuid::Uuid;

mod changes;
mod db;
mod marketplace;
mod orders;
mod payments;
mod riders;
mod stats;
mod tokens;
mod users;

use db::Db;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tomato.db";

/// Read connections kept open; reads beyond this wait for one to come free.
const READERS: usize = 4;

/// Schema versions, oldest first. Never edit a shipped migration: add the next one.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE users (
        id TEXT PRIMARY KEY NOT NULL,
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        image TEXT,
        role TEXT NOT NULL,
        role_version INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);",
    ),
    M::up(
        "CREATE TABLE restaurants (
        id TEXT PRIMARY KEY NOT NULL,
        owner_id TEXT NOT NULL UNIQUE REFERENCES users (id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        image TEXT,
        phone TEXT NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        formatted_address TEXT NOT NULL,
        is_open INTEGER NOT NULL,
        is_verified INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        cell INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX restaurants_by_cell ON restaurants (cell) WHERE is_verified = 1;
    CREATE INDEX restaurants_pending ON restaurants (created_at) WHERE is_verified = 0;
    CREATE TABLE menu_items (
        id TEXT PRIMARY KEY NOT NULL,
        restaurant_id TEXT NOT NULL REFERENCES restaurants (id),
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        price INTEGER NOT NULL,
        image TEXT,
        category TEXT,
        is_available INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX menu_items_by_restaurant ON menu_items (restaurant_id);
    CREATE TABLE cart_lines (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id),
        item_id TEXT NOT NULL REFERENCES menu_items (id) ON DELETE CASCADE,
        restaurant_id TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        UNIQUE (user_id, item_id)
    ) STRICT;
    CREATE INDEX cart_lines_by_item ON cart_lines (item_id);
    CREATE TABLE addresses (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id),
        formatted_address TEXT NOT NULL,
        mobile TEXT NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX addresses_by_user ON addresses (user_id, id);
    CREATE TABLE orders (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        restaurant_id TEXT NOT NULL,
        status TEXT NOT NULL,
        payment_status TEXT NOT NULL,
        data TEXT NOT NULL
    ) STRICT;
    CREATE INDEX orders_by_customer ON orders (user_id, id);
    CREATE INDEX orders_by_restaurant ON orders (restaurant_id, id);
    CREATE INDEX orders_open ON orders (status)
        WHERE status NOT IN ('delivered', 'cancelled', 'expired');
    CREATE UNIQUE INDEX orders_one_unpaid ON orders (user_id)
        WHERE status = 'placed' AND payment_status = 'pending';
    CREATE TABLE idempotency (
        user_id TEXT NOT NULL,
        route TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, route, key)
    ) STRICT;
    CREATE INDEX idempotency_by_age ON idempotency (created_at);",
    ),
    M::up(
        "CREATE TABLE riders (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL UNIQUE REFERENCES users (id),
        name TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        aadhar_number TEXT NOT NULL,
        driving_license_number TEXT NOT NULL,
        picture TEXT,
        is_verified INTEGER NOT NULL,
        is_available INTEGER NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        last_seen_at INTEGER NOT NULL,
        current_order_id TEXT,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX riders_pending ON riders (created_at) WHERE is_verified = 0;",
    ),
    // When an order was placed, as a column, so a day's orders are found by index.
    M::up(
        "ALTER TABLE orders ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    UPDATE orders SET created_at =
        CAST(ROUND((julianday(json_extract(data, '$.createdAt')) - 2440587.5) * 86400000) AS INTEGER);
    CREATE INDEX orders_by_day ON orders (created_at);",
    ),
    M::up(
        "CREATE TABLE payment_orders (
        provider TEXT NOT NULL,
        provider_order TEXT NOT NULL,
        order_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (provider, provider_order)
    ) STRICT;
    CREATE INDEX payment_orders_by_order ON payment_orders (order_id);
    CREATE TABLE payment_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (provider, event_id)
    ) STRICT;",
    ),
    // The provider's payment id, which refunds need.
    M::up("ALTER TABLE payment_orders ADD COLUMN payment_id TEXT;"),
    // Fencing and shards: saves compare-and-set the version, and a node starting a shard loads
    // that shard's open orders by index. Orders stored before carry their version in the JSON
    // (0 when absent) and belong to shard 0 until re-placed.
    M::up(
        "ALTER TABLE orders ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
    UPDATE orders SET version = COALESCE(json_extract(data, '$.version'), 0),
        shard = COALESCE(json_extract(data, '$.shard'), 0);
    DROP INDEX orders_open;
    CREATE INDEX orders_open_by_shard ON orders (shard)
        WHERE status NOT IN ('delivered', 'cancelled', 'expired');",
    ),
    // Refunds owed until the provider confirms them (written with the order's move to
    // refund_pending), and who is opening an order's provider order.
    M::up(
        "CREATE TABLE refunds (
        order_id TEXT NOT NULL,
        payment TEXT NOT NULL,
        amount INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        PRIMARY KEY (order_id, payment)
    ) STRICT;
    CREATE INDEX refunds_by_age ON refunds (created_at, order_id, payment);
    CREATE TABLE payment_openings (
        provider TEXT NOT NULL,
        order_id TEXT NOT NULL,
        claimed_at INTEGER NOT NULL,
        PRIMARY KEY (provider, order_id)
    ) STRICT;",
    ),
    // Admins made so by `auth.admin_emails` (not granted): they stop being admins when the list
    // stops naming them.
    M::up("CREATE TABLE config_admins (user_id TEXT PRIMARY KEY NOT NULL) STRICT;"),
    // Riders kept in id order (WITHOUT ROWID), so a position snapshot sorted by id rewrites
    // neighbouring pages: in insertion order each chunk of it touched a page per rider and a
    // 19 000-rider snapshot wrote 4x the pages it does now (see `save_positions`).
    M::up(
        "CREATE TABLE riders_by_id (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL UNIQUE REFERENCES users (id),
        name TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        aadhar_number TEXT NOT NULL,
        driving_license_number TEXT NOT NULL,
        picture TEXT,
        is_verified INTEGER NOT NULL,
        is_available INTEGER NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        last_seen_at INTEGER NOT NULL,
        current_order_id TEXT,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO riders_by_id SELECT id, user_id, name, phone_number, aadhar_number,
        driving_license_number, picture, is_verified, is_available, lat, lon, last_seen_at,
        current_order_id, created_at FROM riders;
    DROP TABLE riders;
    ALTER TABLE riders_by_id RENAME TO riders;
    CREATE INDEX riders_pending ON riders (created_at) WHERE is_verified = 0;",
    ),
    // The change feed authentication caches follow (see `changes.rs`); `seq` is the order of
    // commits (AUTOINCREMENT: never reused, even after the newest rows are forgotten).
    M::up(
        "CREATE TABLE auth_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        origin TEXT NOT NULL,
        user_id TEXT,
        jti TEXT,
        expires_at INTEGER
    ) STRICT;
    CREATE INDEX auth_changes_by_time ON auth_changes (at);",
    ),
    // The epoch fence: each shard's epoch, raised by every node that takes the shard, and the
    // epoch under which each order was last written or fenced (0: none yet).
    M::up(
        "CREATE TABLE shard_epochs (
        shard INTEGER PRIMARY KEY NOT NULL,
        epoch INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE orders ADD COLUMN owner_epoch INTEGER NOT NULL DEFAULT 0;",
    ),
];

/// Opens (or creates) the embedded store under `data_dir` and migrates it.
pub fn open(data_dir: &Path) -> Result<Stores, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|err| {
        StoreError::Unavailable(format!("cannot create {}: {err}", data_dir.display()))
    })?;
    let db = Db::open(&data_dir.join(DB_FILE), READERS, |conn| {
        Migrations::from_slice(MIGRATIONS)
            .to_latest(conn)
            .map_err(|err| StoreError::Backend(Box::new(err)))
    })?;
    let store = Arc::new(EmbeddedStore {
        db,
        origin: Uuid::new_v4(),
    });
    Ok(Stores::over(store))
}

/// Every store trait implemented over one SQLite database.
#[derive(Debug)]
pub(crate) struct EmbeddedStore {
    db: Db,
    /// Stamped on the changes recorded through this store, so its feed can tell them apart.
    origin: Uuid,
}

#[async_trait]
impl Backend for EmbeddedStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?))
            .await
            .map(drop)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.db.close().await
    }
}

/// Timestamps are stored as Unix milliseconds: compact, ordered, and exact for what we keep.
fn to_millis(at: OffsetDateTime) -> i64 {
    tomato_domain::millis::unix_ms(at)
}

fn from_millis(millis: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|err| StoreError::Corrupt(format!("timestamp {millis}: {err}")))
}

/// Parses a stored value, calling a failure what it is: a corrupt record.
fn parse_col<T, E: std::fmt::Display>(
    what: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(raw).map_err(|err| StoreError::Corrupt(format!("{what} {raw:?}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS)
            .validate()
            .expect("migrations apply to an empty database");
    }

    #[tokio::test]
    async fn embedded_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = open(dir.path()).expect("open store");
        tomato_store::conformance::run(&stores).await;
        stores.backend.close().await.expect("close");
    }

    /// Riders stored before the table was kept in id order come through its rebuild whole.
    #[test]
    fn riders_survive_the_rebuild_in_id_order() {
        let migrations = Migrations::from_slice(MIGRATIONS);
        let mut conn = rusqlite::Connection::open_in_memory().expect("open");
        migrations
            .to_version(&mut conn, MIGRATIONS.len() - 1)
            .expect("the schema before the rebuild");
        conn.execute_batch(
            "INSERT INTO users (id, email, name, role, created_at)
                VALUES ('u1', 'r@example.com', 'Ravi', 'rider', 1);
             INSERT INTO riders VALUES ('r1', 'u1', 'Ravi', '+919845012345', '123456789012',
                'KA0120190001234', NULL, 0, 1, 12.97, 77.59, 5, 'o1', 1);",
        )
        .expect("a rider");
        let before = rider_rows(&conn);
        assert_eq!(before.len(), 1);
        assert!(before[0].contains("KA0120190001234"), "{before:?}");
        migrations.to_latest(&mut conn).expect("migrate");
        assert_eq!(rider_rows(&conn), before);
        let schema: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'riders'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert!(schema.contains("WITHOUT ROWID"), "{schema}");
        let pending: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'riders_pending'",
                [],
                |row| row.get(0),
            )
            .expect("index");
        assert_eq!(pending, 1);
    }

    fn rider_rows(conn: &rusqlite::Connection) -> Vec<String> {
        let mut select = conn
            .prepare(&format!(
                "SELECT json_array({}) FROM riders",
                riders::COLUMNS
            ))
            .expect("select");
        select
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// A snapshot larger than one write lands whole, however it is cut.
    #[tokio::test]
    async fn a_snapshot_of_many_riders_is_written_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = open(dir.path()).expect("open store");
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let mut snapshot = Vec::new();
        for n in 0..2 * riders::POSITIONS_PER_WRITE + 1 {
            let email = tomato_domain::Email::parse(&format!("r{n}@example.com")).expect("email");
            let user = stores.users.grant_admin(&email).await.expect("user");
            let rider = tomato_domain::Rider {
                id: tomato_domain::RiderId::new(),
                user_id: user.id,
                name: "Ravi".into(),
                phone_number: "+919845012345".into(),
                aadhar_number: "123456789012".into(),
                driving_license_number: "KA0120190001234".into(),
                picture: None,
                is_verified: true,
                is_available: true,
                location: tomato_domain::LatLon::new(12.97, 77.59).expect("point"),
                last_seen_at: at,
                current_order_id: None,
                created_at: at,
            };
            stores.riders.create(&rider).await.expect("rider");
            snapshot.push(tomato_store::PositionSnapshot {
                rider: rider.id,
                location: tomato_domain::LatLon::new(12.9 + n as f64 * 1e-4, 77.6).expect("point"),
                seen_at: at + time::Duration::seconds(n as i64),
            });
        }
        stores
            .riders
            .save_positions(snapshot.clone())
            .await
            .expect("snapshot");
        for position in snapshot {
            let rider = stores
                .riders
                .get(position.rider)
                .await
                .expect("get")
                .expect("rider");
            assert_eq!(
                (rider.location, rider.last_seen_at),
                (position.location, position.seen_at)
            );
        }
        stores.backend.close().await.expect("close");
    }

    #[tokio::test]
    async fn writes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = open(dir.path()).expect("open store");
        let email = tomato_domain::Email::parse("keep@example.com").expect("email");
        let user = stores.users.grant_admin(&email).await.expect("grant");
        stores.backend.close().await.expect("close");
        assert!(matches!(
            stores.users.get(user.id).await,
            Err(StoreError::Closed)
        ));

        let reopened = open(dir.path()).expect("reopen store");
        assert_eq!(reopened.users.get(user.id).await.expect("get"), Some(user));
        reopened.backend.close().await.expect("close");
    }
}
