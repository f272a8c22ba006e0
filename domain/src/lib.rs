//! tomato's domain: the values every other crate speaks (ids, roles, users) and the closed set of
//! error kinds they map their failures onto. No I/O lives here, and nothing here knows about HTTP,
//! SQL or actors; the dependency arrows point into this crate, never out of it.

pub mod error;
pub mod ids;
pub mod user;

pub use error::ErrorKind;
pub use ids::UserId;
pub use user::{Email, ParseError, PersonName, Role, User};
