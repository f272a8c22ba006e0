//! tomato, the node: configuration, the HTTP edge and its routes per domain, wiring, and the
//! command line. The binary in `main.rs` only parses arguments and calls into here, so tests
//! start exactly what users start.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod fault;
pub mod health;
pub mod http;
pub mod limits;
pub mod live;
pub mod marketplace;
pub mod media;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod realtime;
pub mod riders;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod uploads;

#[cfg(test)]
mod module_loops;

pub use config::Settings;
pub use startup::Application;
