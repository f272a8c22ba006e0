//! Our own access tokens: HS256 JWTs (the algorithm is pinned; a token claiming another is
//! refused) carrying the user id, the role and the role version they were minted for, a unique
//! `jti` for revocation, `iat` and `exp`. Tokens verified for HTTP requests are remembered by
//! their exact text ([`TokenKeys::verify_request`]), so a client presenting the same token again
//! pays a lookup instead of the base64, JSON and HMAC of a full check; when that memory is full,
//! the tokens in use keep their place and new ones wait until idle ones are swept out.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::{Role, User, UserId};
use uuid::Uuid;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_S: u64 = 5;
/// Tokens remembered as verified at most (a token is ~250 bytes: ~25 MB when full).
const REMEMBERED_MAX: usize = 65_536;
/// When the memory is full, the expired tokens and those not presented since the last sweep are
/// forgotten, at most this often; until then a new token is checked in full and not kept.
const UNUSED_FOR_S: i64 = 60;

/// The claims of a tomato access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    /// The role the token acts as.
    pub role: Role,
    /// The user's role version when the token was minted; a role change makes it stale.
    pub ver: u32,
    /// Unique token id, the handle for revocation.
    pub jti: Uuid,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// The instant from which the token is refused: its expiry plus the clock leeway every
    /// check allows.
    pub fn refused_from(&self) -> OffsetDateTime {
        self.expires_at() + time::Duration::seconds(LEEWAY_S as i64)
    }

    /// When the token expires.
    pub fn expires_at(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.exp).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Whether the token is refused as expired at `now` (Unix seconds): the test the JWT
    /// library applies, past `exp` by more than the leeway.
    fn expired_at(&self, now: i64) -> bool {
        self.exp.saturating_add(LEEWAY_S as i64) < now
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
}

/// Signs and verifies access tokens with the configured secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Tokens whose signature and shape were checked, by their exact text, with their claims.
    /// The same text always verifies the same way, so a hit can skip everything but the clock:
    /// expiry is checked on every hit, revocation and the user's role after, as for any token.
    /// A polling dashboard or a rider posting positions over HTTP presents one token request
    /// after request; its full check was 8 % of a nearby query's CPU at 100 000 riders.
    ///
    /// When it is full, new tokens are checked in full and not kept, rather than pushing out
    /// ones in use: riders posting every 5 s cycle through their tokens in turn, and any policy
    /// that evicts to admit would evict each token before it came round again once there are
    /// more riders than room (dropping everything when full gave no hit at all at 100 000
    /// riders; keeping what is there gives 65 536 of 100 000). Tokens nobody presented between
    /// two sweeps ([`UNUSED_FOR_S`] apart at least) make room, so the memory follows the users
    /// who are here now.
    verified: DashMap<Box<str>, Remembered, foldhash::fast::RandomState>,
    verified_max: usize,
    /// When the full memory was last swept of unused tokens (Unix seconds).
    swept_at: AtomicI64,
}

