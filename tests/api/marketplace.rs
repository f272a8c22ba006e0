//! Restaurants, menus, carts and addresses over HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, json_ok, spawn_app};
use crate::world::{HOME_AT, SHOP_AT, customer, open_shop};

#[tokio::test]
async fn a_restaurant_is_listed_only_once_verified_and_open_ones_come_first() {
    let app = spawn_app().await;
    let seller = app.user_with_role("seller@x.test", "seller").await;
    let body = json!({
        "name": "Dosa Corner",
        "phone": "9845012345",
        "location": { "lat": SHOP_AT.0, "lon": SHOP_AT.1 },
        "formattedAddress": "1 MG Road",
    });
    let created = app
        .post("/api/restaurant/new", Some(&seller.token), &body)
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json_ok(created).await["restaurant"].clone();
    assert_eq!(created["isVerified"], false);
    assert_eq!(created["isOpen"], false);
    let id = created["id"].as_str().expect("id").to_owned();

    let second = app
        .post("/api/restaurant/new", Some(&seller.token), &body)
        .await;
    assert_eq!(
        error_code(second, StatusCode::CONFLICT).await,
        "restaurant_exists"
    );
    let customer = app.dev_login("c@x.test", "C").await;
    let as_customer = app
        .post("/api/restaurant/new", Some(&customer.token), &body)
        .await;
    assert_eq!(
        error_code(as_customer, StatusCode::FORBIDDEN).await,
        "forbidden"
    );

    let mine = json_ok(app.get("/api/restaurant/my", Some(&seller.token)).await).await;
    assert_eq!(mine["restaurant"]["id"], id.as_str());
    let by_id = json_ok(
        app.get(&format!("/api/restaurant/{id}"), Some(&customer.token))
            .await,
    )
    .await;
    assert_eq!(by_id["restaurant"], created);

    let near = format!("/api/restaurant/all?lat={}&lon={}", HOME_AT.0, HOME_AT.1);
    let listed = json_ok(app.get(&near, Some(&customer.token)).await).await;
    assert_eq!(
        listed["restaurants"],
        json!([]),
        "unverified restaurants are not listed"
    );

    let admin = app.admin().await;
    let pending = json_ok(
        app.get("/api/admin/restaurant/pending", Some(&admin.token))
            .await,
    )
    .await;
    assert_eq!(pending["restaurants"][0]["id"], id.as_str());
    let not_admin = app
        .get("/api/admin/restaurant/pending", Some(&customer.token))
        .await;
    assert_eq!(
        error_code(not_admin, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    json_ok(
        app.put(
            &format!("/api/admin/restaurant/verify/{id}"),
            Some(&admin.token),
            &json!({}),
        )
        .await,
    )
    .await;
    let pending = json_ok(
        app.get("/api/admin/restaurant/pending", Some(&admin.token))
            .await,
    )
    .await;
    assert_eq!(pending["restaurants"], json!([]));

    // A second, nearer restaurant that is open comes before the closed one.
    let nearer = open_shop(&app, "nearer@x.test", "Nearer Cafe", (12.9720, 77.6380)).await;
    let listed = json_ok(app.get(&near, Some(&customer.token)).await).await;
    let names: Vec<&str> = listed["restaurants"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Nearer Cafe", "Dosa Corner"]);
    let distance = listed["restaurants"][1]["distanceKm"]
        .as_f64()
        .expect("distanceKm");
    assert!((3.8..4.1).contains(&distance), "{distance}");
    assert_eq!(listed["nextCursor"], json!(null));

    // Open the far one: open first, then nearest.
    json_ok(
        app.put(
            &format!("/api/restaurant/{id}"),
            Some(&seller.token),
            &json!({ "isOpen": true }),
        )
        .await,
    )
    .await;
    let listed = json_ok(app.get(&near, Some(&customer.token)).await).await;
    assert_eq!(listed["restaurants"][0]["id"], nearer.id.as_str());

    let searched = json_ok(
        app.get(&format!("{near}&search=dOsA"), Some(&customer.token))
            .await,
    )
    .await;
    assert_eq!(searched["restaurants"].as_array().map(Vec::len), Some(1));
    let small_radius = json_ok(
        app.get(&format!("{near}&radius=1000"), Some(&customer.token))
            .await,
    )
    .await;
    assert_eq!(
        small_radius["restaurants"].as_array().map(Vec::len),
        Some(1)
    );
    let paged = json_ok(
        app.get(&format!("{near}&limit=1"), Some(&customer.token))
            .await,
    )
    .await;
    let cursor = paged["nextCursor"].as_str().expect("a next page");
    let page2 = json_ok(
        app.get(
            &format!("{near}&limit=1&cursor={cursor}"),
            Some(&customer.token),
        )
        .await,
    )
    .await;
    assert_eq!(page2["restaurants"][0]["id"], id.as_str());

    // Someone else's restaurant cannot be changed.
    let other = app.user_with_role("other@x.test", "seller").await;
    let hijack = app
        .put(
            &format!("/api/restaurant/{id}"),
            Some(&other.token),
            &json!({ "name": "Mine now" }),
        )
        .await;
    assert_eq!(error_code(hijack, StatusCode::FORBIDDEN).await, "forbidden");
}

#[tokio::test]
async fn nearby_search_input_is_validated() {
    let app = spawn_app().await;
    let user = app.dev_login("v@x.test", "V").await;
    for query in [
        "lat=12.9&lon=77.6&radius=0",
        "lat=12.9&lon=77.6&radius=50001",
        "lat=91&lon=77.6",
        "lat=12.9&lon=181",
        "lat=NaN&lon=77.6",
        "lat=12.9&lon=inf",
        "lat=12.9&lon=77.6&limit=0",
        "lat=12.9&lon=77.6&limit=201",
        "lat=12.9&lon=77.6&cursor=abc",
    ] {
        let response = app
            .get(&format!("/api/restaurant/all?{query}"), Some(&user.token))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        error_code(response, StatusCode::BAD_REQUEST).await;
    }
    let missing = app
        .get("/api/restaurant/all?lat=12.9", Some(&user.token))
        .await;
    assert_eq!(
        error_code(missing, StatusCode::BAD_REQUEST).await,
        "invalid_query"
    );
    let unauthenticated = app.get("/api/restaurant/all?lat=12.9&lon=77.6", None).await;
    assert_eq!(
        error_code(unauthenticated, StatusCode::UNAUTHORIZED).await,
        "unauthenticated"
    );
}

#[tokio::test]
async fn bad_restaurants_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let seller = app.user_with_role("bad@x.test", "seller").await;
    let good = json!({
        "name": "Fine",
        "phone": "9845012345",
        "location": { "lat": 12.9, "lon": 77.6 },
        "formattedAddress": "Somewhere",
    });
    let mut cases = Vec::new();
    for (field, value) in [
        ("name", json!("")),
        ("phone", json!("12")),
        ("location", json!({ "lat": 95.0, "lon": 77.6 })),
        ("location", json!({ "lat": 12.9, "lon": -200.0 })),
        ("location", json!({ "lat": "x", "lon": 1.0 })),
        ("formattedAddress", json!(" ")),
        ("image", json!("javascript:alert(1)")),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push(body);
    }
    for body in cases {
        let response = app
            .post("/api/restaurant/new", Some(&seller.token), &body)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let mine = app.get("/api/restaurant/my", Some(&seller.token)).await;
    assert_eq!(error_code(mine, StatusCode::NOT_FOUND).await, "not_found");
}

#[tokio::test]
async fn menus_belong_to_their_restaurant() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "menu@x.test", "Menu House", SHOP_AT).await;
    let customer = app.dev_login("eater@x.test", "Eater").await;
    let menu = json_ok(
        app.get(&format!("/api/item/{}", shop.id), Some(&customer.token))
            .await,
    )
    .await;
    let names: Vec<&str> = menu["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Idli", "Dosa"]);
    assert_eq!(menu["items"][0]["price"], 6000);
    assert_eq!(menu["items"][0]["isAvailable"], true);
    assert_eq!(menu["nextCursor"], Value::Null);
    // Menus page like every other list.
    let first = json_ok(
        app.get(
            &format!("/api/item/{}?limit=1", shop.id),
            Some(&customer.token),
        )
        .await,
    )
    .await;
    assert_eq!(first["items"][0]["name"], "Idli");
    let cursor = first["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = json_ok(
        app.get(
            &format!("/api/item/{}?limit=1&cursor={cursor}", shop.id),
            Some(&customer.token),
        )
        .await,
    )
    .await;
    assert_eq!(second["items"][0]["name"], "Dosa");
    assert_eq!(second["nextCursor"], Value::Null);
    let too_many = app
        .get(
            &format!("/api/item/{}?limit=201", shop.id),
            Some(&customer.token),
        )
        .await;
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);

    for price in [
        json!(0),
        json!(-100),
        json!(10_000_001),
        json!(12.5),
        json!("100"),
    ] {
        let response = app
            .post(
                "/api/item/new",
                shop.token(),
                &json!({ "name": "Bad", "price": price }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "price {price}");
    }
    let menu = json_ok(
        app.get(&format!("/api/item/{}", shop.id), Some(&customer.token))
            .await,
    )
    .await;
    assert_eq!(
        menu["items"].as_array().map(Vec::len),
        Some(2),
        "nothing stored"
    );

    let item = &shop.items[0];
    let updated = json_ok(
        app.put(
            &format!("/api/item/{item}"),
            shop.token(),
            &json!({ "price": 6500, "isAvailable": false }),
        )
        .await,
    )
    .await;
    assert_eq!(updated["item"]["price"], 6500);
    assert_eq!(updated["item"]["isAvailable"], false);

    let rival = open_shop(&app, "rival@x.test", "Rival", SHOP_AT).await;
    let response = app
        .put(
            &format!("/api/item/{item}"),
            rival.token(),
            &json!({ "price": 1 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let response = app
        .delete(&format!("/api/item/{item}"), rival.token())
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
    let response = app
        .post(
            "/api/item/new",
            Some(&customer.token),
            &json!({ "name": "X", "price": 1 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::FORBIDDEN).await,
        "forbidden"
    );

    let deleted = app.delete(&format!("/api/item/{item}"), shop.token()).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app
        .put(
            &format!("/api/item/{item}"),
            shop.token(),
            &json!({ "price": 1 }),
        )
        .await;
    assert_eq!(error_code(gone, StatusCode::NOT_FOUND).await, "not_found");

    let lonely = app.user_with_role("lonely@x.test", "seller").await;
    let response = app
        .post(
            "/api/item/new",
            Some(&lonely.token),
            &json!({ "name": "X", "price": 1 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "no_restaurant"
    );
}

#[tokio::test]
async fn carts_hold_one_restaurant_and_validate_quantities() {
    let app = spawn_app().await;
    let shop = open_shop(&app, "cart-shop@x.test", "Cart Shop", SHOP_AT).await;
    let other = open_shop(&app, "other-shop@x.test", "Other Shop", SHOP_AT).await;
    let buyer = customer(&app, "buyer@x.test", HOME_AT).await;

    let empty = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(
        empty["cart"],
        json!({ "restaurantId": null, "lines": [], "subtotal": 0, "itemCount": 0 })
    );

    for quantity in [json!(0), json!(51), json!(-1), json!(2.5)] {
        let response = app
            .post(
                "/api/cart/new",
                buyer.token(),
                &json!({ "itemId": shop.items[0], "quantity": quantity }),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "quantity {quantity}"
        );
    }
    let cart = buyer.add(&app, &shop.items[0], 2).await;
    assert_eq!(cart["cart"]["subtotal"], 12000);
    let cart = buyer.add(&app, &shop.items[1], 1).await;
    assert_eq!(cart["cart"]["subtotal"], 24000);
    assert_eq!(cart["cart"]["itemCount"], 3);
    assert_eq!(cart["cart"]["restaurantId"], shop.id.as_str());

    let response = app
        .post(
            "/api/cart/new",
            buyer.token(),
            &json!({ "itemId": other.items[0] }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "cart_other_restaurant"
    );
    let response = app
        .post(
            "/api/cart/new",
            buyer.token(),
            &json!({ "itemId": shop.items[0], "quantity": 49 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "quantity_limit"
    );

    // Prices are always the menu's current ones.
    json_ok(
        app.put(
            &format!("/api/item/{}", shop.items[0]),
            shop.token(),
            &json!({ "price": 7000 }),
        )
        .await,
    )
    .await;
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["subtotal"], 2 * 7000 + 12000);

    let line = cart["cart"]["lines"][1]["id"]
        .as_str()
        .expect("line")
        .to_owned();
    let stranger = customer(&app, "stranger@x.test", HOME_AT).await;
    let response = app
        .put(
            &format!("/api/cart/{line}"),
            stranger.token(),
            &json!({ "quantity": 5 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app
        .put(
            &format!("/api/cart/{line}"),
            buyer.token(),
            &json!({ "quantity": 51 }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "invalid_input"
    );
    let cart = json_ok(
        app.put(
            &format!("/api/cart/{line}"),
            buyer.token(),
            &json!({ "quantity": 3 }),
        )
        .await,
    )
    .await;
    assert_eq!(cart["cart"]["lines"][1]["quantity"], 3);
    let cart = json_ok(
        app.delete(&format!("/api/cart/{line}"), buyer.token())
            .await,
    )
    .await;
    assert_eq!(cart["cart"]["lines"].as_array().map(Vec::len), Some(1));

    json_ok(
        app.put(
            &format!("/api/item/{}", shop.items[1]),
            shop.token(),
            &json!({ "isAvailable": false }),
        )
        .await,
    )
    .await;
    let response = app
        .post(
            "/api/cart/new",
            buyer.token(),
            &json!({ "itemId": shop.items[1] }),
        )
        .await;
    assert_eq!(
        error_code(response, StatusCode::CONFLICT).await,
        "item_unavailable"
    );

    let cleared = app.delete("/api/cart", buyer.token()).await;
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    let cart = json_ok(app.get("/api/cart/all", buyer.token()).await).await;
    assert_eq!(cart["cart"]["itemCount"], 0);

    let seller_cart = app.get("/api/cart/all", shop.token()).await;
    assert_eq!(
        error_code(seller_cart, StatusCode::FORBIDDEN).await,
        "forbidden"
    );
}

#[tokio::test]
async fn addresses_are_validated_and_private() {
    let app = spawn_app().await;
    let owner = customer(&app, "home@x.test", HOME_AT).await;
    let second = json_ok(
        app.post(
            "/api/address/new",
            owner.token(),
            &json!({ "formattedAddress": "Office", "mobile": "+91 80 1234 5678", "location": { "lat": 12.93, "lon": 77.62 } }),
        )
        .await,
    )
    .await;
    assert_eq!(second["address"]["mobile"], "+918012345678");
    let listed = json_ok(app.get("/api/address/all", owner.token()).await).await;
    let lines: Vec<&str> = listed["addresses"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["formattedAddress"].as_str().expect("text"))
        .collect();
    assert_eq!(
        lines,
        ["Office", "12 100 Feet Road, Indiranagar"],
        "newest first"
    );

    for bad in [
        json!({ "formattedAddress": "X", "mobile": "123", "location": { "lat": 1.0, "lon": 1.0 } }),
        json!({ "formattedAddress": "X", "mobile": "9845012345", "location": { "lat": 100.0, "lon": 1.0 } }),
        json!({ "formattedAddress": "", "mobile": "9845012345", "location": { "lat": 1.0, "lon": 1.0 } }),
        json!({ "formattedAddress": "X", "mobile": "9845012345" }),
    ] {
        let response = app.post("/api/address/new", owner.token(), &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let listed = json_ok(app.get("/api/address/all", owner.token()).await).await;
    assert_eq!(
        listed["addresses"].as_array().map(Vec::len),
        Some(2),
        "nothing stored"
    );

    let thief = customer(&app, "thief@x.test", HOME_AT).await;
    let response = app
        .delete(&format!("/api/address/{}", owner.address_id), thief.token())
        .await;
    assert_eq!(
        error_code(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let response = app.delete("/api/address/not-an-id", owner.token()).await;
    assert_eq!(
        error_code(response, StatusCode::BAD_REQUEST).await,
        "invalid_path"
    );
    let deleted = app
        .delete(&format!("/api/address/{}", owner.address_id), owner.token())
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}
