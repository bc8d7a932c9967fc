//! Checkout through the payments sandbox (a local provider speaking Stripe's
//! API): the buyer pays, the provider's signed webhook books the hold; bad and
//! stale signatures, duplicates and declines; a payment that arrives after its
//! hold expired (booked if the seat is free, refunded if not); an abandoned
//! checkout cancelled with the provider; cancellation and its refund.

use std::sync::Arc;
use std::time::Duration;

use boxoffice_api::{BookingStatus, HoldState, ProblemCode, Selection};
use boxoffice_client::signature;
use boxoffice_node::payments::sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Value};

use crate::support::*;

const SECRET_KEY: &str = "sk_test_it";
const WEBHOOK_SECRET: &str = "whsec_it";

struct Setup {
    cluster: TestCluster,
    sandbox: Arc<Sandbox>,
    sandbox_url: String,
    http: reqwest::Client,
}

/// A 3-node cluster whose provider is an in-process sandbox delivering
/// webhooks to every node (retrying every 200 ms).
async fn setup(grace_s: u64, hold_max_s: u64) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
    let settings = format!(
        "[payments]\nprovider_url = \"{sandbox_url}\"\nsecret_key = \"{SECRET_KEY}\"\n\
         webhook_secrets = [\"whsec_old\", \"{WEBHOOK_SECRET}\"]\npayment_grace_s = {grace_s}\n\
         payment_hold_max_s = {hold_max_s}\nreconcile_interval_ms = 300\n"
    );
    let cluster = TestCluster::start(3, 1, &settings).await;
    let sandbox = Sandbox::new(SandboxConfig {
        secret_key: SECRET_KEY.into(),
        webhook_urls: cluster
            .urls()
            .iter()
            .map(|u| format!("{u}/v1/payments/webhook"))
            .collect(),
        webhook_secret: WEBHOOK_SECRET.into(),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_millis(400),
        ..SandboxConfig::default()
    });
    let sb = sandbox.clone();
    tokio::spawn(async move { boxoffice_node::payments::sandbox::serve(sb, listener).await });
    Setup {
        cluster,
        sandbox,
        sandbox_url,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    /// Pays a payment in the sandbox as a front end would (its client secret).
    async fn pay(&self, payment_id: &str, client_secret: &str, card: &str) -> u16 {
        self.http
            .post(format!(
                "{}/v1/payment_intents/{payment_id}/confirm",
                self.sandbox_url
            ))
            .form(&[("payment_method", card), ("client_secret", client_secret)])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn intent(&self, id: &str) -> Value {
        let url = format!("{}/v1/payment_intents/{id}", self.sandbox_url);
        self.get_json(&url, SECRET_KEY).await
    }

    /// An admin GET of `path` on node `i`, as JSON.
    async fn admin_get(&self, i: usize, path: &str, admin_token: &str) -> Value {
        let url = format!("{}{path}", self.cluster.urls()[i]);
        self.get_json(&url, admin_token).await
    }

    /// A GET of `url` with a bearer `token`, as JSON.
    async fn get_json(&self, url: &str, token: &str) -> Value {
        self.http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Posts a webhook body to node 0 with `header`.
    async fn deliver(&self, body: &str, header: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/payments/webhook", self.cluster.urls()[0]))
            .header("Stripe-Signature", header)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// A site's webhook receiver: answers 500 to its first delivery, then 200,
/// and keeps every body whose `Boxoffice-Signature` verifies with `secret`.
struct Receiver {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<Value>>>,
    secret: Arc<std::sync::Mutex<String>>,
}

async fn receiver() -> Receiver {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let secret = Arc::new(std::sync::Mutex::new(String::new()));
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (s2, k2) = (seen.clone(), secret.clone());
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, secret, calls) = (s2.clone(), k2.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let header = headers
                    .get("boxoffice-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let key = secret.lock().unwrap().clone();
                if signature::verify(&header, &body, &[key], now_s(), 300).is_err() {
                    return StatusCode::BAD_REQUEST;
                }
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, seen, secret }
}

/// Waits up to `secs` for `client`'s hold to reach `want`.
async fn wait_for_status(
    client: &boxoffice_client::Client,
    hold_id: &str,
    want: HoldState,
    secs: u64,
    what: &str,
) {
    eventually(Duration::from_secs(secs), what, || {
        let (client, id) = (client.clone(), hold_id.to_string());
        async move {
            client
                .hold_status(&id)
                .await
                .is_ok_and(|st| st.status == want)
        }
    })
    .await;
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_pays_through_the_provider_and_its_webhook_books_the_hold() {
    let s = setup(30, 60).await;
    let (event, _) = s.cluster.venue_and_event(4, 20, 4).await;
    // The site's endpoint for outgoing webhooks.
    let site = receiver().await;
    let admin_token = mint("admin", true);
    let r = s
        .http
        .put(format!("{}/admin/v1/webhooks/site", s.cluster.urls()[0]))
        .bearer_auth(&admin_token)
        .json(&json!({"url": site.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    *site.secret.lock().unwrap() = view["secret"].as_str().unwrap().to_string();
    let buyer = s.cluster.client(s.cluster.urls(), mint_buyer("ann"));
    let hold = buyer
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .unwrap();
    // A buyer cannot book by naming a payment of their own.
    let e = buyer
        .confirm(&hold.hold_id, "pi_made_up")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::DirectConfirmForbidden), "{e}");
    let c = buyer.checkout(&hold.hold_id).await.unwrap();
    assert_eq!(c.amount_cents, hold.total_cents);
    assert!(c.expires_at_ms > hold.expires_at_ms);
    assert!(!c.client_secret.is_empty());
    // Checking out again gives the same payment.
    let again = buyer.checkout(&hold.hold_id).await.unwrap();
    assert_eq!(again.payment_id, c.payment_id);
    let st = buyer.hold_status(&hold.hold_id).await.unwrap();
    assert_eq!(st.status, HoldState::PaymentPending);
    assert_eq!(st.payment.as_ref().unwrap().payment_id, c.payment_id);
    // Another user sees nothing of it.
    let other = s.cluster.client(s.cluster.urls(), mint_buyer("bob"));
    let e = other.checkout(&hold.hold_id).await.unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::UnknownHold));

    // The buyer pays; the webhook books the hold.
    assert_eq!(
        s.pay(&c.payment_id, &c.client_secret, "pm_card_visa").await,
        200
    );
    wait_for_status(
        &buyer,
        &hold.hold_id,
        HoldState::Confirmed,
        20,
        "the webhook books the hold",
    )
    .await;
    let booking_id = buyer.hold_status(&hold.hold_id).await.unwrap().booking_id;
    let booking = buyer.booking(booking_id.as_deref().unwrap()).await.unwrap();
    assert_eq!(booking.payment_ref, c.payment_id);
    assert_eq!(booking.status, BookingStatus::Confirmed);
    let e = buyer.checkout(&hold.hold_id).await.unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::HoldAlreadyConfirmed));

    // Signatures: wrong, stale and missing are refused; a redelivery changes nothing.
    let evt = json!({
        "id": "evt_replayed",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": c.payment_id, "metadata": {"hold_id": hold.hold_id}}},
    })
    .to_string();
    let (code, body) = s
        .deliver(
            &evt,
            &signature::sign("whsec_wrong", now_s(), evt.as_bytes()),
        )
        .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("bad_signature")),
        "{body}"
    );
    let stale = signature::sign(WEBHOOK_SECRET, now_s() - 301, evt.as_bytes());
    let (code, body) = s.deliver(&evt, &stale).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("bad_signature")),
        "{body}"
    );
    let (code, _) = s.deliver(&evt, "t=1,v1=zz").await;
    assert_eq!(code, 400);
    // Signed with the older of the two secrets (a rotation): accepted.
    let good = signature::sign("whsec_old", now_s(), evt.as_bytes());
    for _ in 0..2 {
        let (code, body) = s.deliver(&evt, &good).await;
        assert_eq!(
            (code, body["result"].as_str()),
            (200, Some("unchanged")),
            "{body}"
        );
    }
    let foreign =
        json!({"id": "evt_x", "type": "customer.created", "data": {"object": {"id": "cus_1"}}})
            .to_string();
    let (code, body) = s
        .deliver(
            &foreign,
            &signature::sign(WEBHOOK_SECRET, now_s(), foreign.as_bytes()),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(buyer.bookings().await.unwrap().bookings.len(), 1);

    // The buyer cancels; the seats are free at once and the refund is tracked
    // to the end, issued once.
    let cancelled = buyer.cancel_booking(&booking.booking_id).await.unwrap();
    assert_eq!(
        cancelled.refund_payment_id.as_deref(),
        Some(c.payment_id.as_str())
    );
    assert!(other
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .is_ok());
    eventually(Duration::from_secs(20), "the refund is paid back", || {
        let buyer = buyer.clone();
        let id = booking.booking_id.clone();
        async move {
            buyer
                .booking(&id)
                .await
                .is_ok_and(|b| b.refund.is_some_and(|r| r.status == "refunded"))
        }
    })
    .await;
    let b = buyer.booking(&booking.booking_id).await.unwrap();
    assert_eq!(b.status, BookingStatus::Cancelled);
    // The site heard of it all, signed, each event once it answered 2xx (its
    // first delivery was answered 500 and retried).
    eventually(
        Duration::from_secs(20),
        "the site hears of the order, the cancel and the refund",
        || {
            let seen = site.seen.clone();
            async move {
                let kinds: Vec<String> = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|v| v["type"].as_str().unwrap().to_string())
                    .collect();
                ["order.confirmed", "order.cancelled", "refund.succeeded"]
                    .iter()
                    .all(|k| kinds.iter().any(|x| x == k))
            }
        },
    )
    .await;
    let confirmed: Vec<Value> = site
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "order.confirmed")
        .cloned()
        .collect();
    assert_eq!(confirmed[0]["data"]["payment_id"], json!(c.payment_id));
    assert_eq!(
        confirmed[0]["data"]["booking_id"],
        json!(booking.booking_id)
    );
    // A delivery is recorded delivered after the site's 2xx, through the
    // log: the site can have a body before any node lists it delivered.
    let deliveries = || s.admin_get(1, "/admin/v1/webhooks/site/deliveries", &admin_token);
    eventually(
        Duration::from_secs(10),
        "every delivery is recorded delivered",
        || async {
            let list = deliveries().await;
            list["deliveries"]
                .as_array()
                .is_some_and(|all| all.iter().all(|d| d["status"] == "delivered"))
        },
    )
    .await;
    let list = deliveries().await;
    let all = list["deliveries"].as_array().unwrap();
    assert_eq!(all.len(), 3, "{list}");
    assert!(all.iter().all(|d| d["status"] == "delivered"), "{list}");
    assert!(
        all.iter().any(|d| d["attempts"].as_u64() >= Some(2)),
        "{list}"
    );
    // A replay sends one again.
    let id = all[0]["event_id"].as_str().unwrap();
    let r = s
        .http
        .post(format!(
            "{}/admin/v1/webhooks/site/deliveries/{id}/replay",
            s.cluster.urls()[2]
        ))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = site.seen.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "the replayed delivery arrives",
        || {
            let seen = site.seen.clone();
            async move { seen.lock().unwrap().len() > before }
        },
    )
    .await;
    assert_eq!(
        s.sandbox.state().refunds_by_payment.get(&c.payment_id),
        Some(&1)
    );
    let e = buyer.cancel_booking(&booking.booking_id).await;
    assert!(
        e.is_ok(),
        "a retry of the same cancel answers as the first: {e:?}"
    );
}

