//! Orders and idempotent responses over CQL.
//!
//! The order row holds the whole order (JSON, as the embedded store keeps it) with the columns
//! its lookups check: status, payment status, version, shard, and the epoch of its shard it was
//! last written or fenced under. A save is a compare-and-set on the version and, for a shard's
//! runner, on that epoch: a node taking a shard raises the shard's epoch (`shard_epochs`, by
//! lightweight transaction) and stamps each open order with it before resuming it, so a node
//! that ran the shard before writes none of them any more. Lookups (a customer's orders, a restaurant's, a shard's open orders) point at order
//! ids and are written before the order; every read checks the pointer against the order row,
//! so a pointer left by a crash is skipped (and, for open orders, removed).
//!
//! One unpaid order per customer is a claim row (`unpaid_orders`) taken with `IF NOT EXISTS`
//! before the order is written, stamped with when it was taken. A claim is taken over (with
//! `IF order_id = <that order>`) only when its order lets go of it: the order was paid or
//! cancelled (its release was cut short), or it was never written and its writer has given up
//! — the claim is older than [`CLAIM_GRACE`] and a serial read, which settles a write still in
//! flight, finds no unpaid order. A writer gives up by itself: it writes the order only within
//! [`WRITE_WITHIN`] of its claim. So two checkouts at once make one order, and a crash never
//! locks a customer out for longer than the grace. A rider's current order is taken much the
//! same way (`current_order_at` stamps the take), but what lets a take over happen is not the
//! grace: the order holding the rider is fenced first (its version moved on, so a save of it
//! still on its way is refused), and the grace only says how long that save is waited for.

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use tomato_domain::{Order, OrderId, OrderStatus, PaymentStatus, RestaurantId, RiderId, UserId};
use tomato_store::{
    Conflict, IDEMPOTENCY_CLAIM, IdempotencyStore, KeyClaim, OrderStore, Page, PaymentStore,
    Refund, RestaurantOrderFilter, RiderOrder, SaveEffects, SavedResponse, ShardTaken, StoreError,
};

use crate::ScyllaStore;
use crate::db::Cql;
use crate::tokens::{hour_of, ttl_until};

/// How long an idempotent response is kept: the node replays them for a day.
const IDEMPOTENCY_KEEP: Duration = Duration::hours(25);
/// How many lost claims of an unpaid order slot are retried before giving up.
const CLAIM_RETRIES: usize = 4;
/// How long a claim (an unpaid-order slot, a rider's take) whose order does not show it is
/// left to its writer before another writer may take it over.
const CLAIM_GRACE: Duration = Duration::seconds(60);
/// How long after its claim a writer may still write the order; past it, it gives up without
/// writing. With the order's own write bounded by the session's call timeout (25 s), nothing
/// lands after [`CLAIM_GRACE`], when the claim may have been taken over.
const WRITE_WITHIN: Duration = Duration::seconds(30);

/// The quarter hour `at` falls in: the bucket of the revenue counters.
pub(crate) fn quarter_of(at: OffsetDateTime) -> OffsetDateTime {
    let hour = hour_of(at);
    hour + Duration::minutes(i64::from(at.minute() / 15 * 15))
}

fn decode(data: &str) -> Result<Order, StoreError> {
    serde_json::from_str(data).map_err(|err| StoreError::Corrupt(format!("order json: {err}")))
}

fn encode(order: &Order) -> Result<String, StoreError> {
    serde_json::to_string(order).map_err(|err| StoreError::Backend(Box::new(err)))
}

fn unpaid(order: &Order) -> bool {
    order.status == OrderStatus::Placed && order.payment_status == PaymentStatus::Pending
}

fn version_col(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::Invalid("order version overflow".into()))
}

fn epoch_col(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} is out of range")))
}

fn shard_col(shard: u32) -> Result<i32, StoreError> {
    i32::try_from(shard).map_err(|_| StoreError::Invalid("shard out of range".into()))
}

fn cursor_bound(cursor: Option<String>) -> Result<Option<String>, StoreError> {
    cursor
        .map(|cursor| {
            cursor
                .parse::<OrderId>()
                .map(|id| id.to_string())
                .map_err(|_| StoreError::Invalid("the cursor is not valid".into()))
        })
        .transpose()
}

/// Whether the order a rider is taken for lets go of it.
enum Fence {
    /// It does (finished, or fenced out): the rider may be taken over.
    Free,
    /// It does not: the rider is busy.
    Held,
    /// It was written meanwhile: look again.
    Moved,
}

