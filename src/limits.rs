//! Rate limits (`[limits]`, docs/api.md, "Rate limits"): what one client address or one user may do
//! on this node. Over a limit the answer is 429 `rate_limited` with `Retry-After` (seconds), and
//! nothing changes. Rates are GCRA limiters keyed by address or user (`governor`), swept of
//! idle keys by housekeeping; open sockets are a count per user, given back when the connection
//! ends. In a cluster each node counts its own share (a load balancer spreads a client over the
//! nodes, so the effective limit is at most the node count times the setting).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tomato_domain::{ErrorKind, UserId};

use crate::config::{LimitSettings, Settings, UploadStore};
use crate::http::ApiError;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// `count` per `period`, all of it available at once.
fn spread(count: u32, period: Duration) -> Quota {
    let count = nonzero(count);
    Quota::with_period(period / count.get())
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(count)
}

/// The node's limiters.
pub struct Limits {
    clock: DefaultClock,
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
    positions: DefaultKeyedRateLimiter<UserId>,
    orders: DefaultKeyedRateLimiter<UserId>,
    payments: DefaultKeyedRateLimiter<UserId>,
    uploads: DefaultKeyedRateLimiter<UserId>,
    upload_bytes: DefaultKeyedRateLimiter<UserId>,
    sockets: DashMap<UserId, u32>,
    max_sockets: u32,
    address_header: Option<HeaderName>,
    /// The local media directory, whose disk keeps `min_free` bytes free.
    media_dir: Option<PathBuf>,
    min_free: u64,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        let limits: &LimitSettings = &settings.limits;
        let minute = Duration::from_secs(60);
        Self {
            clock: DefaultClock::default(),
            sign_in: RateLimiter::keyed(spread(limits.sign_in_per_minute, minute)),
            positions: RateLimiter::keyed(
                Quota::per_second(nonzero(limits.positions_per_second))
                    .allow_burst(nonzero(limits.positions_burst)),
            ),
            orders: RateLimiter::keyed(spread(limits.orders_per_minute, minute)),
            payments: RateLimiter::keyed(spread(limits.payments_per_minute, minute)),
            uploads: RateLimiter::keyed(spread(limits.uploads_per_day, DAY)),
            upload_bytes: RateLimiter::keyed(spread(limits.upload_bytes_per_day, DAY)),
            sockets: DashMap::new(),
            max_sockets: limits.sockets_per_user,
            address_header: HeaderName::try_from(limits.client_address_header.as_str()).ok(),
            media_dir: (settings.uploads.store == UploadStore::Local)
                .then(|| settings.store.data_dir.join(crate::media::MEDIA_DIR)),
            min_free: limits.upload_min_free_bytes,
        }
    }

    fn judge<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        what: &'static str,
    ) -> Result<(), ApiError> {
        limiter
            .check_key(key)
            .map_err(|not_until| limited(what, not_until.wait_time_from(self.clock.now())))
    }

    /// A sign-in attempt from `client`.
    pub fn sign_in(&self, client: IpAddr) -> Result<(), ApiError> {
        self.judge(&self.sign_in, &client, "sign-in attempts from this address")
    }

    /// A position report of the rider `user` (HTTP or socket).
    pub fn position(&self, user: UserId) -> Result<(), ApiError> {
        self.judge(&self.positions, &user, "position updates")
    }

    /// An order placed by `user`.
    pub fn order(&self, user: UserId) -> Result<(), ApiError> {
        self.judge(&self.orders, &user, "orders")
    }

    /// A payment call of `user`.
    pub fn payment(&self, user: UserId) -> Result<(), ApiError> {
        self.judge(&self.payments, &user, "payment calls")
    }

    /// An upload of `bytes` by `user`: counted, weighed against the day's bytes, and refused
    /// while the media disk is short of space.
    pub fn upload(&self, user: UserId, bytes: usize) -> Result<(), ApiError> {
        self.judge(&self.uploads, &user, "uploads today")?;
        let weight = nonzero(u32::try_from(bytes.max(1)).unwrap_or(u32::MAX));
        match self.upload_bytes.check_key_n(&user, weight) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                return Err(limited(
                    "upload bytes today",
                    not_until.wait_time_from(self.clock.now()),
                ));
            }
            Err(_) => return Err(limited("upload bytes today", DAY)),
        }
        if let Some(dir) = &self.media_dir {
            let free = fs4::available_space(dir).unwrap_or(u64::MAX);
            if free < self.min_free.saturating_add(bytes as u64) {
                tracing::warn!(
                    free,
                    floor = self.min_free,
                    "uploads refused: the media disk is nearly full"
                );
                return Err(ApiError::from_kind(
                    ErrorKind::Unavailable,
                    "storage_full",
                    "uploads are paused: the server is short of disk space",
                ));
            }
        }
        Ok(())
    }

    /// Takes one of `user`'s socket slots; when all are in use the connection is refused at
    /// connect (429), never accepted and dropped. The slot is given back when the returned
    /// guard drops.
    pub fn open_socket(self: &Arc<Self>, user: UserId) -> Result<SocketSlot, ApiError> {
        let mut open = self.sockets.entry(user).or_insert(0);
        if *open >= self.max_sockets {
            return Err(ApiError::rate_limited(
                "too many open sockets for this user; close one first",
                Duration::from_secs(5),
            ));
        }
        *open += 1;
        Ok(SocketSlot {
            limits: Arc::clone(self),
            user,
        })
    }

    /// The client's address: the configured header's (last) entry behind a trusted load
    /// balancer, else the connection's peer.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        self.address_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse().ok())
            .or(peer.map(|peer| peer.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Forgets keys whose limiters are back to full (housekeeping).
    pub fn sweep(&self) {
        for limiter in [
            &self.positions,
            &self.orders,
            &self.payments,
            &self.uploads,
            &self.upload_bytes,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.sign_in.retain_recent();
        self.sign_in.shrink_to_fit();
    }
}

/// One open socket of a user; dropping it gives the slot back.
#[derive(Debug)]
pub struct SocketSlot {
    limits: Arc<Limits>,
    user: UserId,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Some(mut open) = self.limits.sockets.get_mut(&self.user) {
            *open = open.saturating_sub(1);
        }
        self.limits
            .sockets
            .remove_if(&self.user, |_, open| *open == 0);
    }
}

/// 429 `rate_limited`, to be tried again after `wait`.
fn limited(what: &'static str, wait: Duration) -> ApiError {
    ApiError::rate_limited(format!("too many {what}; try again later"), wait)
}

/// The address a request comes from, as [`Limits::client_address`] judges it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl<S> FromRequestParts<S> for ClientAddress
where
    S: Send + Sync,
    Arc<Limits>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let limits = Arc::<Limits>::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(Self(limits.client_address(&parts.headers, peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_spread_allows_its_whole_count_at_once_then_refuses() {
        let limiter: DefaultKeyedRateLimiter<u8> = RateLimiter::keyed(spread(3, DAY));
        for _ in 0..3 {
            assert!(limiter.check_key(&1).is_ok());
        }
        let refused = limiter.check_key(&1).expect_err("over the day's count");
        let wait = refused.wait_time_from(DefaultClock::default().now());
        assert!(wait > Duration::from_secs(3600), "{wait:?}");
        assert!(limiter.check_key(&2).is_ok(), "keys are counted apart");
    }
}
