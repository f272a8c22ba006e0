//! Razorpay against a local stand-in for its Orders API: no test reaches the internet.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::post;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{INTERNAL_KEY, Store, TestApp, error_code, json_ok, spawn_app, spawn_app_on};
use crate::sockets::SocketIoClient;
use crate::world::{Customer, HOME_AT, SHOP_AT, Shop, customer, open_shop};

const KEY_ID: &str = "rzp_test_tomato";
const KEY_SECRET: &str = "razorpay-key-secret-for-tests";
const WEBHOOK_SECRET: &str = "razorpay-webhook-secret-for-tests";

/// What the stand-in received: the Authorization header and the JSON body of each order, and
/// `refund <payment>` with the body of each refund it confirmed.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// The stand-in's state: what it saw, and how many refund calls it still answers 500.
#[derive(Clone, Default)]
struct StandIn {
    seen: Seen,
    failing_refunds: Arc<AtomicUsize>,
}

impl StandIn {
    fn refunds(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(what, _)| what.starts_with("refund "))
            .map(|(what, _)| what.clone())
            .collect()
    }

    fn orders_opened(&self) -> usize {
        let refunds = self.refunds().len();
        self.seen.lock().expect("lock").len() - refunds
    }
}

async fn stand_in() -> (SocketAddr, StandIn) {
    let state = StandIn::default();
    let record = Arc::clone(&state.seen);
    let router = Router::new().route(
        "/v1/orders",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let record = Arc::clone(&record);
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    // Slow enough that racing callers overlap.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let mut seen = record.lock().expect("lock");
                    seen.push((auth, body.clone()));
                    axum::Json(json!({
                        "id": format!("order_T{}", seen.len()),
                        "entity": "order",
                        "amount": body["amount"],
                        "currency": body["currency"],
                        "receipt": body["receipt"],
                        "status": "created",
                    }))
                }
            },
        ),
    );
    let refunds = state.clone();
    let router = router.route(
        "/v1/payments/{payment}/refund",
        post(
            move |axum::extract::Path(payment): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let refunds = refunds.clone();
                async move {
                    let failing = refunds
                        .failing_refunds
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": { "code": "SERVER_ERROR" } })));
                    }
                    refunds
                        .seen
                        .lock()
                        .expect("lock")
                        .push((format!("refund {payment}"), body.clone()));
                    (StatusCode::OK, axum::Json(json!({ "id": "rfnd_T1", "entity": "refund", "payment_id": payment, "amount": body["amount"] })))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, state)
}

async fn app_with_razorpay(store: Store) -> (TestApp, StandIn) {
    app_with_razorpay_and(store, &[]).await
}

