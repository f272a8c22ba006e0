//! Razorpay: Orders API to open a payment, HMAC-SHA256 signatures to prove one. The checkout's
//! signature is over `order_id|payment_id` with the key secret; a webhook's is over the raw body
//! with the webhook secret (Razorpay's documented schemes). Comparisons are constant-time.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tomato_domain::Order;

use super::signature::signed;
use crate::config::RazorpaySettings;

/// The provider's name, as orders and bookkeeping spell it.
pub const NAME: &str = "razorpay";

/// A configured Razorpay account.
pub struct Razorpay {
    key_id: String,
    key_secret: SecretString,
    webhook_secret: SecretString,
    api_base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Razorpay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Razorpay")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why talking to Razorpay failed.
#[derive(Debug, thiserror::Error)]
#[error("razorpay: {0}")]
pub struct RazorpayError(String);

#[derive(Deserialize)]
struct CreatedOrder {
    id: String,
}

impl Razorpay {
    /// The account from config, or `None` while `key_id` is empty (Razorpay off).
    pub fn from_settings(settings: &RazorpaySettings, http: reqwest::Client) -> Option<Self> {
        (!settings.key_id.is_empty()).then(|| Self {
            key_id: settings.key_id.clone(),
            key_secret: settings.key_secret.clone(),
            webhook_secret: settings.webhook_secret.clone(),
            api_base: settings.api_base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The public key id the checkout needs.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Opens a Razorpay order for ours (amount in paise, `receipt` = our order id) and returns
    /// its id.
    pub async fn create_order(&self, order: &Order) -> Result<String, RazorpayError> {
        let response = self
            .http
            .post(format!("{}/v1/orders", self.api_base))
            .basic_auth(&self.key_id, Some(self.key_secret.expose_secret()))
            .json(&json!({
                "amount": order.total_amount.minor(),
                "currency": order.currency,
                "receipt": order.id.to_string(),
                "notes": { "orderId": order.id.to_string() },
            }))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|err| RazorpayError(err.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RazorpayError(format!("orders API answered {status}")));
        }
        let created: CreatedOrder = response
            .json()
            .await
            .map_err(|err| RazorpayError(err.to_string()))?;
        Ok(created.id)
    }

    /// Refunds a captured payment in full.
    pub async fn refund(&self, payment: &str, amount: i64) -> Result<(), RazorpayError> {
        let response = self
            .http
            .post(format!("{}/v1/payments/{payment}/refund", self.api_base))
            .basic_auth(&self.key_id, Some(self.key_secret.expose_secret()))
            .json(&json!({ "amount": amount }))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|err| RazorpayError(err.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // A refund sent before a crash and sent again: the money went back the first time.
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::BAD_REQUEST && body.contains("fully refunded") {
            return Ok(());
        }
        Err(RazorpayError(format!("refunds API answered {status}")))
    }

    /// Whether the checkout's `razorpay_signature` proves this payment of this Razorpay order.
    pub fn payment_signed(&self, provider_order: &str, payment: &str, signature: &str) -> bool {
        let message = format!("{provider_order}|{payment}");
        signed(
            self.key_secret.expose_secret().as_bytes(),
            message.as_bytes(),
            signature,
        )
    }

    /// Whether `X-Razorpay-Signature` proves this webhook body.
    pub fn webhook_signed(&self, body: &[u8], signature: &str) -> bool {
        !self.webhook_secret.expose_secret().is_empty()
            && signed(
                self.webhook_secret.expose_secret().as_bytes(),
                body,
                signature,
            )
    }
}

/// The payment a "paid" webhook event carries, if it names one.
pub fn payment_of(event: &serde_json::Value) -> Option<&str> {
    event["payload"]["payment"]["entity"]["id"].as_str()
}

/// The Razorpay order a webhook event is about, for the events that mean "paid".
pub fn paid_order_of(event: &serde_json::Value) -> Option<&str> {
    match event["event"].as_str()? {
        "payment.captured" => event["payload"]["payment"]["entity"]["order_id"].as_str(),
        "order.paid" => event["payload"]["order"]["entity"]["id"].as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(secret: &str) -> Razorpay {
        let settings = RazorpaySettings {
            key_id: "rzp_test_uvBhuJZjsXdyn3".into(),
            key_secret: SecretString::from(secret),
            webhook_secret: SecretString::from(""),
            api_base: "https://api.razorpay.com".into(),
        };
        Razorpay::from_settings(&settings, reqwest::Client::new()).expect("configured")
    }

    #[test]
    fn a_real_test_mode_checkout_signature_verifies() {
        // A Checkout response published with its test-mode key secret: Razorpay signed
        // `order_id|payment_id` with that secret.
        let razorpay = account("uEd4IHo8TrQMNwMP8qxLk7Gl");
        let signature = "7fb8d5ba784b5503dfd70b20d9b7339255057c3f1e93f7c29b2600f3f8504bd7";
        assert!(razorpay.payment_signed("order_DLXae45SLMwqTZ", "pay_DLXbWV0fmyNBvt", signature));
        assert!(!razorpay.payment_signed("order_DLXae45SLMwqTZ", "pay_DLXbWV0fmyNBvu", signature));
        assert!(!account("another-secret").payment_signed(
            "order_DLXae45SLMwqTZ",
            "pay_DLXbWV0fmyNBvt",
            signature
        ));
        assert!(
            !razorpay.webhook_signed(b"{}", signature),
            "no webhook secret, no webhook accepted"
        );
    }

    #[test]
    fn paid_events_name_their_order() {
        let captured = json!({ "event": "payment.captured", "payload": { "payment": { "entity": { "id": "pay_1", "order_id": "order_1" } } } });
        let paid = json!({ "event": "order.paid", "payload": { "order": { "entity": { "id": "order_2" } } } });
        let other = json!({ "event": "payment.failed", "payload": {} });
        assert_eq!(paid_order_of(&captured), Some("order_1"));
        assert_eq!(paid_order_of(&paid), Some("order_2"));
        assert_eq!(paid_order_of(&other), None);
    }
}
