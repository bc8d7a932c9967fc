//! Admission tokens: what an admitted user's holds carry
//! (`Boxoffice-Admission`). A JWT (HS256) naming the event, the user and their
//! queue ticket, valid until their session ends; signed with a key every node
//! derives from the cluster key, so any node verifies one without a lookup.
//! The shard's state machine checks the session itself when the hold applies
//! (a token outlives a session that ended with a booking); the token keeps
//! forged and stale admissions off the log.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The audience of admission tokens (no user or admin token has it).
pub const ADMISSION_AUDIENCE: &str = "boxoffice-admission";

/// What an admission token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionClaims {
    /// The user admitted.
    pub sub: String,
    /// [`ADMISSION_AUDIENCE`].
    pub aud: String,
    /// The event.
    pub ev: u64,
    /// The user's queue ticket.
    pub tkt: u64,
    /// When the session ends (s since the epoch, rounded up; JWT's own check).
    pub exp: u64,
    /// When the session ends (ms since the epoch): the check that counts.
    pub exp_ms: u64,
}

/// Why an admission token does not let a hold through.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Not a token of this cluster, or tampered with.
    #[error("the admission token is not valid: {0}")]
    Invalid(String),
    /// For another event.
    #[error("the admission is for event {0}")]
    OtherEvent(u64),
    /// For another user.
    #[error("the admission is another user's")]
    OtherUser,
    /// The session it names has ended.
    #[error("the admission expired at {0} ms")]
    Expired(u64),
}

/// The node's admission keys.
pub struct AdmissionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl AdmissionKeys {
    /// Keys derived from the cluster key: HMAC-SHA256(cluster key, a label), so
    /// the token key is not the cluster key and needs no setting of its own.
    pub fn from_cluster_key(cluster_key: &str) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(cluster_key.as_bytes())
            .expect("HMAC accepts any key length");
        mac.update(b"boxoffice admission tokens v1");
        let key = mac.finalize().into_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[ADMISSION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        AdmissionKeys {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
        }
    }

    /// The token of `user`'s admission to `event_id` with `ticket`, until `ends_at_ms`.
    pub fn mint(
        &self,
        event_id: u64,
        user: &str,
        ticket: u64,
        ends_at_ms: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AdmissionClaims {
            sub: user.to_string(),
            aud: ADMISSION_AUDIENCE.to_string(),
            ev: event_id,
            tkt: ticket,
            exp: ends_at_ms.div_ceil(1000),
            exp_ms: ends_at_ms,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The ticket `token` admits `user` to `event_id` with, at `now_ms`.
    pub fn verify(
        &self,
        token: &str,
        event_id: u64,
        user: &str,
        now_ms: u64,
    ) -> Result<u64, AdmissionError> {
        let data = jsonwebtoken::decode::<AdmissionClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AdmissionError::Expired(0),
                _ => AdmissionError::Invalid(e.to_string()),
            });
        let c = match data {
            Ok(d) => d.claims,
            Err(AdmissionError::Expired(_)) => {
                return Err(AdmissionError::Expired(now_ms.min(u64::MAX)))
            }
            Err(e) => return Err(e),
        };
        if c.ev != event_id {
            return Err(AdmissionError::OtherEvent(c.ev));
        }
        if c.sub != user {
            return Err(AdmissionError::OtherUser);
        }
        if c.exp_ms <= now_ms {
            return Err(AdmissionError::Expired(c.exp_ms));
        }
        Ok(c.tkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000_000;

    #[test]
    fn a_token_admits_its_user_to_its_event_until_it_ends() {
        let keys = AdmissionKeys::from_cluster_key("cluster-key-0123456789abcdef0123456789");
        let t = keys.mint(7, "alice", 41, NOW + 60_000).unwrap();
        assert_eq!(keys.verify(&t, 7, "alice", NOW), Ok(41));
        assert_eq!(
            keys.verify(&t, 8, "alice", NOW),
            Err(AdmissionError::OtherEvent(7))
        );
        assert_eq!(
            keys.verify(&t, 7, "mallory", NOW),
            Err(AdmissionError::OtherUser)
        );
        assert_eq!(
            keys.verify(&t, 7, "alice", NOW + 60_000),
            Err(AdmissionError::Expired(NOW + 60_000))
        );
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let keys = AdmissionKeys::from_cluster_key("cluster-key-0123456789abcdef0123456789");
        let other = AdmissionKeys::from_cluster_key("another-cluster-key-0123456789abcdef");
        let foreign = other.mint(7, "alice", 41, NOW + 60_000).unwrap();
        assert!(matches!(
            keys.verify(&foreign, 7, "alice", NOW),
            Err(AdmissionError::Invalid(_))
        ));
        // A better ticket's claims under a genuine token's signature: the
        // signature binds the claims.
        let genuine = keys.mint(7, "alice", 41, NOW + 60_000).unwrap();
        let better = keys.mint(7, "alice", 0, NOW + 60_000).unwrap();
        let g: Vec<&str> = genuine.split('.').collect();
        let b: Vec<&str> = better.split('.').collect();
        assert_ne!(g[1], b[1]);
        let forged = format!("{}.{}.{}", g[0], b[1], g[2]);
        assert!(matches!(
            keys.verify(&forged, 7, "alice", NOW),
            Err(AdmissionError::Invalid(_))
        ));
        assert!(matches!(
            keys.verify("not a token", 7, "alice", NOW),
            Err(AdmissionError::Invalid(_))
        ));
    }
}
