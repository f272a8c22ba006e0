//! Orders and idempotent responses in SQLite. An order is stored whole, as JSON, next to the
//! columns its lists filter on: the actor always writes the complete order, so there are no
//! partial updates to express in SQL. A save is a compare-and-set on the `version` column
//! (and on `owner_epoch`, which a node taking the order's shard raises), and a rider's current order changes only from empty (take) or from this order (release), all in
//! the order's transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use tomato_domain::{Order, OrderId, RestaurantId, UserId};

use crate::{EmbeddedStore, to_millis};
use tomato_store::{
    Conflict, IDEMPOTENCY_CLAIM, IdempotencyStore, KeyClaim, OrderStore, Page, Refund,
    RestaurantOrderFilter, RiderOrder, SaveEffects, SavedResponse, ShardTaken, StoreError,
};

fn decode(data: &str) -> Result<Order, StoreError> {
    serde_json::from_str(data).map_err(|err| StoreError::Corrupt(format!("order json: {err}")))
}

fn encode(order: &Order) -> Result<String, StoreError> {
    serde_json::to_string(order).map_err(|err| StoreError::Backend(Box::new(err)))
}

/// An epoch as SQLite keeps it (signed; an epoch never comes near the limit).
fn epoch_col(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} is out of range")))
}

/// SQLite integers are signed; a version never comes near the limit.
fn version_col(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| StoreError::Invalid(format!("version {version} is out of range")))
}

/// One newest-first page: ids are UUIDv7, so descending id is descending creation time and the
/// last id of a page is the cursor of the next.
fn page(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    limit: usize,
) -> Result<Page<Order>, StoreError> {
    let sql = format!(
        "SELECT data FROM orders WHERE {filter} ORDER BY id DESC LIMIT {}",
        limit + 1
    );
    let mut orders = conn
        .prepare_cached(&sql)?
        .query_map(args, |row| row.get::<_, String>(0))?
        .map(|data| decode(&data?))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|order| order.id.to_string())
    } else {
        None
    };
    Ok(Page {
        items: orders,
        next_cursor,
    })
}

/// A cursor is the id of the last order of the previous page; anything else is refused with
/// `StoreError::Invalid`.
fn cursor_bound(cursor: Option<String>) -> Result<String, StoreError> {
    match cursor {
        None => Ok("~".into()), // sorts after every hyphenated hex id
        Some(cursor) => cursor
            .parse::<OrderId>()
            .map(|id| id.to_string())
            .map_err(|_| StoreError::Invalid("the cursor is not valid".into())),
    }
}

