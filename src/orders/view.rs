//! Orders as clients see them.

use serde::Serialize;
use time::OffsetDateTime;
use tomato_domain::{LatLon, Order};
use utoipa::ToSchema;

use crate::http::fields::Location;

/// One dish of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineView {
    pub item_id: String,
    pub name: String,
    /// Price when ordered, minor units.
    pub price: i64,
    pub quantity: u32,
}

/// Where the order goes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAddressView {
    pub formatted_address: String,
    pub mobile: String,
    #[schema(value_type = Location)]
    pub location: LatLon,
}

/// One status change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    #[schema(example = "placed")]
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// An order. Money in minor units of `currency`; `expiresAt` is null once paid.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub id: String,
    pub user_id: String,
    pub restaurant_id: String,
    pub restaurant_name: String,
    /// The rider profile id, once a rider is assigned.
    pub rider_id: Option<String>,
    pub rider_name: Option<String>,
    pub rider_phone: Option<String>,
    pub items: Vec<OrderLineView>,
    pub subtotal: i64,
    pub delivery_fee: i64,
    pub platform_fee: i64,
    pub total_amount: i64,
    #[schema(example = "INR")]
    pub currency: String,
    pub rider_amount: i64,
    pub distance_km: f64,
    pub delivery_address: DeliveryAddressView,
    /// placed, accepted, preparing, ready_for_rider, rider_assigned, picked_up, delivered,
    /// cancelled, expired.
    #[schema(example = "placed")]
    pub status: String,
    /// pending, paid, failed, refund_pending, refunded.
    #[schema(example = "pending")]
    pub payment_status: String,
    /// razorpay, stripe, test.
    #[schema(example = "test")]
    pub payment_method: String,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    pub history: Vec<HistoryView>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        Self {
            id: o.id.to_string(),
            user_id: o.user_id.to_string(),
            restaurant_id: o.restaurant_id.to_string(),
            restaurant_name: o.restaurant_name,
            rider_id: o.rider_id.map(|id| id.to_string()),
            rider_name: o.rider_name,
            rider_phone: o.rider_phone,
            items: o
                .items
                .into_iter()
                .map(|line| OrderLineView {
                    item_id: line.item_id.to_string(),
                    name: line.name,
                    price: line.price.minor(),
                    quantity: line.quantity,
                })
                .collect(),
            subtotal: o.subtotal.minor(),
            delivery_fee: o.delivery_fee.minor(),
            platform_fee: o.platform_fee.minor(),
            total_amount: o.total_amount.minor(),
            currency: o.currency,
            rider_amount: o.rider_amount.minor(),
            distance_km: o.distance_km,
            delivery_address: DeliveryAddressView {
                formatted_address: o.delivery_address.formatted_address,
                mobile: o.delivery_address.mobile,
                location: o.delivery_address.location,
            },
            status: o.status.to_string(),
            payment_status: o.payment_status.to_string(),
            payment_method: o.payment_method.to_string(),
            expires_at: o.expires_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
            history: o
                .history
                .into_iter()
                .map(|h| HistoryView {
                    status: h.status.to_string(),
                    at: h.at,
                })
                .collect(),
        }
    }
}

/// `{order}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    pub order: OrderView,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        Self {
            order: order.into(),
        }
    }
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersResponse {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}