impl ScyllaStore {
    pub(crate) async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let row: Option<(String,)> = self
            .db
            .row(cql!("SELECT data FROM orders WHERE id = ?"), (id,))
            .await?;
        row.map(|(data,)| decode(&data)).transpose()
    }

    /// The order as a serial read sees it: any lightweight transaction on its row that was
    /// under way is decided first, so an order not found here can no longer be written by a
    /// writer that has given up.
    async fn order_settled(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let row: Vec<(String,)> = self
            .db
            .serial_rows(cql!("SELECT data FROM orders WHERE id = ?"), (id,))
            .await?;
        row.into_iter()
            .next()
            .map(|(data,)| decode(&data))
            .transpose()
    }

    /// Whether a claim made at `claimed_at` for an order that does not show it may be taken
    /// over: only once its writer has certainly given up (no stamp: a claim from before stamps,
    /// long given up).
    fn past_grace(claimed_at: Option<OffsetDateTime>) -> bool {
        claimed_at.is_none_or(|at| OffsetDateTime::now_utc() - at > CLAIM_GRACE)
    }

    /// Takes the customer's unpaid-order slot for `order`, answering when the claim was made.
    async fn claim_unpaid(
        &self,
        user: UserId,
        order: OrderId,
    ) -> Result<OffsetDateTime, StoreError> {
        for _ in 0..CLAIM_RETRIES {
            let now = tomato_domain::millis::now_ms();
            if self
                .db
                .applied(
                    cql!(
                        "INSERT INTO unpaid_orders (user_id, order_id, claimed_at) VALUES (?, ?, ?)
                     IF NOT EXISTS"
                    ),
                    (user.to_string(), order.to_string(), now),
                )
                .await?
            {
                return Ok(now);
            }
            let holder: Vec<(String, Option<OffsetDateTime>)> = self
                .db
                .serial_rows(
                    cql!("SELECT order_id, claimed_at FROM unpaid_orders WHERE user_id = ?"),
                    (user.to_string(),),
                )
                .await?;
            let Some((holder, claimed_at)) = holder.into_iter().next() else {
                continue;
            };
            if holder == order.to_string() {
                return Ok(claimed_at.unwrap_or(now));
            }
            let free = match self.order(&holder).await? {
                Some(held) => !unpaid(&held),
                // Not written (yet): its writer may still be on its way.
                None => {
                    Self::past_grace(claimed_at)
                        && self
                            .order_settled(&holder)
                            .await?
                            .is_none_or(|o| !unpaid(&o))
                }
            };
            if !free {
                return Err(StoreError::Conflict(Conflict::UnpaidOrderExists));
            }
            if self
                .db
                .applied(
                    cql!(
                        "UPDATE unpaid_orders SET order_id = ?, claimed_at = ? WHERE user_id = ?
                     IF order_id = ?"
                    ),
                    (order.to_string(), now, user.to_string(), holder.as_str()),
                )
                .await?
            {
                return Ok(now);
            }
        }
        Err(StoreError::Unavailable(
            "the customer's unpaid order keeps changing".into(),
        ))
    }

    /// Makes `rider` carry `order`: from nothing, from this order already, or from an order
    /// that lets go of the rider — finished (a release a crash cut short), or not holding the
    /// rider past [`CLAIM_GRACE`] (a take whose order's save never came). Otherwise
    /// `RiderBusy`. Answers the stamp of this call's claim, which it gives back
    /// ([`Self::give_back`]) if its save fails.
    async fn take_rider(
        &self,
        rider: RiderId,
        order: OrderId,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        for _ in 0..CLAIM_RETRIES {
            let now = tomato_domain::millis::now_ms();
            if self
                .db
                .applied(
                    cql!(
                        "UPDATE riders SET current_order_id = ?, current_order_at = ? WHERE id = ?
                     IF current_order_id = null"
                    ),
                    (order.to_string(), now, rider.to_string()),
                )
                .await?
            {
                return Ok(Some(now));
            }
            let held: Vec<(Option<String>, Option<OffsetDateTime>)> = self
                .db
                .serial_rows(
                    cql!("SELECT current_order_id, current_order_at FROM riders WHERE id = ?"),
                    (rider.to_string(),),
                )
                .await?;
            let Some((held, taken_at)) = held.into_iter().next() else {
                return Err(StoreError::NotFound);
            };
            let Some(held) = held else { continue };
            if held == order.to_string() {
                // Already this order's, by an earlier writer of it (a former owner paused
                // mid-save, a save tried again): stamped anew, the claim is this writer's, and
                // the earlier writer's give-back (conditioned on its own stamp) no longer
                // frees it.
                if self
                    .db
                    .applied(
                        cql!(
                            "UPDATE riders SET current_order_at = ? WHERE id = ?
                         IF current_order_id = ? AND current_order_at = ?"
                        ),
                        (now, rider.to_string(), held.as_str(), taken_at),
                    )
                    .await?
                {
                    return Ok(Some(now));
                }
                continue;
            }
            let free = match self.order(&held).await? {
                // Finished orders are never written again.
                Some(o) if o.status.is_terminal() => Fence::Free,
                Some(o) if o.rider_id == Some(rider) => Fence::Held,
                // The order does not show the take (yet): its save may still be on its way.
                // It is left to that save for the grace (a wall clock, so only how soon the
                // rider is taken over rests on it), then fenced out.
                _ if Self::past_grace(taken_at) => self.fence_out(&held, rider).await?,
                _ => Fence::Held,
            };
            match free {
                Fence::Free => {}
                Fence::Held => return Err(StoreError::RiderBusy),
                Fence::Moved => continue,
            }
            // Conditioned on the claim seen: a writer of the held order that stamped the
            // claim anew since (its save, after the fence, is on its way) keeps the rider.
            let took_over = match taken_at {
                Some(at) => {
                    self.db
                        .applied(
                            cql!(
                                "UPDATE riders SET current_order_id = ?, current_order_at = ?
                             WHERE id = ? IF current_order_id = ? AND current_order_at = ?"
                            ),
                            (order.to_string(), now, rider.to_string(), held.as_str(), at),
                        )
                        .await?
                }
                None => {
                    self.db
                        .applied(
                            cql!(
                                "UPDATE riders SET current_order_id = ?, current_order_at = ?
                             WHERE id = ? IF current_order_id = ? AND current_order_at = null"
                            ),
                            (order.to_string(), now, rider.to_string(), held.as_str()),
                        )
                        .await?
                }
            };
            if took_over {
                return Ok(Some(now));
            }
        }
        Err(StoreError::RiderBusy)
    }

    /// Makes sure that no save of the order `held` which took `rider` can land any more, so
    /// the rider may be taken from it: read at SERIAL (which decides a write still in flight),
    /// an order that shows the rider holds it; one that does not has its version moved on by
    /// one, nothing else changed, so a save still on its way — a paused writer's, or one whose
    /// clock is behind, conditioned on the version it read — is refused. This, not the
    /// grace, is what keeps two orders from naming one rider.
    async fn fence_out(&self, held: &str, rider: RiderId) -> Result<Fence, StoreError> {
        let Some(order) = self.order_settled(held).await? else {
            // Never written: a rider is taken only by a save of a written order.
            return Ok(Fence::Free);
        };
        if order.status.is_terminal() {
            return Ok(Fence::Free);
        }
        if order.rider_id == Some(rider) {
            return Ok(Fence::Held);
        }
        let from = order.version;
        let mut fenced = order;
        fenced.version = from.checked_add(1).ok_or(StoreError::Stale)?;
        let applied = self
            .db
            .applied(
                cql!("UPDATE orders SET data = ?, version = ? WHERE id = ? IF version = ?"),
                (
                    encode(&fenced)?,
                    version_col(fenced.version)?,
                    held,
                    version_col(from)?,
                ),
            )
            .await?;
        Ok(if applied { Fence::Free } else { Fence::Moved })
    }

    /// The compare-and-set of a save: over the version it started from and, for a writer
    /// running the order's shard under `epoch`, only while no later epoch has fenced the order
    /// (`stored`: the epoch it carried when read; none on a row from before epochs). Answers
    /// whether it applied.
    async fn write_fenced(
        &self,
        order: &Order,
        from: u64,
        epoch: Option<i64>,
        stored: Option<i64>,
    ) -> Result<bool, StoreError> {
        let id = order.id.to_string();
        let (status, payment, data) = (
            order.status.as_str(),
            order.payment_status.as_str(),
            encode(order)?,
        );
        let (version, from) = (version_col(order.version)?, version_col(from)?);
        match (epoch, stored) {
            (None, _) => {
                self.db
                    .applied(
                        cql!(
                            "UPDATE orders SET status = ?, payment_status = ?, data = ?, version = ?
                         WHERE id = ? IF version = ?"
                        ),
                        (status, payment, data, version, id.as_str(), from),
                    )
                    .await
            }
            (Some(mine), Some(_)) => {
                self.db
                    .applied(
                        cql!(
                        "UPDATE orders SET status = ?, payment_status = ?, data = ?, version = ?,
                            owner_epoch = ?
                         WHERE id = ? IF version = ? AND owner_epoch <= ?"
                    ),
                        (
                            status,
                            payment,
                            data,
                            version,
                            mine,
                            id.as_str(),
                            from,
                            mine,
                        ),
                    )
                    .await
            }
            (Some(mine), None) => {
                self.db
                    .applied(
                        cql!(
                        "UPDATE orders SET status = ?, payment_status = ?, data = ?, version = ?,
                            owner_epoch = ?
                         WHERE id = ? IF version = ? AND owner_epoch = null"
                    ),
                        (status, payment, data, version, mine, id.as_str(), from),
                    )
                    .await
            }
        }
    }

    /// Why a save's compare-and-set did not apply: a later epoch fenced the order
    /// ([`StoreError::Fenced`]) or another writer moved it on ([`StoreError::Stale`]).
    async fn why_not_written(
        &self,
        id: &str,
        epoch: Option<i64>,
    ) -> Result<StoreError, StoreError> {
        let Some(mine) = epoch else {
            return Ok(StoreError::Stale);
        };
        let now: Vec<(Option<i64>,)> = self
            .db
            .serial_rows(cql!("SELECT owner_epoch FROM orders WHERE id = ?"), (id,))
            .await?;
        Ok(match now.into_iter().next() {
            Some((Some(theirs),)) if theirs > mine => StoreError::Fenced,
            _ => StoreError::Stale,
        })
    }

    /// Raises `shard`'s epoch by one (from nothing, to 1) and answers it.
    async fn raise_epoch(&self, shard: u32) -> Result<u64, StoreError> {
        let shard = shard_col(shard)?;
        for _ in 0..CLAIM_RETRIES {
            let now: Vec<(i64,)> = self
                .db
                .serial_rows(
                    cql!("SELECT epoch FROM shard_epochs WHERE shard = ?"),
                    (shard,),
                )
                .await?;
            let (raised, applied) = match now.into_iter().next() {
                None => (
                    1,
                    self.db
                        .applied(
                            cql!(
                                "INSERT INTO shard_epochs (shard, epoch) VALUES (?, 1) IF NOT EXISTS"
                            ),
                            (shard,),
                        )
                        .await?,
                ),
                Some((epoch,)) => {
                    let raised = epoch.checked_add(1).ok_or_else(|| {
                        StoreError::Corrupt(format!("shard epoch {epoch} at its limit"))
                    })?;
                    (
                        raised,
                        self.db
                            .applied(
                                cql!(
                                    "UPDATE shard_epochs SET epoch = ? WHERE shard = ? IF epoch = ?"
                                ),
                                (raised, shard, epoch),
                            )
                            .await?,
                    )
                }
            };
            if applied {
                return u64::try_from(raised)
                    .map_err(|_| StoreError::Corrupt(format!("shard epoch {raised}")));
            }
        }
        Err(StoreError::Unavailable(
            "the shard's epoch keeps changing: another node is taking it".into(),
        ))
    }

    /// Fences the order `id` with `epoch` (its owner epoch raised to it, nothing else
    /// changed), so no save under an earlier epoch lands on it any more; answers the order as
    /// it is once fenced (finished orders, never written again, are answered as they are).
    /// [`StoreError::Fenced`] when a later epoch got there first.
    async fn fence_order(&self, id: &str, epoch: u64) -> Result<Option<Order>, StoreError> {
        let mine = epoch_col(epoch)?;
        for _ in 0..CLAIM_RETRIES {
            let row: Vec<(String, i64, Option<i64>)> = self
                .db
                .serial_rows(
                    cql!("SELECT data, version, owner_epoch FROM orders WHERE id = ?"),
                    (id,),
                )
                .await?;
            let Some((data, version, theirs)) = row.into_iter().next() else {
                return Ok(None);
            };
            let order = decode(&data)?;
            if order.status.is_terminal() {
                return Ok(Some(order));
            }
            let applied = match theirs {
                Some(theirs) if theirs > mine => return Err(StoreError::Fenced),
                // This take's own fence, whose answer was lost.
                Some(theirs) if theirs == mine => return Ok(Some(order)),
                Some(theirs) => {
                    self.db
                        .applied(
                            cql!(
                                "UPDATE orders SET owner_epoch = ? WHERE id = ?
                             IF version = ? AND owner_epoch = ?"
                            ),
                            (mine, id, version, theirs),
                        )
                        .await?
                }
                None => {
                    self.db
                        .applied(
                            cql!(
                                "UPDATE orders SET owner_epoch = ? WHERE id = ?
                             IF version = ? AND owner_epoch = null"
                            ),
                            (mine, id, version),
                        )
                        .await?
                }
            };
            if applied {
                return Ok(Some(order));
            }
        }
        Err(StoreError::Unavailable(
            "the order keeps changing while its shard is taken".into(),
        ))
    }

    /// Refuses to write an order whose claim (made at `claimed`) is so old that it may have
    /// been taken over by now.
    fn still_in_time(claimed: Option<OffsetDateTime>) -> Result<(), StoreError> {
        match claimed {
            Some(at) if OffsetDateTime::now_utc() - at > WRITE_WITHIN => Err(
                StoreError::Unavailable("the store was too slow to finish the write".into()),
            ),
            _ => Ok(()),
        }
    }

    /// Points the restaurant's list of the order's status at it (before the order is written
    /// in that status; the pointer of the status it leaves is removed after).
    async fn point_at_status(&self, order: &Order) -> Result<(), StoreError> {
        self.db
            .run(
                cql!(
                    "INSERT INTO orders_by_restaurant_status (restaurant_id, status, order_id)
                 VALUES (?, ?, ?)"
                ),
                (
                    order.restaurant_id.to_string(),
                    order.status.as_str(),
                    order.id.to_string(),
                ),
            )
            .await
            .map(drop)
    }

    /// Points the order's shard at it while it is not finished (before the order is written).
    async fn mark_open(&self, order: &Order) -> Result<(), StoreError> {
        if order.status.is_terminal() {
            return Ok(());
        }
        self.db
            .run(
                cql!("INSERT INTO open_orders (shard, order_id) VALUES (?, ?)"),
                (shard_col(order.shard)?, order.id.to_string()),
            )
            .await
            .map(drop)
    }

    /// Gives back a claim of `rider` for `order` stamped `at`, whose save did not happen:
    /// unless the order shows the rider (another writer of the order saved it with this
    /// claim), and only while the claim is still this one (not stamped anew by another
    /// writer of the order, nor taken by another order).
    async fn give_back(
        &self,
        rider: RiderId,
        order: OrderId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let shows = |o: &Order| o.rider_id == Some(rider) && !o.status.is_terminal();
        if self
            .order_settled(&order.to_string())
            .await?
            .is_some_and(|o| shows(&o))
        {
            return Ok(());
        }
        self.db
            .applied(
                cql!(
                    "UPDATE riders SET current_order_id = null WHERE id = ?
                 IF current_order_id = ? AND current_order_at = ?"
                ),
                (rider.to_string(), order.to_string(), at),
            )
            .await
            .map(drop)
    }

    /// Frees `rider` if it carries `order` (never an order taken since).
    async fn release_rider(&self, rider: RiderId, order: OrderId) -> Result<(), StoreError> {
        self.db
            .applied(
                cql!(
                    "UPDATE riders SET current_order_id = null WHERE id = ? IF current_order_id = ?"
                ),
                (rider.to_string(), order.to_string()),
            )
            .await
            .map(drop)
    }

    /// A newest-first page of the orders a lookup partition points at, keeping those `keep`
    /// accepts; pointers to nothing are skipped. `lookup` reads the partition's order ids
    /// (`.. WHERE <partition key> LIMIT ?`) from its start and after a cursor
    /// (`.. AND order_id < ? LIMIT ?`), its partition key bound to `key`.
    async fn page(
        &self,
        lookup: Lookup,
        key: &[String],
        cursor: Option<String>,
        limit: usize,
        keep: impl Fn(&Order) -> bool + Send,
    ) -> Result<Page<Order>, StoreError> {
        use scylla::value::CqlValue::{Int, Text};
        let mut bound = cursor_bound(cursor)?;
        let mut found = Vec::new();
        let batch = i32::try_from(limit.clamp(1, 500) + 1).unwrap_or(i32::MAX);
        loop {
            let mut values: Vec<_> = key.iter().cloned().map(Text).collect();
            let read = match &bound {
                None => lookup.first,
                Some(after) => {
                    values.push(Text(after.clone()));
                    lookup.after
                }
            };
            values.push(Int(batch));
            let ids: Vec<(String,)> = self.db.rows(read, values).await?;
            let exhausted = ids.len() < batch.unsigned_abs() as usize;
            bound = ids.last().map(|(id,)| id.clone());
            let orders =
                crate::bounded(ids.clone(), |(id,)| async move { self.order(&id).await }).await?;
            found.extend(orders.into_iter().flatten().filter(|o| keep(o)));
            if found.len() > limit || exhausted {
                break;
            }
        }
        let next_cursor = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|order| order.id.to_string())
        } else {
            None
        };
        Ok(Page {
            items: found,
            next_cursor,
        })
    }
}

