//! Webhook signatures, as the provider documents them (Stripe's
//! `Stripe-Signature`): `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each
//! `v1` is HMAC-SHA256, keyed with the endpoint's signing secret (`whsec_...`,
//! the whole string), over `"{t}.{raw body}"`. Any `v1` may match any of the
//! secrets (so a secret can be rotated), the comparison is constant-time, and a
//! timestamp further than the tolerance from now is refused (a replayed
//! delivery). The node checks the provider's deliveries with it; a site
//! receiving the store's own webhooks checks them with it too.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature's timestamp may be from now (seconds), as the provider's
/// libraries default to.
pub const SIGNATURE_TOLERANCE_S: u64 = 300;
/// Most `v1` signatures one header may carry (a rotation has two or three).
pub const SIGNATURES_PER_HEADER_MAX: usize = 8;
/// Longest signature header accepted (bytes).
pub const SIGNATURE_HEADER_LEN_MAX: usize = 2048;

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is missing or not `t=...,v1=...`.
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    /// The timestamp is too far from now.
    #[error("signature timestamp is {age_s} s from now; at most {tolerance_s} s is accepted")]
    Stale {
        /// How far (seconds).
        age_s: u64,
        /// The tolerance.
        tolerance_s: u64,
    },
    /// No `v1` matches any secret.
    #[error("no signature matches the payload")]
    NoMatch,
}

fn mac(secret: &str, t: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value that signs `body` at time `t` with `secret`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let sig = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex(&sig))
}

/// Checks `header` against `body` at `now_s` (unix seconds) with any of `secrets`.
/// Returns the signed timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now_s: u64,
    tolerance_s: u64,
) -> Result<u64, SignatureError> {
    if header.len() > SIGNATURE_HEADER_LEN_MAX {
        return Err(SignatureError::Malformed("header too long"));
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("a part is not key=value"));
        };
        match k {
            "t" => {
                t = Some(
                    v.parse::<u64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                )
            }
            "v1" => {
                if sigs.len() == SIGNATURES_PER_HEADER_MAX {
                    return Err(SignatureError::Malformed("too many signatures"));
                }
                // A v1 that is not hex cannot match; it is skipped, not fatal.
                if let Some(bytes) = unhex(v) {
                    sigs.push(bytes);
                }
            }
            // Other schemes (v0, test schemes) are ignored, as the provider's libraries do.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed("no timestamp"))?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let age_s = now_s.abs_diff(t);
    if age_s > tolerance_s {
        return Err(SignatureError::Stale { age_s, tolerance_s });
    }
    for secret in secrets {
        for sig in &sigs {
            // `verify_slice` compares in constant time.
            if mac(secret, t, body).verify_slice(sig).is_ok() {
                return Ok(t);
            }
        }
    }
    Err(SignatureError::NoMatch)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn secrets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_known_vector_matches_hmac_sha256_over_t_dot_body() {
        // Computed independently: printf '%s' '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test_secret
        assert_eq!(
            sign(SECRET, 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=aecbc681fe3d2604c08ff8e880a0988d997a12367fcf9545e6a3b90c1dfc04b7"
        );
    }

    #[test]
    fn a_signature_verifies_and_any_change_is_refused() {
        let now = 1_700_000_000;
        let h = sign(SECRET, now, BODY);
        assert_eq!(verify(&h, BODY, &secrets(&[SECRET]), now, 300), Ok(now));
        let mut other = BODY.to_vec();
        other[5] ^= 1;
        assert_eq!(
            verify(&h, &other, &secrets(&[SECRET]), now, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&h, BODY, &secrets(&["whsec_other"]), now, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_v1_may_match_any_secret() {
        let now = 1_700_000_000;
        let good = sign("whsec_new", now, BODY);
        let good_sig = good.split(",v1=").nth(1).unwrap();
        let header = format!("t={now},v1={},v0=abc,v1={good_sig}", "00".repeat(32));
        assert_eq!(
            verify(
                &header,
                BODY,
                &secrets(&["whsec_old", "whsec_new"]),
                now,
                300
            ),
            Ok(now)
        );
    }

    #[test]
    fn a_timestamp_301_s_old_is_refused_and_300_s_is_not() {
        let t = 1_700_000_000;
        let h = sign(SECRET, t, BODY);
        assert_eq!(verify(&h, BODY, &secrets(&[SECRET]), t + 300, 300), Ok(t));
        assert_eq!(
            verify(&h, BODY, &secrets(&[SECRET]), t + 301, 300),
            Err(SignatureError::Stale {
                age_s: 301,
                tolerance_s: 300
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = secrets(&[SECRET]);
        for h in ["", "v1=00", "t=abc,v1=00", "t=1", "garbage", "t=1,v1"] {
            assert!(
                matches!(
                    verify(h, BODY, &s, 1, 300),
                    Err(SignatureError::Malformed(_))
                ),
                "{h:?}"
            );
        }
        let many = format!("t=1{}", ",v1=00".repeat(SIGNATURES_PER_HEADER_MAX + 1));
        assert!(matches!(
            verify(&many, BODY, &s, 1, 300),
            Err(SignatureError::Malformed(_))
        ));
    }
}
