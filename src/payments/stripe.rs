//! Stripe: a Checkout Session opens the payment (its `metadata[orderId]` names our order), the
//! session's `payment_status` proves it, and webhooks carry `Stripe-Signature: t=...,v1=...`, an
//! HMAC-SHA256 of `"{t}.{raw body}"` under the webhook secret, refused outside the timestamp
//! tolerance (Stripe's documented scheme).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use tomato_domain::Order;

use super::signature::signed;
use crate::config::StripeSettings;

/// The provider's name, as orders and bookkeeping spell it.
pub const NAME: &str = "stripe";

/// A configured Stripe account.
pub struct Stripe {
    secret_key: SecretString,
    webhook_secret: SecretString,
    api_base: String,
    success_url: String,
    cancel_url: String,
    tolerance_s: i64,
    http: reqwest::Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe").finish_non_exhaustive()
    }
}

/// Why talking to Stripe failed.
#[derive(Debug, thiserror::Error)]
#[error("stripe: {0}")]
pub struct StripeError(String);

/// The parts of a Checkout Session we read.
#[derive(Debug, Deserialize)]
pub struct Session {
    pub id: String,
    pub url: Option<String>,
    #[serde(default)]
    pub payment_status: String,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    /// The PaymentIntent that took the money, once paid (what refunds name).
    #[serde(default)]
    pub payment_intent: Option<String>,
}

impl Stripe {
    /// The account from config, or `None` while `secret_key` is empty (Stripe off).
    pub fn from_settings(settings: &StripeSettings, http: reqwest::Client) -> Option<Self> {
        (!settings.secret_key.expose_secret().is_empty()).then(|| Self {
            secret_key: settings.secret_key.clone(),
            webhook_secret: settings.webhook_secret.clone(),
            api_base: settings.api_base.trim_end_matches('/').to_owned(),
            success_url: settings.success_url.clone(),
            cancel_url: settings.cancel_url.clone(),
            tolerance_s: i64::try_from(settings.tolerance_s).unwrap_or(i64::MAX),
            http,
        })
    }

    async fn session_from(&self, request: reqwest::RequestBuilder) -> Result<Session, StripeError> {
        let response = request
            .bearer_auth(self.secret_key.expose_secret())
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|err| StripeError(err.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(StripeError(format!("checkout API answered {status}")));
        }
        response
            .json()
            .await
            .map_err(|err| StripeError(err.to_string()))
    }

    /// Opens a Checkout Session for the order's total.
    pub async fn create_session(&self, order: &Order) -> Result<Session, StripeError> {
        let id = order.id.to_string();
        let form = [
            ("mode", "payment".to_owned()),
            ("client_reference_id", id.clone()),
            ("metadata[orderId]", id.clone()),
            ("line_items[0][quantity]", "1".to_owned()),
            (
                "line_items[0][price_data][currency]",
                order.currency.to_lowercase(),
            ),
            (
                "line_items[0][price_data][unit_amount]",
                order.total_amount.minor().to_string(),
            ),
            (
                "line_items[0][price_data][product_data][name]",
                format!("{} order", order.restaurant_name),
            ),
            ("success_url", self.success_url.replace("{orderId}", &id)),
            ("cancel_url", self.cancel_url.replace("{orderId}", &id)),
        ];
        self.session_from(
            self.http
                .post(format!("{}/v1/checkout/sessions", self.api_base))
                .form(&form),
        )
        .await
    }

    /// Reads a Checkout Session back.
    pub async fn session(&self, id: &str) -> Result<Session, StripeError> {
        self.session_from(
            self.http
                .get(format!("{}/v1/checkout/sessions/{id}", self.api_base)),
        )
        .await
    }

    /// Refunds the payment of a paid Checkout Session in full.
    pub async fn refund(&self, session: &str) -> Result<(), StripeError> {
        let intent = self
            .session(session)
            .await?
            .payment_intent
            .ok_or_else(|| StripeError("the session has no payment to refund".into()))?;
        let response = self
            .http
            .post(format!("{}/v1/refunds", self.api_base))
            .bearer_auth(self.secret_key.expose_secret())
            // Retries of one refund (after a timeout, a crash) are one refund at Stripe.
            .header("Idempotency-Key", format!("refund-{session}"))
            .form(&[("payment_intent", intent)])
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|err| StripeError(err.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if body.contains("charge_already_refunded") {
            return Ok(());
        }
        Err(StripeError(format!("refunds API answered {status}")))
    }

    /// Whether `Stripe-Signature` proves this body, signed within the tolerance of `now`.
    pub fn webhook_signed(&self, body: &[u8], header: &str, now: OffsetDateTime) -> bool {
        let secret = self.webhook_secret.expose_secret();
        if secret.is_empty() {
            return false;
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                Some(("v1", v1)) => signatures.push(v1),
                _ => {}
            }
        }
        let Some(timestamp) = timestamp else {
            return false;
        };
        if (now.unix_timestamp() - timestamp).abs() > self.tolerance_s {
            return false;
        }
        let mut signed_payload = format!("{timestamp}.").into_bytes();
        signed_payload.extend_from_slice(body);
        signatures
            .iter()
            .any(|signature| signed(secret.as_bytes(), &signed_payload, signature))
    }
}
