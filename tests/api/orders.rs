//! Orders over HTTP: the whole flow, the status machine, expiry, restarts, supervision,
//! concurrency, tampering and who may see what.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    INTERNAL_KEY, Store, error_code, json_ok, spawn_app, spawn_app_on, spawn_app_with,
};
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop, paid_order};

crate::on_both_stores!(customer_pays_and_the_seller_takes_the_order_to_ready_for_rider);
async fn customer_pays_and_the_seller_takes_the_order_to_ready_for_rider(store: Store) {
    let app = spawn_app_on(store, &[]).await;
    let shop = open_shop(&app, "flow-seller@x.test", "Flow Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "flow-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 2).await;
    buyer.add(&app, &shop.items[1], 1).await;

    let placed = buyer.place(&app).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    let order = json_ok(placed).await["order"].clone();
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(order["status"], "placed");
    assert_eq!(order["paymentStatus"], "pending");
    assert_eq!(order["paymentMethod"], "test");
    assert_eq!(order["subtotal"], 24000);
    assert_eq!(
        order["deliveryFee"], 4900,
        "below 250 rupees delivery costs 49"
    );
    assert_eq!(order["platformFee"], 700);
    assert_eq!(order["totalAmount"], 24000 + 4900 + 700);
    assert_eq!(order["currency"], "INR");
    let km = order["distanceKm"].as_f64().expect("distance");
    assert!((3.8..4.1).contains(&km), "{km}");
    assert_eq!(order["riderAmount"], 4 * 1700, "ceil(km) x 17 rupees");
    assert_eq!(order["restaurantName"], "Flow Kitchen");
    assert_eq!(order["riderId"], Value::Null);
    assert_eq!(order["items"][0]["name"], "Idli");
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["deliveryAddress"]["location"]["lat"], HOME_AT.0);
    assert!(order["expiresAt"].is_string());
    assert_eq!(order["history"][0]["status"], "placed");

    // The cart stays until payment succeeds.
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["itemCount"], 3);
    // The seller sees only paid orders.
    let listed = json_ok(app.get("/api/order/restaurant", shop.token()).await).await;
    assert_eq!(listed["orders"], json!([]));

    let provider = json_ok(
        app.post(
            "/api/payment/create-order",
            buyer.token(),
            &json!({ "orderId": id }),
        )
        .await,
    )
    .await;
    assert_eq!(provider["provider"], "test");
    assert_eq!(provider["amount"], 29600);
    assert_eq!(provider["currency"], "INR");
    assert!(
        provider["providerOrderId"]
            .as_str()
            .expect("provider id")
            .contains(&id)
    );

    let paid = buyer.pay(&app, &id).await;
    assert_eq!(paid["paymentStatus"], "paid");
    assert_eq!(paid["status"], "placed");
    assert_eq!(paid["expiresAt"], Value::Null);
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["itemCount"], 0, "payment clears the cart");
    let again = app
        .post(
            "/api/payment/create-order",
            buyer.token(),
            &json!({ "orderId": id }),
        )
        .await;
    assert_eq!(error_code(again, StatusCode::CONFLICT).await, "not_payable");

    let listed = json_ok(app.get("/api/order/restaurant", shop.token()).await).await;
    assert_eq!(listed["orders"][0]["id"], id.as_str());
    for status in ["accepted", "preparing", "ready_for_rider"] {
        let moved = json_ok(shop.set_status(&app, &id, status).await).await;
        assert_eq!(moved["order"]["status"], status);
    }
    let order =
        json_ok(app.get(&format!("/api/order/{id}"), buyer.token()).await).await["order"].clone();
    let history: Vec<&str> = order["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        history,
        ["placed", "accepted", "preparing", "ready_for_rider"]
    );
    let filtered = json_ok(
        app.get("/api/order/restaurant?status=ready_for_rider", shop.token())
            .await,
    )
    .await;
    assert_eq!(filtered["orders"].as_array().map(Vec::len), Some(1));
    let mine = json_ok(app.get("/api/order/myorder", buyer.token()).await).await;
    assert_eq!(mine["orders"][0]["id"], id.as_str());
    assert_eq!(mine["nextCursor"], Value::Null);
}

