//! Payments: `POST /v1/holds/{id}/checkout` (the owner starts paying),
//! `POST /v1/payments/webhook` (the provider says how a payment or refund
//! went), `POST /v1/bookings/{id}/cancel` (the owner, until the event's
//! cancellation cutoff) and `POST /admin/v1/bookings/{id}/cancel`.
//!
//! The provider is called before the log: a checkout creates the payment (its
//! idempotency key names the hold and the checkout's number, so a retry gets the
//! same payment) and then commits `Checkout`; a webhook is verified, its
//! payment re-read from the provider (whose word, not the event's order,
//! decides), then committed; it is answered 2xx only once committed, so the
//! provider delivers again after any failure.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use boxoffice_api::{Cancelled, Checkout, HoldState, ProblemCode};
use boxoffice_raft::command::{
    BookingId, CheckoutRequest, Command, Effect, HoldId, PaymentEffect, PaymentNotice, Rejection,
    Session, FEATURE_LEVEL_PAYMENTS,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::HoldPhase;
use serde::Deserialize;

use super::{idempotency_key, leader_header, rfc3339_ms, shard_group, stores, unexpected, write};
use crate::app::AppState;
use crate::auth::{Admin, User};
use crate::error::{ApiError, ApiResult};
use crate::payments::provider::{NewPayment, Payment, PaymentStatus, ProviderError};
use crate::payments::{signature, worker, Payments};

/// Public routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/holds/{hold_id}/checkout", post(checkout))
        .route("/v1/payments/webhook", post(webhook))
        .route("/v1/bookings/{booking_id}/cancel", post(cancel_booking))
}

/// Admin routes of this resource.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/bookings/{booking_id}/cancel", post(admin_cancel))
        .route(
            "/admin/v1/events/{event_id}/payments",
            axum::routing::put(set_event_payments).get(get_event_payments),
        )
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    set_event_payments,
    get_event_payments,
    checkout,
    webhook,
    cancel_booking,
    admin_cancel
))]
pub struct Doc;

/// An event's payment settings as they apply: its own, else the cluster's.
pub struct EffectiveSettings {
    /// Grace of a payment in flight (ms).
    pub grace_ms: u64,
    /// Longest hold with a payment in flight (ms).
    pub hold_max_ms: u64,
    /// Cancellation cutoff (ms before the start).
    pub cancel_cutoff_ms: u64,
}

/// The settings of `event_id`, from this node's catalogue replica (the
/// cluster's defaults where the event sets none, or the replica is not here).
pub fn effective_settings(state: &AppState, event_id: u64) -> EffectiveSettings {
    let d = &state.node.config.payments;
    let own = state
        .node
        .stores(GroupId::CATALOGUE)
        .and_then(|c| c.reader.begin_applied().event_payments(event_id))
        .unwrap_or_default();
    EffectiveSettings {
        grace_ms: own
            .payment_grace_s
            .unwrap_or(d.payment_grace_s)
            .saturating_mul(1000),
        hold_max_ms: own
            .payment_hold_max_s
            .unwrap_or(d.payment_hold_max_s)
            .saturating_mul(1000),
        cancel_cutoff_ms: own
            .cancel_cutoff_s
            .unwrap_or(d.cancel_cutoff_s)
            .saturating_mul(1000),
    }
}

#[utoipa::path(put, path = "/admin/v1/events/{event_id}/payments", tag = "payments",
    params(("event_id" = u64, Path, description = "The event"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::EventPaymentSettings,
    responses((status = 200, body = boxoffice_api::EventPaymentSettings), crate::openapi::Problems), security(("admin" = [])))]
