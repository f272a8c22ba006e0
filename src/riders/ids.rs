//! Which rider profile each user has, remembered so that the location hot path and dispatch
//! do not ask the store.

use dashmap::DashMap;
use tomato_domain::{RiderId, UserId};
use tomato_store::Stores;

use crate::http::ApiError;

/// Which rider profile each user has (and whose each profile is), so the location hot path and
/// dispatch do not ask the store.
#[derive(Debug, Default)]
pub struct RiderIds {
    riders: DashMap<UserId, RiderId>,
    users: DashMap<RiderId, UserId>,
}

impl RiderIds {
    pub(crate) fn remember(&self, user: UserId, rider: RiderId) {
        self.riders.insert(user, rider);
        self.users.insert(rider, user);
    }

    /// The user whose profile this is.
    pub fn user_of(&self, rider: RiderId) -> Option<UserId> {
        self.users.get(&rider).map(|user| *user)
    }

    /// The user's rider profile id, from memory or (once) from the store.
    pub(crate) async fn of(&self, stores: &Stores, user: UserId) -> Result<RiderId, ApiError> {
        if let Some(id) = self.riders.get(&user) {
            return Ok(*id);
        }
        let rider = stores
            .riders
            .by_user(user)
            .await?
            .ok_or_else(|| ApiError::not_found("create your rider profile first"))?;
        self.remember(user, rider.id);
        Ok(rider.id)
    }
}
