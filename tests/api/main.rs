//! Black-box tests of tomato: the real server on 127.0.0.1:0, spoken to over real HTTP. One test
//! binary for the whole suite keeps link times down.

mod admin;
mod auth;
mod batched;
mod campaign;
mod cli;
mod cluster;
mod contract;
mod cql;
mod crash;
mod dispatch;
mod edge;
mod google;
mod health;
mod helpers;
mod limits;
mod loadtest;
mod marketplace;
mod ops;
mod orders;
mod razorpay;
mod realtime;
mod riders;
mod shards;
mod sockets;
mod stripe;
mod uploads;
mod world;