async fn set_event_payments(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(event_id): Path<String>,
    headers: HeaderMap,
    crate::app::JsonBody(body): crate::app::JsonBody<boxoffice_api::EventPaymentSettings>,
) -> ApiResult<Json<boxoffice_api::EventPaymentSettings>> {
    let event_id = super::parse_event_id(&event_id)?;
    let settings = boxoffice_raft::command::EventPayments {
        payment_grace_s: body.payment_grace_s,
        payment_hold_max_s: body.payment_hold_max_s,
        cancel_cutoff_s: body.cancel_cutoff_s,
    };
    settings
        .check()
        .map_err(|e| ApiError::new(ProblemCode::InvalidInput, e))?;
    let key = idempotency_key(&headers)?
        .unwrap_or_else(|| format!("event-payments:{event_id}:{:x}", rand::random::<u64>()));
    let session = Session {
        client_id: admin.sub,
        idempotency_key: key,
    };
    write(
        &state,
        GroupId::CATALOGUE,
        session,
        Command::SetEventPayments { event_id, settings },
    )
    .await?;
    Ok(Json(body))
}

#[utoipa::path(get, path = "/admin/v1/events/{event_id}/payments", tag = "payments",
    params(("event_id" = u64, Path, description = "The event")),
    responses((status = 200, body = boxoffice_api::EventPaymentSettings), crate::openapi::Problems), security(("admin" = [])))]
async fn get_event_payments(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(event_id): Path<String>,
) -> ApiResult<Json<boxoffice_api::EventPaymentSettings>> {
    let event_id = super::parse_event_id(&event_id)?;
    let cat = stores(&state, GroupId::CATALOGUE)?;
    state.node.read_barrier(GroupId::CATALOGUE).await?;
    let tx = cat.reader.begin_applied();
    if tx.event(event_id).is_none() {
        return Err(Rejection::UnknownEvent { event_id }.into());
    }
    let own = tx.event_payments(event_id).unwrap_or_default();
    Ok(Json(boxoffice_api::EventPaymentSettings {
        payment_grace_s: own.payment_grace_s,
        payment_hold_max_s: own.payment_hold_max_s,
        cancel_cutoff_s: own.cancel_cutoff_s,
    }))
}

fn payments(state: &AppState) -> ApiResult<&Payments> {
    state.node.payments.as_deref().ok_or_else(|| {
        ApiError::new(
            ProblemCode::PaymentsNotConfigured,
            "this cluster has no payment provider (payments.provider_url)",
        )
    })
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Unavailable(m) => ApiError::new(
                ProblemCode::ProviderUnavailable,
                format!("the payment provider did not answer: {m}"),
            ),
            ProviderError::Refused { code, message, .. } => ApiError::new(
                ProblemCode::ProviderRefused,
                format!("the payment provider refused: {message}"),
            )
            .with("provider_code", code.unwrap_or_default()),
        }
    }
}

