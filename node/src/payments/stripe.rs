//! The provider spoken as Stripe documents its REST API: form-encoded requests,
//! the secret key as a bearer token, `Idempotency-Key` on every create, JSON
//! objects back and `{"error": {"type", "code", "message"}}` on failure. Base
//! URL and key come from the node's settings, so pointing the store at the real
//! provider (or at `boxoffice payments-sandbox`) is a configuration change.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::provider::*;

/// A Stripe API client.
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: String,
}

impl StripeClient {
    /// A client of the API at `base` (`https://api.stripe.com`), each call bounded by `timeout`.
    pub fn new(base: &str, secret_key: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(StripeClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
        })
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<Vec<(String, String)>>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ProviderError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(form) = form {
            req = req.form(&form);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                ProviderError::Unavailable(format!("unreadable answer from the provider: {e}"))
            });
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| b.error);
        let message = detail
            .as_ref()
            .map(|d| d.message.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        // 429 and 5xx: the provider asks to be tried again (with the same key).
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Unavailable(format!("{status}: {message}")));
        }
        Err(ProviderError::Refused {
            status: status.as_u16(),
            kind: detail.as_ref().map(|d| d.kind.clone()).unwrap_or_default(),
            code: detail.and_then(|d| d.code),
            message,
        })
    }
}

fn metadata_form(
    form: &mut Vec<(String, String)>,
    metadata: &std::collections::BTreeMap<String, String>,
) {
    for (k, v) in metadata {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
}

impl PaymentProvider for StripeClient {
    fn create_payment(&self, p: NewPayment) -> BoxFuture<'_, Result<Payment, ProviderError>> {
        async move {
            let mut form = vec![
                ("amount".to_string(), p.amount_cents.to_string()),
                ("currency".to_string(), p.currency.clone()),
                ("description".to_string(), p.description.clone()),
                (
                    "automatic_payment_methods[enabled]".to_string(),
                    "true".to_string(),
                ),
            ];
            metadata_form(&mut form, &p.metadata);
            self.call(
                reqwest::Method::POST,
                "/v1/payment_intents",
                Some(form),
                Some(&p.idempotency_key),
            )
            .await
        }
        .boxed()
    }

    fn retrieve_payment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Payment, ProviderError>> {
        async move {
            self.call(
                reqwest::Method::GET,
                &format!("/v1/payment_intents/{id}"),
                None,
                None,
            )
            .await
        }
        .boxed()
    }

    fn cancel_payment<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Payment, ProviderError>> {
        async move {
            self.call(
                reqwest::Method::POST,
                &format!("/v1/payment_intents/{id}/cancel"),
                Some(vec![(
                    "cancellation_reason".to_string(),
                    "abandoned".to_string(),
                )]),
                Some(idempotency_key),
            )
            .await
        }
        .boxed()
    }

    fn create_refund(&self, r: NewRefund) -> BoxFuture<'_, Result<ProviderRefund, ProviderError>> {
        async move {
            let mut form = vec![
                ("payment_intent".to_string(), r.payment_id.clone()),
                ("amount".to_string(), r.amount_cents.to_string()),
            ];
            metadata_form(&mut form, &r.metadata);
            self.call(
                reqwest::Method::POST,
                "/v1/refunds",
                Some(form),
                Some(&r.idempotency_key),
            )
            .await
        }
        .boxed()
    }

    fn retrieve_refund<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderRefund, ProviderError>> {
        async move {
            self.call(
                reqwest::Method::GET,
                &format!("/v1/refunds/{id}"),
                None,
                None,
            )
            .await
        }
        .boxed()
    }
}
