//! Rider profiles over CQL: by id, claimed once per user (`riders_by_user`), the ones waiting
//! for verification in one small partition. The profile, its flags and its current order are
//! only ever written by lightweight transactions (the current order by a compare-and-set, see
//! `orders.rs`). Positions are plain column writes: soft state, snapshots of what riders re-send
//! every few seconds; the only write of theirs a Paxos write can meet is the creation's.

use async_trait::async_trait;
use scylla::DeserializeRow;
use time::OffsetDateTime;
use tomato_domain::{LatLon, OrderId, Rider, RiderId, UserId};
use tomato_store::{Conflict, PositionSnapshot, RiderStore, StoreError};

use crate::db::Cql;
use crate::marketplace::PENDING;
use crate::{ScyllaStore, parse_col};
use tomato_domain::millis::to_ms;

#[derive(DeserializeRow)]
struct RiderRow {
    id: String,
    user_id: String,
    name: String,
    phone_number: String,
    aadhar_number: String,
    driving_license_number: String,
    picture: Option<String>,
    is_verified: bool,
    is_available: bool,
    lat: f64,
    lon: f64,
    last_seen_at: OffsetDateTime,
    current_order_id: Option<String>,
    created_at: OffsetDateTime,
}

impl RiderRow {
    fn into_rider(self) -> Result<Rider, StoreError> {
        Ok(Rider {
            id: parse_col("rider id", &self.id, str::parse)?,
            user_id: parse_col("user id", &self.user_id, str::parse)?,
            location: LatLon::new(self.lat, self.lon)
                .map_err(|err| StoreError::Corrupt(format!("rider {}: {err}", self.id)))?,
            name: self.name,
            phone_number: self.phone_number,
            aadhar_number: self.aadhar_number,
            driving_license_number: self.driving_license_number,
            picture: self.picture,
            is_verified: self.is_verified,
            is_available: self.is_available,
            last_seen_at: self.last_seen_at,
            current_order_id: self
                .current_order_id
                .map(|o| parse_col("order id", &o, str::parse::<OrderId>))
                .transpose()?,
            created_at: self.created_at,
        })
    }
}

/// A rider row's columns, for the statements that read or write it whole.
macro_rules! columns {
    () => {
        "id, user_id, name, phone_number, aadhar_number, driving_license_number, picture, \
         is_verified, is_available, lat, lon, last_seen_at, current_order_id, created_at"
    };
}

impl ScyllaStore {
    async fn rider(&self, id: &str) -> Result<Option<Rider>, StoreError> {
        self.db
            .row::<RiderRow>(
                cql!(concat!("SELECT ", columns!(), " FROM riders WHERE id = ?")),
                (id,),
            )
            .await?
            .map(RiderRow::into_rider)
            .transpose()
    }

    /// Lists a rider among those waiting for verification while it waits. Idempotent.
    async fn point_at_rider(&self, id: &str) -> Result<(), StoreError> {
        let row: Option<(bool,)> = self
            .db
            .row(cql!("SELECT is_verified FROM riders WHERE id = ?"), (id,))
            .await?;
        if row == Some((false,)) {
            self.db
                .run(
                    cql!("INSERT INTO riders_pending (bucket, rider_id) VALUES (?, ?)"),
                    (PENDING, id),
                )
                .await?;
        }
        Ok(())
    }