async fn app_with_razorpay_and(store: Store, extra: &[(&str, &str)]) -> (TestApp, StandIn) {
    let (addr, stand_in) = stand_in().await;
    let base = format!("http://{addr}");
    let mut overrides = vec![
        ("TOMATO_PAYMENTS__RAZORPAY__KEY_ID", KEY_ID),
        ("TOMATO_PAYMENTS__RAZORPAY__KEY_SECRET", KEY_SECRET),
        ("TOMATO_PAYMENTS__RAZORPAY__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("TOMATO_PAYMENTS__RAZORPAY__API_BASE", &base),
    ];
    overrides.extend_from_slice(extra);
    let app = spawn_app_on(store, &overrides).await;
    (app, stand_in)
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A customer with an unpaid Razorpay order, and the Razorpay order opened for it.
async fn razorpay_order(app: &TestApp) -> (Customer, String, String) {
    let (buyer, order, provider_order, _) = razorpay_order_at(app).await;
    (buyer, order, provider_order)
}

/// [`razorpay_order`], and the shop it was placed at.
async fn razorpay_order_at(app: &TestApp) -> (Customer, String, String, Shop) {
    let shop = open_shop(app, "rzp-seller@x.test", "Razor Kitchen", SHOP_AT).await;
    let buyer = customer(app, "rzp-buyer@x.test", HOME_AT).await;
    buyer.add(app, &shop.items[0], 2).await;
    let placed = buyer.place_with(app, "razorpay").await;
    let order = json_ok(placed).await["order"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let opened = buyer.open_payment(app, &order).await;
    assert_eq!(opened["provider"], "razorpay");
    assert_eq!(opened["key"], KEY_ID);
    assert_eq!(opened["amount"], 17600);
    let provider_order = opened["providerOrderId"]
        .as_str()
        .expect("provider id")
        .to_owned();
    (buyer, order, provider_order, shop)
}

async fn order_of(app: &TestApp, buyer: &Customer, order: &str) -> Value {
    json_ok(app.get(&format!("/api/order/{order}"), buyer.token()).await).await["order"].clone()
}

#[tokio::test]
async fn a_checkout_signature_pays_the_order_and_forgeries_change_nothing() {
    let (app, stand_in) = app_with_razorpay(Store::Embedded).await;
    let seen = stand_in.seen;
    let (buyer, order, provider_order) = razorpay_order(&app).await;
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let (auth, body) = &seen[0];
        assert!(auth.starts_with("Basic "), "{auth}");
        assert_eq!(body["amount"], 17600);
        assert_eq!(body["currency"], "INR");
        assert_eq!(body["receipt"], order.as_str());
    }
    // Opening again reuses the Razorpay order.
    let again = buyer.open_payment(&app, &order).await;
    assert_eq!(again["providerOrderId"], provider_order.as_str());
    assert_eq!(seen.lock().expect("lock").len(), 1);

    let payment = "pay_T1";
    let good = hmac_hex(KEY_SECRET, format!("{provider_order}|{payment}").as_bytes());
    let verify = |signature: String, provider_order: String| {
        let proof = json!({ "orderId": order, "razorpayOrderId": provider_order, "razorpayPaymentId": payment, "razorpaySignature": signature });
        let (client, url, token) = (
            app.client.clone(),
            app.url("/api/payment/verify"),
            buyer.session.token.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&proof)
                .send()
                .await
                .expect("send")
        }
    };
    for forged in [
        good[..good.len() - 2].to_owned(),
        hmac_hex(
            "wrong-secret",
            format!("{provider_order}|{payment}").as_bytes(),
        ),
        hmac_hex(KEY_SECRET, format!("{provider_order}|pay_OTHER").as_bytes()),
        "zz".repeat(32),
    ] {
        let response = verify(forged, provider_order.clone()).await;
        assert_eq!(
            error_code(response, StatusCode::BAD_REQUEST).await,
            "bad_signature"
        );
    }
    // Correctly signed, but for a Razorpay order that is not this order's.
    let stranger = "order_ELSEWHERE";
    let response = app
        .post(
            "/api/payment/verify",
            buyer.token(),
            &json!({ "orderId": order, "razorpayOrderId": stranger, "razorpayPaymentId": payment,
                     "razorpaySignature": hmac_hex(KEY_SECRET, format!("{stranger}|{payment}").as_bytes()) }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "order_mismatch"
    );
    let missing = app
        .post(
            "/api/payment/verify",
            buyer.token(),
            &json!({ "orderId": order }),
        )
        .await;
    assert_eq!(
        error_code(missing, StatusCode::BAD_REQUEST).await,
        "invalid_input"
    );
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "pending",
        "nothing changed"
    );

    let paid = json_ok(verify(good, provider_order.clone()).await).await;
    assert_eq!(paid["order"]["paymentStatus"], "paid");
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["itemCount"], 0);
}

fn captured(provider_order: &str) -> Vec<u8> {
    json!({
        "entity": "event",
        "event": "payment.captured",
        "payload": { "payment": { "entity": { "id": "pay_W1", "order_id": provider_order, "status": "captured" } } },
    })
    .to_string()
    .into_bytes()
}

async fn deliver(app: &TestApp, body: &[u8], signature: &str, event_id: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/payment/webhook/razorpay"))
        .header("content-type", "application/json")
        .header("x-razorpay-signature", signature)
        .header("x-razorpay-event-id", event_id)
        .body(body.to_vec())
        .send()
        .await
        .expect("send")
}

