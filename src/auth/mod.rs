//! Who is calling: our access tokens, Google sign-in, the extractors that authenticate requests
//! and gate them by role, and the `/api/auth` routes.

pub mod cache;
pub mod extract;
pub mod google;
mod routes;
pub mod token;

pub use cache::AuthCache;
pub use extract::{AdminUser, AuthUser, CustomerUser, RiderUser, SellerUser};
pub use google::GoogleVerifier;
pub use routes::{UserView, router};
pub use token::{Claims, TokenKeys};