    /// Sets one flag of an existing rider (`set`: `UPDATE riders SET <flag> = ? WHERE id = ?
    /// IF EXISTS`) and returns the profile.
    async fn set_flag(&self, set: Cql, id: RiderId, value: bool) -> Result<Rider, StoreError> {
        let applied = self.db.applied(set, (value, id.to_string())).await?;
        if !applied {
            return Err(StoreError::NotFound);
        }
        self.rider(&id.to_string())
            .await?
            .ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl RiderStore for ScyllaStore {
    async fn create(&self, r: &Rider) -> Result<(), StoreError> {
        // As a restaurant's: the row (conditional, like every write to its flags and current
        // order), then the user's claim, then the pending pointer. A row whose claim is lost
        // is nobody's: removed at once, and skipped by `all` if a crash left it.
        let id = r.id.to_string();
        self.db
            .applied(
                cql!(concat!(
                    "INSERT INTO riders (",
                    columns!(),
                    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                )),
                (
                    id.as_str(),
                    r.user_id.to_string(),
                    r.name.as_str(),
                    r.phone_number.as_str(),
                    r.aadhar_number.as_str(),
                    r.driving_license_number.as_str(),
                    r.picture.as_deref(),
                    r.is_verified,
                    r.is_available,
                    r.location.lat(),
                    r.location.lon(),
                    to_ms(r.last_seen_at),
                    r.current_order_id.map(|o| o.to_string()),
                    to_ms(r.created_at),
                ),
            )
            .await?;
        let claim = crate::ProfileClaim {
            insert: cql!(
                "INSERT INTO riders_by_user (user_id, rider_id) VALUES (?, ?) IF NOT EXISTS"
            ),
            holder: cql!("SELECT rider_id FROM riders_by_user WHERE user_id = ?"),
            row: cql!("SELECT id FROM riders WHERE id = ?"),
            take_over: cql!(
                "UPDATE riders_by_user SET rider_id = ? WHERE user_id = ? IF rider_id = ?"
            ),
        };
        if let Some(holder) = self
            .claim_profile(&claim, &r.user_id.to_string(), &id)
            .await?
        {
            self.db
                .applied(
                    cql!("DELETE FROM riders WHERE id = ? IF EXISTS"),
                    (id.as_str(),),
                )
                .await?;
            self.point_at_rider(&holder).await?;
            return Err(StoreError::Conflict(Conflict::RiderExists));
        }
        self.point_at_rider(&id).await?;
        self.count("riders", 1).await;
        Ok(())
    }

    async fn get(&self, id: RiderId) -> Result<Option<Rider>, StoreError> {
        self.rider(&id.to_string()).await
    }

    async fn by_user(&self, user: UserId) -> Result<Option<Rider>, StoreError> {
        let claim: Option<(String,)> = self
            .db
            .row(
                cql!("SELECT rider_id FROM riders_by_user WHERE user_id = ?"),
                (user.to_string(),),
            )
            .await?;
        match claim {
            Some((id,)) => self.rider(&id).await,
            None => Ok(None),
        }
    }

    async fn pending(&self) -> Result<Vec<Rider>, StoreError> {
        let mut pending: Vec<Rider> = self
            .follow(
                cql!("SELECT rider_id FROM riders_pending WHERE bucket = ?"),
                (PENDING,),
                |id| async move { self.rider(&id).await },
            )
            .await?
            .into_iter()
            .filter(|r| !r.is_verified)
            .collect();
        pending.sort_by_key(|r| r.created_at);
        Ok(pending)
    }

    async fn verify(&self, id: RiderId) -> Result<Rider, StoreError> {
        let rider = self
            .set_flag(
                cql!("UPDATE riders SET is_verified = ? WHERE id = ? IF EXISTS"),
                id,
                true,
            )
            .await?;
        self.db
            .run(
                cql!("DELETE FROM riders_pending WHERE bucket = ? AND rider_id = ?"),
                (PENDING, id.to_string()),
            )
            .await?;
        Ok(rider)
    }

    async fn set_available(&self, id: RiderId, available: bool) -> Result<Rider, StoreError> {
        self.set_flag(
            cql!("UPDATE riders SET is_available = ? WHERE id = ? IF EXISTS"),
            id,
            available,
        )
        .await
    }

    async fn save_positions(&self, positions: Vec<PositionSnapshot>) -> Result<(), StoreError> {
        // One write per rider, in parallel, each routed to its replicas; no batch, because a
        // batch over many partitions only adds a coordinator hop.
        crate::bounded(positions, |p| async move {
            self.db
                .run(
                    cql!("UPDATE riders SET lat = ?, lon = ?, last_seen_at = ? WHERE id = ?"),
                    (
                        p.location.lat(),
                        p.location.lon(),
                        to_ms(p.seen_at),
                        p.rider.to_string(),
                    ),
                )
                .await
        })
        .await?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<Rider>, StoreError> {
        // At node start only, never on a request path: every profile, page by page, but the
        // rows a crash left between a row and its claim (nobody's).
        let claimed: std::collections::HashSet<String> = self
            .db
            .all_rows::<(String,)>(cql!("SELECT rider_id FROM riders_by_user"), ())
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        self.db
            .all_rows::<RiderRow>(cql!(concat!("SELECT ", columns!(), " FROM riders")), ())
            .await?
            .into_iter()
            .filter(|row| claimed.contains(&row.id))
            .map(RiderRow::into_rider)
            .collect()
    }
}
