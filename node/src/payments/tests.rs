//! The Stripe client against the sandbox: idempotency keys make a retried
//! create (after a crash, or a lost answer) return what the first made, which
//! is what keeps a crash between a provider call and its commit safe.

use std::collections::BTreeMap;
use std::time::Duration;

use super::provider::*;
use super::sandbox::{Sandbox, SandboxConfig};
use super::stripe::StripeClient;

async fn sandbox() -> (std::sync::Arc<Sandbox>, StripeClient) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sb = Sandbox::new(SandboxConfig::default());
    let s2 = sb.clone();
    tokio::spawn(async move { super::sandbox::serve(s2, listener).await });
    let client = StripeClient::new(
        &url,
        &SandboxConfig::default().secret_key,
        Duration::from_secs(5),
    )
    .unwrap();
    (sb, client)
}

fn payment(key: &str, amount: u64) -> NewPayment {
    NewPayment {
        amount_cents: amount,
        currency: "usd".into(),
        idempotency_key: key.into(),
        metadata: BTreeMap::from([("hold_id".to_string(), "h1-1".to_string())]),
        description: "test".into(),
    }
}

#[tokio::test]
async fn a_retried_create_gets_the_first_payment_and_other_parameters_are_refused() {
    let (sb, c) = sandbox().await;
    let a = c
        .create_payment(payment("hold-h1-1-checkout-1", 500))
        .await
        .unwrap();
    let b = c
        .create_payment(payment("hold-h1-1-checkout-1", 500))
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(a.status, PaymentStatus::RequiresPaymentMethod);
    assert_eq!(a.metadata["hold_id"], "h1-1");
    assert_eq!(sb.state().payment_intents, 1);
    let e = c
        .create_payment(payment("hold-h1-1-checkout-1", 600))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Refused { status: 400, ref kind, .. } if kind == "idempotency_error"),
        "{e:?}"
    );
    let other = c
        .create_payment(payment("hold-h1-1-checkout-2", 500))
        .await
        .unwrap();
    assert_ne!(other.id, a.id);
}

#[tokio::test]
async fn a_refund_retried_under_its_key_is_made_once_and_a_paid_payment_cannot_be_cancelled() {
    let (sb, c) = sandbox().await;
    let p = c.create_payment(payment("k1", 700)).await.unwrap();
    // Not paid: no refund.
    let refund = |key: &str| NewRefund {
        payment_id: p.id.clone(),
        amount_cents: 700,
        idempotency_key: key.into(),
        metadata: BTreeMap::new(),
    };
    assert!(matches!(
        c.create_refund(refund("refund-x-0")).await,
        Err(ProviderError::Refused { .. })
    ));
    let http = reqwest::Client::new();
    let paid = http
        .post(format!("{}/v1/payment_intents/{}/confirm", base(&c), p.id))
        .form(&[
            ("payment_method", "pm_card_visa"),
            ("client_secret", p.client_secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    assert_eq!(
        c.retrieve_payment(&p.id).await.unwrap().status,
        PaymentStatus::Succeeded
    );
    let r1 = c.create_refund(refund("refund-pi-0")).await.unwrap();
    let r2 = c.create_refund(refund("refund-pi-0")).await.unwrap();
    assert_eq!(r1.id, r2.id);
    assert_eq!(r1.status, RefundStatus::Succeeded);
    assert_eq!(sb.state().refunds_by_payment.get(&p.id), Some(&1));
    // A second refund under another key is refused: nothing is left to refund.
    assert!(matches!(
        c.create_refund(refund("refund-pi-1")).await,
        Err(ProviderError::Refused { .. })
    ));
    let e = c.cancel_payment(&p.id, "cancel-1").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Refused { code: Some(ref code), .. } if code == "payment_intent_unexpected_state"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_and_an_outage_are_told_apart() {
    let (sb, _) = sandbox().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s2 = sb.clone();
    tokio::spawn(async move { super::sandbox::serve(s2, listener).await });
    let wrong = StripeClient::new(&url, "sk_test_wrong", Duration::from_secs(5)).unwrap();
    assert!(matches!(
        wrong.create_payment(payment("k", 1)).await,
        Err(ProviderError::Refused { status: 401, .. })
    ));
    sb.set_faults(super::sandbox::Faults {
        api_outage: true,
        ..Default::default()
    });
    let right = StripeClient::new(
        &url,
        &SandboxConfig::default().secret_key,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(
        right.create_payment(payment("k", 1)).await,
        Err(ProviderError::Unavailable(_))
    ));
    let nowhere =
        StripeClient::new("http://127.0.0.1:9", "sk", Duration::from_millis(500)).unwrap();
    assert!(matches!(
        nowhere.retrieve_payment("pi_1").await,
        Err(ProviderError::Unavailable(_))
    ));
}

fn base(c: &StripeClient) -> &str {
    c.base_url()
}
