//! Store trait of rider profiles.

use async_trait::async_trait;
use time::OffsetDateTime;
use tomato_domain::{LatLon, Rider, RiderId, UserId};

use crate::StoreError;

/// A rider's position, as written behind from the shards' index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionSnapshot {
    pub rider: RiderId,
    pub location: LatLon,
    pub seen_at: OffsetDateTime,
}

/// Rider profiles. Positions are soft state: riders re-send them every few seconds, so the store
/// only gets periodic snapshots, never one write per update.
#[async_trait]
pub trait RiderStore: Send + Sync {
    /// Stores a new profile; a second one for the same user is a conflict (`rider_exists`).
    async fn create(&self, rider: &Rider) -> Result<(), StoreError>;

    async fn get(&self, id: RiderId) -> Result<Option<Rider>, StoreError>;

    async fn by_user(&self, user: UserId) -> Result<Option<Rider>, StoreError>;

    /// Profiles waiting for an admin's verification, oldest first.
    async fn pending(&self) -> Result<Vec<Rider>, StoreError>;

    /// Marks the rider verified and returns the profile.
    async fn verify(&self, id: RiderId) -> Result<Rider, StoreError>;

    /// Sets whether the rider takes offers; returns the profile.
    async fn set_available(&self, id: RiderId, available: bool) -> Result<Rider, StoreError>;

    /// Writes a batch of positions in one transaction.
    async fn save_positions(&self, positions: Vec<PositionSnapshot>) -> Result<(), StoreError>;

    /// Every profile, for a starting node to rebuild its index from.
    async fn all(&self) -> Result<Vec<Rider>, StoreError>;
}