#[async_trait]
impl OrderStore for EmbeddedStore {
    async fn create(&self, order: &Order) -> Result<(), StoreError> {
        let data = encode(order)?;
        let order = order.clone();
        self.db
            .write(move |conn| {
                let result = conn.execute(
                    "INSERT INTO orders (id, user_id, restaurant_id, status, payment_status, data,
                        created_at, version, shard)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        order.id.to_string(),
                        order.user_id.to_string(),
                        order.restaurant_id.to_string(),
                        order.status.as_str(),
                        order.payment_status.as_str(),
                        data,
                        to_millis(order.created_at),
                        version_col(order.version)?,
                        order.shard
                    ],
                );
                match result {
                    Ok(_) => Ok(()),
                    Err(err)
                        if err.sqlite_error_code()
                            == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                    {
                        Err(StoreError::Conflict(Conflict::UnpaidOrderExists))
                    }
                    Err(err) => Err(err.into()),
                }
            })
            .await
    }

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached("SELECT data FROM orders WHERE id = ?1")?
                    .query_row([id.to_string()], |row| row.get::<_, String>(0))
                    .optional()?
                    .map(|data| decode(&data))
                    .transpose()
            })
            .await
    }

    async fn save(&self, order: &Order, effects: SaveEffects) -> Result<(), StoreError> {
        let data = encode(order)?;
        let order = order.clone();
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let id = order.id.to_string();
                let from = order.version.checked_sub(1).ok_or(StoreError::Stale)?;
                let epoch = effects.epoch.map(epoch_col).transpose()?;
                let changed = tx.execute(
                    "UPDATE orders SET status = ?2, payment_status = ?3, data = ?4, version = ?5,
                        owner_epoch = COALESCE(?7, owner_epoch)
                     WHERE id = ?1 AND version = ?6 AND (?7 IS NULL OR owner_epoch <= ?7)",
                    params![
                        id,
                        order.status.as_str(),
                        order.payment_status.as_str(),
                        data,
                        version_col(order.version)?,
                        version_col(from)?,
                        epoch
                    ],
                )?;
                if changed == 0 {
                    let fenced: Option<i64> = tx
                        .prepare_cached("SELECT owner_epoch FROM orders WHERE id = ?1")?
                        .query_row([&id], |row| row.get(0))
                        .optional()?;
                    return Err(match (fenced, epoch) {
                        (None, _) => StoreError::NotFound,
                        (Some(theirs), Some(mine)) if theirs > mine => StoreError::Fenced,
                        _ => StoreError::Stale,
                    });
                }
                if let Some(user) = effects.clear_cart_of {
                    tx.execute(
                        "DELETE FROM cart_lines WHERE user_id = ?1",
                        [user.to_string()],
                    )?;
                }
                match effects.rider_order {
                    Some(RiderOrder::Take { rider, order }) => {
                        let taken = tx.execute(
                            "UPDATE riders SET current_order_id = ?2
                             WHERE id = ?1 AND (current_order_id IS NULL OR current_order_id = ?2)",
                            params![rider.to_string(), order.to_string()],
                        )?;
                        if taken == 0 {
                            // Dropping the transaction rolls the order's write back too.
                            return Err(StoreError::RiderBusy);
                        }
                    }
                    Some(RiderOrder::Release { rider, order }) => {
                        tx.execute(
                            "UPDATE riders SET current_order_id = NULL
                             WHERE id = ?1 AND current_order_id = ?2",
                            params![rider.to_string(), order.to_string()],
                        )?;
                    }
                    None => {}
                }
                if effects.owe_refund {
                    crate::payments::owe(
                        &tx,
                        &Refund::owed(
                            order.id,
                            None,
                            order.total_amount.minor(),
                            OffsetDateTime::now_utc(),
                        ),
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn by_customer(
        &self,
        user: UserId,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError> {
        let bound = cursor_bound(cursor)?;
        self.db
            .read(move |conn| {
                page(
                    conn,
                    "user_id = ?1 AND id < ?2",
                    &[&user.to_string(), &bound],
                    limit,
                )
            })
            .await
    }

    async fn by_restaurant(
        &self,
        restaurant: RestaurantId,
        filter: RestaurantOrderFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError> {
        let bound = cursor_bound(cursor)?;
        let status = filter
            .status
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        self.db
            .read(move |conn| {
                page(
                    conn,
                    "restaurant_id = ?1 AND id < ?2
                     AND payment_status IN ('paid', 'refund_pending', 'refunded')
                     AND (?3 = '' OR status = ?3)",
                    &[&restaurant.to_string(), &bound, &status],
                    limit,
                )
            })
            .await
    }

    async fn take_shard(&self, shard: u32) -> Result<ShardTaken, StoreError> {
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let epoch: i64 = tx.query_row(
                    "INSERT INTO shard_epochs (shard, epoch) VALUES (?1, 1)
                     ON CONFLICT (shard) DO UPDATE SET epoch = epoch + 1
                     RETURNING epoch",
                    [shard],
                    |row| row.get(0),
                )?;
                tx.execute(
                    "UPDATE orders SET owner_epoch = ?2
                     WHERE shard = ?1 AND status NOT IN ('delivered', 'cancelled', 'expired')",
                    params![shard, epoch],
                )?;
                let open = tx
                    .prepare_cached(
                        "SELECT data FROM orders
                         WHERE shard = ?1 AND status NOT IN ('delivered', 'cancelled', 'expired')",
                    )?
                    .query_map([shard], |row| row.get::<_, String>(0))?
                    .map(|data| decode(&data?))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.commit()?;
                let epoch = u64::try_from(epoch)
                    .map_err(|_| StoreError::Corrupt(format!("shard epoch {epoch}")))?;
                Ok(ShardTaken { epoch, open })
            })
            .await
    }
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn get(
        &self,
        user: UserId,
        route: &str,
        key: &str,
    ) -> Result<Option<SavedResponse>, StoreError> {
        let (route, key) = (route.to_owned(), key.to_owned());
        self.db
            .read(move |conn| select_saved(conn, user, &route, &key))
            .await
    }

    async fn claim(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        request_hash: &str,
        holder: &str,
    ) -> Result<KeyClaim, StoreError> {
        let (route, key) = (route.to_owned(), key.to_owned());
        let (request_hash, holder) = (request_hash.to_owned(), holder.to_owned());
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let lapsed = now - i64::try_from(IDEMPOTENCY_CLAIM.as_millis()).unwrap_or(i64::MAX);
                // A fresh claim, or one whose caller has given up (a claim is a row whose
                // status is 0 and whose body names its holder).
                let claimed = conn.execute(
                    "INSERT INTO idempotency (user_id, route, key, request_hash, status, body,
                        created_at)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)
                     ON CONFLICT (user_id, route, key) DO UPDATE
                        SET request_hash = excluded.request_hash, body = excluded.body,
                            created_at = excluded.created_at
                        WHERE status = 0 AND created_at < ?7",
                    params![
                        user.to_string(),
                        route,
                        key,
                        request_hash,
                        holder,
                        now,
                        lapsed
                    ],
                )?;
                if claimed > 0 {
                    return Ok(KeyClaim::Ours);
                }
                match select_row(conn, user, &route, &key)? {
                    Some(row) if row.status == 0 => Ok(KeyClaim::Running {
                        request_hash: row.request_hash,
                    }),
                    Some(row) => Ok(KeyClaim::Answered(row)),
                    None => Err(StoreError::NotFound),
                }
            })
            .await
    }

    async fn settle(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
        response: SavedResponse,
    ) -> Result<SavedResponse, StoreError> {
        let (route, key, holder) = (route.to_owned(), key.to_owned(), holder.to_owned());
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                // Ours, or nobody's (a lapsed claim purged): the answer goes in. Another
                // caller's claim or answer stays.
                conn.execute(
                    "INSERT INTO idempotency (user_id, route, key, request_hash, status, body,
                        created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (user_id, route, key) DO UPDATE
                        SET request_hash = excluded.request_hash, status = excluded.status,
                            body = excluded.body, created_at = excluded.created_at
                        WHERE status = 0 AND body = ?8",
                    params![
                        user.to_string(),
                        route,
                        key,
                        response.request_hash,
                        response.status,
                        response.body,
                        now,
                        holder
                    ],
                )?;
                match select_row(conn, user, &route, &key)? {
                    Some(row) if row.status != 0 => Ok(row),
                    // Another caller took the lapsed claim over and is running it.
                    _ => Err(StoreError::Unavailable(
                        "the request's key was taken over while it ran".into(),
                    )),
                }
            })
            .await
    }

    async fn release(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let (route, key, holder) = (route.to_owned(), key.to_owned(), holder.to_owned());
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM idempotency
                     WHERE user_id = ?1 AND route = ?2 AND key = ?3 AND status = 0 AND body = ?4",
                    params![user.to_string(), route, key, holder],
                )?;
                Ok(())
            })
            .await
    }

    async fn purge(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.db
            .write(move |conn| {
                let gone = conn.execute(
                    "DELETE FROM idempotency WHERE created_at < ?1",
                    [to_millis(before)],
                )?;
                Ok(gone as u64)
            })
            .await
    }
}

/// The key's answer; none while it is only claimed.
fn select_saved(
    conn: &Connection,
    user: UserId,
    route: &str,
    key: &str,
) -> Result<Option<SavedResponse>, StoreError> {
    Ok(select_row(conn, user, route, key)?.filter(|row| row.status != 0))
}

/// The key's row: an answer, or a claim (status 0, its holder in `body`).
fn select_row(
    conn: &Connection,
    user: UserId,
    route: &str,
    key: &str,
) -> Result<Option<SavedResponse>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT request_hash, status, body FROM idempotency
             WHERE user_id = ?1 AND route = ?2 AND key = ?3",
        )?
        .query_row(params![user.to_string(), route, key], |row| {
            Ok(SavedResponse {
                request_hash: row.get(0)?,
                status: row.get(1)?,
                body: row.get(2)?,
            })
        })
        .optional()?)
}