/// A verified token's claims, and whether it was presented since the last sweep.
#[derive(Debug)]
struct Remembered {
    claims: Claims,
    used: AtomicBool,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the HMAC secret; tokens live `ttl`.
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let secret = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["sub", "exp", "iat", "jti"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            verified: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            verified_max: REMEMBERED_MAX,
            swept_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Mints a token for `user` as they are now.
    pub fn issue(&self, user: &User) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            ver: user.role_version,
            jti: Uuid::new_v4(),
            iat: now,
            exp: now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Checks the signature, algorithm and expiry, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                JwtErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// [`Self::verify`] for a token presented with a request, remembered by its text when it
    /// verifies, so presenting it again costs a lookup and a look at the clock.
    pub fn verify_request(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_request_at(token, OffsetDateTime::now_utc().unix_timestamp())
    }

    fn verify_request_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let remembered = self.verified.get(token).map(|known| {
            // A load first: the flag's cache line is written once per sweep, not per request.
            if !known.used.load(Ordering::Relaxed) {
                known.used.store(true, Ordering::Relaxed);
            }
            known.claims.clone()
        });
        if let Some(claims) = remembered {
            if claims.expired_at(now) {
                self.verified.remove(token);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = self.verify(token)?;
        if self.verified.len() >= self.verified_max {
            self.sweep_unused(now);
            if self.verified.len() >= self.verified_max {
                return Ok(claims);
            }
        }
        let remembered = Remembered {
            claims: claims.clone(),
            used: AtomicBool::new(true),
        };
        self.verified.insert(token.into(), remembered);
        Ok(claims)
    }

    /// Forgets the expired tokens and those not presented since the last sweep, if that was
    /// [`UNUSED_FOR_S`] ago or more (one caller sweeps; the others go on without waiting).
    fn sweep_unused(&self, now: i64) {
        let last = self.swept_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < UNUSED_FOR_S
            || self
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.verified.retain(|_, known| {
            !known.claims.expired_at(now) && known.used.swap(false, Ordering::Relaxed)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tomato_domain::{Email, PersonName};

    fn user() -> User {
        User {
            id: UserId::new(),
            name: PersonName::parse("Asha").expect("name"),
            email: Email::parse("asha@example.com").expect("email"),
            image: None,
            role: Role::Seller,
            role_version: 3,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret), Duration::from_secs(3600))
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let user = user();
        let (token, claims) = keys.issue(&user).expect("issue");
        let verified = keys.verify(&token).expect("verify");
        assert_eq!(verified, claims);
        assert_eq!(verified.sub, user.id);
        assert_eq!(verified.role, Role::Seller);
        assert_eq!(verified.ver, 3);
        assert_eq!(verified.exp - verified.iat, 3600);
    }

    #[test]
    fn another_secret_or_a_tampered_token_is_invalid() {
        let (token, _) = keys("0123456789abcdef0123456789abcdef")
            .issue(&user())
            .expect("issue");
        let other = keys("fedcba9876543210fedcba9876543210");
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        let mut tampered = token.clone();
        tampered.pop();
        let own = keys("0123456789abcdef0123456789abcdef");
        assert_eq!(own.verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(own.verify("not.a.jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_tokens_say_so() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: UserId::new(),
            role: Role::Customer,
            ver: 0,
            jti: Uuid::new_v4(),
            iat: now - 7200,
            exp: now - 3600,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .expect("encode");
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_remembered_token_answers_as_a_full_check_would() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let (token, claims) = keys.issue(&user()).expect("issue");
        assert_eq!(keys.verify_request(&token), Ok(claims.clone()));
        assert_eq!(
            keys.verify_request(&token),
            Ok(claims.clone()),
            "remembered"
        );
        assert_eq!(keys.verified.len(), 1);
        // Only the exact text is remembered: a token one character off is checked in full.
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(keys.verify_request(&tampered), Err(TokenError::Invalid));
        let other = super::tests::keys("fedcba9876543210fedcba9876543210");
        assert_eq!(other.verify_request(&token), Err(TokenError::Invalid));
        assert_eq!(keys.verified.len(), 1, "refused tokens are not remembered");
        // The clock is read on every hit: past its expiry and the leeway, it is refused.
        let lapsed = claims.exp + LEEWAY_S as i64 + 1;
        assert_eq!(
            keys.verify_request_at(&token, lapsed),
            Err(TokenError::Expired)
        );
        assert!(keys.verified.is_empty(), "and forgotten");
    }

    #[test]
    fn remembered_tokens_are_bounded_and_those_in_use_stay() {
        let mut keys = keys("0123456789abcdef0123456789abcdef");
        keys.verified_max = 4;
        let user = user();
        let tokens: Vec<String> = (0..9)
            .map(|_| keys.issue(&user).expect("issue").0)
            .collect();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let known = |keys: &TokenKeys, i: usize| keys.verified.contains_key(tokens[i].as_str());
        // Presented in turn, as riders posting positions are: the first four are kept, the
        // others are checked in full every time and never push a token in use out.
        for round in 0..3 {
            for token in &tokens {
                keys.verify_request_at(token, now + round)
                    .expect("valid whether remembered or not");
                assert!(keys.verified.len() <= 4);
            }
            assert!((0..4).all(|i| known(&keys, i)), "round {round}");
        }
        // From now on only the first is presented. A new token a minute later finds every
        // kept one used since the last sweep, so it is not kept either; a minute after that
        // the three that went idle make room.
        let later = now + UNUSED_FOR_S + 1;
        keys.verify_request_at(&tokens[0], later).expect("valid");
        keys.verify_request_at(&tokens[5], later).expect("valid");
        assert!((0..4).all(|i| known(&keys, i)) && !known(&keys, 5));
        let later = later + UNUSED_FOR_S + 1;
        keys.verify_request_at(&tokens[0], later).expect("valid");
        keys.verify_request_at(&tokens[5], later).expect("valid");
        keys.verify_request_at(&tokens[6], later).expect("valid");
        assert_eq!(keys.verified.len(), 3);
        assert!(known(&keys, 0) && known(&keys, 5) && known(&keys, 6));
        assert!(!known(&keys, 1), "not presented for a minute");
    }

    #[test]
    fn the_algorithm_is_pinned() {
        let keys = keys("0123456789abcdef0123456789abcdef");
        let (token, claims) = keys.issue(&user()).expect("issue");
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &keys.encoding)
            .expect("encode");
        assert_eq!(keys.verify(&hs512), Err(TokenError::Invalid));
        assert!(keys.verify(&token).is_ok());
    }
}
