//! Rider profiles in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, Row, params};
use tomato_domain::{LatLon, OrderId, Rider, RiderId, UserId};

use crate::{EmbeddedStore, from_millis, parse_col, to_millis};
use tomato_store::{Conflict, PositionSnapshot, RiderStore, StoreError};

/// Positions written per transaction of a snapshot: 1-2 ms of the writer's time.
pub(crate) const POSITIONS_PER_WRITE: usize = 400;

pub(crate) const COLUMNS: &str = "id, user_id, name, phone_number, aadhar_number, driving_license_number, \
    picture, is_verified, is_available, lat, lon, last_seen_at, current_order_id, created_at";

fn rider_row(row: &Row<'_>) -> rusqlite::Result<Result<Rider, StoreError>> {
    let id: String = row.get(0)?;
    let user: String = row.get(1)?;
    let (name, phone_number, aadhar_number, driving_license_number, picture) = (
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    );
    let (is_verified, is_available) = (row.get(7)?, row.get(8)?);
    let (lat, lon): (f64, f64) = (row.get(9)?, row.get(10)?);
    let last_seen: i64 = row.get(11)?;
    let order: Option<String> = row.get(12)?;
    let created: i64 = row.get(13)?;
    Ok((|| {
        Ok(Rider {
            id: parse_col("rider id", &id, str::parse)?,
            user_id: parse_col("user id", &user, str::parse)?,
            name,
            phone_number,
            aadhar_number,
            driving_license_number,
            picture,
            is_verified,
            is_available,
            location: LatLon::new(lat, lon)
                .map_err(|err| StoreError::Corrupt(format!("rider {id}: {err}")))?,
            last_seen_at: from_millis(last_seen)?,
            current_order_id: order
                .map(|o| parse_col("order id", &o, str::parse::<OrderId>))
                .transpose()?,
            created_at: from_millis(created)?,
        })
    })())
}

fn select(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Rider>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM riders {filter}"))?
        .query_map(params, rider_row)?
        .map(|row| row?)
        .collect()
}

/// Runs an update of one rider and returns the profile afterwards.
fn update_one(
    conn: &Connection,
    sql: &str,
    id: RiderId,
    value: &dyn rusqlite::ToSql,
) -> Result<Rider, StoreError> {
    conn.execute(sql, params![id.to_string(), value])?;
    select(conn, "WHERE id = ?1", [id.to_string()])?
        .pop()
        .ok_or(StoreError::NotFound)
}

#[async_trait]
impl RiderStore for EmbeddedStore {
    async fn create(&self, r: &Rider) -> Result<(), StoreError> {
        let r = r.clone();
        self.db
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO riders (id, user_id, name, phone_number, aadhar_number,
                        driving_license_number, picture, is_verified, is_available, lat, lon,
                        last_seen_at, current_order_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (user_id) DO NOTHING",
                    params![
                        r.id.to_string(),
                        r.user_id.to_string(),
                        r.name,
                        r.phone_number,
                        r.aadhar_number,
                        r.driving_license_number,
                        r.picture,
                        r.is_verified,
                        r.is_available,
                        r.location.lat(),
                        r.location.lon(),
                        to_millis(r.last_seen_at),
                        r.current_order_id.map(|o| o.to_string()),
                        to_millis(r.created_at),
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(Conflict::RiderExists));
                }
                Ok(())
            })
            .await
    }

    async fn get(&self, id: RiderId) -> Result<Option<Rider>, StoreError> {
        self.db
            .read(move |conn| Ok(select(conn, "WHERE id = ?1", [id.to_string()])?.pop()))
            .await
    }

    async fn by_user(&self, user: UserId) -> Result<Option<Rider>, StoreError> {
        self.db
            .read(move |conn| Ok(select(conn, "WHERE user_id = ?1", [user.to_string()])?.pop()))
            .await
    }

    async fn pending(&self) -> Result<Vec<Rider>, StoreError> {
        self.db
            .read(|conn| select(conn, "WHERE is_verified = 0 ORDER BY created_at", []))
            .await
    }

    async fn verify(&self, id: RiderId) -> Result<Rider, StoreError> {
        self.db
            .write(move |conn| {
                update_one(
                    conn,
                    "UPDATE riders SET is_verified = ?2 WHERE id = ?1",
                    id,
                    &true,
                )
            })
            .await
    }

    async fn set_available(&self, id: RiderId, available: bool) -> Result<Rider, StoreError> {
        self.db
            .write(move |conn| {
                update_one(
                    conn,
                    "UPDATE riders SET is_available = ?2 WHERE id = ?1",
                    id,
                    &available,
                )
            })
            .await
    }

    async fn save_positions(&self, positions: Vec<PositionSnapshot>) -> Result<(), StoreError> {
        // One transaction per chunk, each its own job on the writer: the whole snapshot in one
        // transaction held the writer ~100 ms at 19 000 riders, and every order move or payment
        // queued behind it waited that long (the p99.9 of ready -> offered). Between chunks the
        // writer serves whatever queued meanwhile. In id order, the table's order, a chunk
        // rewrites a few neighbouring pages instead of one page per rider. A crash part-way
        // leaves some riders at older positions, which soft state allows.
        let mut rest = positions;
        // A UUID's order is the order of its text, the table's key.
        rest.sort_unstable_by_key(|p| p.rider);
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(POSITIONS_PER_WRITE));
            let chunk = std::mem::replace(&mut rest, tail);
            self.db
                .write(move |conn| {
                    let tx = conn.transaction()?;
                    {
                        let mut update = tx.prepare_cached(
                            "UPDATE riders SET lat = ?2, lon = ?3, last_seen_at = ?4 WHERE id = ?1",
                        )?;
                        for p in &chunk {
                            update.execute(params![
                                p.rider.to_string(),
                                p.location.lat(),
                                p.location.lon(),
                                to_millis(p.seen_at)
                            ])?;
                        }
                    }
                    tx.commit()?;
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    async fn all(&self) -> Result<Vec<Rider>, StoreError> {
        self.db.read(|conn| select(conn, "", [])).await
    }
}
