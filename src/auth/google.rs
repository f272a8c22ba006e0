//! Google sign-in: verifying a Google ID token (RS256) against the keys Google publishes as a JWKS.
//! Keys are cached for `auth.google.jwks_cache_s` and fetched again when a token names a key id
//! the cache lacks (Google rotates keys), but at most once per [`MIN_REFETCH`], so a flood of
//! tokens with made-up key ids cannot turn us into a flood of requests to Google.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::config::GoogleSettings;

/// The shortest time between two fetches of the key set.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp` and `iat`, in seconds.
const LEEWAY_S: u64 = 60;

/// What we take from a verified Google ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleIdentity {
    pub email: String,
    pub name: Option<String>,
    pub picture: Option<String>,
}

/// Why a Google ID token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    /// No client ids are configured: Google sign-in is off.
    #[error("google sign-in is not configured")]
    NotConfigured,
    /// The token is not a valid ID token for us; the message is safe to show.
    #[error("{0}")]
    Rejected(&'static str),
    /// Google's keys could not be fetched.
    #[error("fetching google signing keys: {0}")]
    KeysUnavailable(String),
}

#[derive(Deserialize)]
struct IdTokenClaims {
    email: Option<String>,
    /// Google sends a boolean; some older tokens carry the string "true".
    #[serde(default)]
    email_verified: serde_json::Value,
    name: Option<String>,
    picture: Option<String>,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Instant,
}

/// Verifies Google ID tokens; one per node, shared by every request.
pub struct GoogleVerifier {
    settings: GoogleSettings,
    http: reqwest::Client,
    cache: RwLock<Option<KeyCache>>,
    /// Held while fetching, so concurrent misses make one request, not many.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for GoogleVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleVerifier")
            .field("jwks_url", &self.settings.jwks_url)
            .finish_non_exhaustive()
    }
}

impl GoogleVerifier {
    /// A verifier for the configured client ids, issuers and key set.
    pub fn new(settings: GoogleSettings, http: reqwest::Client) -> Self {
        Self {
            settings,
            http,
            cache: RwLock::new(None),
            fetching: Mutex::new(()),
        }
    }

    /// Whether Google sign-in is on.
    pub fn is_configured(&self) -> bool {
        !self.settings.client_ids.is_empty()
    }

    /// Verifies the token's signature, algorithm, audience, issuer and expiry, and that the
    /// e-mail in it is verified by Google.
    pub async fn verify(&self, id_token: &str) -> Result<GoogleIdentity, GoogleError> {
        if !self.is_configured() {
            return Err(GoogleError::NotConfigured);
        }
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| GoogleError::Rejected("the id token is malformed"))?;
        if header.alg != Algorithm::RS256 {
            return Err(GoogleError::Rejected(
                "the id token must be signed with RS256",
            ));
        }
        let kid = header
            .kid
            .ok_or(GoogleError::Rejected("the id token names no signing key"))?;
        let key = self.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_S;
        validation.set_audience(&self.settings.client_ids);
        validation.set_issuer(&self.settings.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &validation)
            .map_err(|err| {
                GoogleError::Rejected(match err.kind() {
                    JwtErrorKind::ExpiredSignature => "the id token has expired",
                    JwtErrorKind::InvalidAudience => "the id token is for another client",
                    JwtErrorKind::InvalidIssuer => "the id token is not from google",
                    JwtErrorKind::InvalidSignature => "the id token signature is wrong",
                    _ => "the id token is invalid",
                })
            })?
            .claims;

        let verified = matches!(&claims.email_verified, serde_json::Value::Bool(true))
            || claims.email_verified.as_str() == Some("true");
        let email = claims
            .email
            .filter(|_| verified)
            .ok_or(GoogleError::Rejected(
                "the id token carries no verified e-mail",
            ))?;
        Ok(GoogleIdentity {
            email,
            name: claims.name,
            picture: claims.picture,
        })
    }

    /// The key with this id: from the cache while fresh, else from a new fetch.
    async fn key(&self, kid: &str) -> Result<DecodingKey, GoogleError> {
        let max_age = Duration::from_secs(self.settings.jwks_cache_s);
        if let Some(key) = self.cached(kid, max_age).await {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // Someone else may have fetched while we waited for the lock.
        if let Some(key) = self.cached(kid, max_age).await {
            return Ok(key);
        }
        let recently_fetched = self
            .cache
            .read()
            .await
            .as_ref()
            .is_some_and(|cache| cache.fetched_at.elapsed() < MIN_REFETCH);
        if !recently_fetched {
            match self.fetch().await {
                Ok(keys) => {
                    *self.cache.write().await = Some(KeyCache {
                        keys,
                        fetched_at: Instant::now(),
                    });
                }
                Err(err) => {
                    // Google being briefly unreachable should not log everybody out: a key we
                    // still hold, however old, keeps working until a fetch succeeds.
                    if let Some(key) = self.cached(kid, Duration::MAX).await {
                        tracing::warn!(error = %err, "google keys unavailable, using cached key");
                        return Ok(key);
                    }
                    return Err(err);
                }
            }
        }
        self.cached(kid, Duration::MAX)
            .await
            .ok_or(GoogleError::Rejected(
                "the id token is signed with an unknown key",
            ))
    }

    async fn cached(&self, kid: &str, max_age: Duration) -> Option<DecodingKey> {
        let cache = self.cache.read().await;
        let cache = cache
            .as_ref()
            .filter(|c| c.fetched_at.elapsed() < max_age)?;
        cache.keys.get(kid).cloned()
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, GoogleError> {
        let unavailable = |err: reqwest::Error| GoogleError::KeysUnavailable(err.to_string());
        let set: JwkSet = self
            .http
            .get(&self.settings.jwks_url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let keys: HashMap<_, _> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                match DecodingKey::from_jwk(jwk) {
                    Ok(key) => Some((kid, key)),
                    Err(err) => {
                        tracing::warn!(kid, error = %err, "skipping unusable google key");
                        None
                    }
                }
            })
            .collect();
        tracing::info!(keys = keys.len(), "fetched google signing keys");
        Ok(keys)
    }
}
