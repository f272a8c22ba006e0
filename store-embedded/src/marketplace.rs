//! Restaurants, menus, carts and addresses in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tomato_domain::{
    Address, AddressId, Cart, CartLine, CartLineId, LatLon, MenuItem, MenuItemId, Money,
    Restaurant, RestaurantId, UserId,
};

use crate::{EmbeddedStore, from_millis, parse_col, to_millis};
use tomato_store::{AddressStore, CartStore, Conflict, MenuStore, RestaurantStore, StoreError};

const RESTAURANT_COLUMNS: &str = "id, owner_id, name, description, image, phone, lat, lon, \
    formatted_address, is_open, is_verified, created_at";

fn restaurant_row(row: &Row<'_>) -> rusqlite::Result<Result<Restaurant, StoreError>> {
    let id: String = row.get(0)?;
    let owner: String = row.get(1)?;
    let (lat, lon): (f64, f64) = (row.get(6)?, row.get(7)?);
    let created_at: i64 = row.get(11)?;
    let (name, description, image, phone, formatted_address, is_open, is_verified) = (
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
    );
    Ok((|| {
        Ok(Restaurant {
            id: parse_col("restaurant id", &id, str::parse)?,
            owner_id: parse_col("owner id", &owner, str::parse)?,
            name,
            description,
            image,
            phone,
            location: LatLon::new(lat, lon)
                .map_err(|err| StoreError::Corrupt(format!("restaurant {id} location: {err}")))?,
            formatted_address,
            is_open,
            is_verified,
            created_at: from_millis(created_at)?,
        })
    })())
}

fn select_restaurants(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Restaurant>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {RESTAURANT_COLUMNS} FROM restaurants {filter}"
    ))?
    .query_map(params, restaurant_row)?
    .map(|row| row?)
    .collect()
}

#[async_trait]
impl RestaurantStore for EmbeddedStore {
    async fn create(&self, r: &Restaurant, cell: u64) -> Result<(), StoreError> {
        let r = r.clone();
        self.db
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO restaurants (id, owner_id, name, description, image, phone, lat,
                        lon, formatted_address, is_open, is_verified, created_at, cell)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT (owner_id) DO NOTHING",
                    params![
                        r.id.to_string(),
                        r.owner_id.to_string(),
                        r.name,
                        r.description,
                        r.image,
                        r.phone,
                        r.location.lat(),
                        r.location.lon(),
                        r.formatted_address,
                        r.is_open,
                        r.is_verified,
                        to_millis(r.created_at),
                        // SQLite integers are signed; the cell's bits are kept as they are.
                        cell as i64,
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(Conflict::RestaurantExists));
                }
                Ok(())
            })
            .await
    }

    async fn get(&self, id: RestaurantId) -> Result<Option<Restaurant>, StoreError> {
        self.db
            .read(
                move |conn| Ok(select_restaurants(conn, "WHERE id = ?1", [id.to_string()])?.pop()),
            )
            .await
    }

    async fn by_owner(&self, owner: UserId) -> Result<Option<Restaurant>, StoreError> {
        self.db
            .read(move |conn| {
                Ok(select_restaurants(conn, "WHERE owner_id = ?1", [owner.to_string()])?.pop())
            })
            .await
    }

    async fn update(&self, r: &Restaurant) -> Result<(), StoreError> {
        let r = r.clone();
        self.db
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE restaurants SET name = ?2, description = ?3, image = ?4, phone = ?5,
                        is_open = ?6
                     WHERE id = ?1",
                    params![
                        r.id.to_string(),
                        r.name,
                        r.description,
                        r.image,
                        r.phone,
                        r.is_open
                    ],
                )?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn verify(&self, id: RestaurantId) -> Result<Restaurant, StoreError> {
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE restaurants SET is_verified = 1 WHERE id = ?1",
                    [id.to_string()],
                )?;
                select_restaurants(conn, "WHERE id = ?1", [id.to_string()])?
                    .pop()
                    .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn verified_in_cells(
        &self,
        cells: Vec<u64>,
        search: Option<String>,
    ) -> Result<Vec<Restaurant>, StoreError> {
        let cells: Vec<String> = cells.iter().map(|c| (*c as i64).to_string()).collect();
        let cells = format!("[{}]", cells.join(","));
        // Matched here rather than in SQL: SQLite's lower() folds ASCII only, and names are
        // not (a search for "café" must find "CAFÉ").
        let search = search.map(|s| s.to_lowercase()).unwrap_or_default();
        let found = self
            .db
            .read(move |conn| {
                select_restaurants(
                    conn,
                    "WHERE is_verified = 1
                       AND cell IN (SELECT value FROM json_each(?1))",
                    params![cells],
                )
            })
            .await?;
        Ok(found
            .into_iter()
            .filter(|r| r.name.to_lowercase().contains(&search))
            .collect())
    }

    async fn pending(&self) -> Result<Vec<Restaurant>, StoreError> {
        self.db
            .read(|conn| select_restaurants(conn, "WHERE is_verified = 0 ORDER BY created_at", []))
            .await
    }
}

