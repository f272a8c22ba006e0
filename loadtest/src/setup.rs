//! Creating the city through the public API before the load starts: the admin session, the
//! restaurants with menus (verified and open), the customers with an address, and the riders
//! (profile, verified, first position, online). Names carry a run id so runs against the same
//! node never collide.

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::api::{Api, CallError, Session};
use crate::city::{City, Point, Walker};
use crate::nodes::node_of;

/// A restaurant of the run, with its seller.
#[derive(Debug, Clone)]
pub struct Shop {
    pub seller: Session,
    pub id: String,
    pub items: Vec<String>,
}

/// A customer of the run.
#[derive(Debug, Clone)]
pub struct Customer {
    pub session: Session,
    pub address_id: String,
    pub home: Point,
}

/// A rider of the run, online and verified, with where it starts.
#[derive(Debug, Clone)]
pub struct RiderAccount {
    pub session: Session,
    pub walker: Walker,
}

/// Signs the admin in and checks the node treats it as admin.
pub async fn admin(api: &Api, email: &str) -> anyhow::Result<Session> {
    let session = api.dev_login(email, "Load Admin").await.map_err(|err| {
        anyhow::anyhow!("signing in {email} failed ({err}); the node needs auth.dev_login = true")
    })?;
    let me = api.get("/api/auth/me", Some(&session.token)).await?;
    if me["user"]["role"] != "admin" {
        bail!(
            "the node does not treat {email} as an admin: add it to auth.admin_emails \
             (TOMATO_AUTH__ADMIN_EMAILS) or run `tomato admin grant {email}`"
        );
    }
    Ok(session)
}

/// Runs `make(i)` for `0..count` with `concurrency` in flight; the first failure stops setup.
async fn many<T, F, Fut>(
    count: usize,
    concurrency: usize,
    bar: &ProgressBar,
    make: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let results: Vec<Result<T, CallError>> = stream::iter(0..count)
        .map(|i| {
            let made = make(i);
            async move {
                let result = made.await;
                bar.inc(1);
                result
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<T>, CallError>>()
        .context("creating the city")
}

/// Restaurants with three dishes each, verified by the admin and open.
pub async fn shops(
    apis: &[Api],
    admin: &Session,
    city: &City,
    run: &str,
    count: usize,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<(Shop, Point)>> {
    let mut rng = StdRng::seed_from_u64(u64::from_str_radix(run, 16).unwrap_or(1));
    let places: Vec<Point> = (0..count).map(|_| city.random_point(&mut rng)).collect();
    many(count, concurrency, bar, |i| {
        let at = places[i];
        let api = spread(apis, i);
        async move {
            let login = api
                .dev_login(
                    &format!("shop{i}.{run}@load.tomato.test"),
                    &format!("Seller {i}"),
                )
                .await?;
            let seller = api.become_role(&login, "seller").await?;
            let api = play_node(apis, &seller);
            let created = api
                .post(
                    "/api/restaurant/new",
                    &seller.token,
                    &json!({
                        "name": format!("Load Kitchen {i} {run}"),
                        "description": "a restaurant of the load test",
                        "phone": "+919800000000",
                        "location": at.json(),
                        "formattedAddress": format!("{i} Test Street"),
                    }),
                )
                .await?;
            let id = id_of(&created["restaurant"]);
            let mut items = Vec::new();
            for (dish, price) in [("Dosa", 12000), ("Thali", 22000), ("Biryani", 28000)] {
                let item = api
                    .post(
                        "/api/item/new",
                        &seller.token,
                        &json!({ "name": dish, "description": "hot", "price": price }),
                    )
                    .await?;
                items.push(id_of(&item["item"]));
            }
            api.put(
                &format!("/api/admin/restaurant/verify/{id}"),
                &admin.token,
                &json!({}),
            )
            .await?;
            api.put(
                &format!("/api/restaurant/{id}"),
                &seller.token,
                &json!({ "isOpen": true }),
            )
            .await?;
            Ok((Shop { seller, id, items }, at))
        }
    })
    .await
}

/// Customers, each with one delivery address in the city.
pub async fn customers(
    apis: &[Api],
    city: &City,
    run: &str,
    count: usize,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Customer>> {
    let mut rng = StdRng::seed_from_u64(u64::from_str_radix(run, 16).unwrap_or(1) ^ 0xC);
    let homes: Vec<Point> = (0..count).map(|_| city.random_point(&mut rng)).collect();
    many(count, concurrency, bar, |i| {
        let home = homes[i];
        let api = spread(apis, i);
        async move {
            let session = api
                .dev_login(
                    &format!("eater{i}.{run}@load.tomato.test"),
                    &format!("Eater {i}"),
                )
                .await?;
            let address = play_node(apis, &session)
                .post(
                    "/api/address/new",
                    &session.token,
                    &json!({
                        "formattedAddress": format!("{i} Home Lane"),
                        "mobile": "+919811111111",
                        "location": home.json(),
                    }),
                )
                .await?;
            Ok(Customer {
                session,
                address_id: id_of(&address["address"]),
                home,
            })
        }
    })
    .await
}

/// Riders: profile, verified by the admin, a first position, online.
pub async fn riders(
    apis: &[Api],
    admin: &Session,
    city: &City,
    (run, seed): (&str, u64),
    count: usize,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<RiderAccount>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let walkers: Vec<Walker> = (0..count).map(|_| Walker::new(city, &mut rng)).collect();
    many(count, concurrency, bar, |i| {
        let walker = walkers[i].clone();
        let api = spread(apis, i);
        async move {
            let login = api
                .dev_login(
                    &format!("rider{i}.{run}@load.tomato.test"),
                    &format!("Rider {i}"),
                )
                .await?;
            let session = api.become_role(&login, "rider").await?;
            let api = play_node(apis, &session);
            let profile = api
                .post(
                    "/api/rider/new",
                    &session.token,
                    &json!({
                        "phoneNumber": "+919822222222",
                        "aadharNumber": format!("{:012}", 100_000_000_000u64 + i as u64),
                        "drivingLicenseNumber": format!("KA01{:011}", i),
                        "location": walker.at.json(),
                    }),
                )
                .await?;
            let id = id_of(&profile["rider"]);
            api.put(
                &format!("/api/admin/rider/verify/{id}"),
                &admin.token,
                &json!({}),
            )
            .await?;
            api.put("/api/rider/location", &session.token, &walker.at.json())
                .await?;
            api.put(
                "/api/rider/availability",
                &session.token,
                &json!({ "available": true }),
            )
            .await?;
            Ok(RiderAccount { session, walker })
        }
    })
    .await
}

/// The node that signs party `i` in: sign-ins go round the nodes, and the rest of a party's
/// setup goes to its [`play_node`], so that creating the city (thousands of sign-ins, profiles and
/// verifications) weighs on each node alike and a run's CPU per node compares their play, not
/// who did the setup.
fn spread(apis: &[Api], i: usize) -> &Api {
    &apis[i % apis.len()]
}

/// The node a party talks to in the play ([`node_of`] its token): the rest of its setup goes
/// there once it has its token, as an app behind a load balancer with affinity would, so that
/// what the node reads and caches of it (its user, its token, a rider's id and flag) is read
/// once, as on a single node, not again by the play on a node that never saw it.
fn play_node<'a>(apis: &'a [Api], session: &Session) -> &'a Api {
    &apis[node_of(&session.token, apis.len())]
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

/// A short random run id (hex).
pub fn run_id() -> String {
    format!("{:08x}", rand::rng().random::<u32>())
}
