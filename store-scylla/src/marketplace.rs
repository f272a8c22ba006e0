//! The marketplace over CQL: restaurants (claimed once per owner, verified ones by cell),
//! menus (a restaurant's items in the order added), carts (a customer's lines in one partition,
//! priced from the menu at read time) and addresses (a user's, newest first).
//!
//! A cart is read and written by its customer alone, so the cart rule is checked on the cart as
//! read and the line written without a transaction: two adds racing from one customer's two
//! devices may both land (as two requests would one after the other, but for the rule).

use async_trait::async_trait;
use scylla::DeserializeRow;
use time::OffsetDateTime;
use tomato_domain::{
    Address, AddressId, Cart, CartLine, CartLineId, LatLon, MenuItem, MenuItemId, Money,
    Restaurant, RestaurantId, UserId,
};
use tomato_store::{AddressStore, CartStore, Conflict, MenuStore, RestaurantStore, StoreError};

use crate::db::Cql;
use crate::{ScyllaStore, parse_col};

/// The one partition of restaurants and riders waiting for verification (a short list).
pub(crate) const PENDING: i32 = 0;

fn point(what: &str, lat: f64, lon: f64) -> Result<LatLon, StoreError> {
    LatLon::new(lat, lon).map_err(|err| StoreError::Corrupt(format!("{what}: {err}")))
}

#[derive(DeserializeRow)]
struct RestaurantRow {
    id: String,
    owner_id: String,
    name: String,
    description: String,
    image: Option<String>,
    phone: String,
    lat: f64,
    lon: f64,
    formatted_address: String,
    is_open: bool,
    is_verified: bool,
    created_at: OffsetDateTime,
}

impl RestaurantRow {
    fn into_restaurant(self) -> Result<Restaurant, StoreError> {
        Ok(Restaurant {
            id: parse_col("restaurant id", &self.id, str::parse)?,
            owner_id: parse_col("owner id", &self.owner_id, str::parse)?,
            location: point("restaurant", self.lat, self.lon)?,
            name: self.name,
            description: self.description,
            image: self.image,
            phone: self.phone,
            formatted_address: self.formatted_address,
            is_open: self.is_open,
            is_verified: self.is_verified,
            created_at: self.created_at,
        })
    }
}

const SELECT_RESTAURANT: Cql = cql!(
    "SELECT id, owner_id, name, description, image, phone, lat, lon, \
     formatted_address, is_open, is_verified, created_at FROM restaurants WHERE id = ?"
);

impl ScyllaStore {
    async fn restaurant(&self, id: &str) -> Result<Option<Restaurant>, StoreError> {
        self.db
            .row::<RestaurantRow>(SELECT_RESTAURANT, (id,))
            .await?
            .map(RestaurantRow::into_restaurant)
            .transpose()
    }

    /// Writes the pointer that makes a restaurant found: by its cell once verified, among the
    /// pending ones before. Idempotent.
    async fn point_at_restaurant(&self, id: &str) -> Result<(), StoreError> {
        let row: Option<(i64, bool)> = self
            .db
            .row(
                cql!("SELECT cell, is_verified FROM restaurants WHERE id = ?"),
                (id,),
            )
            .await?;
        match row {
            Some((cell, true)) => {
                self.db
                    .run(
                        cql!("INSERT INTO restaurants_by_cell (cell, restaurant_id) VALUES (?, ?)"),
                        (cell, id),
                    )
                    .await?
            }
            Some((_, false)) => {
                self.db
                    .run(
                        cql!(
                            "INSERT INTO restaurants_pending (bucket, restaurant_id) VALUES (?, ?)"
                        ),
                        (PENDING, id),
                    )
                    .await?
            }
            None => return Ok(()),
        };
        Ok(())
    }