const ITEM_COLUMNS: &str =
    "id, restaurant_id, name, description, price, image, category, is_available";

fn item_row(row: &Row<'_>) -> rusqlite::Result<Result<MenuItem, StoreError>> {
    let id: String = row.get(0)?;
    let restaurant: String = row.get(1)?;
    let (name, description, price, image, category, is_available) = (
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    );
    Ok((|| {
        Ok(MenuItem {
            id: parse_col("item id", &id, str::parse)?,
            restaurant_id: parse_col("restaurant id", &restaurant, str::parse)?,
            name,
            description,
            price: Money::from_minor(price),
            image,
            category,
            is_available,
        })
    })())
}

#[async_trait]
impl MenuStore for EmbeddedStore {
    async fn create(&self, item: &MenuItem) -> Result<(), StoreError> {
        let item = item.clone();
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO menu_items (id, restaurant_id, name, description, price, image,
                        category, is_available)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        item.id.to_string(),
                        item.restaurant_id.to_string(),
                        item.name,
                        item.description,
                        item.price.minor(),
                        item.image,
                        item.category,
                        item.is_available
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn get(&self, id: MenuItemId) -> Result<Option<MenuItem>, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM menu_items WHERE id = ?1"
                ))?
                .query_row([id.to_string()], item_row)
                .optional()?
                .transpose()
            })
            .await
    }

    async fn list(&self, restaurant: RestaurantId) -> Result<Vec<MenuItem>, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM menu_items WHERE restaurant_id = ?1 ORDER BY rowid"
                ))?
                .query_map([restaurant.to_string()], item_row)?
                .map(|row| row?)
                .collect()
            })
            .await
    }

    async fn update(&self, item: &MenuItem) -> Result<(), StoreError> {
        let item = item.clone();
        self.db
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE menu_items SET name = ?2, description = ?3, price = ?4, image = ?5,
                        category = ?6, is_available = ?7
                     WHERE id = ?1",
                    params![
                        item.id.to_string(),
                        item.name,
                        item.description,
                        item.price.minor(),
                        item.image,
                        item.category,
                        item.is_available
                    ],
                )?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete(&self, id: MenuItemId) -> Result<(), StoreError> {
        self.db
            .write(move |conn| {
                // Cart lines go with it (ON DELETE CASCADE).
                let gone =
                    conn.execute("DELETE FROM menu_items WHERE id = ?1", [id.to_string()])?;
                if gone == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }
}

/// The user's cart, priced from the menu as it is now.
fn read_cart(conn: &Connection, user: UserId) -> Result<Cart, StoreError> {
    let mut restaurant = None;
    let lines = conn
        .prepare_cached(
            "SELECT c.id, c.item_id, m.name, m.price, c.quantity, m.is_available, c.restaurant_id
             FROM cart_lines c JOIN menu_items m ON m.id = c.item_id
             WHERE c.user_id = ?1 ORDER BY c.rowid",
        )?
        .query_map([user.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, bool>(5)?,
                row.get::<_, String>(6)?,
            ))
        })?
        .map(|row| {
            let (id, item, name, price, quantity, is_available, rest) = row?;
            restaurant = Some(parse_col("restaurant id", &rest, str::parse)?);
            Ok(CartLine {
                id: parse_col("cart line id", &id, str::parse)?,
                item_id: parse_col("item id", &item, str::parse)?,
                name,
                price: Money::from_minor(price),
                quantity,
                is_available,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Cart {
        restaurant_id: restaurant,
        lines,
    })
}

#[async_trait]
impl CartStore for EmbeddedStore {
    async fn get(&self, user: UserId) -> Result<Cart, StoreError> {
        self.db.read(move |conn| read_cart(conn, user)).await
    }

    async fn add(&self, user: UserId, item: &MenuItem, quantity: u32) -> Result<Cart, StoreError> {
        let item = item.clone();
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let total = read_cart(&tx, user)?.quantity_after_adding(&item, quantity)?;
                tx.execute(
                    "INSERT INTO cart_lines (id, user_id, item_id, restaurant_id, quantity)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (user_id, item_id) DO UPDATE SET quantity = excluded.quantity",
                    params![
                        CartLineId::new().to_string(),
                        user.to_string(),
                        item.id.to_string(),
                        item.restaurant_id.to_string(),
                        total
                    ],
                )?;
                let cart = read_cart(&tx, user)?;
                tx.commit()?;
                Ok(cart)
            })
            .await
    }

    async fn set_quantity(
        &self,
        user: UserId,
        line: CartLineId,
        quantity: u32,
    ) -> Result<Cart, StoreError> {
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let changed = if quantity == 0 {
                    tx.execute(
                        "DELETE FROM cart_lines WHERE id = ?1 AND user_id = ?2",
                        params![line.to_string(), user.to_string()],
                    )?
                } else {
                    tx.execute(
                        "UPDATE cart_lines SET quantity = ?3 WHERE id = ?1 AND user_id = ?2",
                        params![line.to_string(), user.to_string(), quantity],
                    )?
                };
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                let cart = read_cart(&tx, user)?;
                tx.commit()?;
                Ok(cart)
            })
            .await
    }

    async fn clear(&self, user: UserId) -> Result<(), StoreError> {
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM cart_lines WHERE user_id = ?1",
                    [user.to_string()],
                )?;
                Ok(())
            })
            .await
    }
}