#[tokio::test]
async fn every_transition_outside_the_table_is_a_409() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "sm-seller@x.test", "State Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "sm-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let order = buyer.order(&app).await;
    let id = order["id"].as_str().expect("id").to_owned();

    // Unpaid: the seller can do nothing yet.
    for status in ["accepted", "preparing", "ready_for_rider", "cancelled"] {
        let response = shop.set_status(&app, &id, status).await;
        assert_eq!(
            error_code(response, StatusCode::CONFLICT).await,
            "invalid_transition",
            "{status}"
        );
    }
    buyer.pay(&app, &id).await;
    for status in ["preparing", "ready_for_rider"] {
        let response = shop.set_status(&app, &id, status).await;
        assert_eq!(
            error_code(response, StatusCode::CONFLICT).await,
            "invalid_transition",
            "{status}"
        );
    }
    json_ok(shop.set_status(&app, &id, "accepted").await).await;
    let response = app
        .post(
            &format!("/api/order/{id}/cancel"),
            buyer.token(),
            &json!({}),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "invalid_transition",
        "customer cancel after accept"
    );
    for status in ["accepted", "ready_for_rider"] {
        let response = shop.set_status(&app, &id, status).await;
        assert_eq!(
            error_code(response, StatusCode::CONFLICT).await,
            "invalid_transition",
            "{status}"
        );
    }
    for status in [
        "delivered",
        "picked_up",
        "rider_assigned",
        "placed",
        "expired",
        "bogus",
    ] {
        let response = shop.set_status(&app, &id, status).await;
        assert_eq!(
            error_code(response, StatusCode::BAD_REQUEST).await,
            "invalid_input",
            "{status}"
        );
    }
    json_ok(shop.set_status(&app, &id, "preparing").await).await;
    json_ok(shop.set_status(&app, &id, "ready_for_rider").await).await;
    let response = shop.set_status(&app, &id, "cancelled").await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "invalid_transition",
        "cancel after ready"
    );

    // A seller cancel refunds; a cancelled order takes nothing more.
    let (_, other) = paid_order(&app, &shop, "sm-other@x.test").await;
    let cancelled = json_ok(shop.set_status(&app, &other, "cancelled").await).await;
    assert_eq!(cancelled["order"]["status"], "cancelled");
    assert_eq!(cancelled["order"]["paymentStatus"], "refund_pending");
    // The test provider returns the money at once: the refund settles.
    wait_for_payment(&app, shop.token(), &other, "refunded").await;
    let response = shop.set_status(&app, &other, "accepted").await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "invalid_transition"
    );

    // A customer may cancel a paid order before acceptance: refund pending.
    let (early, early_id) = paid_order(&app, &shop, "sm-early@x.test").await;
    let cancelled = json_ok(
        app.post(
            &format!("/api/order/{early_id}/cancel"),
            early.token(),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(cancelled["order"]["paymentStatus"], "refund_pending");
}

/// Polls the order until its payment is `payment`; returns it.
pub async fn wait_for_payment(
    app: &crate::helpers::TestApp,
    token: Option<&str>,
    id: &str,
    payment: &str,
) -> Value {
    for _ in 0..100 {
        let order =
            json_ok(app.get(&format!("/api/order/{id}"), token).await).await["order"].clone();
        if order["paymentStatus"] == payment {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {id} never had payment {payment}");
}

async fn wait_for_status(
    app: &crate::helpers::TestApp,
    token: Option<&str>,
    id: &str,
    status: &str,
) -> Value {
    for _ in 0..100 {
        let order =
            json_ok(app.get(&format!("/api/order/{id}"), token).await).await["order"].clone();
        if order["status"] == status {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {id} never became {status}");
}

crate::on_both_stores!(unpaid_orders_expire_and_keep_the_cart);
async fn unpaid_orders_expire_and_keep_the_cart(store: Store) {
    let app = spawn_app_on(store, &[("TOMATO_ORDERS__PAYMENT_TIMEOUT_S", "1")]).await;
    let shop = open_shop(&app, "exp-seller@x.test", "Expiry Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "exp-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 3).await;
    let order = buyer.order(&app).await;
    let id = order["id"].as_str().expect("id").to_owned();

    let expired = wait_for_status(&app, buyer.token(), &id, "expired").await;
    assert_eq!(expired["paymentStatus"], "pending");
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["itemCount"], 3, "the cart is kept");
    // Money that arrives after the deadline is not kept: it goes back.
    let late = buyer.pay(&app, &id).await;
    assert_eq!(
        (&late["status"], &late["paymentStatus"]),
        (&json!("expired"), &json!("refund_pending"))
    );
    let refunded = wait_for_payment(&app, buyer.token(), &id, "refunded").await;
    assert_eq!(refunded["status"], "expired");
    assert_eq!(
        buyer.pay(&app, &id).await["paymentStatus"],
        "refunded",
        "paying again changes nothing"
    );
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(
        cart["cart"]["itemCount"], 3,
        "a refunded payment leaves the cart alone"
    );

    // Expired, the customer may order again; paying for an order cancelled unpaid is refunded
    // the same way.
    let again = json_ok(buyer.place(&app).await).await["order"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cancelled = json_ok(
        app.post(
            &format!("/api/order/{again}/cancel"),
            buyer.token(),
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(cancelled["order"]["paymentStatus"], "pending");
    assert_eq!(
        buyer.pay(&app, &again).await["paymentStatus"],
        "refund_pending"
    );
    let refunded = wait_for_payment(&app, buyer.token(), &again, "refunded").await;
    assert_eq!(refunded["status"], "cancelled");
}

crate::on_both_stores!(orders_and_their_timers_survive_a_restart);
async fn orders_and_their_timers_survive_a_restart(store: Store) {
    let mut app = spawn_app_on(store, &[("TOMATO_ORDERS__PAYMENT_TIMEOUT_S", "3")]).await;
    let shop = open_shop(&app, "rs-seller@x.test", "Restart Kitchen", SHOP_AT).await;
    let (_, paid) = paid_order(&app, &shop, "rs-paid@x.test").await;
    json_ok(shop.set_status(&app, &paid, "accepted").await).await;
    let waiting = customer(&app, "rs-waiting@x.test", HOME_AT).await;
    waiting.add(&app, &shop.items[1], 1).await;
    let unpaid = waiting.order(&app).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    app.restart().await;

    // The accepted order carries on where it was.
    let moved = json_ok(shop.set_status(&app, &paid, "preparing").await).await;
    assert_eq!(moved["order"]["status"], "preparing");
    let response = shop.set_status(&app, &paid, "accepted").await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "invalid_transition"
    );
    // The unpaid order's deadline was kept: it expires without anyone touching it.
    let expired = wait_for_status(&app, waiting.token(), &unpaid, "expired").await;
    assert_eq!(expired["history"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_panicking_order_actor_is_rebuilt_from_the_store_while_others_carry_on() {
    let app = spawn_app_with(&[("TOMATO_TESTING__FAULT_INJECTION", "true")]).await;
    let shop = open_shop(&app, "crash-seller@x.test", "Crash Kitchen", SHOP_AT).await;
    let (_, doomed) = paid_order(&app, &shop, "crash-a@x.test").await;
    let (_, healthy) = paid_order(&app, &shop, "crash-b@x.test").await;

    let arm = |id: String, key: &'static str| {
        app.client
            .post(app.url(&format!("/api/v1/internal/fault/order/{id}")))
            .header("x-internal-key", key)
            .send()
    };
    let refused = arm(doomed.clone(), "wrong-key").await.expect("send");
    assert_eq!(
        error_code(refused, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let armed = arm(doomed.clone(), INTERNAL_KEY).await.expect("send");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);

    let restarts_before = app.metric("tomato_order_actor_restarts_total").await;
    // The command that hits the fault crashes the actor; nothing it decided was applied, so it
    // is sent again to the actor rebuilt from the store, and the caller never notices.
    let survived = json_ok(shop.set_status(&app, &doomed, "accepted").await).await;
    assert_eq!(survived["order"]["status"], "accepted");
    assert_eq!(
        survived["order"]["history"].as_array().map(Vec::len),
        Some(2),
        "applied once"
    );
    assert_eq!(
        app.metric("tomato_order_actor_restarts_total").await,
        restarts_before + 1,
        "the supervisor restarted it"
    );

    // Its neighbour never noticed, and the rebuilt actor keeps serving.
    let fine = json_ok(shop.set_status(&app, &healthy, "accepted").await).await;
    assert_eq!(fine["order"]["status"], "accepted");
    let next = json_ok(shop.set_status(&app, &doomed, "preparing").await).await;
    assert_eq!(next["order"]["status"], "preparing");
    let again = shop.set_status(&app, &doomed, "accepted").await;
    assert_eq!(
        error_code(again, StatusCode::CONFLICT).await,
        "invalid_transition"
    );
}

#[tokio::test]
async fn fault_injection_is_off_by_default() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "nofault@x.test", "Calm Kitchen", SHOP_AT).await;
    let (_, id) = paid_order(&app, &shop, "nofault-b@x.test").await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/internal/fault/order/{id}")))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

crate::on_both_stores!(a_hundred_concurrent_verifies_pay_once);
async fn a_hundred_concurrent_verifies_pay_once(store: Store) {
    // A hundred payment calls at once from one customer: above the default rate limit.
    let app = spawn_app_on(store, &[("TOMATO_LIMITS__PAYMENTS_PER_MINUTE", "1000")]).await;
    let shop = open_shop(&app, "race-seller@x.test", "Race Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "race-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let id = buyer.order(&app).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let calls = (0..100).map(|_| {
        let client = app.client.clone();
        let url = app.url("/api/payment/verify");
        let token = buyer.session.token.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "orderId": id }))
                .send()
                .await
        })
    });
    let mut updated_at = std::collections::BTreeSet::new();
    for call in calls {
        let response = call.await.expect("task").expect("send");
        let order = json_ok(response).await["order"].clone();
        assert_eq!(order["paymentStatus"], "paid");
        updated_at.insert(order["updatedAt"].as_str().expect("updatedAt").to_owned());
    }
    assert_eq!(
        updated_at.len(),
        1,
        "one payment, applied once: {updated_at:?}"
    );
}

#[tokio::test]
async fn prices_cannot_be_tampered_with() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "tamper-seller@x.test", "Honest Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "tamper@x.test", HOME_AT).await;
    let response = app
        .post(
            "/api/cart/new",
            buyer.token(),
            &json!({ "itemId": shop.items[1], "quantity": 2, "price": 1 }),
        )
        .await;
    let cart = json_ok(response).await;
    assert_eq!(cart["cart"]["subtotal"], 24000);
    // The menu price rises after the dish went into the cart: the order uses the new price.
    json_ok(
        app.put(
            &format!("/api/item/{}", shop.items[1]),
            shop.token(),
            &json!({ "price": 13000 }),
        )
        .await,
    )
    .await;
    let response = app
        .post(
            "/api/order/new",
            buyer.token(),
            &json!({ "addressId": buyer.address_id, "paymentMethod": "test", "totalAmount": 1, "subtotal": 1, "deliveryFee": 0 }),
        )
        .await;
    let order = json_ok(response).await["order"].clone();
    assert_eq!(order["subtotal"], 26000);
    assert_eq!(order["deliveryFee"], 0, "free delivery from 250 rupees");
    assert_eq!(order["totalAmount"], 26700);
}

#[tokio::test]
async fn orders_are_seen_and_moved_only_by_their_parties() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "bola-seller@x.test", "Private Kitchen", SHOP_AT).await;
    let rival = open_shop(&app, "bola-rival@x.test", "Rival Kitchen", SHOP_AT).await;
    let (owner, id) = paid_order(&app, &shop, "bola-owner@x.test").await;
    let other = customer(&app, "bola-other@x.test", HOME_AT).await;
    let rider = app.user_with_role("bola-rider@x.test", "rider").await;
    let admin = app.admin().await;
    let path = format!("/api/order/{id}");

    for (who, token) in [
        ("other customer", other.token()),
        ("rival seller", rival.token()),
        ("unassigned rider", Some(rider.token.as_str())),
    ] {
        let response = app.get(&path, token).await;
        assert_eq!(
            error_code(response, StatusCode::NOT_FOUND).await,
            "not_found",
            "{who}"
        );
    }
    for (who, token) in [
        ("customer", owner.token()),
        ("seller", shop.token()),
        ("admin", Some(admin.token.as_str())),
    ] {
        let order = json_ok(app.get(&path, token).await).await;
        assert_eq!(order["order"]["id"], id.as_str(), "{who}");
    }

    let response = rival.set_status(&app, &id, "accepted").await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .put(&path, owner.token(), &json!({ "status": "accepted" }))
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let response = app
        .post(&format!("{path}/cancel"), other.token(), &json!({}))
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .post(
            "/api/payment/verify",
            other.token(),
            &json!({ "orderId": id }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .post(
            "/api/payment/create-order",
            other.token(),
            &json!({ "orderId": id }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let theirs = json_ok(app.get("/api/order/myorder", other.token()).await).await;
    assert_eq!(theirs["orders"], json!([]));
    let rivals = json_ok(app.get("/api/order/restaurant", rival.token()).await).await;
    assert_eq!(rivals["orders"], json!([]));

    // Nothing above changed the order.
    let order = json_ok(app.get(&path, owner.token()).await).await;
    assert_eq!(order["order"]["status"], "placed");
    assert_eq!(order["order"]["paymentStatus"], "paid");
}

crate::on_both_stores!(orders_are_refused_for_the_documented_reasons);
async fn orders_are_refused_for_the_documented_reasons(store: Store) {
    let app = spawn_app_on(store, &[("TOMATO_DISPATCH__MAX_DELIVERY_KM", "3")]).await;
    let shop = open_shop(&app, "why-seller@x.test", "Picky Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "why@x.test", (12.9740, 77.6100)).await;

    let empty = buyer.place(&app).await;
    assert_eq!(
        error_code(empty, StatusCode::UNPROCESSABLE_ENTITY).await,
        "empty_cart"
    );
    buyer.add(&app, &shop.items[0], 1).await;

    let bad_method = buyer.place_with(&app, "cash").await;
    assert_eq!(
        error_code(bad_method, StatusCode::BAD_REQUEST).await,
        "invalid_input"
    );
    let unavailable = buyer.place_with(&app, "razorpay").await;
    assert_eq!(
        error_code(unavailable, StatusCode::UNPROCESSABLE_ENTITY).await,
        "payment_method_unavailable"
    );
    let someone_elses = customer(&app, "why-other@x.test", HOME_AT).await;
    let stolen = app
        .post(
            "/api/order/new",
            buyer.token(),
            &json!({ "addressId": someone_elses.address_id, "paymentMethod": "test" }),
        )
        .await;
    assert_eq!(error_code(stolen, StatusCode::NOT_FOUND).await, "not_found");

    let far = json_ok(
        app.post(
            "/api/address/new",
            buyer.token(),
            &json!({ "formattedAddress": "Far away", "mobile": "9845012345", "location": { "lat": HOME_AT.0, "lon": HOME_AT.1 } }),
        )
        .await,
    )
    .await;
    let too_far = app
        .post(
            "/api/order/new",
            buyer.token(),
            &json!({ "addressId": far["address"]["id"], "paymentMethod": "test" }),
        )
        .await;
    assert_eq!(
        error_code(too_far, StatusCode::UNPROCESSABLE_ENTITY).await,
        "address_out_of_range"
    );

    json_ok(
        app.put(
            &format!("/api/restaurant/{}", shop.id),
            shop.token(),
            &json!({ "isOpen": false }),
        )
        .await,
    )
    .await;
    let closed = buyer.place(&app).await;
    assert_eq!(
        error_code(closed, StatusCode::CONFLICT).await,
        "restaurant_closed"
    );
    json_ok(
        app.put(
            &format!("/api/restaurant/{}", shop.id),
            shop.token(),
            &json!({ "isOpen": true }),
        )
        .await,
    )
    .await;

    json_ok(
        app.put(
            &format!("/api/item/{}", shop.items[0]),
            shop.token(),
            &json!({ "isAvailable": false }),
        )
        .await,
    )
    .await;
    let sold_out = buyer.place(&app).await;
    assert_eq!(
        error_code(sold_out, StatusCode::CONFLICT).await,
        "item_unavailable"
    );
    json_ok(
        app.put(
            &format!("/api/item/{}", shop.items[0]),
            shop.token(),
            &json!({ "isAvailable": true }),
        )
        .await,
    )
    .await;

    let first = buyer.place(&app).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = buyer.place(&app).await;
    assert_eq!(
        error_code(second, StatusCode::CONFLICT).await,
        "unpaid_order_exists"
    );
    let mine = json_ok(app.get("/api/order/myorder", buyer.token()).await).await;
    assert_eq!(
        mine["orders"].as_array().map(Vec::len),
        Some(1),
        "refusals stored nothing"
    );

    let seller = app.user_with_role("fresh-seller@x.test", "seller").await;
    let unverified = json_ok(
        app.post(
            "/api/restaurant/new",
            Some(&seller.token),
            &json!({ "name": "New", "phone": "9845012345", "location": { "lat": SHOP_AT.0, "lon": SHOP_AT.1 }, "formattedAddress": "x" }),
        )
        .await,
    )
    .await;
    let rid = unverified["restaurant"]["id"].as_str().expect("id");
    json_ok(
        app.put(
            &format!("/api/restaurant/{rid}"),
            Some(&seller.token),
            &json!({ "isOpen": true }),
        )
        .await,
    )
    .await;
    let item = json_ok(
        app.post(
            "/api/item/new",
            Some(&seller.token),
            &json!({ "name": "X", "price": 100 }),
        )
        .await,
    )
    .await;
    let newcomer = customer(&app, "newcomer@x.test", (12.9740, 77.6100)).await;
    newcomer
        .add(&app, item["item"]["id"].as_str().expect("id"), 1)
        .await;
    let response = newcomer.place(&app).await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "restaurant_unverified"
    );
}

crate::on_both_stores!(idempotency_keys_replay_the_first_answer);
async fn idempotency_keys_replay_the_first_answer(store: Store) {
    let app = spawn_app_on(store, &[]).await;
    let shop = open_shop(&app, "idem-seller@x.test", "Retry Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "idem@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let body = json!({ "addressId": buyer.address_id, "paymentMethod": "test" });
    let send = |key: &'static str, body: Value| {
        app.client
            .post(app.url("/api/order/new"))
            .bearer_auth(&buyer.session.token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("order-1", body.clone()).await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_ok(first).await;
    let replay = send("order-1", body.clone()).await.expect("send");
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(json_ok(replay).await, first, "the same status and body");

    let mut other_body = body.clone();
    other_body["paymentMethod"] = json!("stripe");
    let reused = send("order-1", other_body).await.expect("send");
    assert_eq!(
        error_code(reused, StatusCode::CONFLICT).await,
        "idempotency_key_reused"
    );

    let other_key = send("order-2", body).await.expect("send");
    assert_eq!(
        error_code(other_key, StatusCode::CONFLICT).await,
        "unpaid_order_exists"
    );
    let mine = json_ok(app.get("/api/order/myorder", buyer.token()).await).await;
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn parallel_requests_with_one_key_make_one_order_and_all_hear_it() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "par-seller@x.test", "Parallel Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "par@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let body = json!({ "addressId": buyer.address_id, "paymentMethod": "test" });
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/order/new"))
                .bearer_auth(&buyer.session.token)
                .header("idempotency-key", "together")
                .json(&body);
            tokio::spawn(async move { request.send().await.expect("send") })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        let response = call.await.expect("task");
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.insert(json_ok(response).await["order"]["id"].to_string());
    }
    assert_eq!(ids.len(), 1, "one order, the same answer for all: {ids:?}");
    let mine = json_ok(app.get("/api/order/myorder", buyer.token()).await).await;
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1));
}
