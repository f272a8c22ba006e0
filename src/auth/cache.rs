//! A node-local cache of what authentication reads from the store on every request: the user
//! (role and role version) and whether the token was revoked. Without it each authenticated
//! request costs two store reads (~47 µs, most of an HTTP position update).
//!
//! It stays exact for what goes through this node: a logout marks the token revoked here
//! before the store, and is checked before any cached answer; a role change bumps the user's
//! generation, so a read that raced with it cannot put the old user back. A token whose claims
//! do not match the cached user is checked against the store again before it is refused, so a
//! new token works at once. In a cluster every change is also told to the other nodes
//! ([`AuthCache::tell_peers`]), whose caches apply it at once.
//!
//! Changes made anywhere else (`tomato admin grant` in another process, a message between nodes
//! that was lost) come through the store's change feed, which the node follows every
//! `REFRESH_EVERY` ([`spawn_refresher`]). While it is followed, an answer is kept for
//! `FOLLOWED_TTL`, since the feed would have told of any change to it: a rider posting every
//! 10 s costs no store read. When the feed cannot be read for `TTL`, answers fall back to living
//! `TTL` from their read, so no change goes unseen for longer than that either way.
//!
//! What is in use stays cached: the refresher re-reads, in batches, the users and tokens that
//! served a request since their last read once they are near the end of their life, so a rider
//! streaming positions over a socket never waits on the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use time::OffsetDateTime;
use tomato_domain::{User, UserId};
use tomato_store::{AuthChange, FeedCursor, Stores};
use uuid::Uuid;

/// How long a store answer is reused when the change feed is not being followed, and how stale
/// the last successful read of the feed may be for it to count as followed.
const TTL: Duration = Duration::from_secs(5);
/// How long a store answer is reused while the change feed is followed.
const FOLLOWED_TTL: Duration = Duration::from_secs(300);
/// An answer in use is read again once this much of its life is left (well before it ends,
/// so it never lapses).
const REFRESH_BEFORE_END: Duration = Duration::from_secs(2);
/// How often the refresher follows the feed and looks for answers due.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Changes read from the feed per page.
const FEED_PAGE: usize = 1024;
/// Reads per batch, so one batch never holds a store reader for long.
const REFRESH_BATCH: usize = 1024;
/// Expired entries are swept after this many insertions.
const SWEEP_EVERY: u64 = 8192;

#[derive(Debug)]
struct CachedUser {
    user: Option<User>,
    generation: u64,
    read_at: Instant,
    /// Served a request since it was read.
    used: AtomicBool,
}

/// A token the store said was not revoked.
#[derive(Debug)]
struct LiveToken {
    read_at: Instant,
    used: AtomicBool,
}

impl LiveToken {
    fn now() -> Self {
        Self {
            read_at: Instant::now(),
            used: AtomicBool::new(false),
        }
    }
}

/// What the refresher reads again: users with the generation their read starts at, tokens.
#[derive(Debug, Default)]
struct Due {
    users: Vec<(UserId, u64)>,
    tokens: Vec<Uuid>,
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
    live: DashMap<Uuid, LiveToken>,
    /// Tokens revoked through this node, until they expire (Unix seconds).
    revoked: DashMap<Uuid, i64>,
    inserts: AtomicU64,
    /// When the last successful read of the change feed began, in milliseconds after `EPOCH`
    /// plus one (zero: never).
    followed_at: AtomicU64,
}

