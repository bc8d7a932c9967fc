//! Token verification: signatures, algorithms, claims, lifetimes, key files.

use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    // Cargo's value for the running test first: a build moved from another
    // checkout keeps its compile-time path.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/fixtures/tokens")
        .join(name)
}

fn settings() -> AuthSettings {
    AuthSettings::default()
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn now() -> u64 {
    unix_now_s()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519-private.pem")).unwrap()).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap()
}

#[test]
fn hs256_mint_verify_and_reject() {
    let v = Verifier::hs256("user", "secret-1", &settings());
    let t = Signer::hs256("secret-1").mint("alice", 60).unwrap();
    assert_eq!(v.verify(&t).unwrap().sub, "alice");
    // Wrong secret.
    assert!(Verifier::hs256("user", "secret-2", &settings())
        .verify(&t)
        .is_err());
    // Tampered payload.
    let mut parts: Vec<&str> = t.split('.').collect();
    let other = Signer::hs256("secret-1").mint("mallory", 60).unwrap();
    let other_payload = other.split('.').nth(1).unwrap().to_string();
    parts[1] = &other_payload;
    assert!(v.verify(&parts.join(".")).is_err());
    // Unsigned ("alg": "none").
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        t.split('.').nth(1).unwrap()
    );
    assert!(v.verify(&none).is_err());
    // Expired beyond the leeway; not valid yet (nbf).
    let key = EncodingKey::from_secret(b"secret-1");
    let expired = serde_json::json!({"sub": "bob", "exp": now() - 3600, "iat": now() - 7200});
    assert!(v
        .verify(&sign(Algorithm::HS256, None, &key, &expired))
        .is_err());
    let early = serde_json::json!({"sub": "bob", "exp": now() + 600, "nbf": now() + 300});
    let e = v
        .verify(&sign(Algorithm::HS256, None, &key, &early))
        .unwrap_err();
    assert!(e.to_string().contains("ImmatureSignature"), "{e}");
    // iat is optional.
    let no_iat = serde_json::json!({"sub": "bob", "exp": now() + 600});
    assert_eq!(
        v.verify(&sign(Algorithm::HS256, None, &key, &no_iat))
            .unwrap()
            .sub,
        "bob"
    );
    // No exp: refused.
    let no_exp = serde_json::json!({"sub": "bob"});
    assert!(v
        .verify(&sign(Algorithm::HS256, None, &key, &no_exp))
        .is_err());
}

#[test]
fn a_token_living_longer_than_the_maximum_is_refused() {
    let mut s = settings();
    s.token_lifetime_s_max = 3600;
    let v = Verifier::hs256("user", "k", &s);
    let key = EncodingKey::from_secret(b"k");
    let ok = serde_json::json!({"sub": "a", "iat": now(), "exp": now() + 3600});
    assert!(v.verify(&sign(Algorithm::HS256, None, &key, &ok)).is_ok());
    let long = serde_json::json!({"sub": "a", "iat": now(), "exp": now() + 86_400});
    let e = v
        .verify(&sign(Algorithm::HS256, None, &key, &long))
        .unwrap_err();
    assert!(e.to_string().contains("token_lifetime_s_max"), "{e}");
    // Without iat, judged from nbf, else from now.
    let long = serde_json::json!({"sub": "a", "nbf": now() - 10, "exp": now() + 86_400});
    assert!(v
        .verify(&sign(Algorithm::HS256, None, &key, &long))
        .is_err());
    let long = serde_json::json!({"sub": "a", "exp": now() + 86_400});
    assert!(v
        .verify(&sign(Algorithm::HS256, None, &key, &long))
        .is_err());
    // Issued in the future.
    let future = serde_json::json!({"sub": "a", "iat": now() + 600, "exp": now() + 700});
    assert!(v
        .verify(&sign(Algorithm::HS256, None, &key, &future))
        .is_err());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut s = settings();
    s.issuer = Some("https://login.example".into());
    s.audience = Some("boxoffice".into());
    let v = Verifier::hs256("user", "k", &s);
    let key = EncodingKey::from_secret(b"k");
    let claims = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = serde_json::json!({"sub": "a", "exp": now() + 60});
        if let Some(i) = iss {
            c["iss"] = i.into();
        }
        if let Some(a) = aud {
            c["aud"] = a.into();
        }
        sign(Algorithm::HS256, None, &key, &c)
    };
    assert!(v
        .verify(&claims(Some("https://login.example"), Some("boxoffice")))
        .is_ok());
    assert!(v
        .verify(&claims(Some("https://evil.example"), Some("boxoffice")))
        .is_err());
    assert!(v
        .verify(&claims(Some("https://login.example"), Some("other")))
        .is_err());
    assert!(v.verify(&claims(None, Some("boxoffice"))).is_err());
    assert!(v
        .verify(&claims(Some("https://login.example"), None))
        .is_err());
    // Not configured: a token's own iss and aud do not matter.
    let open = Verifier::hs256("user", "k", &settings());
    assert!(open
        .verify(&claims(Some("anyone"), Some("anything")))
        .is_ok());
}