crate::on_both_stores!(webhooks_are_checked_over_the_raw_body_and_applied_once);
async fn webhooks_are_checked_over_the_raw_body_and_applied_once(store: Store) {
    let (app, _) = app_with_razorpay(store).await;
    let (buyer, order, provider_order) = razorpay_order(&app).await;
    let body = captured(&provider_order);
    let forged = deliver(&app, &body, &hmac_hex("not-the-secret", &body), "evt_1").await;
    assert_eq!(
        error_code(forged, StatusCode::BAD_REQUEST).await,
        "bad_signature"
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let response = deliver(&app, &tampered, &hmac_hex(WEBHOOK_SECRET, &body), "evt_1").await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "bad_signature"
    );
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "pending"
    );

    let applied =
        json_ok(deliver(&app, &body, &hmac_hex(WEBHOOK_SECRET, &body), "evt_1").await).await;
    assert_eq!(applied["status"], "applied");
    let repeat =
        json_ok(deliver(&app, &body, &hmac_hex(WEBHOOK_SECRET, &body), "evt_1").await).await;
    assert_eq!(repeat["status"], "duplicate");
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "paid"
    );

    let other = json!({ "event": "payment.failed", "payload": {} })
        .to_string()
        .into_bytes();
    let ignored =
        json_ok(deliver(&app, &other, &hmac_hex(WEBHOOK_SECRET, &other), "evt_2").await).await;
    assert_eq!(ignored["status"], "ignored");
}

crate::on_both_stores!(verify_and_webhook_fifty_times_each_in_parallel_pay_once);
async fn verify_and_webhook_fifty_times_each_in_parallel_pay_once(store: Store) {
    let (app, _) = app_with_razorpay(store).await;
    let (buyer, order, provider_order, shop) = razorpay_order_at(&app).await;
    let mut kitchen = SocketIoClient::connect(&app, shop.token());
    kitchen.connected().await;
    let body = captured(&provider_order);
    let webhook_signature = hmac_hex(WEBHOOK_SECRET, &body);
    let payment_signature = hmac_hex(KEY_SECRET, format!("{provider_order}|pay_W1").as_bytes());
    let mut calls = Vec::new();
    for i in 0..50 {
        let (client, url, body, signature) = (
            app.client.clone(),
            app.url("/api/payment/webhook/razorpay"),
            body.clone(),
            webhook_signature.clone(),
        );
        calls.push(tokio::spawn(async move {
            client
                .post(url)
                .header("x-razorpay-signature", signature)
                .header("x-razorpay-event-id", format!("evt_{i}"))
                .body(body)
                .send()
                .await
        }));
        let (client, url, token) = (
            app.client.clone(),
            app.url("/api/payment/verify"),
            buyer.session.token.clone(),
        );
        let proof = json!({ "orderId": order, "razorpayOrderId": provider_order, "razorpayPaymentId": "pay_W1", "razorpaySignature": payment_signature });
        calls.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&proof)
                .send()
                .await
        }));
    }
    for call in calls {
        let response = call.await.expect("task").expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let order = order_of(&app, &buyer, &order).await;
    assert_eq!(order["paymentStatus"], "paid");
    assert_eq!(
        order["history"].as_array().map(Vec::len),
        Some(1),
        "payment is not a status change"
    );
    assert_eq!(
        kitchen
            .count("order:new", std::time::Duration::from_millis(700))
            .await,
        1,
        "the restaurant hears of the payment once"
    );
}

#[tokio::test]
async fn razorpay_is_off_until_configured() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "off-seller@x.test", "Off Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "off-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let placed = buyer.place_with(&app, "razorpay").await;
    assert_eq!(
        error_code(placed, StatusCode::UNPROCESSABLE_ENTITY).await,
        "payment_method_unavailable"
    );
    let hook = app
        .post("/api/payment/webhook/razorpay", None, &json!({}))
        .await;
    assert_eq!(error_code(hook, StatusCode::NOT_FOUND).await, "not_found");
    let stripe = app
        .post("/api/payment/webhook/stripe", None, &json!({}))
        .await;
    assert_eq!(error_code(stripe, StatusCode::NOT_FOUND).await, "not_found");
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_through_razorpay() {
    let (app, stand_in) = app_with_razorpay(Store::Embedded).await;
    let seen = stand_in.seen;
    let (buyer, order, provider_order, shop) = razorpay_order_at(&app).await;
    let signature = hmac_hex(KEY_SECRET, format!("{provider_order}|pay_R1").as_bytes());
    let proof = json!({ "orderId": order, "razorpayOrderId": provider_order, "razorpayPaymentId": "pay_R1", "razorpaySignature": signature });
    json_ok(app.post("/api/payment/verify", buyer.token(), &proof).await).await;
    let cancelled = json_ok(shop.set_status(&app, &order, "cancelled").await).await;
    assert_eq!(cancelled["order"]["paymentStatus"], "refund_pending");
    let refunded = crate::orders::wait_for_payment(&app, buyer.token(), &order, "refunded").await;
    assert_eq!(refunded["status"], "cancelled");
    let seen = seen.lock().expect("lock");
    let (what, body) = seen.last().expect("a refund call");
    assert_eq!(what, "refund pay_R1");
    assert_eq!(body["amount"], 17600);
}

