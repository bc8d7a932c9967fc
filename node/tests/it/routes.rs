//! The router of one node, in-process (no socket): bad input gets a clear
//! problem+json answer with its code and status and changes nothing; endpoints
//! that need a bootstrapped cluster, an admin or fault injection say so.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use boxoffice_api::{NewLayout, NewVenue, ProblemCode};
use boxoffice_node::app::{router, AppState};
use boxoffice_node::auth::TokenKeys;
use boxoffice_node::node::Node;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::{mint, new_event, ADMIN_SECRET, CLUSTER_KEY, SECRET};

/// One node in this process, with its router.
struct InProcess {
    router: Router,
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

/// An answer: status, content type, body as JSON (`null` when empty).
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl InProcess {
    /// A node with `settings` (`--set` pairs), bootstrapped as a one-node
    /// cluster of one shard when `bootstrap`.
    async fn start(bootstrap: bool, settings: &[&str]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut sets: Vec<String> = vec![
            "id=1".into(),
            "listen=127.0.0.1:9".into(),
            format!("data_dir={}", dir.path().display()),
            format!("token_secret={SECRET}"),
            format!("admin_token_secret={ADMIN_SECRET}"),
            format!("cluster_key={CLUSTER_KEY}"),
        ];
        sets.extend(settings.iter().map(|s| s.to_string()));
        let config = boxoffice_node::config::resolve(None, &sets, |_| None).unwrap();
        let keys = TokenKeys::from_config(&config).unwrap();
        let node = Node::open(config).await.unwrap();
        let router = router(AppState::new(node.clone(), keys));
        let n = InProcess {
            router,
            node,
            _dir: dir,
        };
        if bootstrap {
            n.bootstrap(&mint("ops", true)).await;
        }
        n
    }

    /// Bootstraps the node as a one-node cluster of one shard and waits until
    /// it is ready.
    async fn bootstrap(&self, admin_token: &str) {
        let n = self;
        {
            let init = json!({"members": [{"id": 1, "addr": "127.0.0.1:9"}], "shards": 1});
            let a = n
                .call(
                    Method::POST,
                    "/admin/v1/cluster/init",
                    Some(admin_token),
                    None,
                    Some(init.to_string()),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while n
                .call(Method::GET, "/readyz", None, None, None)
                .await
                .status
                != StatusCode::OK
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "one node never became ready"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// A problem answer's code, checking its status matches it.
    async fn problem(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<String>,
    ) -> (ProblemCode, Value) {
        let a = self.call(method, path, token, key, body).await;
        assert_eq!(
            a.content_type, "application/problem+json",
            "{path}: {}",
            a.body
        );
        let code = ProblemCode::parse(a.body["code"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("{path}: unknown code in {}", a.body));
        assert_eq!(a.status.as_u16(), code.status(), "{path}: {}", a.body);
        assert_eq!(a.body["status"], code.status(), "{path}");
        assert_eq!(a.body["type"], code.type_uri(), "{path}");
        (code, a.body)
    }

    /// A seated venue of 10 seats and an event there; returns the event.
    async fn event(&self) -> u64 {
        let admin = mint("ops", true);
        let venue = NewVenue::new(
            "Hall",
            "Town",
            1.0,
            2.0,
            NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), 10, 1000)])]),
        );
        let a = self
            .call(
                Method::POST,
                "/admin/v1/venues",
                Some(&admin),
                Some("v"),
                Some(serde_json::to_string(&venue).unwrap()),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        let ev = new_event("Night", a.body["venue_id"].as_u64().unwrap(), 600, 4);
        let a = self
            .call(
                Method::POST,
                "/admin/v1/events",
                Some(&admin),
                Some("e"),
                Some(serde_json::to_string(&ev).unwrap()),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["event_id"].as_u64().unwrap()
    }

    async fn seat_statuses(&self, event: u64) -> Value {
        let a = self
            .call(
                Method::GET,
                &format!("/v1/events/{event}/seats?consistency=linearizable"),
                None,
                None,
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        json!(a.body["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].clone())
            .collect::<Vec<_>>())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_holds_get_their_problem_and_change_nothing() {
    let n = InProcess::start(true, &[]).await;
    let event = n.event().await;
    let before = n.seat_statuses(event).await;
    let token = mint("carol", false);
    let forged = {
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[2] = "AAAA".into();
        parts.join(".")
    };
    let t = Some(token.as_str());
    let cases: Vec<(&str, Option<&str>, String, ProblemCode)> = vec![
        ("malformed json", t, "{".into(), ProblemCode::MalformedJson),
        (
            "unknown field",
            t,
            json!({"event_id": event, "seat_ids": [4], "user": "x"}).to_string(),
            ProblemCode::MalformedJson,
        ),
        (
            "empty seats",
            t,
            json!({"event_id": event, "seat_ids": []}).to_string(),
            ProblemCode::InvalidParameter,
        ),
        (
            "too many seats",
            t,
            json!({"event_id": event, "seat_ids": (0..101).collect::<Vec<u32>>()}).to_string(),
            ProblemCode::InvalidParameter,
        ),
        (
            "negative quantity",
            t,
            json!({"event_id": event, "quantity": -2}).to_string(),
            ProblemCode::InvalidParameter,
        ),
        (
            "both seats and quantity",
            t,
            json!({"event_id": event, "quantity": 1, "seat_ids": [4]}).to_string(),
            ProblemCode::InvalidInput,
        ),
        (
            "seat out of range",
            t,
            json!({"event_id": event, "seat_ids": [4, 10]}).to_string(),
            ProblemCode::InvalidInput,
        ),
        (
            "duplicate seats",
            t,
            json!({"event_id": event, "seat_ids": [4, 4]}).to_string(),
            ProblemCode::InvalidInput,
        ),
        (
            "unknown event",
            t,
            json!({"event_id": 987654, "seat_ids": [4]}).to_string(),
            ProblemCode::UnknownEvent,
        ),
        (
            "missing token",
            None,
            json!({"event_id": event, "seat_ids": [4]}).to_string(),
            ProblemCode::Unauthorized,
        ),
        (
            "forged token",
            Some(&forged),
            json!({"event_id": event, "seat_ids": [4]}).to_string(),
            ProblemCode::Unauthorized,
        ),
        (
            "body over limit",
            t,
            format!(
                "{{\"event_id\": {event}, \"seat_ids\": [{}4]}}",
                " ".repeat(300 * 1024)
            ),
            ProblemCode::BodyTooLarge,
        ),
    ];
    for (i, (what, tok, body, want)) in cases.into_iter().enumerate() {
        let key = format!("bad-{i}");
        let (code, v) = n
            .problem(Method::POST, "/v1/holds", tok, Some(&key), Some(body))
            .await;
        assert_eq!(code, want, "{what}: {v}");
    }
    let body = json!({"event_id": event, "seat_ids": [4]}).to_string();
    let (code, _) = n
        .problem(Method::POST, "/v1/holds", t, None, Some(body.clone()))
        .await;
    assert_eq!(code, ProblemCode::MissingIdempotencyKey);
    let long_key = "k".repeat(129);
    let (code, _) = n
        .problem(Method::POST, "/v1/holds", t, Some(&long_key), Some(body))
        .await;
    assert_eq!(code, ProblemCode::InvalidIdempotencyKey);
    assert_eq!(
        n.seat_statuses(event).await,
        before,
        "bad input changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_admin_routes_name_what_is_wrong() {
    let n = InProcess::start(true, &[]).await;
    let event = n.event().await;
    let user = mint("carol", false);
    let u = Some(user.as_str());
    for (path, tok, want, param) in [
        (
            "/v1/bookings/b1-notanumber",
            u,
            ProblemCode::InvalidParameter,
            Some("booking_id"),
        ),
        ("/v1/bookings/b9-1", u, ProblemCode::UnknownBooking, None),
        ("/v1/holds/h9-1", u, ProblemCode::UnknownHold, None),
        (
            "/v1/bookings?event_id=abc",
            u,
            ProblemCode::InvalidParameter,
            Some("event_id"),
        ),
        (
            "/v1/events/abc",
            None,
            ProblemCode::InvalidParameter,
            Some("event_id"),
        ),
        ("/v1/events/424242", None, ProblemCode::UnknownEvent, None),
        (
            "/v1/events?limit=0",
            None,
            ProblemCode::InvalidParameter,
            Some("limit"),
        ),
        (
            "/v1/events?limit=x&limit=y",
            None,
            ProblemCode::InvalidParameter,
            Some("query"),
        ),
        (
            "/v1/search?bogus=1",
            None,
            ProblemCode::InvalidParameter,
            Some("bogus"),
        ),
        (
            "/v1/search?lat=91&lon=0",
            None,
            ProblemCode::InvalidParameter,
            Some("lat"),
        ),
        ("/nowhere", None, ProblemCode::NotFound, None),
        ("/admin/v1/cluster", u, ProblemCode::Forbidden, None),
        ("/admin/v1/cluster", None, ProblemCode::Unauthorized, None),
    ] {
        let (code, v) = n.problem(Method::GET, path, tok, None, None).await;
        assert_eq!(code, want, "{path}: {v}");
        if let Some(p) = param {
            assert_eq!(v["parameter"], p, "{path}: {v}");
        }
    }
    let seats = format!("/v1/events/{event}/seats");
    for (query, want, param) in [
        ("?view=pixels", ProblemCode::InvalidParameter, Some("view")),
        (
            "?consistency=eventual",
            ProblemCode::InvalidParameter,
            Some("consistency"),
        ),
        ("?section=Gods", ProblemCode::UnknownSection, None),
    ] {
        let (code, v) = n
            .problem(Method::GET, &format!("{seats}{query}"), None, None, None)
            .await;
        assert_eq!(code, want, "{query}: {v}");
        if let Some(p) = param {
            assert_eq!(v["parameter"], p, "{query}: {v}");
        }
    }
    // Fault injection is refused on a node started without it.
    let admin = mint("ops", true);
    for path in ["/admin/v1/fault/clock", "/admin/v1/fault/panic"] {
        let body = json!({"offset_ms": 5}).to_string();
        let (code, _) = n
            .problem(Method::POST, path, Some(&admin), None, Some(body))
            .await;
        assert_eq!(code, ProblemCode::FaultInjectionDisabled, "{path}");
    }
    let (code, _) = n
        .problem(
            Method::POST,
            "/admin/v1/groups/7/snapshot",
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(code, ProblemCode::UnknownGroup);
    // A good read is plain JSON with its freshness.
    let a = n.call(Method::GET, &seats, None, None, None).await;
    assert_eq!(
        (a.status, a.content_type.as_str()),
        (StatusCode::OK, "application/json")
    );
    assert_eq!(a.body["freshness"]["shard"], 1, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_before_bootstrap_says_it_is_not_ready() {
    let n = InProcess::start(false, &[]).await;
    let a = n.call(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.body["ready"], false, "{}", a.body);
    let a = n.call(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(
        (a.status, a.body["node_id"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    for path in ["/v1/events", "/v1/events/1/seats", "/v1/search?q=x"] {
        let (code, _) = n.problem(Method::GET, path, None, None, None).await;
        assert_eq!(code, ProblemCode::NotReady, "{path}");
    }
    let hold = json!({"event_id": 1, "seat_ids": [0]}).to_string();
    let (code, _) = n
        .problem(
            Method::POST,
            "/v1/holds",
            Some(&mint("carol", false)),
            Some("k"),
            Some(hold),
        )
        .await;
    assert_eq!(code, ProblemCode::NotReady);
    assert!(n.node.shards().is_none());
}

/// Issue 14: right after a new cluster said it was ready, a local read could
/// answer 503 `replica_stale` with a lag since 1970 (its replicas had applied no
/// stamped entry yet). Now a node is ready only once every replica it hosts
/// knows its time, a new group gets its first tick at once, and a replica with
/// no time says so. Here with a ten-minute tick interval, so that nothing but
/// that first tick can give the groups a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_every_replica_can_serve_local_reads() {
    let n = InProcess::start(
        true,
        &[
            "raft.tick_interval_ms=600000",
            "limits.replica_staleness_ms_max=1300000",
        ],
    )
    .await;
    let a = n.call(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = n.call(Method::GET, "/v1/events", None, None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body["freshness"]["applied_time_ms"].as_u64().unwrap() > 0,
        "{}",
        a.body
    );
    // No such event yet: a 404 from a replica that can read, not a 503.
    let (code, v) = n
        .problem(Method::GET, "/v1/events/1/seats", None, None, None)
        .await;
    assert_eq!(code, ProblemCode::UnknownEvent, "{v}");
}

/// Issue 14: one secret verified user and admin tokens alike, so whoever could
/// mint user tokens (a login service) could mint admin tokens too. Now each kind
/// has its own key: a user token, even one claiming `"admin": true`, is refused
/// by the admin API, and an admin token is not a user token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_admin_tokens_have_separate_keys() {
    let n = InProcess::start(true, &[]).await;
    let venue = serde_json::to_string(&NewVenue::new(
        "Hall",
        "Town",
        1.0,
        2.0,
        NewLayout::GeneralAdmission {
            capacity: 10,
            price_cents: 500,
        },
    ))
    .unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "mallory", "exp": unix_now_s() + 600, "admin": true}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for user_token in [mint("mallory", false), forged] {
        let (code, v) = n
            .problem(
                Method::POST,
                "/admin/v1/venues",
                Some(&user_token),
                Some("v-1"),
                Some(venue.clone()),
            )
            .await;
        assert_eq!(code, ProblemCode::Forbidden, "{v}");
    }
    let a = n
        .call(
            Method::POST,
            "/admin/v1/venues",
            Some(&mint("ops", true)),
            Some("v-1"),
            Some(venue),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let (code, v) = n
        .problem(
            Method::GET,
            "/v1/bookings?event_id=1",
            Some(&mint("ops", true)),
            None,
            None,
        )
        .await;
    assert_eq!(code, ProblemCode::Unauthorized, "{v}");
}

/// Issue 14: nodes could only verify HS256 tokens, so each held a key able to
/// mint them. Now user (and admin) tokens may be verified with public keys only
/// (a JWKS document or a PEM key; EdDSA and RS256), `iss` and `aud` checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verified_with_public_keys_from_a_jwks_file() {
    let fixtures = crate::support::manifest_dir().join("tests/fixtures/tokens");
    let jwks = format!(
        "auth.user_keys_file={}",
        fixtures.join("jwks.json").display()
    );
    let n = InProcess::start(
        false,
        &[
            "token_secret=",
            &jwks,
            "auth.issuer=https://login.boxoffice.test",
            "auth.audience=boxoffice",
        ],
    )
    .await;
    let now = unix_now_s();
    let sign = |alg, kid: &str, file: &str, iss: &str| {
        let pem = std::fs::read(fixtures.join(file)).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &json!({"sub": "carol", "exp": now + 600, "iss": iss, "aud": "boxoffice"}),
            &key,
        )
        .unwrap()
    };
    let iss = "https://login.boxoffice.test";
    // Admin tokens are checked for the same issuer and audience.
    let admin = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ops", "exp": now + 600, "iss": iss, "aud": "boxoffice"}),
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .unwrap();
    n.bootstrap(&admin).await;
    for token in [
        sign(
            jsonwebtoken::Algorithm::EdDSA,
            "ed-1",
            "ed25519-private.pem",
            iss,
        ),
        sign(
            jsonwebtoken::Algorithm::RS256,
            "rsa-1",
            "rsa-private.pem",
            iss,
        ),
    ] {
        let a = n
            .call(
                Method::GET,
                "/v1/bookings?event_id=1",
                Some(&token),
                None,
                None,
            )
            .await;
        // Authenticated: the answer is about the event, not the token.
        assert_ne!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    for token in [
        sign(
            jsonwebtoken::Algorithm::EdDSA,
            "ed-1",
            "ed25519-private.pem",
            "https://other.test",
        ),
        mint("carol", false),
    ] {
        let (code, v) = n
            .problem(
                Method::GET,
                "/v1/bookings?event_id=1",
                Some(&token),
                None,
                None,
            )
            .await;
        assert_eq!(code, ProblemCode::Unauthorized, "{v}");
    }
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issue 14: another user's hold or booking answered 403, which tells a scanner
/// walking the sequential ids that the id exists. Now it answers exactly what
/// an id that was never issued answers, and the hold stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_holds_and_bookings_answer_as_if_they_did_not_exist() {
    let n = InProcess::start(true, &[]).await;
    let event = n.event().await;
    let (alice, bob) = (mint("alice", false), mint("bob", false));
    let hold = n
        .call(
            Method::POST,
            "/v1/holds",
            Some(&alice),
            Some("h-1"),
            Some(json!({"event_id": event, "seat_ids": [1]}).to_string()),
        )
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
    let id = hold.body["hold_id"].as_str().unwrap().to_string();
    // The same shard, a sequence number never issued.
    let (prefix, _) = id.rsplit_once('-').unwrap();
    let never = format!("{prefix}-999999");
    let probes = |hold: &str| {
        vec![
            (Method::GET, format!("/v1/holds/{hold}"), None),
            (
                Method::POST,
                format!("/v1/holds/{hold}/confirm"),
                Some(json!({"payment_ref": "pay-1"}).to_string()),
            ),
            (Method::DELETE, format!("/v1/holds/{hold}"), None),
        ]
    };
    for (i, ((m, path, body), (m2, path2, body2))) in
        probes(&id).into_iter().zip(probes(&never)).enumerate()
    {
        let (k, k2) = (format!("k-{i}"), format!("k2-{i}"));
        let (code, v) = n.problem(m, &path, Some(&bob), Some(&k), body).await;
        let (code2, v2) = n.problem(m2, &path2, Some(&bob), Some(&k2), body2).await;
        assert_eq!(code, ProblemCode::UnknownHold, "{path}: {v}");
        assert_eq!(code2, ProblemCode::UnknownHold, "{path2}: {v2}");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&v), keys(&v2), "{path}");
        assert_eq!(
            v["detail"].as_str().unwrap().replace(&id, "ID"),
            v2["detail"].as_str().unwrap().replace(&never, "ID"),
            "{path}"
        );
    }
    let a = n
        .call(
            Method::GET,
            &format!("/v1/holds/{id}"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(a.body["status"], "active", "{}", a.body);
    let booking = n
        .call(
            Method::POST,
            &format!("/v1/holds/{id}/confirm"),
            Some(&alice),
            Some("c-1"),
            Some(json!({"payment_ref": "pay-1"}).to_string()),
        )
        .await;
    assert_eq!(booking.status, StatusCode::CREATED, "{}", booking.body);
    let booking_id = booking.body["booking_id"].as_str().unwrap();
    let (code, v) = n
        .problem(
            Method::GET,
            &format!("/v1/bookings/{booking_id}"),
            Some(&bob),
            None,
            None,
        )
        .await;
    assert_eq!(code, ProblemCode::UnknownBooking, "{v}");
    let a = n
        .call(
            Method::GET,
            &format!("/v1/bookings/{booking_id}"),
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

/// Issue 14: a hold on an event that does not exist was proposed, applied as a
/// refusal and kept for 24 h as an idempotency session, so a bot naming random
/// events grew the log and the session table. Now the node refuses it before
/// proposing: the shard's log does not move, and the key is still free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_an_unknown_event_is_refused_before_it_is_proposed() {
    // No ticks during the test: only proposals move the log.
    let n = InProcess::start(
        true,
        &[
            "raft.tick_interval_ms=600000",
            "limits.replica_staleness_ms_max=1300000",
        ],
    )
    .await;
    let event = n.event().await;
    let applied = |a: Answer| a.body["freshness"]["applied_index"].as_u64().unwrap();
    let seats = format!("/v1/events/{event}/seats?consistency=linearizable");
    let before = applied(n.call(Method::GET, &seats, None, None, None).await);
    let carol = mint("carol", false);
    for missing in [event + 1, event + 1000, u64::MAX] {
        let (code, v) = n
            .problem(
                Method::POST,
                "/v1/holds",
                Some(&carol),
                Some("key-1"),
                Some(json!({"event_id": missing, "seat_ids": [1]}).to_string()),
            )
            .await;
        assert_eq!(code, ProblemCode::UnknownEvent, "{v}");
        assert_eq!(v["event_id"], missing, "{v}");
    }
    let after = applied(n.call(Method::GET, &seats, None, None, None).await);
    assert_eq!(before, after, "refused holds were proposed");
    // The key was not spent on the refusals.
    let a = n
        .call(
            Method::POST,
            "/v1/holds",
            Some(&carol),
            Some("key-1"),
            Some(json!({"event_id": event, "seat_ids": [1]}).to_string()),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

/// `POST /v1/batch`: each write gets exactly the answer it would get alone
/// (a hold, a refusal, a bad token's 401, a replay of its key), in order; a
/// batch that breaks the rules is refused whole and runs none of its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_write_as_alone_and_a_bad_batch_runs_none() {
    let n = InProcess::start(true, &["limits.batch_requests_max=4"]).await;
    let event = n.event().await;
    let carol = mint("carol", false);
    let dave = mint("dave", false);
    let item = |token: &str, key: &str, seats: Value| {
        json!({
            "method": "POST",
            "path": "/v1/holds",
            "headers": {"authorization": format!("Bearer {token}"), "idempotency-key": key},
            "body": {"event_id": event, "seat_ids": seats},
        })
    };
    let batch = |items: Vec<Value>| Some(json!({ "requests": items }).to_string());

    // Refused whole: nothing in these runs, so the seats stay free.
    let before = n.seat_statuses(event).await;
    let good = item(&carol, "c-1", json!([1]));
    let too_many = vec![
        good.clone(),
        good.clone(),
        good.clone(),
        good.clone(),
        good.clone(),
    ];
    let read = json!({"method": "GET", "path": format!("/v1/events/{event}/seats")});
    let nested = json!({"method": "POST", "path": "/v1/batch", "body": {"requests": []}});
    let admin = json!({"method": "POST", "path": "/admin/v1/venues", "body": {}});
    let webhook = json!({"method": "POST", "path": "/v1/payments/webhook", "body": {}});
    let header =
        json!({"method": "POST", "path": "/v1/holds", "headers": {"x-forwarded-for": "1.2.3.4"}});
    let cases: Vec<(&str, Option<String>, ProblemCode)> = vec![
        ("malformed", Some("{".into()), ProblemCode::MalformedJson),
        (
            "unknown field",
            Some(json!({"requests": [], "x": 1}).to_string()),
            ProblemCode::MalformedJson,
        ),
        ("empty", batch(vec![]), ProblemCode::InvalidParameter),
        (
            "over batch_requests_max",
            batch(too_many),
            ProblemCode::InvalidParameter,
        ),
        (
            "a read",
            batch(vec![good.clone(), read]),
            ProblemCode::InvalidInput,
        ),
        (
            "a batch in a batch",
            batch(vec![good.clone(), nested]),
            ProblemCode::InvalidInput,
        ),
        (
            "an admin route",
            batch(vec![good.clone(), admin]),
            ProblemCode::InvalidInput,
        ),
        (
            "the provider's webhook",
            batch(vec![good.clone(), webhook]),
            ProblemCode::InvalidInput,
        ),
        (
            "a header of its own",
            batch(vec![good.clone(), header]),
            ProblemCode::InvalidInput,
        ),
    ];
    for (what, body, want) in cases {
        let (code, v) = n.problem(Method::POST, "/v1/batch", None, None, body).await;
        assert_eq!(code, want, "{what}: {v}");
    }
    assert_eq!(
        n.seat_statuses(event).await,
        before,
        "a refused batch ran nothing"
    );

    // Each write as alone: granted, taken by the one before it, no token, a
    // replay of the first write's key.
    let forged = format!("{}x", dave);
    let a = n
        .call(
            Method::POST,
            "/v1/batch",
            None,
            None,
            batch(vec![
                item(&carol, "c-1", json!([1, 2])),
                item(&dave, "d-1", json!([2, 3])),
                item(&forged, "d-2", json!([5])),
                item(&carol, "c-1", json!([1, 2])),
            ]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let r = a.body["responses"].as_array().unwrap();
    assert_eq!(r.len(), 4, "{}", a.body);
    let statuses: Vec<u64> = r.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses[2], 401, "{}", a.body);
    assert_eq!(r[2]["body"]["code"], "unauthorized");
    // The first and the last are one write (the same key): one answer, given
    // twice. It and the second want seat 2: exactly one of them has it.
    assert_eq!(statuses[0], statuses[3], "{}", a.body);
    assert_eq!(r[0]["body"]["hold_id"], r[3]["body"]["hold_id"]);
    let (won, lost) = if statuses[0] == 201 { (0, 1) } else { (1, 0) };
    assert_eq!(statuses[won], 201, "{}", a.body);
    assert!(
        r[won]["headers"]["x-boxoffice-leader"].is_string(),
        "{}",
        a.body
    );
    assert_eq!(statuses[lost], 409, "{}", a.body);
    assert_eq!(r[lost]["body"]["code"], "seat_unavailable");
    let seats = n.seat_statuses(event).await;
    let held: Vec<usize> = (0..10).filter(|&i| seats[i] == "held").collect();
    assert_eq!(
        held,
        if won == 0 { vec![1, 2] } else { vec![2, 3] },
        "{seats}"
    );
}
