//! The conformance suite: what every backend must do, written once against the traits. Each
//! backend's tests call [`run`] on a fresh store; a backend passes only if every check holds.
//! Checks use their own e-mail addresses, so they need no cleanup between them.

use time::{Duration, OffsetDateTime};
use tomato_domain::{
    Address, AddressId, Cart, CartRule, DeliveryAddress, Email, HistoryEntry, LatLon, MenuItem,
    MenuItemId, Money, Order, OrderCommand, OrderId, OrderLine, OrderStatus, PaymentMethod,
    PaymentStatus, PersonName, Restaurant, RestaurantId, Rider, RiderId, Role, UserId,
};
use uuid::Uuid;

mod races;

use crate::{
    AuthChange, Conflict, FeedCursor, KeyClaim, Page, PositionSnapshot, Refund,
    RestaurantOrderFilter, RiderOrder, SaveEffects, SavedResponse, SignIn, StoreError, Stores,
};

/// Runs every check against `stores`, panicking with a description at the first failure.
pub async fn run(stores: &Stores) {
    stores.backend.ping().await.expect("ping answers");
    first_sign_in_creates_a_customer(stores).await;
    later_sign_ins_refresh_the_profile(stores).await;
    admin_sign_in_and_grant(stores).await;
    role_changes_bump_the_version(stores).await;
    concurrent_sign_ins_make_one_user(stores).await;
    revocations_are_kept_until_expiry(stores).await;
    the_change_feed_tells_of_role_changes_logouts_and_sign_ins(stores).await;
    run_marketplace(stores).await;
    run_riders(stores).await;
    run_stats(stores).await;
    run_payments(stores).await;
    run_fencing(stores).await;
    races::run(stores).await;
}

fn email(local: &str) -> Email {
    Email::parse(&format!("{local}@conformance.test")).expect("test email")
}

/// A sign-in of `local`@conformance.test (also a fixture for a backend's own tests).
pub fn sign_in(local: &str, name: &str) -> SignIn {
    SignIn {
        email: email(local),
        name: PersonName::parse(name).expect("test name"),
        image: None,
        admin: false,
    }
}

async fn first_sign_in_creates_a_customer(stores: &Stores) {
    let user = stores
        .users
        .sign_in(sign_in("first", "First Person"))
        .await
        .expect("sign in");
    assert_eq!(user.role, Role::Customer);
    assert_eq!(user.role_version, 0);
    assert_eq!(user.email, email("first"));
    assert_eq!(user.image, None);
    let age = OffsetDateTime::now_utc() - user.created_at;
    assert!(
        age >= Duration::ZERO && age < Duration::minutes(1),
        "created just now"
    );

    assert_eq!(
        stores.users.get(user.id).await.expect("get"),
        Some(user.clone())
    );
    assert_eq!(
        stores
            .users
            .find_by_email(&email("first"))
            .await
            .expect("find"),
        Some(user)
    );
    assert_eq!(
        stores.users.get(UserId::new()).await.expect("get unknown"),
        None
    );
    assert_eq!(
        stores
            .users
            .find_by_email(&email("nobody"))
            .await
            .expect("find unknown"),
        None
    );
}

async fn later_sign_ins_refresh_the_profile(stores: &Stores) {
    let first = stores
        .users
        .sign_in(SignIn {
            image: Some("https://img.test/a.png".into()),
            ..sign_in("again", "Old Name")
        })
        .await
        .expect("first sign in");
    let second = stores
        .users
        .sign_in(sign_in("again", "New Name"))
        .await
        .expect("second sign in");
    assert_eq!(second.id, first.id, "same e-mail, same user");
    assert_eq!(second.name.as_str(), "New Name");
    assert_eq!(
        second.image.as_deref(),
        Some("https://img.test/a.png"),
        "no image keeps the old one"
    );
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(stores.users.get(first.id).await.expect("get"), Some(second));
}

async fn admin_sign_in_and_grant(stores: &Stores) {
    let admin = stores
        .users
        .sign_in(SignIn {
            admin: true,
            ..sign_in("boss", "Boss")
        })
        .await
        .expect("admin sign in");
    assert_eq!(admin.role, Role::Admin);

    let promoted_later = stores
        .users
        .sign_in(sign_in("promoted", "Promoted"))
        .await
        .expect("sign in");
    let promoted = stores
        .users
        .sign_in(SignIn {
            admin: true,
            ..sign_in("promoted", "Promoted")
        })
        .await
        .expect("admin sign in");
    assert_eq!(promoted.id, promoted_later.id);
    assert_eq!(promoted.role, Role::Admin);
    assert!(
        promoted.role_version > promoted_later.role_version,
        "old tokens go stale"
    );

    let granted = stores
        .users
        .grant_admin(&email("granted"))
        .await
        .expect("grant new");
    assert_eq!(granted.role, Role::Admin);
    assert_eq!(granted.name.as_str(), "granted");
    let again = stores
        .users
        .grant_admin(&email("granted"))
        .await
        .expect("grant again");
    assert_eq!(again, granted, "granting twice changes nothing");
    let signed_in = stores
        .users
        .sign_in(sign_in("granted", "Granted Person"))
        .await
        .expect("sign in after grant");
    assert_eq!(signed_in.id, granted.id);
    assert_eq!(
        signed_in.role,
        Role::Admin,
        "a plain sign-in keeps a granted role"
    );

    // Admin by configuration only while the configuration says so: an e-mail taken off
    // `auth.admin_emails` signs in as a customer again (and its admin tokens go stale).
    let dropped = stores
        .users
        .sign_in(sign_in("boss", "Boss"))
        .await
        .expect("sign in off the list");
    assert_eq!(dropped.id, admin.id);
    assert_eq!(dropped.role, Role::Customer);
    assert!(dropped.role_version > admin.role_version);
    let back = stores
        .users
        .sign_in(SignIn {
            admin: true,
            ..sign_in("boss", "Boss")
        })
        .await
        .expect("back on the list");
    assert_eq!(back.role, Role::Admin);
    // A grant on the command line outlives the list.
    stores
        .users
        .grant_admin(&email("boss"))
        .await
        .expect("grant");
    let kept = stores
        .users
        .sign_in(sign_in("boss", "Boss"))
        .await
        .expect("sign in after grant");
    assert_eq!(kept.role, Role::Admin, "a granted admin stays one");
}