#[test]
fn public_keys_from_pem_and_jwks_verify_eddsa_and_rs256() {
    let s = settings();
    let claims = serde_json::json!({"sub": "carol", "exp": now() + 60, "iat": now()});
    let ed = sign(Algorithm::EdDSA, Some("ed-1"), &ed_key(), &claims);
    let rsa = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &claims);
    let ed_pem = Verifier::from_key_file("user", &fixture("ed25519-public.pem"), &s).unwrap();
    let rsa_pem = Verifier::from_key_file("user", &fixture("rsa-public.pem"), &s).unwrap();
    let jwks = Verifier::from_key_file("user", &fixture("jwks.json"), &s).unwrap();
    assert_eq!(ed_pem.verify(&ed).unwrap().sub, "carol");
    assert!(ed_pem.verify(&rsa).is_err());
    assert_eq!(rsa_pem.verify(&rsa).unwrap().sub, "carol");
    assert!(rsa_pem.verify(&ed).is_err());
    assert!(jwks.verify(&ed).is_ok());
    assert!(jwks.verify(&rsa).is_ok());
    // A kid the set does not have is not tried against the others.
    let wrong_kid = sign(Algorithm::EdDSA, Some("ed-2"), &ed_key(), &claims);
    assert!(jwks.verify(&wrong_kid).is_err());
    // HS256 with the public key's bytes as the secret (algorithm confusion).
    let pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&pem),
        &claims,
    );
    assert!(rsa_pem.verify(&confused).is_err());
    assert!(jwks.verify(&confused).is_err());
}

#[test]
fn unusable_key_files_are_refused_with_their_path() {
    let s = settings();
    let e = Verifier::from_key_file("user", &fixture("missing.pem"), &s)
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A private key is not a public key; nor is this README.
    assert!(Verifier::from_key_file("user", &fixture("README.md"), &s).is_err());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    let e = Verifier::from_key_file("user", &empty, &s).err().unwrap();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn a_verified_token_is_remembered_until_it_expires_and_only_by_its_exact_text() {
    let v = Verifier::hs256("user", "secret-1", &settings());
    let t = Signer::hs256("secret-1").mint("alice", 60).unwrap();
    assert_eq!(v.verify(&t).unwrap().sub, "alice");
    assert!(v.verified.get(&t, now(), 5).is_some(), "remembered");
    // A tampered copy is not the remembered token: checked, and refused.
    let mut tampered = t.clone();
    tampered.push('A');
    assert!(v.verify(&tampered).is_err());
    assert!(v.verified.get(&tampered, now(), 5).is_none());
    // Past its exp (plus leeway) it is forgotten, and then refused afresh.
    let exp = v.verified.get(&t, now(), 5).unwrap().exp;
    assert!(
        v.verified.get(&t, exp + 6, 5).is_none(),
        "forgotten once expired"
    );
    assert!(v.verified.get(&t, now(), 5).is_none(), "and dropped");
    let expired = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"secret-1"),
        &serde_json::json!({"sub": "bob", "exp": now() - 100, "iat": now() - 200}),
    );
    assert!(v.verify(&expired).is_err());
    // Off: nothing remembered.
    let mut off = settings();
    off.verified_tokens_max = 0;
    let v = Verifier::hs256("user", "secret-1", &off);
    assert!(v.verify(&t).is_ok());
    assert!(v.verified.get(&t, now(), 5).is_none());
}
