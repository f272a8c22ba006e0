//! Which open connection holds which token, so that a socket lives exactly as long as its
//! token: when the token is revoked (logout), goes stale (the user's role changed) or expires,
//! the connection is sent `session:ended` `{reason}` and closed. Revocations and user changes
//! arrive through the authentication cache, from this node or (in a cluster) from the others,
//! so a logout anywhere ends the sockets everywhere. Expiry is each connection's own timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tomato_domain::{User, UserId};
use uuid::Uuid;

use crate::auth::token::Claims;

/// Why a session ended: the `reason` of `session:ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Logout,
    TokenStale,
    TokenExpired,
}

impl Ended {
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Logout => "logout",
            Ended::TokenStale => "token_stale",
            Ended::TokenExpired => "token_expired",
        }
    }

    /// The `session:ended` payload.
    pub fn data(self) -> serde_json::Value {
        serde_json::json!({ "reason": self.reason() })
    }
}

/// How a transport ends one of its connections (sends `session:ended`, then closes).
pub type Ender = Arc<dyn Fn(Ended) + Send + Sync>;

struct Session {
    id: u64,
    claims: Claims,
    end: Ender,
}

/// The open sessions of this node's sockets, by user.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    by_user: DashMap<UserId, Vec<Session>>,
    /// Token id -> its user, to find a revoked token's sessions.
    users_of: DashMap<Uuid, UserId>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("users", &self.by_user.len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Registers a connection holding `claims`; `end` closes it. Returns its id for
    /// [`Sessions::close`].
    pub fn open(&self, claims: &Claims, end: Ender) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.users_of.insert(claims.jti, claims.sub);
        self.by_user.entry(claims.sub).or_default().push(Session {
            id,
            claims: claims.clone(),
            end,
        });
        id
    }

    /// Forgets a connection that closed.
    pub fn close(&self, claims: &Claims, id: u64) {
        let mut token_in_use = false;
        if let Some(mut sessions) = self.by_user.get_mut(&claims.sub) {
            sessions.retain(|session| session.id != id);
            token_in_use = sessions.iter().any(|s| s.claims.jti == claims.jti);
        }
        self.by_user
            .remove_if(&claims.sub, |_, sessions| sessions.is_empty());
        if !token_in_use {
            self.users_of.remove(&claims.jti);
        }
    }

    /// Whether `user` has an open connection here.
    pub fn has_user(&self, user: UserId) -> bool {
        self.by_user.contains_key(&user)
    }

    /// The token was revoked: every connection holding it ends (`logout`).
    pub fn revoked(&self, jti: Uuid) {
        let Some((_, user)) = self.users_of.remove(&jti) else {
            return;
        };
        self.end_where(user, Ended::Logout, |claims| claims.jti == jti);
    }

    /// `user` is now as given: connections whose token was minted for another role or role
    /// version end (`token_stale`).
    pub fn user_is(&self, user: &User) {
        self.end_where(user.id, Ended::TokenStale, |claims| {
            claims.role != user.role || claims.ver != user.role_version
        });
    }

    fn end_where(&self, user: UserId, why: Ended, ends: impl Fn(&Claims) -> bool) {
        let ending: Vec<Ender> = match self.by_user.get_mut(&user) {
            Some(mut sessions) => {
                let (gone, kept): (Vec<Session>, Vec<Session>) = std::mem::take(&mut *sessions)
                    .into_iter()
                    .partition(|session| ends(&session.claims));
                *sessions = kept;
                gone.into_iter().map(|session| session.end).collect()
            }
            None => return,
        };
        self.by_user
            .remove_if(&user, |_, sessions| sessions.is_empty());
        // Outside the map's lock: an ender may call back into `close`.
        for end in ending {
            end(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tomato_domain::{Email, PersonName, Role};

    use super::*;

    fn claims(user: UserId, role: Role, ver: u32) -> Claims {
        Claims {
            sub: user,
            role,
            ver,
            jti: Uuid::new_v4(),
            iat: 0,
            exp: i64::MAX,
        }
    }

    fn recorder() -> (Arc<Mutex<Vec<Ended>>>, Ender) {
        let seen: Arc<Mutex<Vec<Ended>>> = Arc::default();
        let record = Arc::clone(&seen);
        (
            seen,
            Arc::new(move |why| record.lock().expect("lock").push(why)),
        )
    }

    #[test]
    fn a_revoked_token_ends_only_its_own_connections() {
        let sessions = Sessions::default();
        let user = UserId::new();
        let (phone, other_device) = (claims(user, Role::Rider, 0), claims(user, Role::Rider, 0));
        let (ended_a, end_a) = recorder();
        let (ended_b, end_b) = recorder();
        let (ended_c, end_c) = recorder();
        sessions.open(&phone, end_a);
        sessions.open(&phone, end_b);
        sessions.open(&other_device, end_c);
        sessions.revoked(phone.jti);
        assert_eq!(*ended_a.lock().expect("lock"), vec![Ended::Logout]);
        assert_eq!(*ended_b.lock().expect("lock"), vec![Ended::Logout]);
        assert!(ended_c.lock().expect("lock").is_empty());
        sessions.revoked(phone.jti);
        assert_eq!(ended_a.lock().expect("lock").len(), 1, "ended once");
        assert!(sessions.has_user(user));
    }

    #[test]
    fn a_role_change_ends_the_connections_of_older_tokens() {
        let sessions = Sessions::default();
        let user = UserId::new();
        let old = claims(user, Role::Rider, 0);
        let (ended, end) = recorder();
        let id = sessions.open(&old, end);
        let mut now = User {
            id: user,
            name: PersonName::parse("Ravi").expect("name"),
            email: Email::parse("ravi@x.test").expect("email"),
            image: None,
            role: Role::Rider,
            role_version: 0,
            created_at: time::OffsetDateTime::now_utc(),
        };
        sessions.user_is(&now);
        assert!(ended.lock().expect("lock").is_empty(), "nothing changed");
        now.role = Role::Customer;
        now.role_version = 1;
        sessions.user_is(&now);
        assert_eq!(*ended.lock().expect("lock"), vec![Ended::TokenStale]);
        assert!(!sessions.has_user(user));
        sessions.close(&old, id);
        assert!(sessions.users_of.is_empty());
    }
}