async fn role_changes_bump_the_version(stores: &Stores) {
    let user = stores
        .users
        .sign_in(sign_in("switcher", "Switcher"))
        .await
        .expect("sign in");
    let seller = stores
        .users
        .set_role(user.id, Role::Seller)
        .await
        .expect("to seller");
    assert_eq!(seller.role, Role::Seller);
    assert_eq!(seller.role_version, user.role_version + 1);
    let same = stores
        .users
        .set_role(user.id, Role::Seller)
        .await
        .expect("same role");
    assert_eq!(same.role_version, seller.role_version, "no change, no bump");
    let back = stores
        .users
        .set_role(user.id, Role::Customer)
        .await
        .expect("back");
    assert_eq!(back.role_version, seller.role_version + 1);
    assert_eq!(
        stores.users.get(user.id).await.expect("get"),
        Some(back.clone())
    );
    let other = stores
        .users
        .sign_in(sign_in("bystander", "Bystander"))
        .await
        .expect("sign in");
    let mut many = stores
        .users
        .get_many(&[user.id, UserId::new(), other.id])
        .await
        .expect("get many");
    many.sort_by_key(|u| u.email.as_str().to_owned());
    assert_eq!(
        many,
        vec![other, back],
        "the ones that exist, as they are now"
    );
    assert!(stores.users.get_many(&[]).await.expect("none").is_empty());

    assert!(matches!(
        stores.users.set_role(UserId::new(), Role::Rider).await,
        Err(StoreError::NotFound)
    ));
}

