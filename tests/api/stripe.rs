//! Stripe against a local stand-in for its Checkout Sessions API: no test reaches the internet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, error_code, json_ok, spawn_app_with};
use crate::world::{Customer, HOME_AT, SHOP_AT, customer, open_shop};

const SECRET_KEY: &str = "sk_test_tomato";
const WEBHOOK_SECRET: &str = "whsec_tomato_tests";

/// Sessions the stand-in made: id -> (form it got, payment status).
type Sessions = Arc<Mutex<HashMap<String, (HashMap<String, String>, String)>>>;

fn session_json(id: &str, form: &HashMap<String, String>, status: &str) -> Value {
    json!({
        "id": id,
        "object": "checkout.session",
        "url": format!("https://checkout.stripe.test/{id}"),
        "payment_status": status,
        "payment_intent": (status == "paid").then(|| format!("pi_{id}")),
        "metadata": { "orderId": form.get("metadata[orderId]") },
    })
}

async fn stand_in() -> (SocketAddr, Sessions) {
    let sessions: Sessions = Arc::default();
    let (create, read) = (Arc::clone(&sessions), Arc::clone(&sessions));
    let router = Router::new()
        .route(
            "/v1/checkout/sessions",
            post(move |Form(form): Form<HashMap<String, String>>| {
                let sessions = Arc::clone(&create);
                async move {
                    let mut sessions = sessions.lock().expect("lock");
                    let id = format!("cs_test_{}", sessions.len() + 1);
                    let body = session_json(&id, &form, "unpaid");
                    sessions.insert(id, (form, "unpaid".to_owned()));
                    axum::Json(body)
                }
            }),
        )
        .route(
            "/v1/checkout/sessions/{id}",
            get(move |Path(id): Path<String>| {
                let sessions = Arc::clone(&read);
                async move {
                    let sessions = sessions.lock().expect("lock");
                    let (form, status) = sessions.get(&id).expect("known session");
                    axum::Json(session_json(&id, form, status))
                }
            }),
        );
    let refunded = Arc::clone(&sessions);
    let router = router.route(
        "/v1/refunds",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let sessions = Arc::clone(&refunded);
            async move {
                let intent = form.get("payment_intent").cloned().unwrap_or_default();
                // Remember the refund as a pseudo-session the test can look up.
                sessions
                    .lock()
                    .expect("lock")
                    .insert(format!("refund:{intent}"), (form, "refunded".to_owned()));
                axum::Json(json!({ "id": "re_1", "object": "refund", "payment_intent": intent }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, sessions)
}

async fn app_with_stripe() -> (TestApp, Sessions) {
    let (addr, sessions) = stand_in().await;
    let base = format!("http://{addr}");
    let app = spawn_app_with(&[
        ("TOMATO_PAYMENTS__STRIPE__SECRET_KEY", SECRET_KEY),
        ("TOMATO_PAYMENTS__STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("TOMATO_PAYMENTS__STRIPE__API_BASE", &base),
    ])
    .await;
    (app, sessions)
}

/// A customer with an unpaid Stripe order, and its Checkout Session.
async fn stripe_order(app: &TestApp) -> (Customer, String, String) {
    let shop = open_shop(app, "stripe-seller@x.test", "Stripe Kitchen", SHOP_AT).await;
    let buyer = customer(app, "stripe-buyer@x.test", HOME_AT).await;
    buyer.add(app, &shop.items[1], 3).await;
    let placed = buyer.place_with(app, "stripe").await;
    let order = json_ok(placed).await["order"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let opened = buyer.open_payment(app, &order).await;
    assert_eq!(opened["provider"], "stripe");
    let session = opened["providerOrderId"]
        .as_str()
        .expect("session")
        .to_owned();
    assert_eq!(
        opened["checkoutUrl"],
        format!("https://checkout.stripe.test/{session}")
    );
    assert_eq!(
        opened["amount"], 36700,
        "3 x 120 rupees, free delivery, 7 fee"
    );
    (buyer, order, session)
}

fn stripe_signature(body: &[u8], timestamp: i64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn checkout_is_verified_against_the_session() {
    let (app, sessions) = app_with_stripe().await;
    let (buyer, order, session) = stripe_order(&app).await;
    {
        let sessions = sessions.lock().expect("lock");
        let (form, _) = &sessions[&session];
        assert_eq!(form["mode"], "payment");
        assert_eq!(form["metadata[orderId]"], order);
        assert_eq!(form["line_items[0][price_data][currency]"], "inr");
        assert_eq!(form["line_items[0][price_data][unit_amount]"], "36700");
        assert!(form["success_url"].contains(&order));
    }
    let proof = json!({ "orderId": order });
    let early = app.post("/api/payment/verify", buyer.token(), &proof).await;
    assert_eq!(error_code(early, StatusCode::CONFLICT).await, "not_paid");

    sessions
        .lock()
        .expect("lock")
        .get_mut(&session)
        .expect("session")
        .1 = "paid".to_owned();
    let paid = json_ok(app.post("/api/payment/verify", buyer.token(), &proof).await).await;
    assert_eq!(paid["order"]["paymentStatus"], "paid");
}

#[tokio::test]
async fn webhooks_need_a_fresh_valid_signature_and_apply_once() {
    let (app, _) = app_with_stripe().await;
    let (buyer, order, session) = stripe_order(&app).await;
    let event = json!({
        "id": "evt_1",
        "type": "checkout.session.completed",
        "data": { "object": { "id": session, "payment_status": "paid", "metadata": { "orderId": order } } },
    })
    .to_string()
    .into_bytes();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let deliver = |signature: String| {
        let (client, url, body) = (
            app.client.clone(),
            app.url("/api/payment/webhook/stripe"),
            event.clone(),
        );
        async move {
            client
                .post(url)
                .header("stripe-signature", signature)
                .body(body)
                .send()
                .await
                .expect("send")
        }
    };
    for bad in [
        stripe_signature(&event, now, "whsec_wrong"),
        stripe_signature(&event, now - 3600, WEBHOOK_SECRET),
        stripe_signature(b"{}", now, WEBHOOK_SECRET),
        "t=abc,v1=00".to_owned(),
    ] {
        let response = deliver(bad).await;
        assert_eq!(
            error_code(response, StatusCode::BAD_REQUEST).await,
            "bad_signature"
        );
    }
    let order_now = json_ok(app.get(&format!("/api/order/{order}"), buyer.token()).await).await;
    assert_eq!(order_now["order"]["paymentStatus"], "pending");

    let applied = json_ok(deliver(stripe_signature(&event, now, WEBHOOK_SECRET)).await).await;
    assert_eq!(applied["status"], "applied");
    let repeat = json_ok(deliver(stripe_signature(&event, now, WEBHOOK_SECRET)).await).await;
    assert_eq!(repeat["status"], "duplicate");
    let order_now = json_ok(app.get(&format!("/api/order/{order}"), buyer.token()).await).await;
    assert_eq!(order_now["order"]["paymentStatus"], "paid");
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_through_stripe() {
    let (app, sessions) = app_with_stripe().await;
    let shop_seller = app.user_with_role("stripe-seller@x.test", "seller").await;
    let (buyer, order, session) = stripe_order(&app).await;
    sessions
        .lock()
        .expect("lock")
        .get_mut(&session)
        .expect("session")
        .1 = "paid".to_owned();
    json_ok(
        app.post(
            "/api/payment/verify",
            buyer.token(),
            &json!({ "orderId": order }),
        )
        .await,
    )
    .await;
    let cancelled = json_ok(
        app.put(
            &format!("/api/order/{order}"),
            Some(&shop_seller.token),
            &json!({ "status": "cancelled" }),
        )
        .await,
    )
    .await;
    assert_eq!(cancelled["order"]["paymentStatus"], "refund_pending");
    crate::orders::wait_for_payment(&app, buyer.token(), &order, "refunded").await;
    assert!(
        sessions
            .lock()
            .expect("lock")
            .contains_key(&format!("refund:pi_{session}")),
        "stripe was asked to refund the session's payment"
    );
}
