//! The marketplace routes: restaurants (with their admin verification), menus, carts and
//! addresses.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod addresses;
mod cart;
mod menu;
mod restaurants;

pub use cart::CartView;
pub(crate) use restaurants::load as load_restaurant;

/// Every marketplace route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(restaurants::router())
        .merge(menu::router())
        .merge(cart::router())
        .merge(addresses::router())
}
