//! tomato's domain: the values every other crate speaks (ids, roles, users, coordinates, money,
//! restaurants, carts, orders and their status machine, pricing) and the closed set of error
//! kinds they map their failures onto. No I/O lives here, and nothing here knows about HTTP, SQL
//! or actors; the dependency arrows point into this crate, never out of it.

pub mod error;
pub mod geo;
pub mod ids;
pub mod marketplace;
pub mod millis;
pub mod money;
pub mod order;
pub mod rider;
pub mod user;

pub use error::ErrorKind;
pub use geo::LatLon;
pub use ids::{AddressId, CartLineId, MenuItemId, OrderId, RestaurantId, RiderId, UserId};
pub use marketplace::{Address, Cart, CartLine, CartRule, MenuItem, Restaurant};
pub use money::Money;
pub use order::{
    DeliveryAddress, HistoryEntry, Order, OrderCommand, OrderLine, OrderStatus, PaymentMethod,
    PaymentStatus, Pricing, Quote, TransitionError,
};
pub use rider::Rider;
pub use user::{Email, ParseError, PersonName, Role, User};
