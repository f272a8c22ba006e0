//! tomato-load: the load-test harness. It plays a city against a running tomato node through
//! the public API only — riders streaming positions and delivering, customers ordering and
//! paying, sellers cooking — and reports rates, HDR latency percentiles, errors by kind and the
//! node's memory (`run`); and it compares tomato's nearest-rider path with Redis GEO and with
//! the bare ceiling of its own stack (`geo-compare`, pipelined or streamed as rider apps do).

pub mod api;
pub mod bare;
pub mod check;
pub mod city;
pub mod cli;
pub mod conn;
pub mod geo;
pub mod history;
pub mod nemesis;
pub mod nodes;
pub mod record;
pub mod report;
pub mod resp;
pub mod run;
pub mod setup;
pub mod stream;
pub mod usage;

pub use cli::{Command, Exit, parse_from, parse_or_exit};
pub use report::Report;
