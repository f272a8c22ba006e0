//! The state every handler gets: cheap, cloneable handles to the node's parts.

use std::sync::Arc;

use tomato_store::Stores;

use crate::auth::{GoogleVerifier, TokenKeys};
use crate::config::Settings;
use crate::http::Metrics;

/// Handles to the node's settings, stores and services; cloning is a few reference counts.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub stores: Stores,
    pub tokens: Arc<TokenKeys>,
    pub google: Arc<GoogleVerifier>,
    pub metrics: Arc<Metrics>,
}