fn parse_hold(state: &AppState, raw: &str) -> ApiResult<(HoldId, GroupId)> {
    let id: HoldId = raw
        .parse()
        .map_err(|e: String| ApiError::bad_param("hold_id", e))?;
    let unknown = || ApiError::new(ProblemCode::UnknownHold, format!("unknown hold {raw}"));
    let g = shard_group(state, id.shard).map_err(|e| {
        if e.code == ProblemCode::UnknownShard {
            unknown()
        } else {
            e
        }
    })?;
    Ok((id, g))
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/checkout", tag = "payments",
    params(("hold_id" = String, Path, pattern = "^h[0-9]{1,5}-[0-9]{1,20}$", description = "A hold id, `h<shard>-<n>`"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    responses((status = 200, body = boxoffice_api::Checkout), crate::openapi::Problems), security(("user" = [])))]
async fn checkout(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let pay = payments(&state)?;
    let (hold_id, group) = parse_hold(&state, &hold_id)?;
    let unknown = || ApiError::new(ProblemCode::UnknownHold, format!("unknown hold {hold_id}"));
    let st = stores(&state, group)?;
    let level = st.sm.feature_level();
    if level < FEATURE_LEVEL_PAYMENTS {
        // Refused before the provider is asked for anything.
        return Err(Rejection::FeatureNotEnabled {
            needed: FEATURE_LEVEL_PAYMENTS,
            level,
        }
        .into());
    }
    state.node.read_barrier(group).await?;
    let (hold, phase, previous) = {
        let tx = st.reader.begin_applied();
        let (hold, phase) = tx.hold(hold_id).ok_or_else(unknown)?;
        (hold, phase, tx.hold_payment(hold_id.seq))
    };
    if hold.user != user.sub {
        return Err(unknown());
    }
    let payment: Payment = match (phase, &previous) {
        // In flight already: the same payment again (its client secret).
        (HoldPhase::PaymentPending, Some(p)) => {
            pay.provider.retrieve_payment(&p.payment_id).await?
        }
        (HoldPhase::Active, _) => {
            let n = previous.as_ref().map_or(0, |p| p.checkouts) + 1;
            pay.provider
                .create_payment(NewPayment {
                    amount_cents: hold.total_cents,
                    currency: pay.settings.currency.clone(),
                    idempotency_key: format!("hold-{hold_id}-checkout-{n}"),
                    metadata: BTreeMap::from([
                        ("hold_id".to_string(), hold_id.to_string()),
                        ("event_id".to_string(), hold.event_id.to_string()),
                        ("user".to_string(), user.sub.clone()),
                    ]),
                    description: format!("event {} hold {hold_id}", hold.event_id),
                })
                .await?
        }
        // Anything else: the state machine gives the precise refusal.
        _ => Payment {
            id: previous
                .map(|p| p.payment_id)
                .unwrap_or_else(|| "none".into()),
            status: PaymentStatus::Unknown,
            amount: hold.total_cents,
            amount_received: 0,
            currency: pay.settings.currency.clone(),
            client_secret: None,
            metadata: BTreeMap::new(),
        },
    };
    // The event's own settings, as of now (an admin may just have set them).
    state.node.read_barrier(GroupId::CATALOGUE).await?;
    let settings = effective_settings(&state, hold.event_id);
    let key =
        idempotency_key(&headers)?.unwrap_or_else(|| format!("checkout:{hold_id}:{}", payment.id));
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let command = Command::Checkout(CheckoutRequest {
        hold_id,
        user: user.sub,
        payment_id: payment.id.clone(),
        amount_cents: payment.amount,
        currency: payment.currency.clone(),
        grace_ms: settings.grace_ms,
        hold_max_ms: settings.hold_max_ms,
    });
    let (effect, _) = match write(&state, group, session, command).await {
        Ok(r) => r,
        Err(e) => {
            // Refused (the hold expired meanwhile, ...): the payment is never
            // shown to the buyer; cancel it so that it cannot be paid.
            if phase == HoldPhase::Active && !e.code.may_have_applied() {
                let _ = pay
                    .provider
                    .cancel_payment(&payment.id, &format!("cancel-{}", payment.id))
                    .await;
            }
            return Err(if e.code == ProblemCode::NotHoldOwner {
                unknown()
            } else {
                e
            });
        }
    };
    let Effect::Payment(PaymentEffect::CheckoutStarted {
        payment_id,
        expires_at_ms,
        ..
    }) = &effect
    else {
        return Err(unexpected("checkout", &effect));
    };
    Ok((
        StatusCode::OK,
        leader_header(&state, group),
        Json(Checkout {
            hold_id: hold_id.to_string(),
            status: HoldState::PaymentPending,
            payment_id: payment_id.clone(),
            client_secret: payment.client_secret.unwrap_or_default(),
            amount_cents: payment.amount,
            currency: payment.currency,
            expires_at: rfc3339_ms(*expires_at_ms as i64),
            expires_at_ms: *expires_at_ms,
        }),
    ))
}

/// The parts of a provider event the store reads.
#[derive(Deserialize)]
struct ProviderEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

fn webhook_ack(what: &str) -> axum::response::Response {
    (
        StatusCode::OK,
        Json(serde_json::json!({ "received": true, "result": what })),
    )
        .into_response()
}

#[utoipa::path(post, path = "/v1/payments/webhook", tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "The provider's signature of the body (`t=...,v1=...`)")),
    request_body(content = Object, description = "The provider's event, verified against its signature"),
    responses((status = 200, description = "Received", body = crate::openapi::WebhookAck), crate::openapi::Problems))]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    let pay = payments(&state)?;
    if body.len() > pay.settings.webhook_body_bytes_max {
        return Err(ApiError::new(
            ProblemCode::BodyTooLarge,
            format!(
                "a webhook body is at most {} bytes (payments.webhook_body_bytes_max)",
                pay.settings.webhook_body_bytes_max
            ),
        ));
    }
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::new(ProblemCode::BadSignature, "no Stripe-Signature header"))?;
    signature::verify(
        header,
        &body,
        &pay.settings.webhook_secrets,
        crate::node::now_ms() / 1000,
        pay.settings.webhook_tolerance_s,
    )
    .map_err(|e| ApiError::new(ProblemCode::BadSignature, e.to_string()))?;
    let event: ProviderEvent = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ProblemCode::MalformedJson,
            format!("not a provider event: {e}"),
        )
    })?;
    let object = &event.data.object;
    // Only objects this store made carry a hold id; anything else is not ours.
    let Some(hold_id) = object["metadata"]["hold_id"]
        .as_str()
        .and_then(|h| h.parse::<HoldId>().ok())
    else {
        return Ok(webhook_ack("ignored: no hold_id in the object's metadata"));
    };
    let group = shard_group(&state, hold_id.shard)?;
    let evt = Some(event.id.clone());
    let command = match event.kind.as_str() {
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled" => {
            let id = object["id"].as_str().unwrap_or_default();
            // The provider's current word decides, whatever order events came in.
            let p = pay.provider.retrieve_payment(id).await?;
            match p.status {
                PaymentStatus::Succeeded => Command::PaymentSucceeded(PaymentNotice {
                    hold_id,
                    payment_id: p.id,
                    amount_cents: p.amount_received,
                    provider_event: evt,
                }),
                PaymentStatus::Canceled | PaymentStatus::RequiresPaymentMethod => {
                    Command::PaymentFailed(PaymentNotice {
                        hold_id,
                        payment_id: p.id,
                        amount_cents: p.amount,
                        provider_event: evt,
                    })
                }
                _ => return Ok(webhook_ack("ignored: the payment is still in progress")),
            }
        }
        "refund.created" | "refund.updated" | "charge.refund.updated" => {
            let id = object["id"].as_str().unwrap_or_default();
            let r = pay.provider.retrieve_refund(id).await?;
            let (Some(payment_id), Some(report)) =
                (r.payment_intent.clone(), worker::refund_report(&r))
            else {
                return Ok(webhook_ack("ignored: the refund names no payment or state"));
            };
            Command::RefundUpdate {
                payment_id,
                report,
                provider_event: evt,
            }
        }
        _ => return Ok(webhook_ack("ignored: event type not used")),
    };
    let outcome = state.node.propose(group, None, command).await?;
    match outcome.result {
        Ok(Effect::Payment(effect)) => Ok(webhook_ack(payment_effect_name(&effect))),
        Ok(other) => Err(unexpected("webhook", &other)),
        Err(r) => {
            tracing::error!(%group, event = %event.id, rejection = %r, "a provider event was refused");
            Err(r.into())
        }
    }
}

