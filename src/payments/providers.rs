//! The payment providers a node takes payments with.

use tomato_domain::{ErrorKind, PaymentMethod};

use super::razorpay::Razorpay;
use super::stripe::Stripe;
use crate::http::ApiError;

/// The providers this node can take payments with.
#[derive(Debug, Default)]
pub struct Providers {
    pub test: bool,
    pub razorpay: Option<Razorpay>,
    pub stripe: Option<Stripe>,
}

impl Providers {
    /// Refuses (422 `payment_method_unavailable`) a method this node cannot take payments with.
    pub fn require(&self, method: PaymentMethod) -> Result<(), ApiError> {
        let available = match method {
            PaymentMethod::Test => self.test,
            PaymentMethod::Razorpay => self.razorpay.is_some(),
            PaymentMethod::Stripe => self.stripe.is_some(),
        };
        if available {
            return Ok(());
        }
        Err(ApiError::from_kind(
            ErrorKind::Unprocessable,
            "payment_method_unavailable",
            format!("{method} payments are not available on this node"),
        ))
    }
}
