//! The HTTP kit every route uses: the error body, the JSON extractor, path and query parameters,
//! idempotency keys, the internal caller, request metrics, the middleware of the edge and the
//! completion of the OpenAPI document. The routes themselves, and their assembly into the
//! application, live with their domains and in [`crate::app`].

mod error;
pub mod fields;
pub mod idempotency;
mod internal;
pub mod json;
pub mod metrics;
pub mod middleware;
pub mod openapi;
mod params;
pub mod responses;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use internal::{HEADER as INTERNAL_KEY_HEADER, InternalCaller, InternalKey};
pub use json::Json;
pub use metrics::Metrics;
pub use params::{PageParams, Path, Query};
