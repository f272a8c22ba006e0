//! The one-at-a-time rules raced: each check starts its writers together, many times over, and
//! holds the rule against what they leave in the store, not only against what they answered. On
//! the embedded store a transaction keeps each rule; on a CQL store a claim row, a
//! compare-and-set and the order of writes do, and these checks are where that shows.

use std::future::Future;
use std::sync::Arc;

use tomato_domain::{Order, Rider, Role};
use uuid::Uuid;

use super::{assign, item, order_for, ready_order, restaurant, rider_for, sign_in};
use crate::{Conflict, RiderOrder, SaveEffects, StoreError, Stores};

/// How many times each race is run: enough for a window of a few milliseconds between a
/// claim and its row to be hit, as it was by an app's double tap.
const ROUNDS: usize = 8;
/// Writers in each race.
const RACERS: usize = 6;

/// Runs every race against `stores`.
pub async fn run(stores: &Stores) {
    concurrent_checkouts_make_one_unpaid_order(stores).await;
    concurrent_takes_give_a_rider_one_order(stores).await;
    concurrent_creates_make_one_profile(stores).await;
    cart_updates_racing_a_clear_leave_a_readable_cart(stores).await;
    a_role_change_right_after_sign_up_holds(stores).await;
}

/// Starts `RACERS` writers at once and collects what each answered.
async fn race<T, F, Fut>(make: F) -> Vec<Result<T, StoreError>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let writers: Vec<_> = (0..RACERS).map(|i| tokio::spawn(make(i))).collect();
    let mut answers = Vec::with_capacity(RACERS);
    for writer in writers {
        answers.push(writer.await.expect("a racing writer panicked"));
    }
    answers
}

/// The candidates whose writers won; every other writer must have been refused as `lost`.
fn winners<'a, C>(
    round: usize,
    candidates: &'a [C],
    answers: &[Result<(), StoreError>],
    lost: Conflict,
) -> Vec<&'a C> {
    candidates
        .iter()
        .zip(answers)
        .filter_map(|(candidate, answer)| match answer {
            Ok(()) => Some(candidate),
            Err(StoreError::Conflict(rule)) if *rule == lost => None,
            Err(other) => panic!("round {round}: a writer failed: {other:?}"),
        })
        .collect()
}

/// A new user of its own for one round.
async fn fresh_user(stores: &Stores, what: &str) -> tomato_domain::User {
    let local = format!("{what}-{}", Uuid::new_v4().simple());
    stores
        .users
        .sign_in(sign_in(&local, "Racer"))
        .await
        .expect("sign in")
}

/// A customer's app sends several checkouts at once, each with its own key: one unpaid order is
/// made, the others are refused as `unpaid_order_exists`, and the store holds exactly one.
async fn concurrent_checkouts_make_one_unpaid_order(stores: &Stores) {
    for round in 0..ROUNDS {
        let customer = fresh_user(stores, "race-checkout").await;
        let restaurant_id = tomato_domain::RestaurantId::new();
        let orders: Vec<Order> = (0..RACERS)
            .map(|_| order_for(customer.id, restaurant_id))
            .collect();
        let answers = race(|i| {
            let (store, order) = (Arc::clone(&stores.orders), orders[i].clone());
            async move { store.create(&order).await }
        })
        .await;
        let made = winners(round, &orders, &answers, Conflict::UnpaidOrderExists);
        assert_eq!(
            made.len(),
            1,
            "round {round}: one checkout wins: {answers:?}"
        );
        let stored = stores
            .orders
            .by_customer(customer.id, 50, None)
            .await
            .expect("the customer's orders");
        assert_eq!(
            stored.items.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![made[0].id],
            "round {round}: the store holds the winner alone"
        );
    }
}