fn payment_effect_name(e: &PaymentEffect) -> &'static str {
    match e {
        PaymentEffect::CheckoutStarted { .. } => "checkout_started",
        PaymentEffect::Booked { late: false, .. } => "booked",
        PaymentEffect::Booked { late: true, .. } => "booked_late",
        PaymentEffect::RefundRequired { .. } => "refund_required",
        PaymentEffect::HoldReopened { .. } => "hold_reopened",
        PaymentEffect::HoldClosed { .. } => "hold_closed",
        PaymentEffect::BookingCancelled { .. } => "booking_cancelled",
        PaymentEffect::RefundUpdated { .. } => "refund_updated",
        PaymentEffect::Unchanged { .. } => "unchanged",
    }
}

fn parse_booking(state: &AppState, raw: &str) -> ApiResult<(BookingId, GroupId)> {
    let id: BookingId = raw
        .parse()
        .map_err(|e: String| ApiError::bad_param("booking_id", e))?;
    let g = shard_group(state, id.shard).map_err(|e| {
        if e.code == ProblemCode::UnknownShard {
            ApiError::new(
                ProblemCode::UnknownBooking,
                format!("unknown booking {raw}"),
            )
        } else {
            e
        }
    })?;
    Ok((id, g))
}

fn cancelled_view(effect: &Effect) -> ApiResult<Cancelled> {
    match effect {
        Effect::Payment(PaymentEffect::BookingCancelled {
            booking_id,
            seat_ids,
            quantity,
            refund_payment_id,
            ..
        }) => Ok(Cancelled {
            booking_id: booking_id.to_string(),
            status: boxoffice_api::BookingStatus::Cancelled,
            seat_ids: seat_ids.clone(),
            quantity: *quantity,
            refund_payment_id: refund_payment_id.clone(),
        }),
        other => Err(unexpected("cancel", other)),
    }
}