    async fn restaurants(&self, ids: Vec<String>) -> Result<Vec<Restaurant>, StoreError> {
        let found = crate::bounded(ids, |id| async move { self.restaurant(&id).await }).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn item(&self, id: &str) -> Result<Option<MenuItem>, StoreError> {
        self.db
            .row::<ItemRow>(SELECT_ITEM, (id,))
            .await?
            .map(ItemRow::into_item)
            .transpose()
    }
}

#[async_trait]
impl RestaurantStore for ScyllaStore {
    async fn create(&self, r: &Restaurant, cell: u64) -> Result<(), StoreError> {
        // The row first, then the owner's claim, then the pointers that make it found. A crash
        // before the claim leaves a row nothing points at; after it, a restaurant whose
        // pointers the owner's next create repairs (it answers 409 all the same). The row is
        // written conditionally, as every write to it is: Paxos and plain timestamps never
        // meet on one cell (ScyllaDB issues #7975, #11442).
        let id = r.id.to_string();
        self.db
            .applied(
                cql!("INSERT INTO restaurants (id, owner_id, name, description, image, phone, lat, lon,
                    formatted_address, is_open, is_verified, created_at, cell)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
                (
                    id.as_str(),
                    r.owner_id.to_string(),
                    r.name.as_str(),
                    r.description.as_str(),
                    r.image.as_deref(),
                    r.phone.as_str(),
                    r.location.lat(),
                    r.location.lon(),
                    r.formatted_address.as_str(),
                    r.is_open,
                    r.is_verified,
                    tomato_domain::millis::to_ms(r.created_at),
                    // CQL bigints are signed; the cell's bits are kept as they are.
                    cell as i64,
                ),
            )
            .await?;
        let claim = crate::ProfileClaim {
            insert: cql!(
                "INSERT INTO restaurants_by_owner (owner_id, restaurant_id) VALUES (?, ?)
                 IF NOT EXISTS"
            ),
            holder: cql!("SELECT restaurant_id FROM restaurants_by_owner WHERE owner_id = ?"),
            row: cql!("SELECT id FROM restaurants WHERE id = ?"),
            take_over: cql!(
                "UPDATE restaurants_by_owner SET restaurant_id = ? WHERE owner_id = ?
                 IF restaurant_id = ?"
            ),
        };
        if let Some(holder) = self
            .claim_profile(&claim, &r.owner_id.to_string(), &id)
            .await?
        {
            // Nobody can reach this row: gone at once. The holder gets its pointers again, in
            // case its own create stopped before them.
            self.db
                .applied(
                    cql!("DELETE FROM restaurants WHERE id = ? IF EXISTS"),
                    (id.as_str(),),
                )
                .await?;
            self.point_at_restaurant(&holder).await?;
            return Err(StoreError::Conflict(Conflict::RestaurantExists));
        }
        self.point_at_restaurant(&id).await?;
        self.count("restaurants", 1).await;
        Ok(())
    }

    async fn get(&self, id: RestaurantId) -> Result<Option<Restaurant>, StoreError> {
        self.restaurant(&id.to_string()).await
    }

    async fn by_owner(&self, owner: UserId) -> Result<Option<Restaurant>, StoreError> {
        let claim: Option<(String,)> = self
            .db
            .row(
                cql!("SELECT restaurant_id FROM restaurants_by_owner WHERE owner_id = ?"),
                (owner.to_string(),),
            )
            .await?;
        match claim {
            Some((id,)) => self.restaurant(&id).await,
            None => Ok(None),
        }
    }

