//! Builders for the marketplace tests: a verified, open restaurant with a menu, and customers
//! with an address and a cart, all made through the public API.

use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, json_ok};

/// MG Road, Bengaluru.
pub const SHOP_AT: (f64, f64) = (12.9756, 77.6050);
/// About 4 km east of the shop (Indiranagar).
pub const HOME_AT: (f64, f64) = (12.9719, 77.6412);

/// A seller with a verified, open restaurant and two dishes.
pub struct Shop {
    pub seller: Session,
    pub id: String,
    /// Idli at 6000, then Dosa at 12000.
    pub items: Vec<String>,
}

/// Creates a restaurant at `at` for a new seller, verified by the admin, open, with a menu.
pub async fn open_shop(app: &TestApp, email: &str, name: &str, at: (f64, f64)) -> Shop {
    let seller = app.user_with_role(email, "seller").await;
    let restaurant = json_ok(
        app.post(
            "/api/restaurant/new",
            Some(&seller.token),
            &json!({
                "name": name,
                "description": "Tiffin and meals",
                "phone": "+91 98450 12345",
                "location": { "lat": at.0, "lon": at.1 },
                "formattedAddress": "1 MG Road, Bengaluru",
            }),
        )
        .await,
    )
    .await;
    let id = restaurant["restaurant"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let admin = app.admin().await;
    json_ok(
        app.put(
            &format!("/api/admin/restaurant/verify/{id}"),
            Some(&admin.token),
            &json!({}),
        )
        .await,
    )
    .await;
    json_ok(
        app.put(
            &format!("/api/restaurant/{id}"),
            Some(&seller.token),
            &json!({ "isOpen": true }),
        )
        .await,
    )
    .await;
    let mut items = Vec::new();
    for (dish, price) in [("Idli", 6000), ("Dosa", 12000)] {
        let item = json_ok(
            app.post(
                "/api/item/new",
                Some(&seller.token),
                &json!({ "name": dish, "price": price, "category": "Tiffin" }),
            )
            .await,
        )
        .await;
        items.push(item["item"]["id"].as_str().expect("item id").to_owned());
    }
    Shop { seller, id, items }
}

/// A customer with one saved address at `at`.
pub struct Customer {
    pub session: Session,
    pub address_id: String,
}

pub async fn customer(app: &TestApp, email: &str, at: (f64, f64)) -> Customer {
    let session = app.dev_login(email, "Customer").await;
    let address = json_ok(
        app.post(
            "/api/address/new",
            Some(&session.token),
            &json!({
                "formattedAddress": "12 100 Feet Road, Indiranagar",
                "mobile": "+919845000000",
                "location": { "lat": at.0, "lon": at.1 },
            }),
        )
        .await,
    )
    .await;
    Customer {
        address_id: address["address"]["id"]
            .as_str()
            .expect("address id")
            .to_owned(),
        session,
    }
}

impl Customer {
    pub fn token(&self) -> Option<&str> {
        Some(&self.session.token)
    }

    pub async fn add(&self, app: &TestApp, item: &str, quantity: u32) -> Value {
        json_ok(
            app.post(
                "/api/cart/new",
                self.token(),
                &json!({ "itemId": item, "quantity": quantity }),
            )
            .await,
        )
        .await
    }

    /// Places an order of the cart, paid with the test provider; returns the response.
    pub async fn place(&self, app: &TestApp) -> reqwest::Response {
        self.place_with(app, "test").await
    }

    /// Places an order of the cart to be paid with `method`; returns the response.
    pub async fn place_with(&self, app: &TestApp, method: &str) -> reqwest::Response {
        app.post(
            "/api/order/new",
            self.token(),
            &json!({ "addressId": self.address_id, "paymentMethod": method }),
        )
        .await
    }

    /// Starts paying for `order` (`POST /api/payment/create-order`); returns the answer.
    pub async fn open_payment(&self, app: &TestApp, order: &str) -> Value {
        json_ok(
            app.post(
                "/api/payment/create-order",
                self.token(),
                &json!({ "orderId": order }),
            )
            .await,
        )
        .await
    }

    /// Places and returns the order.
    pub async fn order(&self, app: &TestApp) -> Value {
        json_ok(self.place(app).await).await["order"].clone()
    }

    pub async fn pay(&self, app: &TestApp, order_id: &str) -> Value {
        json_ok(
            app.post(
                "/api/payment/verify",
                self.token(),
                &json!({ "orderId": order_id }),
            )
            .await,
        )
        .await["order"]
            .clone()
    }
}

impl Shop {
    pub fn token(&self) -> Option<&str> {
        Some(&self.seller.token)
    }

    pub async fn set_status(&self, app: &TestApp, order: &str, status: &str) -> reqwest::Response {
        app.put(
            &format!("/api/order/{order}"),
            self.token(),
            &json!({ "status": status }),
        )
        .await
    }
}

/// A customer who has a paid order of `item` at `shop`; returns the customer and the order id.
pub async fn paid_order(app: &TestApp, shop: &Shop, email: &str) -> (Customer, String) {
    let customer = customer(app, email, HOME_AT).await;
    customer.add(app, &shop.items[0], 2).await;
    let order = customer.order(app).await;
    let id = order["id"].as_str().expect("order id").to_owned();
    let paid = customer.pay(app, &id).await;
    assert_eq!(paid["paymentStatus"], "paid");
    (customer, id)
}