/// The origin of `followed_at`.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl AuthCache {
    /// How long an answer read now may be reused: `FOLLOWED_TTL` while the change feed is
    /// followed, `TTL` otherwise.
    fn ttl(&self, now: Instant) -> Duration {
        match self.followed_at.load(Ordering::Relaxed).checked_sub(1) {
            Some(at) if now.saturating_duration_since(*EPOCH + Duration::from_millis(at)) < TTL => {
                FOLLOWED_TTL
            }
            _ => TTL,
        }
    }

    /// Whether an answer read at `read_at` may still be reused.
    fn fresh(&self, read_at: Instant) -> bool {
        let now = Instant::now();
        now.saturating_duration_since(read_at) < self.ttl(now)
    }

    /// The user, if read from the store recently enough.
    pub fn user(&self, id: UserId) -> Option<User> {
        let cached = self.users.get(&id).filter(|c| self.fresh(c.read_at))?;
        let user = cached.user.clone()?;
        cached.used.store(true, Ordering::Relaxed);
        Some(user)
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
            used: AtomicBool::new(false),
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
            used: AtomicBool::new(false),
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
        let live = self.live.get(&jti).filter(|t| self.fresh(t.read_at))?;
        live.used.store(true, Ordering::Relaxed);
        Some(false)
    }

    /// The store said the token is not revoked.
    pub fn put_live(&self, jti: Uuid) {
        self.live.insert(jti, LiveToken::now());
        self.inserted();
    }

    /// The entries in use that are due for a new read; each is marked unused until it serves
    /// again, so what stops being used expires and is swept.
    fn due(&self, now: Instant) -> Due {
        let refresh_at = self.ttl(now).saturating_sub(REFRESH_BEFORE_END);
        let due = |read_at: Instant, used: &AtomicBool| {
            now.saturating_duration_since(read_at) >= refresh_at
                && used.swap(false, Ordering::Relaxed)
        };
        Due {
            users: self
                .users
                .iter()
                .filter(|c| c.user.is_some() && due(c.read_at, &c.used))
                .map(|c| (*c.key(), c.generation))
                .collect(),
            tokens: self
                .live
                .iter()
                .filter(|t| due(t.read_at, &t.used))
                .map(|t| *t.key())
                .collect(),
        }
    }

    /// Reads what is due again, in batches; a failed batch leaves its entries to expire (the
    /// next request reads the store itself).
    pub async fn refresh(&self, stores: &Stores) {
        let Due { users, tokens } = self.due(Instant::now());
        for batch in users.chunks(REFRESH_BATCH) {
            let ids: Vec<UserId> = batch.iter().map(|(id, _)| *id).collect();
            match stores.users.get_many(&ids).await {
                Ok(found) => {
                    let generations: std::collections::HashMap<UserId, u64> =
                        batch.iter().copied().collect();
                    for user in &found {
                        if let Some(generation) = generations.get(&user.id) {
                            self.put_user(user, *generation);
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "refreshing cached users failed"),
            }
        }
        for batch in tokens.chunks(REFRESH_BATCH) {
            match stores.tokens.revoked_among(batch).await {
                Ok(revoked) => {
                    for jti in batch {
                        if revoked.contains(jti) {
                            // Revoked outside this node's hearing: the next use asks the store.
                            self.live.remove(jti);
                        } else if !self.revoked.contains_key(jti) {
                            self.live.insert(*jti, LiveToken::now());
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "refreshing cached tokens failed"),
            }
        }
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

    /// Applies the changes the feed tells of after `cursor` (from the present when there is
    /// none yet), then counts the feed as followed from when this read began. Returns where
    /// to read next; on a failure, `cursor` unchanged.
    pub async fn follow(&self, stores: &Stores, cursor: Option<FeedCursor>) -> Option<FeedCursor> {
        let began = Instant::now();
        let mut cursor = cursor;
        loop {
            let page = match stores.changes.auth_changes(cursor.clone(), FEED_PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the authentication change feed failed");
                    return cursor;
                }
            };
            // A new reader's first page is empty and its cursor a little in the past: read on
            // from it at once, before counting the feed as followed.
            let full = page.changes.len() == FEED_PAGE || cursor.is_none();
            // This node's own changes were applied as it made them; again would only drop
            // answers read since.
            for change in page.changes.iter().filter(|fed| !fed.here) {
                match change.change {
                    AuthChange::UserChanged(id) => self.user_changed_here(id),
                    AuthChange::Revoked { jti, expires_at } => {
                        // Already known when this node made it, or heard of it from the node
                        // that did.
                        if !self.revoked.contains_key(&jti) {
                            self.revoke_here(jti, expires_at.unix_timestamp());
                        }
                    }
                }
            }
            cursor = Some(page.next);
            if !full {
                break;
            }
        }
        let since_epoch = began.saturating_duration_since(*EPOCH).as_millis();
        self.followed_at.store(
            u64::try_from(since_epoch).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
        cursor
    }

    fn inserted(&self) {
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            // One clock read and one TTL for the whole sweep, not one per entry.
            let at = Instant::now();
            let ttl = self.ttl(at);
            let fresh = |read_at: Instant| at.saturating_duration_since(read_at) < ttl;
            self.users.retain(|_, c| fresh(c.read_at));
            self.live.retain(|_, t| fresh(t.read_at));
            self.revoked.retain(|_, expires| *expires > now);
        }
    }
}

/// Follows the change feed ([`AuthCache::follow`]) and runs [`AuthCache::refresh`] every
/// `REFRESH_EVERY` until aborted.
pub fn spawn_refresher(cache: Arc<AuthCache>, stores: Stores) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cursor = None;
        loop {
            every.tick().await;
            cursor = cache.follow(&stores, cursor).await;
            cache.refresh(&stores).await;
        }
    })
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
    fn only_what_served_since_its_read_is_read_again() {
        let cache = AuthCache::default();
        let (busy, idle) = (user(0), user(0));
        for u in [&busy, &idle] {
            cache.put_user(u, cache.generation(u.id));
        }
        let (streaming, quiet) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put_live(streaming);
        cache.put_live(quiet);
        assert!(cache.user(busy.id).is_some());
        assert_eq!(cache.revoked(streaming), Some(false));

        let young = cache.due(Instant::now());
        assert!(
            young.users.is_empty() && young.tokens.is_empty(),
            "not old enough"
        );
        let later = Instant::now() + TTL - REFRESH_BEFORE_END;
        let due = cache.due(later);
        assert_eq!(due.users, vec![(busy.id, 0)]);
        assert_eq!(due.tokens, vec![streaming]);
        let again = cache.due(later);
        assert!(
            again.users.is_empty() && again.tokens.is_empty(),
            "until used again"
        );
    }

    #[tokio::test]
    async fn changes_made_elsewhere_come_through_the_feed() {
        let dir = tempfile::tempdir().expect("dir");
        let stores = tomato_store_embedded::open(dir.path()).expect("store");
        let asha = stores
            .users
            .sign_in(tomato_store::SignIn {
                email: Email::parse("asha@x.test").expect("email"),
                name: PersonName::parse("Asha").expect("name"),
                image: None,
                admin: false,
            })
            .await
            .expect("sign in");
        let cache = AuthCache::default();
        assert_eq!(cache.ttl(Instant::now()), TTL, "not followed yet");
        let cursor = cache.follow(&stores, None).await;
        assert!(cursor.is_some(), "starts at the present");
        assert_eq!(cache.ttl(Instant::now()), FOLLOWED_TTL);
        assert_eq!(
            cache.ttl(Instant::now() + TTL),
            TTL,
            "a feed not read for TTL is not followed"
        );

        // A change this node made: applied as it was made (here, by the route), not again.
        stores
            .users
            .set_role(asha.id, Role::Seller)
            .await
            .expect("role");
        cache.user_changed(asha.id);
        let asha = stores.users.get(asha.id).await.expect("get").expect("asha");
        cache.put_user(&asha, cache.generation(asha.id));
        let cursor = cache.follow(&stores, cursor).await;
        assert!(
            cache.user(asha.id).is_some(),
            "what was read after its own change stays"
        );

        // Another process (`tomato admin`, another node whose message was lost) changes both.
        let elsewhere = tomato_store_embedded::open(dir.path()).expect("a second store");
        let jti = Uuid::new_v4();
        cache.put_live(jti);
        elsewhere
            .users
            .set_role(asha.id, Role::Rider)
            .await
            .expect("role");
        let expires_at = OffsetDateTime::now_utc() + time::Duration::hours(1);
        elsewhere
            .tokens
            .revoke(jti, expires_at)
            .await
            .expect("revoke");
        assert!(cache.user(asha.id).is_some(), "not heard of yet");
        let cursor = cache.follow(&stores, cursor).await;
        assert!(
            cache.user(asha.id).is_none(),
            "the changed user is read again"
        );
        assert_eq!(cache.revoked(jti), Some(true));
        elsewhere.backend.close().await.expect("close");

        stores.backend.close().await.expect("close");
        assert_eq!(
            cache.follow(&stores, cursor.clone()).await,
            cursor,
            "a failed read keeps its place"
        );
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
