//! Bearer tokens (JWTs) with the user id in `sub`.
//!
//! User tokens and admin tokens are verified with separate keys, so whoever can
//! mint one kind (a login service, say) cannot mint the other. Each kind is
//! verified either with an HS256 secret (`token_secret`, `admin_token_secret`:
//! dev clusters and tests) or with public keys only (`auth.user_keys_file`,
//! `auth.admin_keys_file`: a JWKS document or a PEM key, EdDSA or RS256), so
//! that nodes hold no signing key. `exp` is required, `nbf` honoured, `iat`
//! optional; `iss` and `aud` are checked when configured, and a token valid for
//! longer than `auth.token_lifetime_s_max` is refused.
//!
//! The user is always taken from a verified token, never from a request body.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use boxoffice_api::ProblemCode;

use crate::config::AuthSettings;
use crate::error::ApiError;
use crate::rate_limits::{classify, HasRateLimits};

/// Claims in a boxoffice token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch (many identity providers omit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// What else the token allows, space-separated (OAuth 2's `scope` claim):
    /// [`BOX_OFFICE_SCOPE`] lets a box office or back-end service confirm a
    /// hold with its own payment reference, for sales paid elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The scope of a box-office (or back-end service) credential: the direct
/// confirm (`POST /v1/holds/{id}/confirm` with a `payment_ref`) needs it.
pub const BOX_OFFICE_SCOPE: &str = "box_office";

impl Claims {
    /// True when the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == scope))
    }
}

/// Longest accepted user id (bytes).
pub const USER_ID_LEN_MAX: usize = 128;

/// One key a token may be verified with.
#[derive(Clone)]
struct VerifyKey {
    /// The JWKS `kid`, when the key has one: a token naming another kid is not
    /// tried with it.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies one kind of token (user or admin).
#[derive(Clone)]
pub struct Verifier {
    /// What the tokens are, for error messages ("user", "admin").
    kind: &'static str,
    keys: Vec<VerifyKey>,
    issuer: Option<String>,
    audience: Option<String>,
    lifetime_s_max: u64,
    leeway_s: u64,
    /// Tokens verified before, by their exact text (`auth.verified_tokens_max`).
    verified: std::sync::Arc<VerifiedTokens>,
}

/// Tokens that passed every check, with their claims. A token that passed
/// stays valid until its `exp` (plus leeway): its signature, issuer, audience,
/// subject and lifetime do not change, and its `nbf` and `iat` only recede; the
/// keys are fixed for the process's life. So a remembered token is answered
/// with its claims until then, without its signature being checked again.
struct VerifiedTokens {
    max: usize,
    map: std::sync::Mutex<std::collections::HashMap<Box<str>, Claims>>,
}

impl VerifiedTokens {
    fn get(&self, token: &str, now_s: u64, leeway_s: u64) -> Option<Claims> {
        if self.max == 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let claims = map.get(token)?;
        if now_s > claims.exp.saturating_add(leeway_s) {
            map.remove(token);
            return None;
        }
        Some(claims.clone())
    }

    fn insert(&self, token: &str, claims: &Claims) {
        if self.max == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(token.into(), claims.clone());
    }
}

/// Why a verifier could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

impl Verifier {
    /// A verifier of HS256 tokens signed with `secret`.
    pub fn hs256(kind: &'static str, secret: &str, auth: &AuthSettings) -> Self {
        Self::with_keys(
            kind,
            vec![VerifyKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            }],
            auth,
        )
    }

    /// A verifier of tokens signed by the private halves of the public keys in
    /// `path`: a JWKS document (JSON, `{"keys": [...]}`, Ed25519 and RSA keys) or
    /// one PEM public key (Ed25519 → EdDSA, RSA → RS256).
    pub fn from_key_file(
        kind: &'static str,
        path: &Path,
        auth: &AuthSettings,
    ) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let bad = |why: String| KeyError::Bad {
            path: shown.clone(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let keys = if bytes.trim_ascii_start().starts_with(b"{") {
            let set: JwkSet = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("not a JWKS document: {e}")))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
                    (AlgorithmParameters::OctetKeyPair(_), None | Some(KeyAlgorithm::EdDSA)) => {
                        Algorithm::EdDSA
                    }
                    (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => {
                        Algorithm::RS256
                    }
                    (_, alg) => {
                        return Err(bad(format!(
                            "key {:?}: only Ed25519 (EdDSA) and RSA (RS256) public keys are accepted, not {alg:?}",
                            jwk.common.key_id
                        )))
                    }
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| bad(format!("key {:?}: {e}", jwk.common.key_id)))?;
                keys.push(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
            keys
        } else if let Ok(key) = DecodingKey::from_ed_pem(&bytes) {
            vec![VerifyKey {
                kid: None,
                algorithm: Algorithm::EdDSA,
                key,
            }]
        } else if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
            vec![VerifyKey {
                kid: None,
                algorithm: Algorithm::RS256,
                key,
            }]
        } else {
            return Err(bad(
                "neither a JWKS document nor an Ed25519 or RSA public key in PEM".into(),
            ));
        };
        if keys.is_empty() {
            return Err(bad("the key set is empty".into()));
        }
        Ok(Self::with_keys(kind, keys, auth))
    }

    fn with_keys(kind: &'static str, keys: Vec<VerifyKey>, auth: &AuthSettings) -> Self {
        Verifier {
            kind,
            keys,
            issuer: auth.issuer.clone().filter(|s| !s.is_empty()),
            audience: auth.audience.clone().filter(|s| !s.is_empty()),
            lifetime_s_max: auth.token_lifetime_s_max,
            leeway_s: auth.leeway_s,
            verified: std::sync::Arc::new(VerifiedTokens {
                max: auth.verified_tokens_max,
                map: Default::default(),
            }),
        }
    }

    /// Verifies a token's signature, algorithm, `exp`, `nbf`, `iss`, `aud` and
    /// lifetime, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        if let Some(c) = self.verified.get(token, unix_now_s(), self.leeway_s) {
            return Ok(c);
        }
        let claims = self.verify_signed(token)?;
        self.verified.insert(token, &claims);
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, ApiError> {
        let unauthorized = |why: String| {
            ApiError::new(
                ProblemCode::Unauthorized,
                format!("invalid {} token: {why}", self.kind),
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauthorized(e.to_string()))?;
        let mut last = None;
        for k in self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&k.kid, &header.kid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        }) {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &self.validation(k.algorithm)) {
                Ok(data) => return self.check(data.claims).map_err(unauthorized),
                Err(e) => last = Some(e),
            }
        }
        Err(unauthorized(match last {
            Some(e) => e.to_string(),
            None => format!("no {} key for algorithm {:?}", self.kind, header.alg),
        }))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.leeway_s;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// What the signature does not cover: the subject and the lifetime.
    fn check(&self, c: Claims) -> Result<Claims, String> {
        if c.sub.is_empty() || c.sub.len() > USER_ID_LEN_MAX {
            return Err(format!("its subject must be 1..={USER_ID_LEN_MAX} bytes"));
        }
        let now = unix_now_s();
        if let Some(iat) = c.iat {
            if iat > now.saturating_add(self.leeway_s) {
                return Err("it was issued in the future (iat)".into());
            }
        }
        // From when it was issued (or could first be used) to when it expires;
        // without either, from now.
        let start = c.iat.or(c.nbf).unwrap_or(now);
        let lifetime = c.exp.saturating_sub(start);
        if lifetime > self.lifetime_s_max.saturating_add(self.leeway_s) {
            return Err(format!(
                "its lifetime ({lifetime} s) exceeds auth.token_lifetime_s_max ({} s)",
                self.lifetime_s_max
            ));
        }
        Ok(c)
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Signs HS256 tokens with one secret (dev clusters, tests, `boxoffice token`).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
}

