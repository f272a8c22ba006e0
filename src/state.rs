//! The state every handler gets: cheap, cloneable handles to the node's parts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

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

impl AppState {
    /// Wires the node's services around already-opened stores.
    pub fn new(settings: Settings, stores: Stores) -> anyhow::Result<Self> {
        let http_client = reqwest::Client::builder()
            .user_agent(concat!("tomato/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the http client")?;
        Ok(Self {
            tokens: Arc::new(TokenKeys::new(
                &settings.auth.jwt_secret,
                Duration::from_secs(settings.auth.token_ttl_s),
            )),
            google: Arc::new(GoogleVerifier::new(
                settings.auth.google.clone(),
                http_client,
            )),
            metrics: Arc::new(Metrics::new()),
            stores,
            settings: Arc::new(settings),
        })
    }
}