#[utoipa::path(post, path = "/v1/bookings/{booking_id}/cancel", tag = "payments",
    params(("booking_id" = String, Path, pattern = "^b[0-9]{1,5}-[0-9]{1,20}$", description = "A booking id, `b<shard>-<n>`"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    responses((status = 200, body = boxoffice_api::Cancelled), crate::openapi::Problems), security(("user" = [])))]
async fn cancel_booking(
    State(state): State<AppState>,
    User(user): User,
    Path(booking_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let (booking_id, group) = parse_booking(&state, &booking_id)?;
    let unknown = || {
        ApiError::new(
            ProblemCode::UnknownBooking,
            format!("unknown booking {booking_id}"),
        )
    };
    // The cutoff comes from the event's start in the catalogue.
    let st = stores(&state, group)?;
    state.node.read_barrier(group).await?;
    let booking = st
        .reader
        .begin_applied()
        .booking(booking_id)
        .filter(|b| b.user == user.sub)
        .ok_or_else(unknown)?;
    let cat = stores(&state, GroupId::CATALOGUE)?;
    state.node.read_barrier(GroupId::CATALOGUE).await?;
    let starts_at_ms = cat
        .reader
        .begin_applied()
        .event(booking.event_id)
        .map(|e| e.starts_at_ms)
        .ok_or_else(|| ApiError::internal(format!("booking {booking_id} of an unknown event")))?;
    let cutoff_ms = effective_settings(&state, booking.event_id).cancel_cutoff_ms;
    let not_after_ms = u64::try_from(starts_at_ms)
        .unwrap_or(0)
        .saturating_sub(cutoff_ms);
    let key = idempotency_key(&headers)?.unwrap_or_else(|| format!("cancel:{booking_id}"));
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let command = Command::CancelBooking {
        booking_id,
        user: Some(user.sub),
        not_after_ms: Some(not_after_ms),
    };
    let (effect, _) = write(&state, group, session, command).await?;
    Ok((leader_header(&state, group), Json(cancelled_view(&effect)?)))
}

#[utoipa::path(post, path = "/admin/v1/bookings/{booking_id}/cancel", tag = "payments",
    params(("booking_id" = String, Path, pattern = "^b[0-9]{1,5}-[0-9]{1,20}$", description = "A booking id, `b<shard>-<n>`"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    responses((status = 200, body = boxoffice_api::Cancelled), crate::openapi::Problems), security(("admin" = [])))]
async fn admin_cancel(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(booking_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let (booking_id, group) = parse_booking(&state, &booking_id)?;
    let key = idempotency_key(&headers)?.unwrap_or_else(|| format!("admin-cancel:{booking_id}"));
    let session = Session {
        client_id: admin.sub.clone(),
        idempotency_key: key,
    };
    let command = Command::CancelBooking {
        booking_id,
        user: None,
        not_after_ms: None,
    };
    let (effect, _) = write(&state, group, session, command).await?;
    Ok((leader_header(&state, group), Json(cancelled_view(&effect)?)))
}