/// Several orders assign one rider at the same moment: one assignment is stored, the others are
/// refused `RiderBusy` and leave their orders as they were.
async fn concurrent_takes_give_a_rider_one_order(stores: &Stores) {
    for round in 0..ROUNDS {
        let user = fresh_user(stores, "race-rider").await;
        let rider = rider_for(user.id);
        stores.riders.create(&rider).await.expect("rider");
        let mut ready = Vec::with_capacity(RACERS);
        for _ in 0..RACERS {
            ready.push(ready_order(stores).await);
        }
        let answers = race(|i| {
            let store = Arc::clone(&stores.orders);
            let order = ready[i].clone();
            let assigned = assign(&order, rider.id);
            async move {
                let effects = SaveEffects {
                    rider_order: Some(RiderOrder::Take {
                        rider: rider.id,
                        order: order.id,
                    }),
                    ..SaveEffects::default()
                };
                store.save(&assigned, effects).await
            }
        })
        .await;
        let mut won = Vec::new();
        for (order, answer) in ready.iter().zip(&answers) {
            let stored = stores
                .orders
                .get(order.id)
                .await
                .expect("get")
                .expect("order");
            match answer {
                Ok(()) => {
                    assert_eq!(stored.rider_id, Some(rider.id), "round {round}");
                    won.push(order.id);
                }
                Err(StoreError::RiderBusy) => {
                    assert_eq!(
                        &stored, order,
                        "round {round}: a refused take wrote nothing"
                    );
                }
                Err(other) => panic!("round {round}: a take failed: {other:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: one take wins: {answers:?}");
        let carried = stores
            .riders
            .get(rider.id)
            .await
            .expect("get")
            .expect("rider")
            .current_order_id;
        assert_eq!(
            carried,
            Some(won[0]),
            "round {round}: the rider carries the winner"
        );
    }
}

/// A seller's (a rider's) app sends its profile twice at once: one profile is made, found by its
/// owner and listed for verification; the others are refused and leave nothing listed.
async fn concurrent_creates_make_one_profile(stores: &Stores) {
    for round in 0..ROUNDS {
        let seller = fresh_user(stores, "race-seller").await;
        let shops: Vec<_> = (0..RACERS)
            .map(|i| restaurant(seller.id, &format!("Shop {i}"), 12.9))
            .collect();
        let answers = race(|i| {
            let (store, shop) = (Arc::clone(&stores.restaurants), shops[i].clone());
            async move { store.create(&shop, 7).await }
        })
        .await;
        let made = winners(round, &shops, &answers, Conflict::RestaurantExists);
        assert_eq!(made.len(), 1, "round {round}: one restaurant: {answers:?}");
        let found = stores
            .restaurants
            .by_owner(seller.id)
            .await
            .expect("by owner");
        assert_eq!(found.map(|r| r.id), Some(made[0].id), "round {round}");
        let listed = stores
            .restaurants
            .pending()
            .await
            .expect("pending")
            .into_iter()
            .filter(|r| r.owner_id == seller.id)
            .count();
        assert_eq!(
            listed, 1,
            "round {round}: the winner alone waits for verification"
        );

        let user = fresh_user(stores, "race-rider-profile").await;
        let riders: Vec<Rider> = (0..RACERS).map(|_| rider_for(user.id)).collect();
        let answers = race(|i| {
            let (store, rider) = (Arc::clone(&stores.riders), riders[i].clone());
            async move { store.create(&rider).await }
        })
        .await;
        let made = winners(round, &riders, &answers, Conflict::RiderExists);
        assert_eq!(made.len(), 1, "round {round}: one rider: {answers:?}");
        let found = stores.riders.by_user(user.id).await.expect("by user");
        assert_eq!(found.map(|r| r.id), Some(made[0].id), "round {round}");
        let everyone = stores.riders.all().await.expect("all riders");
        assert_eq!(
            everyone.iter().filter(|r| r.user_id == user.id).count(),
            1,
            "round {round}: the losers left no profile behind"
        );
    }
}

/// A quantity change racing the cart's clear (checkout) leaves a cart that reads, clears and is
/// then empty: never a line without its dish.
async fn cart_updates_racing_a_clear_leave_a_readable_cart(stores: &Stores) {
    let seller = fresh_user(stores, "race-cart-seller").await;
    let shop = restaurant(seller.id, "Cart Race", 12.9);
    stores.restaurants.create(&shop, 9).await.expect("shop");
    let dish = item(shop.id, "Dosa", 8000);
    stores.menu.create(&dish).await.expect("dish");
    for round in 0..ROUNDS {
        let customer = fresh_user(stores, "race-cart").await;
        let cart = stores.carts.add(customer.id, &dish, 1).await.expect("add");
        let line = cart.lines[0].id;
        let answers = race(|i| {
            let carts = Arc::clone(&stores.carts);
            let user = customer.id;
            async move {
                if i % 2 == 0 {
                    carts.set_quantity(user, line, 3).await.map(drop)
                } else {
                    carts.clear(user).await
                }
            }
        })
        .await;
        for answer in &answers {
            match answer {
                // The clear came first: the line was gone when the update looked for it.
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(other) => panic!("round {round}: a cart write failed: {other:?}"),
            }
        }
        let after = stores.carts.get(customer.id).await.expect("the cart reads");
        assert!(
            after
                .lines
                .iter()
                .all(|l| l.item_id == dish.id && l.quantity == 3),
            "round {round}: whole lines only: {after:?}"
        );
        stores.carts.clear(customer.id).await.expect("clear");
        assert!(
            stores
                .carts
                .get(customer.id)
                .await
                .expect("get")
                .lines
                .is_empty(),
            "round {round}: cleared"
        );
    }
}

/// An admin changes a user's role right after the user's first sign-in: the change holds, and a
/// later sign-in does not undo it.
async fn a_role_change_right_after_sign_up_holds(stores: &Stores) {
    for round in 0..ROUNDS {
        let local = format!("race-role-{}", Uuid::new_v4().simple());
        let user = stores
            .users
            .sign_in(sign_in(&local, "New Person"))
            .await
            .expect("sign up");
        let changed = stores
            .users
            .set_role(user.id, Role::Rider)
            .await
            .expect("role change");
        assert_eq!((changed.role, changed.role_version), (Role::Rider, 1));
        let again = stores
            .users
            .sign_in(sign_in(&local, "New Person"))
            .await
            .expect("sign in again");
        let stored = stores.users.get(user.id).await.expect("get").expect("user");
        assert_eq!(
            (again.role, stored.role, stored.role_version),
            (Role::Rider, Role::Rider, 1),
            "round {round}"
        );
    }
}