async fn concurrent_sign_ins_make_one_user(stores: &Stores) {
    let attempts = (0..16).map(|_| {
        let users = stores.users.clone();
        tokio::spawn(async move { users.sign_in(sign_in("crowd", "Crowd")).await })
    });
    let mut ids = Vec::new();
    for attempt in attempts {
        let user = attempt.await.expect("task").expect("sign in");
        ids.push(user.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one e-mail, one user");
}

async fn revocations_are_kept_until_expiry(stores: &Stores) {
    let now = OffsetDateTime::now_utc();
    let live = Uuid::new_v4();
    let dead = Uuid::new_v4();
    assert!(!stores.tokens.is_revoked(live).await.expect("check"));

    stores
        .tokens
        .revoke(live, now + Duration::hours(1))
        .await
        .expect("revoke");
    stores
        .tokens
        .revoke(live, now + Duration::hours(1))
        .await
        .expect("revoke twice");
    stores
        .tokens
        .revoke(dead, now - Duration::hours(1))
        .await
        .expect("revoke expired");
    assert!(stores.tokens.is_revoked(live).await.expect("check"));
    assert!(stores.tokens.is_revoked(dead).await.expect("check"));
    let never = Uuid::new_v4();
    let mut among = stores
        .tokens
        .revoked_among(&[never, live, dead])
        .await
        .expect("among");
    among.sort();
    let mut both = vec![live, dead];
    both.sort();
    assert_eq!(among, both, "the revoked ones, and only them");
    assert!(
        stores
            .tokens
            .revoked_among(&[])
            .await
            .expect("none")
            .is_empty()
    );

    let purged = stores.tokens.purge_expired(now).await.expect("purge");
    assert!(purged >= 1);
    assert!(
        stores.tokens.is_revoked(live).await.expect("check"),
        "unexpired stays"
    );
    assert!(
        !stores.tokens.is_revoked(dead).await.expect("check"),
        "expired goes"
    );
}

/// The changes after `from` (all made through `stores`), read in pages of `limit`, and where
/// the last page left off.
async fn changes_after(
    stores: &Stores,
    from: FeedCursor,
    limit: usize,
) -> (Vec<AuthChange>, FeedCursor) {
    let mut cursor = from;
    let mut changes = Vec::new();
    loop {
        let page = stores
            .changes
            .auth_changes(Some(cursor), limit)
            .await
            .expect("read the change feed");
        let full = page.changes.len() == limit;
        for fed in page.changes {
            assert!(fed.here, "made through this store, and said so: {fed:?}");
            changes.push(fed.change);
        }
        cursor = page.next;
        if !full {
            return (changes, cursor);
        }
    }
}

async fn the_change_feed_tells_of_role_changes_logouts_and_sign_ins(stores: &Stores) {
    let user = stores
        .users
        .sign_in(sign_in("followed", "Followed"))
        .await
        .expect("sign in");
    let start = stores
        .changes
        .auth_changes(None, 100)
        .await
        .expect("start at the present");
    assert!(start.changes.is_empty(), "the present has no changes yet");

    stores
        .users
        .set_role(user.id, Role::Rider)
        .await
        .expect("to rider");
    let jti = Uuid::new_v4();
    let expires_at =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() + 3600)
            .expect("a time");
    stores.tokens.revoke(jti, expires_at).await.expect("revoke");
    stores
        .users
        .sign_in(sign_in("followed", "Renamed"))
        .await
        .expect("sign in again");

    // In pages of one, so the cursor must carry each page over to the next exactly. A new
    // reader starts a few seconds back: earlier checks' changes may come first.
    let (changes, next) = changes_after(stores, start.next.clone(), 1).await;
    let role = AuthChange::UserChanged(user.id);
    let revoked = AuthChange::Revoked { jti, expires_at };
    let ours: Vec<AuthChange> = changes
        .iter()
        .copied()
        .filter(|change| *change == role || *change == revoked)
        .collect();
    assert_eq!(
        ours,
        vec![role, revoked, role],
        "oldest first, the sign-in that refreshed the profile too"
    );
    let (whole, _) = changes_after(stores, start.next, 100).await;
    assert_eq!(whole, changes, "the same changes in one page");

    let (none, next) = changes_after(stores, next, 100).await;
    assert!(none.is_empty(), "nothing returned twice: {none:?}");
    stores
        .users
        .set_role(user.id, Role::Customer)
        .await
        .expect("back");
    let (later, _) = changes_after(stores, next, 100).await;
    assert_eq!(later, vec![role], "only what came after");

    stores
        .changes
        .forget_before(OffsetDateTime::now_utc() - Duration::hours(2))
        .await
        .expect("forget old changes");
    let (kept, _) = changes_after(stores, FeedCursor::default(), 1000).await;
    assert!(kept.contains(&revoked), "recent changes stay");
}

/// Checks of the marketplace and order stores.
pub async fn run_marketplace(stores: &Stores) {
    restaurants_are_one_per_owner_and_found_by_cell(stores).await;
    carts_hold_one_restaurant_and_price_from_the_menu(stores).await;
    addresses_belong_to_their_user(stores).await;
    orders_page_newest_first_and_allow_one_unpaid(stores).await;
    idempotent_responses_keep_the_first(stores).await;
}

async fn user(stores: &Stores, local: &str) -> tomato_domain::User {
    stores
        .users
        .sign_in(sign_in(local, local))
        .await
        .expect("sign in")
}

/// An unverified restaurant of `owner` (also a fixture for a backend's own tests).
pub fn restaurant(owner: UserId, name: &str, lat: f64) -> Restaurant {
    Restaurant {
        id: RestaurantId::new(),
        owner_id: owner,
        name: name.into(),
        description: "South Indian".into(),
        image: None,
        phone: "+919845012345".into(),
        location: LatLon::new(lat, 77.59).expect("point"),
        formatted_address: "1 MG Road".into(),
        is_open: false,
        is_verified: false,
        created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
    }
}

fn item(restaurant: RestaurantId, name: &str, price: i64) -> MenuItem {
    MenuItem {
        id: MenuItemId::new(),
        restaurant_id: restaurant,
        name: name.into(),
        description: String::new(),
        price: Money::from_minor(price),
        image: None,
        category: Some("Mains".into()),
        is_available: true,
    }
}

async fn restaurants_are_one_per_owner_and_found_by_cell(stores: &Stores) {
    let owner = user(stores, "seller-one").await;
    let mut dosa = restaurant(owner.id, "Dosa Corner", 12.97);
    stores.restaurants.create(&dosa, 42).await.expect("create");
    let second = restaurant(owner.id, "Second", 12.97);
    assert!(matches!(
        stores.restaurants.create(&second, 42).await,
        Err(StoreError::Conflict(Conflict::RestaurantExists))
    ));
    assert_eq!(
        stores.restaurants.get(dosa.id).await.expect("get"),
        Some(dosa.clone())
    );
    assert_eq!(
        stores
            .restaurants
            .by_owner(owner.id)
            .await
            .expect("by owner"),
        Some(dosa.clone())
    );
    assert!(
        stores
            .restaurants
            .pending()
            .await
            .expect("pending")
            .contains(&dosa)
    );
    assert!(
        stores
            .restaurants
            .verified_in_cells(vec![42], None)
            .await
            .expect("near")
            .is_empty(),
        "unverified restaurants are not listed"
    );

    dosa.is_open = true;
    dosa.name = "Dosa Corner Express".into();
    // An owner's edit carrying a stale `is_verified` does not touch verification.
    dosa.is_verified = true;
    stores.restaurants.update(&dosa).await.expect("update");
    assert!(
        stores
            .restaurants
            .pending()
            .await
            .expect("pending")
            .iter()
            .any(|r| r.id == dosa.id)
    );
    let verified = stores.restaurants.verify(dosa.id).await.expect("verify");
    assert_eq!(verified, dosa);
    dosa.is_verified = false;
    stores.restaurants.update(&dosa).await.expect("stale edit");
    dosa.is_verified = true;
    assert_eq!(
        stores.restaurants.get(dosa.id).await.expect("get"),
        Some(dosa.clone())
    );
    assert!(matches!(
        stores.restaurants.verify(RestaurantId::new()).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        !stores
            .restaurants
            .pending()
            .await
            .expect("pending")
            .contains(&dosa)
    );
    let near = |cells: Vec<u64>, search: Option<&str>| {
        let restaurants = stores.restaurants.clone();
        let search = search.map(str::to_owned);
        async move {
            restaurants
                .verified_in_cells(cells, search)
                .await
                .expect("near")
        }
    };
    assert_eq!(near(vec![7, 42], None).await, vec![dosa.clone()]);
    assert_eq!(near(vec![42], Some("CORNER")).await, vec![dosa.clone()]);
    assert!(near(vec![42], Some("pizza")).await.is_empty());
    assert!(near(vec![43], None).await.is_empty());
    // Case folds beyond ASCII: "ÉCLAIR" is found by "éclair" and the other way round.
    dosa.name = "Dosa Corner ÉCLAIR Café".into();
    stores.restaurants.update(&dosa).await.expect("rename");
    assert_eq!(near(vec![42], Some("éclair")).await, vec![dosa.clone()]);
    assert_eq!(near(vec![42], Some("CAFÉ")).await, vec![dosa.clone()]);
    assert!(matches!(
        stores
            .restaurants
            .update(&restaurant(owner.id, "ghost", 1.0))
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn carts_hold_one_restaurant_and_price_from_the_menu(stores: &Stores) {
    let seller_a = user(stores, "seller-a").await;
    let seller_b = user(stores, "seller-b").await;
    let customer = user(stores, "hungry").await;
    let other_customer = user(stores, "also-hungry").await;
    let a = restaurant(seller_a.id, "A", 12.9);
    let b = restaurant(seller_b.id, "B", 12.9);
    stores.restaurants.create(&a, 1).await.expect("a");
    stores.restaurants.create(&b, 1).await.expect("b");
    let mut idli = item(a.id, "Idli", 6000);
    let vada = item(a.id, "Vada", 4000);
    let pizza = item(b.id, "Pizza", 30000);
    for dish in [&idli, &vada, &pizza] {
        stores.menu.create(dish).await.expect("create item");
    }
    assert_eq!(
        stores.menu.list(a.id).await.expect("menu"),
        vec![idli.clone(), vada.clone()],
        "menus keep insertion order"
    );

    let cart = stores.carts.add(customer.id, &idli, 2).await.expect("add");
    assert_eq!(cart.restaurant_id, Some(a.id));
    let cart = stores
        .carts
        .add(customer.id, &idli, 3)
        .await
        .expect("add again");
    assert_eq!(cart.lines.len(), 1);
    assert_eq!(
        cart.lines[0].quantity, 5,
        "adding the same dish adds to its line"
    );
    assert!(matches!(
        stores.carts.add(customer.id, &idli, 46).await,
        Err(StoreError::Conflict(Conflict::Cart(
            CartRule::QuantityLimit
        )))
    ));
    assert!(matches!(
        stores.carts.add(customer.id, &pizza, 1).await,
        Err(StoreError::Conflict(Conflict::Cart(
            CartRule::OtherRestaurant
        )))
    ));
    let cart = stores
        .carts
        .add(customer.id, &vada, 1)
        .await
        .expect("add vada");
    assert_eq!(cart.subtotal().minor(), 5 * 6000 + 4000);
    assert_eq!(cart.item_count(), 6);

    idli.price = Money::from_minor(7000);
    stores.menu.update(&idli).await.expect("reprice");
    let cart = stores.carts.get(customer.id).await.expect("cart");
    assert_eq!(
        cart.subtotal().minor(),
        5 * 7000 + 4000,
        "priced from the menu now"
    );

    let vada_line = cart.lines[1].id;
    assert!(matches!(
        stores
            .carts
            .set_quantity(other_customer.id, vada_line, 3)
            .await,
        Err(StoreError::NotFound)
    ));
    let cart = stores
        .carts
        .set_quantity(customer.id, vada_line, 3)
        .await
        .expect("set");
    assert_eq!(cart.lines[1].quantity, 3);
    let cart = stores
        .carts
        .set_quantity(customer.id, vada_line, 0)
        .await
        .expect("remove");
    assert_eq!(cart.lines.len(), 1);

    stores.menu.delete(idli.id).await.expect("delete item");
    assert!(
        stores
            .carts
            .get(customer.id)
            .await
            .expect("cart")
            .is_empty()
    );
    assert_eq!(stores.menu.get(idli.id).await.expect("get"), None);
    assert!(matches!(
        stores.menu.delete(idli.id).await,
        Err(StoreError::NotFound)
    ));

    stores
        .carts
        .add(customer.id, &pizza, 1)
        .await
        .expect("empty cart takes any restaurant");
    stores.carts.clear(customer.id).await.expect("clear");
    assert_eq!(
        stores.carts.get(customer.id).await.expect("cart"),
        Cart::default()
    );
}

async fn addresses_belong_to_their_user(stores: &Stores) {
    let owner = user(stores, "addressee").await;
    let stranger = user(stores, "stranger").await;
    let make = |line: &str| Address {
        id: AddressId::new(),
        user_id: owner.id,
        formatted_address: line.into(),
        mobile: "+919845012345".into(),
        location: LatLon::new(12.97, 77.6).expect("point"),
        created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
    };
    let home = make("Home");
    let work = make("Work");
    stores.addresses.create(&home).await.expect("home");
    stores.addresses.create(&work).await.expect("work");
    assert_eq!(
        stores.addresses.list(owner.id).await.expect("list"),
        vec![work.clone(), home.clone()],
        "newest first"
    );
    assert_eq!(
        stores.addresses.get(home.id).await.expect("get"),
        Some(home.clone())
    );
    assert!(matches!(
        stores.addresses.delete(stranger.id, home.id).await,
        Err(StoreError::NotFound)
    ));
    stores
        .addresses
        .delete(owner.id, home.id)
        .await
        .expect("delete");
    assert_eq!(
        stores.addresses.list(owner.id).await.expect("list"),
        vec![work]
    );
}

/// An unpaid order just placed (also a fixture for a backend's own tests).
pub fn order_for(user: UserId, restaurant: RestaurantId) -> Order {
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    let here = LatLon::new(12.97, 77.59).expect("point");
    Order {
        id: OrderId::new(),
        user_id: user,
        restaurant_id: restaurant,
        restaurant_name: "A".into(),
        pickup: here,
        rider_id: None,
        rider_name: None,
        rider_phone: None,
        items: vec![OrderLine {
            item_id: MenuItemId::new(),
            name: "Idli".into(),
            price: Money::from_minor(6000),
            quantity: 2,
        }],
        subtotal: Money::from_minor(12000),
        delivery_fee: Money::from_minor(4900),
        platform_fee: Money::from_minor(700),
        total_amount: Money::from_minor(17600),
        currency: "INR".into(),
        rider_amount: Money::from_minor(1700),
        distance_km: 0.5,
        delivery_address: DeliveryAddress {
            formatted_address: "Home".into(),
            mobile: "+919845012345".into(),
            location: here,
        },
        status: OrderStatus::Placed,
        payment_status: PaymentStatus::Pending,
        payment_method: PaymentMethod::Test,
        expires_at: Some(now),
        created_at: now,
        updated_at: now,
        history: vec![HistoryEntry {
            status: OrderStatus::Placed,
            at: now,
        }],
        version: 0,
        shard: 3,
    }
}

async fn orders_page_newest_first_and_allow_one_unpaid(stores: &Stores) {
    let customer = user(stores, "orderer").await;
    let seller = user(stores, "order-seller").await;
    let shop = restaurant(seller.id, "Shop", 12.9);
    stores.restaurants.create(&shop, 5).await.expect("shop");
    let dish = item(shop.id, "Thali", 9000);
    stores.menu.create(&dish).await.expect("dish");

    let first = order_for(customer.id, shop.id);
    stores.orders.create(&first).await.expect("create");
    assert!(matches!(
        stores.orders.create(&order_for(customer.id, shop.id)).await,
        Err(StoreError::Conflict(Conflict::UnpaidOrderExists))
    ));
    assert_eq!(
        stores.orders.get(first.id).await.expect("get"),
        Some(first.clone())
    );
    let open = stores
        .orders
        .take_shard(first.shard)
        .await
        .expect("open")
        .open;
    assert!(open.contains(&first));
    assert!(
        !stores
            .orders
            .take_shard(first.shard + 1)
            .await
            .expect("open elsewhere")
            .open
            .iter()
            .any(|o| o.id == first.id),
        "an order is open only in its own shard"
    );

    // Paying clears the cart in the same write, and frees the customer to order again.
    stores.carts.add(customer.id, &dish, 1).await.expect("cart");
    let paid = first
        .apply(OrderCommand::ConfirmPayment, first.created_at)
        .expect("allowed")
        .expect("changed");
    stores
        .orders
        .save(
            &paid,
            SaveEffects {
                clear_cart_of: Some(customer.id),
                ..SaveEffects::default()
            },
        )
        .await
        .expect("save");
    assert!(
        stores
            .carts
            .get(customer.id)
            .await
            .expect("cart")
            .is_empty()
    );
    assert_eq!(
        stores.orders.get(first.id).await.expect("get"),
        Some(paid.clone())
    );

    let second = order_for(customer.id, shop.id);
    stores
        .orders
        .create(&second)
        .await
        .expect("second unpaid after the first was paid");

    let page = stores
        .orders
        .by_customer(customer.id, 1, None)
        .await
        .expect("page 1");
    assert_eq!(page.items, vec![second.clone()]);
    let cursor = page.next_cursor.expect("more");
    let page = stores
        .orders
        .by_customer(customer.id, 1, Some(cursor))
        .await
        .expect("page 2");
    assert_eq!(page.items, vec![paid.clone()]);
    assert_eq!(page.next_cursor, None);
    assert!(matches!(
        stores
            .orders
            .by_customer(customer.id, 1, Some("junk".into()))
            .await,
        Err(StoreError::Invalid(_))
    ));

    let sellers_view = stores
        .orders
        .by_restaurant(shop.id, RestaurantOrderFilter::default(), 50, None)
        .await
        .expect("restaurant orders");
    assert_eq!(sellers_view.items, vec![paid.clone()], "only paid orders");
    let filtered = stores
        .orders
        .by_restaurant(
            shop.id,
            RestaurantOrderFilter {
                status: Some(OrderStatus::Accepted),
            },
            50,
            None,
        )
        .await
        .expect("filtered");
    assert!(filtered.items.is_empty());
    let in_status = |status: OrderStatus| {
        let orders = std::sync::Arc::clone(&stores.orders);
        async move {
            orders
                .by_restaurant(
                    shop.id,
                    RestaurantOrderFilter {
                        status: Some(status),
                    },
                    50,
                    None,
                )
                .await
                .expect("filtered")
                .items
        }
    };
    assert_eq!(in_status(paid.status).await, vec![paid.clone()]);

    // Cancelling the paid order owes its money back in the same save.
    let cancelled = paid
        .apply(OrderCommand::CancelByCustomer, paid.created_at)
        .expect("allowed")
        .expect("changed");
    stores
        .orders
        .save(
            &cancelled,
            SaveEffects {
                owe_refund: true,
                ..SaveEffects::default()
            },
        )
        .await
        .expect("save");
    assert!(
        in_status(paid.status).await.is_empty(),
        "a list of one status loses the order that left it"
    );
    let owed = stores
        .payments
        .refunds_owed(200, None)
        .await
        .expect("refunds");
    let refund = owed
        .items
        .iter()
        .find(|r| r.order_id == paid.id)
        .expect("the cancelled order's refund is owed");
    assert_eq!(
        (refund.payment.as_deref(), refund.amount, refund.attempts),
        (None, paid.total_amount.minor(), 0)
    );
    stores
        .payments
        .refund_settled(paid.id, None)
        .await
        .expect("settle");

    let mut ghost = order_for(customer.id, shop.id);
    ghost.status = OrderStatus::Accepted;
    ghost.version = 1;
    assert!(matches!(
        stores.orders.save(&ghost, SaveEffects::default()).await,
        Err(StoreError::NotFound)
    ));
}

async fn idempotent_responses_keep_the_first(stores: &Stores) {
    let caller = user(stores, "retrier").await;
    let keys = &stores.idempotency;
    let saved = |hash: &str, status: u16| SavedResponse {
        request_hash: hash.into(),
        status,
        body: format!("{{\"status\":{status}}}"),
    };
    assert_eq!(keys.get(caller.id, "/r", "k").await.expect("get"), None);
    // The first caller claims the key; a second, while it runs, finds it running.
    let claim = |holder: &'static str, hash: &'static str| async move {
        keys.claim(caller.id, "/r", "k", hash, holder)
            .await
            .expect("claim")
    };
    assert_eq!(claim("one", "h1").await, KeyClaim::Ours);
    assert_eq!(
        claim("two", "h1").await,
        KeyClaim::Running {
            request_hash: "h1".into()
        }
    );
    assert_eq!(
        keys.get(caller.id, "/r", "k").await.expect("get"),
        None,
        "a key being run has no answer yet"
    );
    // Only the holder settles it; the other caller's answer does not replace it.
    let first = keys
        .settle(caller.id, "/r", "k", "one", saved("h1", 201))
        .await
        .expect("settle");
    assert_eq!(first, saved("h1", 201));
    assert_eq!(claim("two", "h1").await, KeyClaim::Answered(first.clone()));
    let second = keys
        .settle(caller.id, "/r", "k", "two", saved("h2", 409))
        .await
        .expect("settle again");
    assert_eq!(second, first, "the first response stays");
    // A release by another caller, or of an answered key, changes nothing.
    keys.release(caller.id, "/r", "k", "one")
        .await
        .expect("release");
    assert_eq!(
        keys.get(caller.id, "/r", "k").await.expect("get"),
        Some(first)
    );
    // A key let go (its request failed on the server) is free for the next try.
    let claim_other = |holder: &'static str| async move {
        keys.claim(caller.id, "/other", "k", "h3", holder)
            .await
            .expect("claim")
    };
    assert_eq!(claim_other("three").await, KeyClaim::Ours);
    keys.release(caller.id, "/other", "k", "someone else")
        .await
        .expect("release");
    assert!(matches!(
        claim_other("four").await,
        KeyClaim::Running { .. }
    ));
    keys.release(caller.id, "/other", "k", "three")
        .await
        .expect("release");
    assert_eq!(claim_other("four").await, KeyClaim::Ours);
    keys.release(caller.id, "/other", "k", "four")
        .await
        .expect("release");
    assert_eq!(keys.get(caller.id, "/other", "k").await.expect("get"), None);
    keys.purge(OffsetDateTime::now_utc() + Duration::minutes(1))
        .await
        .expect("purge");
    assert_eq!(keys.get(caller.id, "/r", "k").await.expect("get"), None);
}

/// An unverified rider profile of `user` (also a fixture for a backend's own tests).
pub fn rider_for(user: UserId) -> Rider {
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    Rider {
        id: RiderId::new(),
        user_id: user,
        name: "Ravi".into(),
        phone_number: "+919845012345".into(),
        aadhar_number: "123456789012".into(),
        driving_license_number: "KA0120190001234".into(),
        picture: None,
        is_verified: false,
        is_available: false,
        location: LatLon::new(12.97, 77.59).expect("point"),
        last_seen_at: at,
        current_order_id: None,
        created_at: at,
    }
}

/// Checks of the rider store.
pub async fn run_riders(stores: &Stores) {
    let user = user(stores, "rider-one").await;
    let rider = rider_for(user.id);
    let at = rider.last_seen_at;
    stores.riders.create(&rider).await.expect("create");
    assert!(matches!(
        stores
            .riders
            .create(&Rider {
                id: RiderId::new(),
                ..rider.clone()
            })
            .await,
        Err(StoreError::Conflict(Conflict::RiderExists))
    ));
    assert_eq!(
        stores.riders.get(rider.id).await.expect("get"),
        Some(rider.clone())
    );
    assert_eq!(
        stores.riders.by_user(user.id).await.expect("by user"),
        Some(rider.clone())
    );
    assert!(
        stores
            .riders
            .pending()
            .await
            .expect("pending")
            .contains(&rider)
    );

    let verified = stores.riders.verify(rider.id).await.expect("verify");
    assert!(verified.is_verified);
    assert!(
        !stores
            .riders
            .pending()
            .await
            .expect("pending")
            .contains(&verified)
    );
    let online = stores
        .riders
        .set_available(rider.id, true)
        .await
        .expect("online");
    assert!(online.is_available && online.is_verified);

    let moved = LatLon::new(12.98, 77.60).expect("point");
    let seen = at + Duration::seconds(30);
    stores
        .riders
        .save_positions(vec![PositionSnapshot {
            rider: rider.id,
            location: moved,
            seen_at: seen,
        }])
        .await
        .expect("snapshot");
    let now = stores
        .riders
        .get(rider.id)
        .await
        .expect("get")
        .expect("rider");
    assert_eq!((now.location, now.last_seen_at), (moved, seen));
    assert_eq!(now.current_order_id, None);
    riders_hold_one_order_at_a_time(stores, rider.id).await;
    assert!(
        stores
            .riders
            .all()
            .await
            .expect("all")
            .iter()
            .any(|r| r.id == rider.id)
    );
    assert!(matches!(
        stores.riders.verify(RiderId::new()).await,
        Err(StoreError::NotFound)
    ));
}

/// A transition can take or release the rider in the same write, and only on the rider's
/// current state: a busy rider is never given a second order (and the order's write is undone
/// with it), and releasing an order the rider no longer holds changes nothing.
async fn riders_hold_one_order_at_a_time(stores: &Stores, rider: RiderId) {
    let carried = ready_order(stores).await;
    let other = ready_order(stores).await;
    let take = |order: &Order| SaveEffects {
        rider_order: Some(RiderOrder::Take {
            rider,
            order: order.id,
        }),
        ..SaveEffects::default()
    };
    let release = |order: &Order| SaveEffects {
        rider_order: Some(RiderOrder::Release {
            rider,
            order: order.id,
        }),
        ..SaveEffects::default()
    };
    let current = || async {
        stores
            .riders
            .get(rider)
            .await
            .expect("get")
            .expect("rider")
            .current_order_id
    };
    let carried_assigned = assign(&carried, rider);
    stores
        .orders
        .save(&carried_assigned, take(&carried))
        .await
        .expect("take");
    assert_eq!(current().await, Some(carried.id));

    // A second order for the busy rider is refused, and its transition is not written either.
    let other_assigned = assign(&other, rider);
    assert!(matches!(
        stores.orders.save(&other_assigned, take(&other)).await,
        Err(StoreError::RiderBusy)
    ));
    assert_eq!(current().await, Some(carried.id));
    assert_eq!(
        stores.orders.get(other.id).await.expect("get"),
        Some(other.clone()),
        "the refused assignment left the order as it was"
    );

    // Releasing another order leaves the rider's current one alone.
    let mut other_again = other.clone();
    other_again.version += 1;
    stores
        .orders
        .save(&other_again, release(&other))
        .await
        .expect("a release of an order not held writes the order");
    assert_eq!(current().await, Some(carried.id));

    let mut done = carried_assigned.clone();
    done.version += 1;
    stores
        .orders
        .save(&done, release(&carried))
        .await
        .expect("release");
    assert_eq!(current().await, None);
}

/// A paid order, ready for a rider, as stored.
pub async fn ready_order(stores: &Stores) -> Order {
    let mut order = order_for(UserId::new(), RestaurantId::new());
    order.status = OrderStatus::ReadyForRider;
    order.payment_status = PaymentStatus::Paid;
    stores.orders.create(&order).await.expect("order");
    order
}

/// `order` assigned to `rider`, as its actor would make it (not stored).
pub fn assign(order: &Order, rider: RiderId) -> Order {
    order
        .apply(
            OrderCommand::AssignRider {
                rider,
                name: "Ravi".into(),
                phone: "+919845012345".into(),
            },
            order.updated_at,
        )
        .expect("allowed")
        .expect("changed")
}

/// Checks of the version fence: a save is accepted only over the version it started from, so
/// of two writers holding the same copy one wins, and a writer holding an older copy is refused
/// and leaves no trace.
pub async fn run_fencing(stores: &Stores) {
    let order = ready_order(stores).await;
    let (a, b) = (RiderId::new(), RiderId::new());
    let first = assign(&order, a);
    let second = assign(&order, b);
    assert_eq!(first.version, order.version + 1);
    stores
        .orders
        .save(&first, SaveEffects::default())
        .await
        .expect("the first writer wins");
    assert!(matches!(
        stores.orders.save(&second, SaveEffects::default()).await,
        Err(StoreError::Stale)
    ));
    assert_eq!(
        stores.orders.get(order.id).await.expect("get"),
        Some(first.clone()),
        "nothing of the stale write is visible"
    );
    // Saving the same version twice (a replay) is refused too: versions only grow.
    assert!(matches!(
        stores.orders.save(&first, SaveEffects::default()).await,
        Err(StoreError::Stale)
    ));
    // A version from the future (skipping one) is no better than a stale one.
    let mut leap = first.clone();
    leap.version += 2;
    assert!(matches!(
        stores.orders.save(&leap, SaveEffects::default()).await,
        Err(StoreError::Stale)
    ));
    // Racing writers of one copy: exactly one lands.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let next = first
                .apply(
                    OrderCommand::SetByRider {
                        rider: a,
                        status: OrderStatus::PickedUp,
                    },
                    first.updated_at,
                )
                .expect("allowed")
                .expect("changed");
            let orders = std::sync::Arc::clone(&stores.orders);
            tokio::spawn(async move { orders.save(&next, SaveEffects::default()).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("join") {
            Ok(()) => won += 1,
            Err(StoreError::Stale) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "one of the racing writers lands");
    assert_eq!(
        stores
            .orders
            .get(order.id)
            .await
            .expect("get")
            .expect("order")
            .version,
        first.version + 1
    );
    epochs_fence_out_a_shards_former_runner(stores).await;
}

/// Checks of the epoch fence: once a node has taken a shard, a save under an earlier epoch —
/// a node that lost the shard, whose copy may well be current — is refused and leaves no trace;
/// epochs only grow.
async fn epochs_fence_out_a_shards_former_runner(stores: &Stores) {
    // A shard of its own, so no other check's orders are in it.
    let shard = 7_000 + u32::from(Uuid::new_v4().as_bytes()[0]);
    let mut order = order_for(UserId::new(), RestaurantId::new());
    order.status = OrderStatus::ReadyForRider;
    order.payment_status = PaymentStatus::Paid;
    order.shard = shard;
    stores.orders.create(&order).await.expect("order");
    let former = stores.orders.take_shard(shard).await.expect("take");
    assert_eq!(former.open, vec![order.clone()]);
    let latter = stores.orders.take_shard(shard).await.expect("take again");
    assert!(latter.epoch > former.epoch, "epochs only grow");
    assert_eq!(latter.open, vec![order.clone()], "fencing changes nothing");
    let under = |epoch: u64| SaveEffects {
        epoch: Some(epoch),
        ..SaveEffects::default()
    };
    let assigned = assign(&order, RiderId::new());
    assert!(matches!(
        stores.orders.save(&assigned, under(former.epoch)).await,
        Err(StoreError::Fenced)
    ));
    assert_eq!(
        stores.orders.get(order.id).await.expect("get"),
        Some(order.clone()),
        "nothing of the fenced write is visible"
    );
    stores
        .orders
        .save(&assigned, under(latter.epoch))
        .await
        .expect("the shard's runner writes");
    // An order placed in the shard after it was taken is fenced by the next take.
    let mut placed = order_for(UserId::new(), RestaurantId::new());
    placed.status = OrderStatus::ReadyForRider;
    placed.payment_status = PaymentStatus::Paid;
    placed.shard = shard;
    stores.orders.create(&placed).await.expect("order");
    let next = stores
        .orders
        .take_shard(shard)
        .await
        .expect("take once more");
    assert!(next.open.contains(&placed));
    assert!(matches!(
        stores
            .orders
            .save(&assign(&placed, RiderId::new()), under(latter.epoch))
            .await,
        Err(StoreError::Fenced)
    ));
}

/// Checks of the statistics: counts follow writes, and only today's paid orders make revenue.
pub async fn run_stats(stores: &Stores) {
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let totals = stores.stats.totals().await.expect("totals");
    let summary = stores.stats.orders_since(today).await.expect("summary");
    user(stores, "counted").await;
    assert_eq!(
        stores.stats.totals().await.expect("totals").users,
        totals.users + 1
    );

    let mut fresh = order_for(UserId::new(), RestaurantId::new());
    fresh.created_at = OffsetDateTime::now_utc();
    let old = order_for(UserId::new(), RestaurantId::new());
    for order in [&fresh, &old] {
        stores.orders.create(order).await.expect("create");
        let paid = order
            .apply(OrderCommand::ConfirmPayment, order.created_at)
            .expect("allowed")
            .expect("changed");
        stores
            .orders
            .save(&paid, SaveEffects::default())
            .await
            .expect("pay");
    }
    let unpaid_today = OrderStatus::Placed;
    let after = stores.stats.orders_since(today).await.expect("summary");
    assert_eq!(
        after.revenue.minor(),
        summary.revenue.minor() + fresh.total_amount.minor(),
        "only today's paid order counts"
    );
    assert_eq!(
        after.platform_fees.minor(),
        summary.platform_fees.minor() + fresh.platform_fee.minor()
    );
    let placed = |s: &crate::OrderSummary| s.by_status.get(&unpaid_today).copied().unwrap_or(0);
    assert_eq!(placed(&after), placed(&summary) + 2);
}

/// Checks of the payment bookkeeping.
pub async fn run_payments(stores: &Stores) {
    let (ours, other) = (OrderId::new(), OrderId::new());
    stores
        .payments
        .link("razorpay", "order_A", ours)
        .await
        .expect("link");
    stores
        .payments
        .link("razorpay", "order_A", ours)
        .await
        .expect("link twice");
    assert!(matches!(
        stores.payments.link("razorpay", "order_A", other).await,
        Err(StoreError::Conflict(Conflict::ProviderOrderTaken))
    ));
    assert_eq!(
        stores
            .payments
            .order_of("razorpay", "order_A")
            .await
            .expect("find"),
        Some(ours)
    );
    assert_eq!(
        stores
            .payments
            .order_of("stripe", "order_A")
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        stores
            .payments
            .provider_order("razorpay", ours)
            .await
            .expect("find"),
        Some("order_A".to_owned())
    );
    // A caller slower than the opening claim links a second provider order to the same order:
    // the order's stays the first.
    stores
        .payments
        .link("razorpay", "order_Z", ours)
        .await
        .expect("link a second");
    assert_eq!(
        stores
            .payments
            .provider_order("razorpay", ours)
            .await
            .expect("find"),
        Some("order_A".to_owned()),
        "the first linked stays the order's"
    );
    assert_eq!(
        stores
            .payments
            .payment_of("razorpay", ours)
            .await
            .expect("none yet"),
        None
    );
    assert_eq!(
        stores
            .payments
            .set_payment("razorpay", "order_A", "pay_1")
            .await
            .expect("payment"),
        "pay_1"
    );
    assert_eq!(
        stores
            .payments
            .set_payment("razorpay", "order_A", "pay_2")
            .await
            .expect("second payment"),
        "pay_1",
        "the first payment of a provider order is the one that pays"
    );
    assert_eq!(
        stores
            .payments
            .payment_of("razorpay", ours)
            .await
            .expect("payment"),
        Some("pay_1".to_owned())
    );
    assert!(
        stores
            .payments
            .first_time("razorpay", "evt_1")
            .await
            .expect("event")
    );
    assert!(
        !stores
            .payments
            .first_time("razorpay", "evt_1")
            .await
            .expect("repeat")
    );
    assert!(
        stores
            .payments
            .first_time("stripe", "evt_1")
            .await
            .expect("other provider")
    );
    assert!(
        stores
            .payments
            .handled("razorpay", "evt_1")
            .await
            .expect("read")
    );
    assert!(
        !stores
            .payments
            .handled("razorpay", "evt_2")
            .await
            .expect("read")
    );
    openings_are_claimed_once(stores).await;
    refunds_are_owed_until_settled(stores).await;
}

/// One caller at a time opens an order's provider order; a claim older than its TTL is free.
async fn openings_are_claimed_once(stores: &Stores) {
    let order = OrderId::new();
    let ttl = std::time::Duration::from_secs(1);
    let claim = || stores.payments.claim_opening("razorpay", order, ttl);
    assert!(claim().await.expect("claim"));
    assert!(!claim().await.expect("claimed already"));
    assert!(
        stores
            .payments
            .claim_opening("stripe", order, ttl)
            .await
            .expect("another provider")
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(claim().await.expect("a lapsed claim is taken over"));
}

/// Refunds owed are listed oldest first, page by page, keep their failed attempts, are owed
/// once per (order, payment), and go when settled.
async fn refunds_are_owed_until_settled(stores: &Stores) {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let owed: Vec<Refund> = (0..3)
        .map(|i| {
            Refund::owed(
                OrderId::new(),
                (i == 2).then(|| "pay_extra".to_owned()),
                1000 + i,
                start + time::Duration::seconds(i),
            )
        })
        .collect();
    for refund in &owed {
        stores.payments.owe_refund(refund).await.expect("owe");
    }
    // Owing again (a retried webhook) changes nothing, not even the instant.
    let mut again = owed[0].clone();
    again.created_at += time::Duration::minutes(5);
    stores.payments.owe_refund(&again).await.expect("owe again");
    let ours = |page: &Page<Refund>| -> Vec<OrderId> {
        page.items
            .iter()
            .filter(|r| owed.iter().any(|o| o.order_id == r.order_id))
            .map(|r| r.order_id)
            .collect()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.payments.refunds_owed(2, cursor).await.expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(ours(&page));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let expected: Vec<OrderId> = owed.iter().map(|r| r.order_id).collect();
    assert_eq!(seen, expected, "oldest first, each once");

    let mut failed = owed[0].clone();
    failed.attempts = 2;
    failed.next_attempt_at = start + time::Duration::hours(2);
    failed.last_error = Some("provider answered 500".into());
    stores
        .payments
        .refund_attempted(&failed)
        .await
        .expect("attempt");
    stores
        .payments
        .refund_settled(owed[1].order_id, None)
        .await
        .expect("settle");
    stores
        .payments
        .refund_settled(owed[2].order_id, Some("pay_extra"))
        .await
        .expect("settle extra");
    let page = stores.payments.refunds_owed(200, None).await.expect("page");
    let left: Vec<&Refund> = page
        .items
        .iter()
        .filter(|r| owed.iter().any(|o| o.order_id == r.order_id))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].attempts, 2);
    assert_eq!(left[0].last_error.as_deref(), Some("provider answered 500"));
    assert_eq!(left[0].amount, 1000);
    assert_eq!(
        left[0].next_attempt_at.unix_timestamp(),
        failed.next_attempt_at.unix_timestamp()
    );
    assert_eq!(left[0].created_at.unix_timestamp(), start.unix_timestamp());
    assert!(matches!(
        stores.payments.refunds_owed(10, Some("junk".into())).await,
        Err(StoreError::Invalid(_))
    ));
    stores
        .payments
        .refund_settled(owed[0].order_id, None)
        .await
        .expect("settle");
}
