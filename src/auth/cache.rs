//! A node-local cache of what authentication reads from the store on every request: the user
//! (role and role version) and whether the token was revoked. Without it each authenticated
//! request costs two store reads (~47 µs, most of an HTTP position update).
//!
//! It stays exact for what goes through this node: a logout marks the token revoked here
//! before the store, and is checked before any cached answer; a role change bumps the user's
//! generation, so a read that raced with it cannot put the old user back. A token whose claims
//! do not match the cached user is checked against the store again before it is refused, so a
//! new token works at once. In a cluster every change is also told to the other nodes
//! ([`AuthCache::tell_peers`]), whose caches apply it at once. Changes made outside any node
//! (`tomato admin grant` in another process) are seen within `TTL`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use time::OffsetDateTime;
use tomato_domain::{User, UserId};
use uuid::Uuid;

/// How long a store answer is reused.
const TTL: Duration = Duration::from_secs(5);
/// Expired entries are swept after this many insertions.
const SWEEP_EVERY: u64 = 8192;

#[derive(Debug, Clone)]
struct CachedUser {
    user: Option<User>,
    generation: u64,
    read_at: Instant,
}

/// A change one node's cache tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CacheChange {
    Revoked { jti: Uuid, expires_at: i64 },
    UserChanged { id: UserId },
}

/// Where a node's cache sends its changes (a cluster's broadcast), or who else hears of them.
type Peers = Box<dyn Fn(CacheChange) + Send + Sync>;

/// The cache; one per node.
#[derive(Default)]
pub struct AuthCache {
    /// The other nodes, in a cluster.
    peers: std::sync::OnceLock<Peers>,
    /// This node's open sockets, which end with their token.
    listener: std::sync::OnceLock<Peers>,
    users: DashMap<UserId, CachedUser>,
    /// Tokens the store said were not revoked, and when it said so.
    live: DashMap<Uuid, Instant>,
    /// Tokens revoked through this node, until they expire (Unix seconds).
    revoked: DashMap<Uuid, i64>,
    inserts: AtomicU64,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl AuthCache {
    /// The user, if read from the store within the TTL.
    pub fn user(&self, id: UserId) -> Option<User> {
        self.users
            .get(&id)
            .filter(|c| c.read_at.elapsed() < TTL)
            .and_then(|c| c.user.clone())
    }

    /// The generation to pass to [`AuthCache::put_user`] for a store read starting now.
    pub fn generation(&self, id: UserId) -> u64 {
        self.users.get(&id).map_or(0, |c| c.generation)
    }

    /// Keeps a user read from the store, unless it changed since the read began.
    pub fn put_user(&self, user: &User, generation: u64) {
        let mut entry = self.users.entry(user.id).or_insert_with(|| CachedUser {
            user: None,
            generation,
            read_at: Instant::now(),
        });
        if entry.generation == generation {
            entry.user = Some(user.clone());
            entry.read_at = Instant::now();
        }
        drop(entry);
        self.inserted();
    }

    /// Tells `peers` of every change made through this node from now on.
    pub fn tell_peers(&self, peers: impl Fn(CacheChange) + Send + Sync + 'static) {
        let _ = self.peers.set(Box::new(peers));
    }

    /// Calls `listener` with every change, made here or by another node, once it applies.
    pub fn on_change(&self, listener: impl Fn(CacheChange) + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }

    fn heard(&self, change: CacheChange) {
        if let Some(listener) = self.listener.get() {
            listener(change);
        }
    }

    /// A change another node made.
    pub fn apply(&self, change: CacheChange) {
        match change {
            CacheChange::Revoked { jti, expires_at } => self.revoke_here(jti, expires_at),
            CacheChange::UserChanged { id } => self.user_changed_here(id),
        }
    }

    fn told(&self, change: CacheChange) {
        if let Some(peers) = self.peers.get() {
            peers(change);
        }
    }

    /// The user changed: forget it, and refuse reads that began before (here and on every
    /// other node).
    pub fn user_changed(&self, id: UserId) {
        self.user_changed_here(id);
        self.told(CacheChange::UserChanged { id });
    }

    fn user_changed_here(&self, id: UserId) {
        let mut entry = self.users.entry(id).or_insert_with(|| CachedUser {
            user: None,
            generation: 0,
            read_at: Instant::now(),
        });
        entry.generation += 1;
        entry.user = None;
        // Kept through the next sweep, so a read that began before the change still finds the
        // newer generation (a store read takes microseconds, the TTL seconds).
        entry.read_at = Instant::now();
        drop(entry);
        self.heard(CacheChange::UserChanged { id });
    }

    /// Whether the token is known revoked (through this node) or known live (store, within TTL):
    /// `Some(true)` revoked, `Some(false)` live, `None` ask the store.
    pub fn revoked(&self, jti: Uuid) -> Option<bool> {
        if self.revoked.contains_key(&jti) {
            return Some(true);
        }
        self.live
            .get(&jti)
            .filter(|at| at.elapsed() < TTL)
            .map(|_| false)
    }

    /// The store said the token is not revoked.
    pub fn put_live(&self, jti: Uuid) {
        self.live.insert(jti, Instant::now());
        self.inserted();
    }

    /// The token is revoked from now on (called before the store is told), here and on every
    /// other node.
    pub fn revoke(&self, jti: Uuid, expires_at: i64) {
        self.revoke_here(jti, expires_at);
        self.told(CacheChange::Revoked { jti, expires_at });
    }

    fn revoke_here(&self, jti: Uuid, expires_at: i64) {
        self.revoked.insert(jti, expires_at);
        self.live.remove(&jti);
        self.heard(CacheChange::Revoked { jti, expires_at });
    }

    fn inserted(&self) {
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            self.users.retain(|_, c| c.read_at.elapsed() < TTL);
            self.live.retain(|_, at| at.elapsed() < TTL);
            self.revoked.retain(|_, expires| *expires > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use tomato_domain::{Email, PersonName, Role};

    use super::*;

    fn user(version: u32) -> User {
        User {
            id: UserId::new(),
            name: PersonName::parse("Asha").expect("name"),
            email: Email::parse("asha@x.test").expect("email"),
            image: None,
            role: Role::Customer,
            role_version: version,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_kept() {
        let cache = AuthCache::default();
        let old = user(0);
        let generation = cache.generation(old.id);
        cache.user_changed(old.id);
        cache.put_user(&old, generation);
        assert!(cache.user(old.id).is_none(), "the older read is dropped");
        cache.put_user(&old, cache.generation(old.id));
        assert_eq!(cache.user(old.id).map(|u| u.role_version), Some(0));
    }

    #[test]
    fn a_revoked_token_stays_revoked_whatever_was_cached() {
        let cache = AuthCache::default();
        let jti = Uuid::new_v4();
        assert_eq!(cache.revoked(jti), None);
        cache.put_live(jti);
        assert_eq!(cache.revoked(jti), Some(false));
        cache.revoke(jti, i64::MAX);
        cache.put_live(jti);
        assert_eq!(cache.revoked(jti), Some(true));
    }
}