fn address_row(row: &Row<'_>) -> rusqlite::Result<Result<Address, StoreError>> {
    let id: String = row.get(0)?;
    let user: String = row.get(1)?;
    let (formatted_address, mobile) = (row.get(2)?, row.get(3)?);
    let (lat, lon, created_at): (f64, f64, i64) = (row.get(4)?, row.get(5)?, row.get(6)?);
    Ok((|| {
        Ok(Address {
            id: parse_col("address id", &id, str::parse)?,
            user_id: parse_col("user id", &user, str::parse)?,
            formatted_address,
            mobile,
            location: LatLon::new(lat, lon)
                .map_err(|err| StoreError::Corrupt(format!("address {id}: {err}")))?,
            created_at: from_millis(created_at)?,
        })
    })())
}

const ADDRESS_COLUMNS: &str = "id, user_id, formatted_address, mobile, lat, lon, created_at";

#[async_trait]
impl AddressStore for EmbeddedStore {
    async fn create(&self, address: &Address) -> Result<(), StoreError> {
        let a = address.clone();
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO addresses (id, user_id, formatted_address, mobile, lat, lon,
                        created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        a.id.to_string(),
                        a.user_id.to_string(),
                        a.formatted_address,
                        a.mobile,
                        a.location.lat(),
                        a.location.lon(),
                        to_millis(a.created_at)
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn get(&self, id: AddressId) -> Result<Option<Address>, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {ADDRESS_COLUMNS} FROM addresses WHERE id = ?1"
                ))?
                .query_row([id.to_string()], address_row)
                .optional()?
                .transpose()
            })
            .await
    }

    async fn list(&self, user: UserId) -> Result<Vec<Address>, StoreError> {
        self.db
            .read(move |conn| {
                // Ids are UUIDv7: descending id is newest first.
                conn.prepare_cached(&format!(
                    "SELECT {ADDRESS_COLUMNS} FROM addresses WHERE user_id = ?1 ORDER BY id DESC"
                ))?
                .query_map([user.to_string()], address_row)?
                .map(|row| row?)
                .collect()
            })
            .await
    }

    async fn delete(&self, user: UserId, id: AddressId) -> Result<(), StoreError> {
        self.db
            .write(move |conn| {
                let gone = conn.execute(
                    "DELETE FROM addresses WHERE id = ?1 AND user_id = ?2",
                    params![id.to_string(), user.to_string()],
                )?;
                if gone == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }
}