#[async_trait]
impl OrderStore for ScyllaStore {
    async fn create(&self, order: &Order) -> Result<(), StoreError> {
        let data = encode(order)?;
        let id = order.id.to_string();
        let claimed = if unpaid(order) {
            Some(self.claim_unpaid(order.user_id, order.id).await?)
        } else {
            None
        };
        // Pointers first (reads check them against the order row), then the order.
        self.db
            .run(
                cql!("INSERT INTO orders_by_customer (user_id, order_id) VALUES (?, ?)"),
                (order.user_id.to_string(), id.as_str()),
            )
            .await?;
        self.db
            .run(
                cql!("INSERT INTO orders_by_restaurant (restaurant_id, order_id) VALUES (?, ?)"),
                (order.restaurant_id.to_string(), id.as_str()),
            )
            .await?;
        self.point_at_status(order).await?;
        self.mark_open(order).await?;
        Self::still_in_time(claimed)?;
        let created = self
            .db
            .applied(
                cql!("INSERT INTO orders (id, user_id, restaurant_id, status, payment_status, version,
                    shard, created_at, data, owner_epoch)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0) IF NOT EXISTS"),
                (
                    id.as_str(),
                    order.user_id.to_string(),
                    order.restaurant_id.to_string(),
                    order.status.as_str(),
                    order.payment_status.as_str(),
                    version_col(order.version)?,
                    shard_col(order.shard)?,
                    tomato_domain::millis::to_ms(order.created_at),
                    data,
                ),
            )
            .await?;
        if created {
            self.count_status(order.status, 1).await;
            if order.payment_status == PaymentStatus::Paid {
                self.count_revenue(order, 1).await;
            }
        }
        Ok(())
    }

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.order(&id.to_string()).await
    }

    async fn save(&self, order: &Order, effects: SaveEffects) -> Result<(), StoreError> {
        let from = order.version.checked_sub(1).ok_or(StoreError::Stale)?;
        let id = order.id.to_string();
        let epoch = effects.epoch.map(epoch_col).transpose()?;
        let stored: Option<(String, String, i64, Option<i64>)> = self
            .db
            .row(
                cql!(
                    "SELECT status, payment_status, version, owner_epoch FROM orders WHERE id = ?"
                ),
                (id.as_str(),),
            )
            .await?;
        let Some((old_status, old_payment, version, stored_epoch)) = stored else {
            return Err(StoreError::NotFound);
        };
        if let (Some(mine), Some(theirs)) = (epoch, stored_epoch)
            && theirs > mine
        {
            return Err(StoreError::Fenced);
        }
        if version != version_col(from)? {
            return Err(StoreError::Stale);
        }
        // Found in its new status's list before it is in that status (a pointer left by a save
        // that did not happen is skipped by reads, which check the order).
        if order.status.as_str() != old_status {
            self.point_at_status(order).await?;
        }
        // A rider taken before the order: a busy rider refuses the whole save before the order
        // is written. A rider let go is let go only after the order is written (below): freed
        // first, a save that then failed would leave the rider free while its order still
        // names it, and another order could take it.
        let took = match effects.rider_order {
            Some(RiderOrder::Take { rider, order }) => self
                .take_rider(rider, order)
                .await?
                .map(|at| (rider, order, at)),
            Some(RiderOrder::Release { .. }) | None => None,
        };
        self.mark_open(order).await?;
        if effects.owe_refund {
            // Before the order: the refund worker checks the order, and lets go of a refund
            // whose order never moved to refund_pending.
            self.owe_refund(&Refund::owed(
                order.id,
                None,
                order.total_amount.minor(),
                OffsetDateTime::now_utc(),
            ))
            .await?;
        }
        if let Some((rider, taken, at)) = took
            && let Err(late) = Self::still_in_time(Some(at))
        {
            self.give_back(rider, taken, at).await?;
            return Err(late);
        }
        let written = self.write_fenced(order, from, epoch, stored_epoch).await;
        let saved = match written {
            Ok(saved) => saved,
            // A timeout says nothing of whether the write happened: a serial read settles it
            // (it completes a proposal still in flight) before anything is undone.
            Err(lost) => match self.order_settled(&id).await {
                Ok(Some(now)) if now.version == order.version && now.status == order.status => true,
                Ok(Some(now)) if now.version == from => false,
                // Unsettled, or moved on by another writer: undo nothing (a rider taken for an
                // order that does not show it is freed by a later take past the grace) and
                // answer what it is, an outcome not known.
                _ => return Err(lost),
            },
        };
        if !saved {
            // Undo the take of a save that did not happen.
            if let Some((rider, taken, at)) = took {
                self.give_back(rider, taken, at).await?;
            }
            return Err(self.why_not_written(&id, epoch).await?);
        }
        if let Some(RiderOrder::Release { rider, order }) = effects.rider_order {
            // The order is written: a release that fails now leaves the rider pointing at a
            // finished order, which a take treats as free; tried again a few times so the
            // rider's profile reads free at once.
            let mut released = self.release_rider(rider, order).await;
            for _ in 1..CLAIM_RETRIES {
                if released.is_ok() {
                    break;
                }
                released = self.release_rider(rider, order).await;
            }
            crate::tidy("the rider's release", released);
        }
        // The order is stored and the request has succeeded: what follows only tidies
        // lookups, which reads check and skip (a claim of an order no longer unpaid is taken
        // over, an open-order pointer to a finished order is dropped), so a failure here is
        // logged and the answer stands.
        let old_status: OrderStatus = crate::parse_col("order status", &old_status, str::parse)?;
        let old_payment: PaymentStatus =
            crate::parse_col("payment status", &old_payment, str::parse)?;
        if old_status == OrderStatus::Placed
            && old_payment == PaymentStatus::Pending
            && !unpaid(order)
        {
            crate::tidy(
                "the unpaid-order claim's release",
                self.db
                    .applied(
                        cql!("DELETE FROM unpaid_orders WHERE user_id = ? IF order_id = ?"),
                        (order.user_id.to_string(), id.as_str()),
                    )
                    .await,
            );
        }
        if old_status != order.status {
            crate::tidy(
                "the old status's pointer's removal",
                self.db
                    .run(
                        cql!(
                            "DELETE FROM orders_by_restaurant_status
                         WHERE restaurant_id = ? AND status = ? AND order_id = ?"
                        ),
                        (
                            order.restaurant_id.to_string(),
                            old_status.as_str(),
                            id.as_str(),
                        ),
                    )
                    .await,
            );
        }
        if order.status.is_terminal() {
            crate::tidy(
                "the open-order pointer's removal",
                self.db
                    .run(
                        cql!("DELETE FROM open_orders WHERE shard = ? AND order_id = ?"),
                        (shard_col(order.shard)?, id.as_str()),
                    )
                    .await,
            );
        }
        if let Some(user) = effects.clear_cart_of {
            crate::tidy("the paid order's cart clear", self.clear_cart(user).await);
        }
        if old_status != order.status {
            self.count_status(old_status, -1).await;
            self.count_status(order.status, 1).await;
        }
        match (
            old_payment == PaymentStatus::Paid,
            order.payment_status == PaymentStatus::Paid,
        ) {
            (false, true) => self.count_revenue(order, 1).await,
            (true, false) => self.count_revenue(order, -1).await,
            _ => {}
        }
        Ok(())
    }

    async fn by_customer(
        &self,
        user: UserId,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError> {
        self.page(
            Lookup {
                first: cql!("SELECT order_id FROM orders_by_customer WHERE user_id = ? LIMIT ?"),
                after: cql!(
                    "SELECT order_id FROM orders_by_customer WHERE user_id = ? AND order_id < ?
                     LIMIT ?"
                ),
            },
            &[user.to_string()],
            cursor,
            limit,
            move |order| order.user_id == user,
        )
        .await
    }

    async fn by_restaurant(
        &self,
        restaurant: RestaurantId,
        filter: RestaurantOrderFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page<Order>, StoreError> {
        let keep = move |order: &Order| {
            order.restaurant_id == restaurant
                && order.payment_status.succeeded()
                && filter.status.is_none_or(|status| order.status == status)
        };
        match filter.status {
            // A dashboard's list of one status (its open orders, polled every few seconds)
            // reads that status's own lookup, not the restaurant's whole history.
            Some(status) => {
                self.page(
                    Lookup {
                        first: cql!(
                            "SELECT order_id FROM orders_by_restaurant_status
                             WHERE restaurant_id = ? AND status = ? LIMIT ?"
                        ),
                        after: cql!(
                            "SELECT order_id FROM orders_by_restaurant_status
                             WHERE restaurant_id = ? AND status = ? AND order_id < ? LIMIT ?"
                        ),
                    },
                    &[restaurant.to_string(), status.as_str().to_owned()],
                    cursor,
                    limit,
                    keep,
                )
                .await
            }
            None => {
                self.page(
                    Lookup {
                        first: cql!(
                            "SELECT order_id FROM orders_by_restaurant WHERE restaurant_id = ?
                             LIMIT ?"
                        ),
                        after: cql!(
                            "SELECT order_id FROM orders_by_restaurant WHERE restaurant_id = ?
                             AND order_id < ? LIMIT ?"
                        ),
                    },
                    &[restaurant.to_string()],
                    cursor,
                    limit,
                    keep,
                )
                .await
            }
        }
    }

    async fn take_shard(&self, shard: u32) -> Result<ShardTaken, StoreError> {
        let epoch = self.raise_epoch(shard).await?;
        // Page by page: a busy shard's partition holds a tombstone for each order finished
        // within `gc_grace_seconds` (an hour, see the schema).
        let ids: Vec<(String,)> = self
            .db
            .all_rows(
                cql!("SELECT order_id FROM open_orders WHERE shard = ?"),
                (shard_col(shard)?,),
            )
            .await?;
        let orders = crate::bounded(ids.clone(), |(id,)| async move {
            self.fence_order(&id, epoch).await
        })
        .await?;
        let mut open = Vec::new();
        for ((id,), order) in ids.iter().zip(orders) {
            match order {
                Some(order) if !order.status.is_terminal() && order.shard == shard => {
                    open.push(order);
                }
                // Written before an order that never came, or left by a finish cut short.
                Some(_) => {
                    self.db
                        .run(
                            cql!("DELETE FROM open_orders WHERE shard = ? AND order_id = ?"),
                            (shard_col(shard)?, id.as_str()),
                        )
                        .await?;
                }
                None => {}
            }
        }
        Ok(ShardTaken { epoch, open })
    }
}

#[async_trait]
impl IdempotencyStore for ScyllaStore {
    async fn get(
        &self,
        user: UserId,
        route: &str,
        key: &str,
    ) -> Result<Option<SavedResponse>, StoreError> {
        let row: Option<(String, i32, String)> = self
            .db
            .row(
                cql!(
                    "SELECT request_hash, status, body FROM idempotency
                 WHERE user_id = ? AND route = ? AND key = ?"
                ),
                (user.to_string(), route, key),
            )
            .await?;
        Ok(row.map(saved).transpose()?.filter(|row| row.status != 0))
    }

    async fn claim(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        request_hash: &str,
        holder: &str,
    ) -> Result<KeyClaim, StoreError> {
        let lease = i32::try_from(IDEMPOTENCY_CLAIM.as_secs()).unwrap_or(i32::MAX);
        for _ in 0..CLAIM_RETRIES {
            // A claim is the key's row with status 0 and its holder in `body`; it lapses by
            // itself (its TTL) when its caller dies half-way.
            if self
                .db
                .applied(
                    cql!(
                        "INSERT INTO idempotency (user_id, route, key, request_hash, status, body,
                        created_at) VALUES (?, ?, ?, ?, 0, ?, ?) IF NOT EXISTS USING TTL ?"
                    ),
                    (
                        user.to_string(),
                        route,
                        key,
                        request_hash,
                        holder,
                        tomato_domain::millis::now_ms(),
                        lease,
                    ),
                )
                .await?
            {
                return Ok(KeyClaim::Ours);
            }
            match self.key_row(user, route, key).await? {
                Some(row) if row.status == 0 => {
                    return Ok(KeyClaim::Running {
                        request_hash: row.request_hash,
                    });
                }
                Some(row) => return Ok(KeyClaim::Answered(row)),
                // The claim lapsed between the two: claim again.
                None => {}
            }
        }
        Err(StoreError::Unavailable(
            "the request's key keeps changing".into(),
        ))
    }

    async fn settle(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
        response: SavedResponse,
    ) -> Result<SavedResponse, StoreError> {
        let now = tomato_domain::millis::now_ms();
        let ttl = ttl_until(now + IDEMPOTENCY_KEEP);
        self.db
            .run(
                cql!(
                    "INSERT INTO idempotency_by_hour (hour, user_id, route, key, created_at)
                 VALUES (?, ?, ?, ?, ?) USING TTL ?"
                ),
                (hour_of(now), user.to_string(), route, key, now, ttl),
            )
            .await?;
        // Every column but the key is written again, so none keeps the claim's short TTL.
        let settled = self
            .db
            .applied(
                cql!(
                    "UPDATE idempotency USING TTL ? SET request_hash = ?, status = ?, body = ?,
                 created_at = ? WHERE user_id = ? AND route = ? AND key = ?
                 IF status = 0 AND body = ?"
                ),
                (
                    ttl,
                    response.request_hash.as_str(),
                    i32::from(response.status),
                    response.body.as_str(),
                    now,
                    user.to_string(),
                    route,
                    key,
                    holder,
                ),
            )
            .await?;
        if settled {
            return Ok(response);
        }
        // The claim lapsed (this caller was slower than the claim's lease): the answer goes in
        // only if nobody else claimed or answered the key meanwhile.
        let applied = self
            .db
            .applied(
                cql!("INSERT INTO idempotency (user_id, route, key, request_hash, status, body, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"),
                (
                    user.to_string(),
                    route,
                    key,
                    response.request_hash.as_str(),
                    i32::from(response.status),
                    response.body.as_str(),
                    now,
                    ttl,
                ),
            )
            .await?;
        if applied {
            return Ok(response);
        }
        match self.key_row(user, route, key).await? {
            Some(row) if row.status != 0 => Ok(row),
            _ => Err(StoreError::Unavailable(
                "the request's key was taken over while it ran".into(),
            )),
        }
    }

    async fn release(
        &self,
        user: UserId,
        route: &str,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.db
            .applied(
                cql!(
                    "DELETE FROM idempotency WHERE user_id = ? AND route = ? AND key = ?
                 IF status = 0 AND body = ?"
                ),
                (user.to_string(), route, key, holder),
            )
            .await
            .map(drop)
    }

    async fn purge(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        let mut hour = hour_of(before - IDEMPOTENCY_KEEP - Duration::hours(1));
        while hour <= before {
            let due: Vec<(String, String, String, OffsetDateTime)> = self
                .db
                .rows(
                    cql!("SELECT user_id, route, key, created_at FROM idempotency_by_hour WHERE hour = ?"),
                    (hour,),
                )
                .await?;
            for (user, route, key, created_at) in due {
                if created_at < before {
                    self.db
                        .applied(
                            cql!("DELETE FROM idempotency WHERE user_id = ? AND route = ? AND key = ?
                             IF EXISTS"),
                            (user.as_str(), route.as_str(), key.as_str()),
                        )
                        .await?;
                    self.db
                        .run(
                            cql!(
                                "DELETE FROM idempotency_by_hour
                             WHERE hour = ? AND user_id = ? AND route = ? AND key = ?"
                            ),
                            (hour, user.as_str(), route.as_str(), key.as_str()),
                        )
                        .await?;
                    purged += 1;
                }
            }
            hour += Duration::hours(1);
        }
        Ok(purged)
    }
}

impl ScyllaStore {
    /// The key's row read at serial (a claim or an answer), settling a write in flight.
    async fn key_row(
        &self,
        user: UserId,
        route: &str,
        key: &str,
    ) -> Result<Option<SavedResponse>, StoreError> {
        let rows: Vec<(String, i32, String)> = self
            .db
            .serial_rows(
                cql!(
                    "SELECT request_hash, status, body FROM idempotency
                 WHERE user_id = ? AND route = ? AND key = ?"
                ),
                (user.to_string(), route, key),
            )
            .await?;
        rows.into_iter().next().map(saved).transpose()
    }
}

fn saved((request_hash, status, body): (String, i32, String)) -> Result<SavedResponse, StoreError> {
    Ok(SavedResponse {
        request_hash,
        status: u16::try_from(status)
            .map_err(|err| StoreError::Corrupt(format!("saved status: {err}")))?,
        body,
    })
}

/// The two reads of a lookup partition's order ids, newest first: from its start, and after a
/// cursor.
struct Lookup {
    first: Cql,
    after: Cql,
}
