//! Order events to clients: what changed in an order, to the rooms that care.

use std::sync::Arc;

use serde_json::json;
use tomato_actors::OrderEvents;
use tomato_domain::{Order, OrderStatus, PaymentStatus};

use super::bus::Room;
use super::clients::Realtime;
use crate::orders::view::OrderView;

/// Publishes order changes through the realtime gateway.
#[derive(Debug, Clone)]
pub struct RealtimeOrderEvents(pub Arc<Realtime>);

impl OrderEvents for RealtimeOrderEvents {
    fn changed(&self, before: &Order, after: &Order) {
        let customer = Room::User(after.user_id);
        let restaurant = Room::Restaurant(after.restaurant_id);
        let order = serde_json::to_value(OrderView::from(after.clone())).unwrap_or_default();
        if before.payment_status == PaymentStatus::Pending
            && after.payment_status == PaymentStatus::Paid
        {
            self.0
                .emit(restaurant.clone(), "order:new", &json!({ "order": order }));
        }
        if before.status != after.status || before.payment_status != after.payment_status {
            let update = json!({
                "orderId": after.id.to_string(),
                "status": after.status.as_str(),
                "paymentStatus": after.payment_status.as_str(),
                "order": order,
            });
            self.0.emit(customer.clone(), "order:update", &update);
            self.0.emit(restaurant.clone(), "order:update", &update);
        }
        if after.status == OrderStatus::RiderAssigned && before.status != OrderStatus::RiderAssigned
        {
            let assigned = json!({ "order": order });
            self.0.emit(customer, "order:rider_assigned", &assigned);
            self.0.emit(restaurant, "order:rider_assigned", &assigned);
        }
    }
}
