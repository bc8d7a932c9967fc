//! Bearer tokens: HS256 JWTs with the user id in `sub` and an `admin` claim.
//!
//! The user is always taken from a verified token, never from a request body.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use boxoffice_api::ProblemCode;

use crate::error::ApiError;

/// Claims in a boxoffice token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Admin tokens may use the admin API.
    #[serde(default)]
    pub admin: bool,
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// Longest accepted user id (bytes).
pub const USER_ID_LEN_MAX: usize = 128;

impl TokenKeys {
    /// Keys from a secret.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Mints a token for `user` valid for `ttl_s` seconds.
    pub fn mint(
        &self,
        user: &str,
        admin: bool,
        ttl_s: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl_s,
            iat: now,
            admin,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a token's signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| ApiError::new(ProblemCode::Unauthorized, format!("invalid token: {e}")))?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > USER_ID_LEN_MAX {
            return Err(ApiError::new(
                ProblemCode::Unauthorized,
                "token subject must be 1..=128 bytes",
            ));
        }
        Ok(c)
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

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct User(pub Claims);

impl<S: HasTokenKeys + Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(User(state.token_keys().verify(bearer(parts)?)?))
    }
}

/// An authenticated caller with the admin claim.
#[derive(Clone, Debug)]
pub struct Admin(pub Claims);

impl<S: HasTokenKeys + Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let claims = state.token_keys().verify(bearer(parts)?)?;
        if !claims.admin {
            return Err(ApiError::new(
                ProblemCode::Forbidden,
                "this endpoint needs an admin token",
            ));
        }
        Ok(Admin(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_verify_and_reject() {
        let keys = TokenKeys::new("secret-1");
        let t = keys.mint("alice", false, 60).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(!c.admin);
        // Wrong secret.
        assert!(TokenKeys::new("secret-2").verify(&t).is_err());
        // Tampered payload.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = keys.mint("mallory", true, 60).unwrap();
        let forged_payload = forged.split('.').nth(1).unwrap().to_string();
        parts[1] = &forged_payload;
        assert!(keys.verify(&parts.join(".")).is_err());
        // Unsigned ("alg": "none").
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            t.split('.').nth(1).unwrap()
        );
        assert!(keys.verify(&none).is_err());
        // Expired (beyond leeway).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "bob".into(),
                exp: now - 3600,
                iat: now - 7200,
                admin: false,
            },
            &EncodingKey::from_secret(b"secret-1"),
        )
        .unwrap();
        assert!(keys.verify(&expired).is_err());
    }
}