crate::on_both_stores!(a_webhook_whose_apply_failed_is_applied_when_delivered_again);
async fn a_webhook_whose_apply_failed_is_applied_when_delivered_again(store: Store) {
    let (app, _) =
        app_with_razorpay_and(store, &[("TOMATO_TESTING__FAULT_INJECTION", "true")]).await;
    let (buyer, order, provider_order) = razorpay_order(&app).await;
    let armed = app
        .client
        .post(app.url(&format!("/api/v1/internal/fault/order/{order}?kind=store")))
        .header("x-internal-key", INTERNAL_KEY)
        .send()
        .await
        .expect("arm");
    assert_eq!(armed.status(), StatusCode::NO_CONTENT);
    let body = captured(&provider_order);
    let signature = hmac_hex(WEBHOOK_SECRET, &body);
    let failed = deliver(&app, &body, &signature, "evt_F1").await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "pending"
    );
    // The provider delivers the same event again: it was not handled, so it is applied now.
    let again = json_ok(deliver(&app, &body, &signature, "evt_F1").await).await;
    assert_eq!(again["status"], "applied");
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "paid"
    );
    let third = json_ok(deliver(&app, &body, &signature, "evt_F1").await).await;
    assert_eq!(third["status"], "duplicate");
}

crate::on_both_stores!(parallel_openings_make_one_provider_order_and_a_second_payment_goes_back);
async fn parallel_openings_make_one_provider_order_and_a_second_payment_goes_back(store: Store) {
    let (app, stand_in) = app_with_razorpay(store).await;
    let shop = open_shop(&app, "race-seller@x.test", "Race Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "race-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 2).await;
    let order = json_ok(buyer.place_with(&app, "razorpay").await).await["order"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (client, url, token) = (
                app.client.clone(),
                app.url("/api/payment/create-order"),
                buyer.session.token.clone(),
            );
            let body = json!({ "orderId": order });
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .expect("send")
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        let opened = json_ok(call.await.expect("task")).await;
        ids.insert(opened["providerOrderId"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        ids.len(),
        1,
        "every caller got the same provider order: {ids:?}"
    );
    assert_eq!(stand_in.orders_opened(), 1, "one provider order was opened");
    let provider_order = ids.pop_first().expect("one");

    // Paid once through checkout ...
    let signature = hmac_hex(KEY_SECRET, format!("{provider_order}|pay_A").as_bytes());
    let proof = json!({ "orderId": order, "razorpayOrderId": provider_order, "razorpayPaymentId": "pay_A", "razorpaySignature": signature });
    let paid = json_ok(app.post("/api/payment/verify", buyer.token(), &proof).await).await;
    assert_eq!(paid["order"]["paymentStatus"], "paid");
    // ... and captured a second time (a customer who paid twice): that money goes back, the
    // order stays paid by the first.
    let second = json!({
        "entity": "event",
        "event": "payment.captured",
        "payload": { "payment": { "entity": { "id": "pay_B", "order_id": provider_order, "status": "captured" } } },
    })
    .to_string()
    .into_bytes();
    let outcome =
        json_ok(deliver(&app, &second, &hmac_hex(WEBHOOK_SECRET, &second), "evt_B").await).await;
    assert_eq!(outcome["status"], "applied");
    for _ in 0..100 {
        if !stand_in.refunds().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stand_in.refunds(), vec!["refund pay_B".to_owned()]);
    assert_eq!(
        order_of(&app, &buyer, &order).await["paymentStatus"],
        "paid"
    );
    let admin = app.admin().await;
    for _ in 0..50 {
        let pending = json_ok(
            app.get("/api/admin/refunds/pending", Some(&admin.token))
                .await,
        )
        .await;
        if pending["refunds"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the confirmed refund is still listed as pending");
}

#[tokio::test]
async fn refunds_are_retried_until_the_provider_confirms_even_across_a_restart() {
    let (mut app, stand_in) = app_with_razorpay(Store::Embedded).await;
    let (buyer, order, provider_order, shop) = razorpay_order_at(&app).await;
    let signature = hmac_hex(KEY_SECRET, format!("{provider_order}|pay_R9").as_bytes());
    let proof = json!({ "orderId": order, "razorpayOrderId": provider_order, "razorpayPaymentId": "pay_R9", "razorpaySignature": signature });
    json_ok(app.post("/api/payment/verify", buyer.token(), &proof).await).await;
    // The provider fails the first two refund calls.
    stand_in.failing_refunds.store(2, Ordering::SeqCst);
    let cancelled = json_ok(shop.set_status(&app, &order, "cancelled").await).await;
    assert_eq!(cancelled["order"]["paymentStatus"], "refund_pending");

    let admin = app.admin().await;
    let pending = loop {
        let pending = json_ok(
            app.get("/api/admin/refunds/pending", Some(&admin.token))
                .await,
        )
        .await;
        if pending["refunds"][0]["attempts"].as_u64() >= Some(1) {
            break pending;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(pending["orders"][0]["id"], order.as_str());
    assert_eq!(pending["orders"][0]["paymentStatus"], "refund_pending");
    assert_eq!(pending["refunds"][0]["amount"], 17600);
    assert!(
        pending["refunds"][0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{pending}"
    );
    assert!(app.metric("tomato_refunds_pending").await >= 1);
    let customer_view = app.get("/api/admin/refunds/pending", buyer.token()).await;
    assert_eq!(customer_view.status(), StatusCode::FORBIDDEN);

    // A restart in the middle of the retries: the refund is picked up again from the store.
    app.restart().await;
    let refunded = crate::orders::wait_for_payment(&app, buyer.token(), &order, "refunded").await;
    assert_eq!(refunded["status"], "cancelled");
    assert_eq!(stand_in.refunds(), vec!["refund pay_R9".to_owned()]);
    assert_eq!(
        stand_in.failing_refunds.load(Ordering::SeqCst),
        0,
        "both failures were met"
    );
    let admin = app.admin().await;
    let pending = json_ok(
        app.get("/api/admin/refunds/pending", Some(&admin.token))
            .await,
    )
    .await;
    assert_eq!(pending["orders"], json!([]));
}

#[tokio::test]
async fn a_cut_off_idempotent_request_finishes_and_its_retry_gets_the_first_answer() {
    let (app, stand_in) = app_with_razorpay(Store::Embedded).await;
    let shop = open_shop(&app, "cut-seller@x.test", "Cut Kitchen", SHOP_AT).await;
    let buyer = customer(&app, "cut-buyer@x.test", HOME_AT).await;
    buyer.add(&app, &shop.items[0], 1).await;
    let order = json_ok(buyer.place_with(&app, "razorpay").await).await["order"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let open = |timeout_ms: u64| {
        app.client
            .post(app.url("/api/payment/create-order"))
            .bearer_auth(&buyer.session.token)
            .header("idempotency-key", "open-once")
            .timeout(std::time::Duration::from_millis(timeout_ms))
            .json(&json!({ "orderId": order }))
            .send()
    };
    // The client gives up while the provider is still being called (the stand-in takes 50 ms).
    let cut = open(15).await;
    assert!(
        cut.is_err_and(|err| err.is_timeout()),
        "the first attempt was cut off"
    );
    // The retry waits for the first attempt, which went on without its client, and replays it.
    let retry = open(10_000).await.expect("send");
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let opened = json_ok(retry).await;
    assert_eq!(stand_in.orders_opened(), 1, "one provider order");
    assert!(opened["providerOrderId"].as_str().is_some(), "{opened}");
}