impl Signer {
    /// A signer with `secret`.
    pub fn hs256(secret: &str) -> Self {
        Signer {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Mints a token for `user`, issued now, valid for `ttl_s` seconds.
    pub fn mint(&self, user: &str, ttl_s: u64) -> Result<String, jsonwebtoken::errors::Error> {
        self.mint_with_scope(user, ttl_s, None)
    }

    /// Mints a token for `user` with `scope` (space-separated), valid for `ttl_s` seconds.
    pub fn mint_with_scope(
        &self,
        user: &str,
        ttl_s: u64,
        scope: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now_s();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl_s,
            iat: Some(now),
            nbf: None,
            scope: scope.map(str::to_string),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}

/// The two verifiers of a node, built from its settings.
#[derive(Clone)]
pub struct TokenKeys {
    /// User tokens.
    pub user: Verifier,
    /// Admin tokens.
    pub admin: Verifier,
}

impl TokenKeys {
    /// The verifiers `config` asks for: key files where set, else the secrets.
    pub fn from_config(config: &crate::config::NodeConfig) -> Result<Self, KeyError> {
        let auth = &config.auth;
        let one = |kind, file: &Option<std::path::PathBuf>, secret: &str| match file {
            Some(path) => Verifier::from_key_file(kind, path, auth),
            None => Ok(Verifier::hs256(kind, secret, auth)),
        };
        Ok(TokenKeys {
            user: one("user", &auth.user_keys_file, &config.token_secret)?,
            admin: one("admin", &auth.admin_keys_file, &config.admin_token_secret)?,
        })
    }
}

/// Something that can verify tokens (the app state).
pub trait HasTokenKeys {
    /// The keys.
    fn token_keys(&self) -> &TokenKeys;
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                ProblemCode::Unauthorized,
                "missing Authorization: Bearer <token>",
            )
        })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(ProblemCode::Unauthorized, "malformed Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ProblemCode::Unauthorized,
                "Authorization must be a Bearer token",
            )
        })
}

/// The authenticated caller (a user token).
#[derive(Clone, Debug)]
pub struct User(pub Claims);

impl<S: HasTokenKeys + HasRateLimits + Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let claims = state.token_keys().user.verify(bearer(parts)?)?;
        // Counted once the subject is verified: a forged one spends nobody's.
        let class = classify(&parts.method, parts.uri.path(), parts.uri.query());
        state.rate_limits().check_user(class, &claims.sub)?;
        Ok(User(claims))
    }
}

/// The caller if it sent a user token (verified, and counted like [`User`]);
/// `None` without an `Authorization` header. A bad token is still refused.
#[derive(Clone, Debug)]
pub struct MaybeUser(pub Option<Claims>);

impl<S: HasTokenKeys + HasRateLimits + Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(MaybeUser(None));
        }
        let User(claims) = User::from_request_parts(parts, state).await?;
        Ok(MaybeUser(Some(claims)))
    }
}

/// An authenticated admin (a token verified with the admin keys).
#[derive(Clone, Debug)]
pub struct Admin(pub Claims);

impl<S: HasTokenKeys + Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let keys = state.token_keys();
        match keys.admin.verify(token) {
            Ok(claims) => Ok(Admin(claims)),
            // A valid user token is authenticated, but not allowed here.
            Err(e) if keys.user.verify(token).is_ok() => Err(ApiError::new(
                ProblemCode::Forbidden,
                format!(
                    "this endpoint needs an admin token, not a user token ({})",
                    e.detail
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
