//! Store traits of the marketplace: restaurants, menus, carts and addresses.

use async_trait::async_trait;
use tomato_domain::{
    Address, AddressId, Cart, CartLineId, MenuItem, MenuItemId, Restaurant, RestaurantId, UserId,
};

use crate::StoreError;

/// Restaurants, indexed by the coarse H3 cell of their location so nearby searches read a few
/// cells instead of every restaurant.
#[async_trait]
pub trait RestaurantStore: Send + Sync {
    /// Stores a new restaurant; a second one for the same owner is a conflict
    /// (`restaurant_exists`).
    async fn create(&self, restaurant: &Restaurant, cell: u64) -> Result<(), StoreError>;

    async fn get(&self, id: RestaurantId) -> Result<Option<Restaurant>, StoreError>;

    /// The restaurant this seller owns.
    async fn by_owner(&self, owner: UserId) -> Result<Option<Restaurant>, StoreError>;

    /// Overwrites the fields its owner edits (name, description, image, phone, open). Never
    /// touches verification, so an edit racing an admin's verification cannot undo it.
    async fn update(&self, restaurant: &Restaurant) -> Result<(), StoreError>;

    /// Marks the restaurant verified and returns it. Verifying twice is harmless.
    async fn verify(&self, id: RestaurantId) -> Result<Restaurant, StoreError>;

    /// Verified restaurants in any of `cells` whose name contains `search` (case-insensitive).
    async fn verified_in_cells(
        &self,
        cells: Vec<u64>,
        search: Option<String>,
    ) -> Result<Vec<Restaurant>, StoreError>;

    /// Restaurants waiting for an admin's verification, oldest first.
    async fn pending(&self) -> Result<Vec<Restaurant>, StoreError>;
}

/// Menu items.
#[async_trait]
pub trait MenuStore: Send + Sync {
    async fn create(&self, item: &MenuItem) -> Result<(), StoreError>;

    async fn get(&self, id: MenuItemId) -> Result<Option<MenuItem>, StoreError>;

    /// A restaurant's menu, in the order the items were added.
    async fn list(&self, restaurant: RestaurantId) -> Result<Vec<MenuItem>, StoreError>;

    async fn update(&self, item: &MenuItem) -> Result<(), StoreError>;

    /// Deletes the item and every cart line holding it (orders keep their own copies).
    async fn delete(&self, id: MenuItemId) -> Result<(), StoreError>;
}

/// Customers' carts. Lines are priced at read time from the menu, never from what was stored
/// when the line was added.
#[async_trait]
pub trait CartStore: Send + Sync {
    async fn get(&self, user: UserId) -> Result<Cart, StoreError>;

    /// Adds `quantity` of the item (to its line, if there is one). Conflicts:
    /// `cart_other_restaurant` when the cart holds another restaurant's dishes,
    /// `quantity_limit` when the line would exceed [`tomato_domain::marketplace::MAX_QUANTITY`].
    async fn add(&self, user: UserId, item: &MenuItem, quantity: u32) -> Result<Cart, StoreError>;

    /// Sets a line's quantity; 0 removes it. `NotFound` if the line is not this user's.
    async fn set_quantity(
        &self,
        user: UserId,
        line: CartLineId,
        quantity: u32,
    ) -> Result<Cart, StoreError>;

    async fn clear(&self, user: UserId) -> Result<(), StoreError>;
}

/// Customers' delivery addresses.
#[async_trait]
pub trait AddressStore: Send + Sync {
    async fn create(&self, address: &Address) -> Result<(), StoreError>;

    async fn get(&self, id: AddressId) -> Result<Option<Address>, StoreError>;

    /// The user's addresses, newest first.
    async fn list(&self, user: UserId) -> Result<Vec<Address>, StoreError>;

    /// Deletes the address; `NotFound` unless it is this user's.
    async fn delete(&self, user: UserId, id: AddressId) -> Result<(), StoreError>;
}