    async fn update(&self, r: &Restaurant) -> Result<(), StoreError> {
        // Only the columns the owner edits: a racing verification is never undone.
        let applied = self
            .db
            .applied(
                cql!("UPDATE restaurants SET name = ?, description = ?, image = ?, phone = ?, is_open = ?
                 WHERE id = ? IF EXISTS"),
                (
                    r.name.as_str(),
                    r.description.as_str(),
                    r.image.as_deref(),
                    r.phone.as_str(),
                    r.is_open,
                    r.id.to_string(),
                ),
            )
            .await?;
        if applied {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn verify(&self, id: RestaurantId) -> Result<Restaurant, StoreError> {
        let cell: Option<(i64,)> = self
            .db
            .row(
                cql!("SELECT cell FROM restaurants WHERE id = ?"),
                (id.to_string(),),
            )
            .await?;
        let (cell,) = cell.ok_or(StoreError::NotFound)?;
        // Searchable first, then verified: a crash in between leaves a pointer the search
        // checks against the row (and skips), never a verified restaurant nobody finds.
        self.db
            .run(
                cql!("INSERT INTO restaurants_by_cell (cell, restaurant_id) VALUES (?, ?)"),
                (cell, id.to_string()),
            )
            .await?;
        self.db
            .applied(
                cql!("UPDATE restaurants SET is_verified = true WHERE id = ? IF EXISTS"),
                (id.to_string(),),
            )
            .await?;
        self.db
            .run(
                cql!("DELETE FROM restaurants_pending WHERE bucket = ? AND restaurant_id = ?"),
                (PENDING, id.to_string()),
            )
            .await?;
        self.restaurant(&id.to_string())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn verified_in_cells(
        &self,
        cells: Vec<u64>,
        search: Option<String>,
    ) -> Result<Vec<Restaurant>, StoreError> {
        let ids: Vec<String> = crate::bounded(cells, |cell| async move {
            self.db
                .rows::<(String,)>(
                    cql!("SELECT restaurant_id FROM restaurants_by_cell WHERE cell = ?"),
                    (cell as i64,),
                )
                .await
        })
        .await?
        .into_iter()
        .flatten()
        .map(|(id,)| id)
        .collect();
        let search = search.map(|s| s.to_lowercase()).unwrap_or_default();
        let mut found: Vec<Restaurant> = self
            .restaurants(ids)
            .await?
            .into_iter()
            .filter(|r| r.is_verified && r.name.to_lowercase().contains(&search))
            .collect();
        found.sort_by_key(|r| r.id);
        Ok(found)
    }

    async fn pending(&self) -> Result<Vec<Restaurant>, StoreError> {
        let mut found: Vec<Restaurant> = self
            .follow(
                cql!("SELECT restaurant_id FROM restaurants_pending WHERE bucket = ?"),
                (PENDING,),
                |id| async move { self.restaurant(&id).await },
            )
            .await?
            .into_iter()
            .filter(|r| !r.is_verified)
            .collect();
        found.sort_by_key(|r| r.created_at);
        Ok(found)
    }
}

#[derive(DeserializeRow)]
struct ItemRow {
    id: String,
    restaurant_id: String,
    name: String,
    description: String,
    price: i64,
    image: Option<String>,
    category: Option<String>,
    is_available: bool,
}

impl ItemRow {
    fn into_item(self) -> Result<MenuItem, StoreError> {
        Ok(MenuItem {
            id: parse_col("item id", &self.id, str::parse)?,
            restaurant_id: parse_col("restaurant id", &self.restaurant_id, str::parse)?,
            name: self.name,
            description: self.description,
            price: Money::from_minor(self.price),
            image: self.image,
            category: self.category,
            is_available: self.is_available,
        })
    }
}

const SELECT_ITEM: Cql = cql!(
    "SELECT id, restaurant_id, name, description, price, image, category, \
     is_available FROM menu_items WHERE id = ?"
);

/// Conditional, as every write to an item is (its update and delete): one clock per cell.
const WRITE_ITEM: Cql = cql!(
    "INSERT INTO menu_items (id, restaurant_id, name, description, price, \
     image, category, is_available) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
);

fn item_values(
    item: &MenuItem,
) -> (
    String,
    String,
    &str,
    &str,
    i64,
    Option<&str>,
    Option<&str>,
    bool,
) {
    (
        item.id.to_string(),
        item.restaurant_id.to_string(),
        item.name.as_str(),
        item.description.as_str(),
        item.price.minor(),
        item.image.as_deref(),
        item.category.as_deref(),
        item.is_available,
    )
}

#[async_trait]
impl MenuStore for ScyllaStore {
    async fn create(&self, item: &MenuItem) -> Result<(), StoreError> {
        // The item first, then the menu's pointer to it: a pointer never points at nothing.
        self.db.applied(WRITE_ITEM, item_values(item)).await?;
        self.db
            .run(
                cql!("INSERT INTO menu_by_restaurant (restaurant_id, item_id) VALUES (?, ?)"),
                (item.restaurant_id.to_string(), item.id.to_string()),
            )
            .await?;
        Ok(())
    }

    async fn get(&self, id: MenuItemId) -> Result<Option<MenuItem>, StoreError> {
        self.item(&id.to_string()).await
    }

    async fn list(&self, restaurant: RestaurantId) -> Result<Vec<MenuItem>, StoreError> {
        self.follow(
            cql!("SELECT item_id FROM menu_by_restaurant WHERE restaurant_id = ?"),
            (restaurant.to_string(),),
            |id| async move { self.item(&id).await },
        )
        .await
    }

    async fn update(&self, item: &MenuItem) -> Result<(), StoreError> {
        let applied = self
            .db
            .applied(
                cql!(
                    "UPDATE menu_items SET name = ?, description = ?, price = ?, image = ?,
                    category = ?, is_available = ? WHERE id = ? IF EXISTS"
                ),
                (
                    item.name.as_str(),
                    item.description.as_str(),
                    item.price.minor(),
                    item.image.as_deref(),
                    item.category.as_deref(),
                    item.is_available,
                    item.id.to_string(),
                ),
            )
            .await?;
        if applied {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn delete(&self, id: MenuItemId) -> Result<(), StoreError> {
        let Some(item) = self.item(&id.to_string()).await? else {
            return Err(StoreError::NotFound);
        };
        // Carts first, then the menu's pointer, then the item: a crash leaves the item
        // listed and deletable again, never a cart line of a deleted dish.
        let holders: Vec<(String,)> = self
            .db
            .rows(
                cql!("SELECT user_id FROM carts_by_item WHERE item_id = ?"),
                (id.to_string(),),
            )
            .await?;
        for (user,) in holders {
            for line in self.cart_rows(&user).await? {
                if line.item_id == id.to_string() {
                    self.db
                        .run(
                            cql!("DELETE FROM cart_lines WHERE user_id = ? AND line_id = ?"),
                            (user.as_str(), line.line_id.as_str()),
                        )
                        .await?;
                }
            }
        }
        self.db
            .run(
                cql!("DELETE FROM carts_by_item WHERE item_id = ?"),
                (id.to_string(),),
            )
            .await?;
        self.db
            .run(
                cql!("DELETE FROM menu_by_restaurant WHERE restaurant_id = ? AND item_id = ?"),
                (item.restaurant_id.to_string(), id.to_string()),
            )
            .await?;
        self.db
            .applied(
                cql!("DELETE FROM menu_items WHERE id = ? IF EXISTS"),
                (id.to_string(),),
            )
            .await?;
        Ok(())
    }
}

/// A cart line as stored. A line is always written whole; a row without its item (an update
/// that raced the cart's clear, written by an older version) is a half row, which reads skip
/// and remove.
#[derive(DeserializeRow)]
pub(crate) struct LineRow {
    line_id: String,
    item_id: Option<String>,
    restaurant_id: Option<String>,
    quantity: Option<i32>,
}

/// A whole cart line.
struct Line {
    line_id: String,
    item_id: String,
    restaurant_id: String,
    quantity: i32,
}

impl ScyllaStore {
    /// The user's whole lines; half rows are removed on the way.
    async fn cart_rows(&self, user: &str) -> Result<Vec<Line>, StoreError> {
        let rows: Vec<LineRow> = self
            .db
            .rows(
                cql!("SELECT line_id, item_id, restaurant_id, quantity FROM cart_lines WHERE user_id = ?"),
                (user,),
            )
            .await?;
        let mut lines = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                LineRow {
                    line_id,
                    item_id: Some(item_id),
                    restaurant_id: Some(restaurant_id),
                    quantity: Some(quantity),
                } => lines.push(Line {
                    line_id,
                    item_id,
                    restaurant_id,
                    quantity,
                }),
                LineRow { line_id, .. } => crate::tidy(
                    "removing a half cart line",
                    self.db
                        .run(
                            cql!("DELETE FROM cart_lines WHERE user_id = ? AND line_id = ?"),
                            (user, line_id.as_str()),
                        )
                        .await,
                ),
            }
        }
        Ok(lines)
    }

    /// Writes a whole line, after the pointer that lets a dish's deletion find the cart: a
    /// write racing the cart's clear leaves a whole line (the change came last) or none, never
    /// a half row.
    async fn write_line(&self, user: &str, line: &Line) -> Result<(), StoreError> {
        self.db
            .run(
                cql!("INSERT INTO carts_by_item (item_id, user_id) VALUES (?, ?)"),
                (line.item_id.as_str(), user),
            )
            .await?;
        self.db
            .run(
                cql!(
                    "INSERT INTO cart_lines (user_id, line_id, item_id, restaurant_id, quantity)
                 VALUES (?, ?, ?, ?, ?)"
                ),
                (
                    user,
                    line.line_id.as_str(),
                    line.item_id.as_str(),
                    line.restaurant_id.as_str(),
                    line.quantity,
                ),
            )
            .await
            .map(drop)
    }

    /// The user's cart, priced from the menu as it is now; lines of dishes gone are left out.
    async fn read_cart(&self, user: UserId) -> Result<Cart, StoreError> {
        let rows = self.cart_rows(&user.to_string()).await?;
        let item_ids: Vec<String> = rows.iter().map(|row| row.item_id.clone()).collect();
        let items = crate::bounded(item_ids, |id| async move { self.item(&id).await }).await?;
        let mut cart = Cart::default();
        for (row, item) in rows.into_iter().zip(items) {
            let Some(item) = item else { continue };
            cart.restaurant_id = Some(parse_col("restaurant id", &row.restaurant_id, str::parse)?);
            cart.lines.push(CartLine {
                id: parse_col("cart line id", &row.line_id, str::parse)?,
                item_id: item.id,
                name: item.name,
                price: item.price,
                quantity: u32::try_from(row.quantity)
                    .map_err(|err| StoreError::Corrupt(format!("quantity: {err}")))?,
                is_available: item.is_available,
            });
        }
        Ok(cart)
    }

    /// Empties the user's cart.
    pub(crate) async fn clear_cart(&self, user: UserId) -> Result<(), StoreError> {
        let rows = self.cart_rows(&user.to_string()).await?;
        for row in &rows {
            self.db
                .run(
                    cql!("DELETE FROM carts_by_item WHERE item_id = ? AND user_id = ?"),
                    (row.item_id.as_str(), user.to_string()),
                )
                .await?;
        }
        self.db
            .run(
                cql!("DELETE FROM cart_lines WHERE user_id = ?"),
                (user.to_string(),),
            )
            .await?;
        Ok(())
    }
}

fn quantity_col(quantity: u32) -> Result<i32, StoreError> {
    i32::try_from(quantity).map_err(|_| StoreError::Invalid("quantity is too large".into()))
}

#[async_trait]
impl CartStore for ScyllaStore {
    async fn get(&self, user: UserId) -> Result<Cart, StoreError> {
        self.read_cart(user).await
    }

    async fn add(&self, user: UserId, item: &MenuItem, quantity: u32) -> Result<Cart, StoreError> {
        let cart = self.read_cart(user).await?;
        let total = cart.quantity_after_adding(item, quantity)?;
        let line = cart
            .lines
            .iter()
            .find(|line| line.item_id == item.id)
            .map_or_else(CartLineId::new, |line| line.id);
        self.write_line(
            &user.to_string(),
            &Line {
                line_id: line.to_string(),
                item_id: item.id.to_string(),
                restaurant_id: item.restaurant_id.to_string(),
                quantity: quantity_col(total)?,
            },
        )
        .await?;
        self.read_cart(user).await
    }

    async fn set_quantity(
        &self,
        user: UserId,
        line: CartLineId,
        quantity: u32,
    ) -> Result<Cart, StoreError> {
        let rows = self.cart_rows(&user.to_string()).await?;
        let Some(row) = rows.into_iter().find(|row| row.line_id == line.to_string()) else {
            return Err(StoreError::NotFound);
        };
        if quantity == 0 {
            self.db
                .run(
                    cql!("DELETE FROM cart_lines WHERE user_id = ? AND line_id = ?"),
                    (user.to_string(), line.to_string()),
                )
                .await?;
            self.db
                .run(
                    cql!("DELETE FROM carts_by_item WHERE item_id = ? AND user_id = ?"),
                    (row.item_id.as_str(), user.to_string()),
                )
                .await?;
        } else {
            self.write_line(
                &user.to_string(),
                &Line {
                    quantity: quantity_col(quantity)?,
                    ..row
                },
            )
            .await?;
        }
        self.read_cart(user).await
    }

    async fn clear(&self, user: UserId) -> Result<(), StoreError> {
        self.clear_cart(user).await
    }
}

#[derive(DeserializeRow)]
struct AddressRow {
    id: String,
    user_id: String,
    formatted_address: String,
    mobile: String,
    lat: f64,
    lon: f64,
    created_at: OffsetDateTime,
}

impl AddressRow {
    fn into_address(self) -> Result<Address, StoreError> {
        Ok(Address {
            id: parse_col("address id", &self.id, str::parse)?,
            user_id: parse_col("user id", &self.user_id, str::parse)?,
            location: point("address", self.lat, self.lon)?,
            formatted_address: self.formatted_address,
            mobile: self.mobile,
            created_at: self.created_at,
        })
    }
}

impl ScyllaStore {
    async fn address(&self, id: &str) -> Result<Option<Address>, StoreError> {
        self.db
            .row::<AddressRow>(
                cql!(
                    "SELECT id, user_id, formatted_address, mobile, lat, lon, created_at
                 FROM addresses WHERE id = ?"
                ),
                (id,),
            )
            .await?
            .map(AddressRow::into_address)
            .transpose()
    }
}

#[async_trait]
impl AddressStore for ScyllaStore {
    async fn create(&self, a: &Address) -> Result<(), StoreError> {
        self.db
            .run(
                cql!("INSERT INTO addresses (id, user_id, formatted_address, mobile, lat, lon, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (
                    a.id.to_string(),
                    a.user_id.to_string(),
                    a.formatted_address.as_str(),
                    a.mobile.as_str(),
                    a.location.lat(),
                    a.location.lon(),
                    tomato_domain::millis::to_ms(a.created_at),
                ),
            )
            .await?;
        self.db
            .run(
                cql!("INSERT INTO addresses_by_user (user_id, address_id) VALUES (?, ?)"),
                (a.user_id.to_string(), a.id.to_string()),
            )
            .await?;
        Ok(())
    }

    async fn get(&self, id: AddressId) -> Result<Option<Address>, StoreError> {
        self.address(&id.to_string()).await
    }

    async fn list(&self, user: UserId) -> Result<Vec<Address>, StoreError> {
        self.follow(
            cql!("SELECT address_id FROM addresses_by_user WHERE user_id = ?"),
            (user.to_string(),),
            |id| async move { self.address(&id).await },
        )
        .await
    }

    async fn delete(&self, user: UserId, id: AddressId) -> Result<(), StoreError> {
        match self.address(&id.to_string()).await? {
            Some(address) if address.user_id == user => {}
            _ => return Err(StoreError::NotFound),
        }
        self.db
            .run(
                cql!("DELETE FROM addresses_by_user WHERE user_id = ? AND address_id = ?"),
                (user.to_string(), id.to_string()),
            )
            .await?;
        self.db
            .run(
                cql!("DELETE FROM addresses WHERE id = ?"),
                (id.to_string(),),
            )
            .await?;
        Ok(())
    }
}