/// Replica `i`'s payment counters for shard 1, from its cluster status.
async fn shard_payments(s: &Setup, i: usize, admin_token: &str) -> Value {
    let status = s.admin_get(i, "/admin/v1/cluster", admin_token).await;
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == 1)
        .unwrap()["payments"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_late_payments_and_abandoned_checkouts_never_leave_money_without_a_ticket() {
    // The cluster's defaults are long; the event sets its own short ones.
    let s = setup(30, 60).await;
    let (event, _) = s.cluster.venue_and_event(4, 1, 4).await;
    let admin_token = mint("admin", true);
    let put = |body: Value| {
        s.http
            .put(format!(
                "{}/admin/v1/events/{event}/payments",
                s.cluster.urls()[0]
            ))
            .bearer_auth(&admin_token)
            .json(&body)
            .send()
    };
    assert_eq!(
        put(json!({"payment_grace_s": 0})).await.unwrap().status(),
        400
    );
    assert_eq!(
        put(json!({"payment_grace_s": 2, "payment_hold_max_s": 3}))
            .await
            .unwrap()
            .status(),
        200
    );
    let got = s
        .admin_get(
            1,
            &format!("/admin/v1/events/{event}/payments"),
            &admin_token,
        )
        .await;
    assert_eq!(got["payment_grace_s"], 2);
    let ann = s.cluster.client(s.cluster.urls(), mint_buyer("ann"));
    let bob = s.cluster.client(s.cluster.urls(), mint_buyer("bob"));

    // A declined card: the hold is active again; another card pays.
    let h = ann.hold(event, Selection::Seats(vec![0])).await.unwrap();
    let c = ann.checkout(&h.hold_id).await.unwrap();
    assert_eq!(
        s.pay(&c.payment_id, &c.client_secret, "pm_card_chargeDeclined")
            .await,
        402
    );
    wait_for_status(
        &ann,
        &h.hold_id,
        HoldState::Active,
        10,
        "the decline reopens the hold",
    )
    .await;
    assert_eq!(
        s.pay(&c.payment_id, &c.client_secret, "pm_card_visa").await,
        200
    );
    wait_for_status(
        &ann,
        &h.hold_id,
        HoldState::Confirmed,
        10,
        "the second card books it",
    )
    .await;

    // Late payments: both paid in time, but no word reaches the store (webhook
    // outage) and the store cannot ask (API outage) until the holds expired
    // and bob took seat 2.
    let free = ann.hold(event, Selection::Seats(vec![1])).await.unwrap();
    let taken = ann.hold(event, Selection::Seats(vec![2])).await.unwrap();
    let cf = ann.checkout(&free.hold_id).await.unwrap();
    let ct = ann.checkout(&taken.hold_id).await.unwrap();
    s.sandbox.set_faults(Faults {
        webhook_outage: true,
        ..Faults::default()
    });
    assert_eq!(
        s.pay(&cf.payment_id, &cf.client_secret, "pm_card_visa")
            .await,
        200
    );
    assert_eq!(
        s.pay(&ct.payment_id, &ct.client_secret, "pm_card_visa")
            .await,
        200
    );
    s.sandbox.set_faults(Faults {
        webhook_outage: true,
        api_outage: true,
        ..Faults::default()
    });
    let wait_ms = ct.expires_at_ms.saturating_sub(now_s() * 1000) + 500;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let bobs = bob.hold(event, Selection::Seats(vec![2])).await.unwrap();
    s.sandbox.set_faults(Faults::default());
    wait_for_status(
        &ann,
        &free.hold_id,
        HoldState::Confirmed,
        20,
        "the late payment with a free seat is booked",
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the late payment whose seat was taken is refunded",
        || {
            let ann = ann.clone();
            let id = taken.hold_id.clone();
            async move {
                ann.hold_status(&id).await.is_ok_and(|st| {
                    st.refund
                        .is_some_and(|r| r.status == "refunded" && r.reason == "late_payment")
                })
            }
        },
    )
    .await;
    // Bob keeps his seat; the refund was made once.
    assert_eq!(
        bob.hold_status(&bobs.hold_id).await.unwrap().status,
        HoldState::Active
    );
    assert_eq!(
        s.sandbox.state().refunds_by_payment.get(&ct.payment_id),
        Some(&1)
    );
    assert_eq!(
        s.sandbox.state().refunds_by_payment.get(&cf.payment_id),
        None
    );

    // An abandoned checkout: once its hold expires, the reconciler cancels the
    // payment with the provider (it can never be paid) and closes the hold.
    let gone = ann.hold(event, Selection::Seats(vec![3])).await.unwrap();
    let cg = ann.checkout(&gone.hold_id).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the abandoned payment is cancelled",
        || {
            let s = &s;
            let id = cg.payment_id.clone();
            async move { s.intent(&id).await["status"] == "canceled" }
        },
    )
    .await;
    wait_for_status(
        &ann,
        &gone.hold_id,
        HoldState::Released,
        10,
        "the abandoned hold is closed",
    )
    .await;
    assert_eq!(
        s.pay(&cg.payment_id, &cg.client_secret, "pm_card_visa")
            .await,
        400
    );
    // The shard counts what its payments came to, on every replica: replica 3
    // may still be applying the last entries, so its counters are polled.
    let counted = |c: &Value| {
        c["booked_late"].as_u64() >= Some(1)
            && c["late_refunds"].as_u64() >= Some(1)
            && c["failed"].as_u64() >= Some(2)
    };
    eventually(
        Duration::from_secs(10),
        "replica 3 counts the late booking, the late refund and the failures",
        || {
            let s = &s;
            let admin_token = &admin_token;
            async move { counted(&shard_payments(s, 2, admin_token).await) }
        },
    )
    .await;
    let counts = shard_payments(&s, 2, &admin_token).await;
    assert!(counts["booked_late"].as_u64() >= Some(1), "{counts}");
    // Every payment that succeeded has its booking or its refund.
    let state = s.sandbox.state();
    assert_eq!(state.succeeded, 3, "{state:?}");
    assert_eq!(ann.bookings().await.unwrap().bookings.len(), 2);
}
