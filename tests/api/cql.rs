//! The CQL database the ScyllaDB backend's tests run against: `TOMATO_TEST_SCYLLA=host:port`
//! when set (a real ScyllaDB), otherwise an Apache Cassandra this module starts from its Maven
//! Central jars (`tests/cassandra/pom.xml`), once for the whole run.
//!
//! nextest runs every test in its own process, so "once" is arranged on disk: under a lock file
//! in the target directory, the first test that needs Cassandra fetches the jars (once per
//! machine, with `mvn`), starts it on free ports with a small heap and our `cassandra.yaml`, and
//! writes its port down; later tests find it answering and reuse it. Every test process using it
//! touches a heartbeat file while it lives, and the small shell watchdog that started Cassandra
//! stops it after two idle minutes, so a run leaves nothing behind for long. Each test works in a
//! keyspace of its own.

use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use tomato_store::Stores;
use tomato_store_scylla::{Consistency, ScyllaConfig};

/// How long Cassandra may take to open its CQL port (a cold start is ~10 s on 2 cores).
const START_WITHIN: Duration = Duration::from_secs(180);
/// Idle time after which the watchdog stops Cassandra.
const IDLE_STOP_S: u64 = 120;

/// `host:port` of the CQL database for this test process.
pub fn node() -> String {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        if let Ok(node) = std::env::var("TOMATO_TEST_SCYLLA")
            && !node.is_empty()
        {
            return node;
        }
        let node = cassandra();
        heartbeat();
        node
    })
    .clone()
}

/// A fresh keyspace name for one test.
pub fn keyspace() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// The backend's settings for `keyspace` on the test database.
pub fn config(keyspace: &str) -> ScyllaConfig {
    ScyllaConfig {
        nodes: vec![node()],
        keyspace: keyspace.to_owned(),
        replication_factor: 1,
        consistency: Consistency::LocalQuorum,
        username: String::new(),
        password: String::new(),
    }
}

/// The ScyllaDB backend over a fresh keyspace.
pub async fn open_stores() -> Stores {
    tomato_store_scylla::open(&config(&keyspace()))
        .await
        .expect("open the scylla backend on the test CQL database")
}

fn state_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("cassandra-tests")
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// The shared Cassandra's address, starting it when nobody has.
fn cassandra() -> String {
    let state = state_dir();
    fs::create_dir_all(&state).expect("create the Cassandra state directory");
    let lock = File::create(state.join("lock")).expect("create the lock file");
    lock.lock().expect("lock the Cassandra state");
    touch(&state.join("heartbeat"));
    let port_file = state.join("port");
    if let Some(port) = fs::read_to_string(&port_file)
        .ok()
        .and_then(|port| port.trim().parse::<u16>().ok())
        && answers(port)
    {
        return format!("127.0.0.1:{port}");
    }
    let lib = jars(&state);
    let port = start(&state, &lib);
    fs::write(&port_file, port.to_string()).expect("write the port file");
    format!("127.0.0.1:{port}")
}

/// The jars of Cassandra and its dependencies, fetched once with Maven.
fn jars(state: &Path) -> PathBuf {
    let lib = state.join("lib");
    let complete = lib.join(".complete");
    if complete.exists() {
        return lib;
    }
    let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cassandra/pom.xml");
    let status = Command::new("mvn")
        .args(["-q", "-B", "dependency:copy-dependencies"])
        .arg(format!("-DoutputDirectory={}", lib.display()))
        .arg("-f")
        .arg(&pom)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "mvn could not fetch Cassandra from Maven Central ({status}); \
             run `mvn dependency:copy-dependencies -f tests/cassandra/pom.xml` to see why"
        ),
        Err(err) => panic!(
            "the ScyllaDB tests need Java 17 and Maven to run Cassandra \
             (apt-get install openjdk-17-jdk-headless maven), or TOMATO_TEST_SCYLLA=host:port \
             of a ScyllaDB: {err}"
        ),
    }
    fs::write(&complete, "").expect("mark the jars complete");
    lib
}

/// Starts Cassandra under its watchdog and waits for its CQL port.
fn start(state: &Path, lib: &Path) -> u16 {
    let (cql, storage) = (free_port(), free_port());
    let run = state.join("run");
    // A fresh node each start: keyspaces of earlier runs are of no use.
    let _ = fs::remove_dir_all(&run);
    fs::create_dir_all(&run).expect("create the Cassandra run directory");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = fs::read_to_string(manifest.join("tests/cassandra/cassandra.yaml"))
        .expect("read tests/cassandra/cassandra.yaml")
        .replace("@DIR@", &run.display().to_string())
        .replace("@CQL_PORT@", &cql.to_string())
        .replace("@STORAGE_PORT@", &storage.to_string());
    fs::write(run.join("cassandra.yaml"), yaml).expect("write cassandra.yaml");
    let jamm = fs::read_dir(lib)
        .expect("read the jars")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("jamm-"))
        })
        .expect("the jamm agent among the jars");
    let mut java = vec![
        "java".to_owned(),
        "-Xms256m".into(),
        "-Xmx1g".into(),
        "-XX:+UseG1GC".into(),
        "-Xss512k".into(),
        format!("-javaagent:{}", jamm.display()),
        "-Djdk.attach.allowAttachSelf=true".into(),
        format!("-Dcassandra.config=file://{}/cassandra.yaml", run.display()),
        format!("-Dcassandra.storagedir={}", run.display()),
        format!("-Dcassandra.logdir={}", run.display()),
        format!(
            "-Dlogback.configurationFile={}",
            manifest.join("tests/cassandra/logback.xml").display()
        ),
        "-Dcassandra-foreground=yes".into(),
        "-Dcassandra.skip_wait_for_gossip_to_settle=0".into(),
        "-Dcassandra.ring_delay_ms=0".into(),
    ];
    // What Cassandra's own launcher passes on Java 17 (conf/jvm17-server.options).
    for module in [
        "java.base/jdk.internal.misc",
        "java.base/jdk.internal.ref",
        "java.base/sun.nio.ch",
        "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry",
        "java.rmi/sun.rmi.server",
        "java.sql/java.sql",
        "java.base/java.lang.ref",
        "jdk.unsupported/sun.misc",
    ] {
        java.push("--add-exports".into());
        java.push(format!("{module}=ALL-UNNAMED"));
    }
    for module in [
        "java.base/java.lang.module",
        "java.base/jdk.internal.loader",
        "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect",
        "java.base/jdk.internal.math",
        "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar",
        "jdk.management/com.sun.management.internal",
        "java.base/sun.nio.ch",
        "java.base/java.io",
        "java.base/java.nio",
        "java.base/java.util.concurrent",
        "java.base/java.util",
        "java.base/java.util.concurrent.atomic",
        "java.base/java.lang",
        "java.base/java.math",
        "java.base/java.lang.reflect",
        "java.base/java.net",
    ] {
        java.push("--add-opens".into());
        java.push(format!("{module}=ALL-UNNAMED"));
    }
    java.push("-cp".into());
    java.push(format!("{}/*", lib.display()));
    java.push("org.apache.cassandra.service.CassandraDaemon".into());
    let quoted: Vec<String> = java.iter().map(|arg| format!("'{arg}'")).collect();
    // The watchdog: runs Cassandra, and stops it once no test process has touched the
    // heartbeat for a while (or when Cassandra dies on its own).
    let script = format!(
        "{java} > '{out}' 2>&1 &\n\
         pid=$!\n\
         while kill -0 $pid 2>/dev/null; do\n\
           sleep 5\n\
           idle=$(( $(date +%s) - $(stat -c %Y '{beat}') ))\n\
           if [ $idle -gt {IDLE_STOP_S} ]; then kill $pid; wait $pid; exit 0; fi\n\
         done\n",
        java = quoted.join(" "),
        out = run.join("stdout.log").display(),
        beat = state.join("heartbeat").display(),
    );
    use std::os::unix::process::CommandExt;
    let java_check = Command::new("java").arg("-version").output();
    if java_check.is_err() {
        panic!(
            "the ScyllaDB tests need Java 17 to run Cassandra (apt-get install \
             openjdk-17-jdk-headless maven), or TOMATO_TEST_SCYLLA=host:port of a ScyllaDB"
        );
    }
    // Not waited for: the watchdog outlives this test process on purpose (the next tests use
    // the same Cassandra), and init reaps it.
    #[expect(
        clippy::zombie_processes,
        reason = "the watchdog outlives the test process"
    )]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: it outlives this test process, and a test runner's signal to
        // the test's group does not reach it.
        .process_group(0)
        .spawn()
        .expect("start Cassandra's watchdog");
    let started = Instant::now();
    while !answers(cql) {
        assert!(
            started.elapsed() < START_WITHIN,
            "Cassandra did not open its CQL port within {START_WITHIN:?}; see {}",
            run.join("system.log").display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    cql
}

fn touch(path: &Path) {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the heartbeat file");
    let _ = file.set_modified(SystemTime::now());
    let _ = (&file).write_all(b"");
}

/// Keeps the heartbeat fresh for as long as this test process lives.
fn heartbeat() {
    let beat = state_dir().join("heartbeat");
    std::thread::spawn(move || {
        loop {
            touch(&beat);
            std::thread::sleep(Duration::from_secs(10));
        }
    });
}

#[tokio::test]
async fn scylla_store_passes_the_conformance_suite() {
    let stores = open_stores().await;
    tomato_store::conformance::run(&stores).await;
    // Every record that expires has a TTL here: nodes leave the purges to it.
    assert!(stores.backend.expires_by_itself());
    stores.backend.close().await.expect("close");
}

/// Two nodes on one keyspace: each reads the other's changes in the feed as made elsewhere,
/// which is how a node's authentication cache hears of them when a message between nodes is
/// lost.
#[tokio::test]
async fn the_change_feed_tells_one_nodes_changes_from_anothers() {
    let keyspace = keyspace();
    let one = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("open the first store");
    let other = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("open the second store");
    let start = one
        .changes
        .auth_changes(None, 100)
        .await
        .expect("start at the present");
    let (here, elsewhere) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let expires_at = time::OffsetDateTime::from_unix_timestamp(
        time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    )
    .expect("a time");
    one.tokens
        .revoke(here, expires_at)
        .await
        .expect("revoke here");
    other
        .tokens
        .revoke(elsewhere, expires_at)
        .await
        .expect("revoke elsewhere");
    let page = one
        .changes
        .auth_changes(Some(start.next), 100)
        .await
        .expect("read the feed");
    let heard: Vec<(uuid::Uuid, bool)> = page
        .changes
        .iter()
        .filter_map(|fed| match fed.change {
            tomato_store::AuthChange::Revoked { jti, .. } => Some((jti, fed.here)),
            tomato_store::AuthChange::UserChanged(_) => None,
        })
        .collect();
    assert_eq!(heard, vec![(here, true), (elsewhere, false)]);
    one.backend.close().await.expect("close");
    other.backend.close().await.expect("close");
}

/// A session of our own on `keyspace`, to leave behind what a crash would.
async fn raw_session(keyspace: &str) -> scylla::client::session::Session {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node())
        .build()
        .await
        .expect("connect to the test CQL database");
    session
        .use_keyspace(keyspace, false)
        .await
        .expect("use the test keyspace");
    session
}

/// What a crash (or a failed write) leaves between a claim and the row it points at, or a row
/// and its claim, locks nobody out for good; a claim whose writer may still be on its way is
/// respected until its grace runs out. Each leftover is written here by hand, as the crash
/// would have left it, and the next request of the same owner is checked.
#[tokio::test]
async fn leftovers_of_a_crash_between_claim_and_row_lock_nobody_out() {
    use time::{Duration, OffsetDateTime};
    use tomato_store::conformance::{
        assign, order_for, ready_order, restaurant, rider_for, sign_in,
    };
    use tomato_store::{Conflict, RiderOrder, SaveEffects, StoreError};

    let keyspace = keyspace();
    let stores = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("open the store");
    let cql = raw_session(&keyspace).await;
    let run = |statement: &'static str, values: Vec<scylla::value::CqlValue>| {
        let cql = &cql;
        async move {
            cql.query_unpaged(statement, values)
                .await
                .expect("write the leftover");
        }
    };
    use scylla::value::{CqlTimestamp, CqlValue::Text, CqlValue::Timestamp};
    let stamp = |at: OffsetDateTime| {
        Timestamp(CqlTimestamp(
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("millis"),
        ))
    };
    let long_ago = OffsetDateTime::now_utc() - Duration::minutes(2);

    // A restaurant claim pointing at no row (what claiming before writing left behind): the
    // seller's create takes it over.
    let seller = stores
        .users
        .sign_in(sign_in("leftover-seller", "Seller"))
        .await
        .expect("seller");
    run(
        "INSERT INTO restaurants_by_owner (owner_id, restaurant_id) VALUES (?, ?)",
        vec![
            Text(seller.id.to_string()),
            Text(uuid::Uuid::new_v4().to_string()),
        ],
    )
    .await;
    let shop = restaurant(seller.id, "Leftover", 12.9);
    stores
        .restaurants
        .create(&shop, 11)
        .await
        .expect("a claim of nothing is taken over");
    assert_eq!(
        stores
            .restaurants
            .by_owner(seller.id)
            .await
            .expect("by owner"),
        Some(shop.clone())
    );

    // Its pending pointer lost (a crash after the claim): the seller's next try is refused, and
    // puts the restaurant back in the admins' list.
    run(
        "DELETE FROM restaurants_pending WHERE bucket = 0 AND restaurant_id = ?",
        vec![Text(shop.id.to_string())],
    )
    .await;
    let pending = |stores: &tomato_store::Stores| {
        let restaurants = std::sync::Arc::clone(&stores.restaurants);
        async move { restaurants.pending().await.expect("pending") }
    };
    assert!(!pending(&stores).await.contains(&shop));
    assert!(matches!(
        stores
            .restaurants
            .create(&restaurant(seller.id, "Again", 12.9), 11)
            .await,
        Err(StoreError::Conflict(Conflict::RestaurantExists))
    ));
    assert!(
        pending(&stores).await.contains(&shop),
        "the pointer is repaired"
    );

    // A rider's row whose claim never came (a crash between the two): the retry, with a new id,
    // makes the profile, and the orphan is nobody's.
    let user = stores
        .users
        .sign_in(sign_in("leftover-rider", "Rider"))
        .await
        .expect("rider user");
    let orphan = rider_for(user.id);
    run(
        "INSERT INTO riders (id, user_id, name, phone_number, aadhar_number,
            driving_license_number, is_verified, is_available, lat, lon, last_seen_at, created_at)
         VALUES (?, ?, 'Orphan', '+919845012345', '123456789012', 'KA0120190001234', false,
            false, 12.97, 77.59, ?, ?)",
        vec![
            Text(orphan.id.to_string()),
            Text(user.id.to_string()),
            stamp(orphan.last_seen_at),
            stamp(orphan.created_at),
        ],
    )
    .await;
    let rider = rider_for(user.id);
    stores
        .riders
        .create(&rider)
        .await
        .expect("the retry makes it");
    let theirs: Vec<_> = stores
        .riders
        .all()
        .await
        .expect("all")
        .into_iter()
        .filter(|r| r.user_id == user.id)
        .map(|r| r.id)
        .collect();
    assert_eq!(theirs, vec![rider.id], "the orphan row is nobody's");

    // An unpaid-order claim whose order is not written: left to its writer while it may still
    // be on its way, taken over once the grace has run out.
    let customer = stores
        .users
        .sign_in(sign_in("leftover-customer", "Customer"))
        .await
        .expect("customer");
    let claim = |at: OffsetDateTime| {
        run(
            "INSERT INTO unpaid_orders (user_id, order_id, claimed_at) VALUES (?, ?, ?)",
            vec![
                Text(customer.id.to_string()),
                Text(tomato_domain::OrderId::new().to_string()),
                stamp(at),
            ],
        )
    };
    claim(OffsetDateTime::now_utc()).await;
    let order = order_for(customer.id, shop.id);
    assert!(matches!(
        stores.orders.create(&order).await,
        Err(StoreError::Conflict(Conflict::UnpaidOrderExists))
    ));
    claim(long_ago).await;
    stores
        .orders
        .create(&order)
        .await
        .expect("a claim given up is taken over");

    // A rider taken for an order whose save has not come: busy while it may come, free after.
    let taken = |at: OffsetDateTime| {
        run(
            "UPDATE riders SET current_order_id = ?, current_order_at = ? WHERE id = ?",
            vec![
                Text(tomato_domain::OrderId::new().to_string()),
                stamp(at),
                Text(rider.id.to_string()),
            ],
        )
    };
    let ready = ready_order(&stores).await;
    let take = SaveEffects {
        rider_order: Some(RiderOrder::Take {
            rider: rider.id,
            order: ready.id,
        }),
        ..SaveEffects::default()
    };
    taken(OffsetDateTime::now_utc()).await;
    assert!(matches!(
        stores.orders.save(&assign(&ready, rider.id), take).await,
        Err(StoreError::RiderBusy)
    ));
    taken(long_ago).await;
    stores
        .orders
        .save(&assign(&ready, rider.id), take)
        .await
        .expect("a take given up is taken over");

    // A cart line written as a bare quantity (an update that raced the cart's clear): the cart
    // still reads, without it, and the half row is gone.
    let line = uuid::Uuid::new_v4().to_string();
    run(
        "UPDATE cart_lines SET quantity = 2 WHERE user_id = ? AND line_id = ?",
        vec![Text(customer.id.to_string()), Text(line)],
    )
    .await;
    let cart = stores.carts.get(customer.id).await.expect("the cart reads");
    assert!(cart.lines.is_empty());
    let left = cql
        .query_unpaged(
            "SELECT line_id FROM cart_lines WHERE user_id = ?",
            (customer.id.to_string(),),
        )
        .await
        .expect("read the lines")
        .into_rows_result()
        .expect("rows")
        .rows_num();
    assert_eq!(left, 0, "the half row is removed");
    stores.backend.close().await.expect("close");
}

/// A rider taken for an order whose save has not landed is taken over only once that save can
/// no longer land: a writer paused between the rider's take and its order's write (or one whose
/// clock runs behind, so its take looks old to everyone else) has its write refused after the
/// takeover, and one rider never ends up named by two open orders.
#[tokio::test]
async fn a_rider_taken_over_past_the_grace_fences_out_the_save_still_on_its_way() {
    use time::{Duration, OffsetDateTime};
    use tomato_store::conformance::{assign, ready_order, rider_for, sign_in};
    use tomato_store::{RiderOrder, SaveEffects};

    let keyspace = keyspace();
    let stores = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("open the store");
    let cql = raw_session(&keyspace).await;
    let user = stores
        .users
        .sign_in(sign_in("fenced-rider", "Rider"))
        .await
        .expect("rider user");
    let rider = rider_for(user.id);
    stores.riders.create(&rider).await.expect("rider");
    let first = ready_order(&stores).await;
    let second = ready_order(&stores).await;

    // The first order's writer took the rider and stopped before writing the order (paused,
    // or its stamp two minutes old to the others, as a clock that far behind would make it).
    let long_ago = OffsetDateTime::now_utc() - Duration::minutes(2);
    cql.query_unpaged(
        "UPDATE riders SET current_order_id = ?, current_order_at = ? WHERE id = ?",
        (
            first.id.to_string(),
            scylla::value::CqlTimestamp(
                i64::try_from(long_ago.unix_timestamp_nanos() / 1_000_000).expect("millis"),
            ),
            rider.id.to_string(),
        ),
    )
    .await
    .expect("the first writer's take");

    // The second order takes the rider over.
    let take = |order: &tomato_domain::Order| SaveEffects {
        rider_order: Some(RiderOrder::Take {
            rider: rider.id,
            order: order.id,
        }),
        ..SaveEffects::default()
    };
    stores
        .orders
        .save(&assign(&second, rider.id), take(&second))
        .await
        .expect("a take whose save has not come is taken over");

    // The first writer wakes and sends the write it had ready: the order at the next version,
    // conditioned on the version it read.
    let late = assign(&first, rider.id);
    let landed = cql
        .query_unpaged(
            "UPDATE orders SET status = ?, payment_status = ?, data = ?, version = ?
             WHERE id = ? IF version = ?",
            (
                late.status.as_str(),
                late.payment_status.as_str(),
                serde_json::to_string(&late).expect("encode"),
                i64::try_from(late.version).expect("version"),
                first.id.to_string(),
                i64::try_from(first.version).expect("version"),
            ),
        )
        .await
        .expect("the late write")
        .into_rows_result()
        .expect("an answer")
        .rows::<scylla::value::Row>()
        .expect("rows")
        .next()
        .and_then(Result::ok)
        .and_then(|row| row.columns.into_iter().next().flatten())
        == Some(scylla::value::CqlValue::Boolean(true));
    let first_now = stores
        .orders
        .get(first.id)
        .await
        .expect("read")
        .expect("the first order");
    let second_now = stores
        .orders
        .get(second.id)
        .await
        .expect("read")
        .expect("the second order");
    assert_eq!(second_now.rider_id, Some(rider.id));
    assert!(
        !landed && first_now.rider_id.is_none(),
        "the late write landed: two open orders name one rider ({} and {})",
        first.id,
        second.id
    );
    assert_eq!(
        first_now.version,
        first.version + 1,
        "the first order was fenced: its version moved on, nothing else"
    );
    assert_eq!(first_now.status, first.status);
    stores.backend.close().await.expect("close");
}

/// A store upgraded to the version with restaurants' lists by status finds, in them, the
/// orders stored before: the upgrade fills the lists (and runs again harmlessly when a node
/// died before recording it).
#[tokio::test]
async fn an_upgrade_fills_the_lists_by_status_from_the_orders_stored_before() {
    use tomato_domain::{OrderStatus, PaymentStatus};
    use tomato_store::RestaurantOrderFilter;
    use tomato_store::conformance::order_for;

    let keyspace = keyspace();
    let stores = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("open the store");
    let mut order = order_for(uuid::Uuid::new_v4().into(), uuid::Uuid::new_v4().into());
    order.status = OrderStatus::Accepted;
    order.payment_status = PaymentStatus::Paid;
    stores.orders.create(&order).await.expect("an order");
    let accepted = RestaurantOrderFilter {
        status: Some(OrderStatus::Accepted),
    };
    let listed = |stores: &tomato_store::Stores| {
        let orders = std::sync::Arc::clone(&stores.orders);
        async move {
            orders
                .by_restaurant(order.restaurant_id, accepted, 10, None)
                .await
                .expect("list")
                .items
                .len()
        }
    };
    assert_eq!(listed(&stores).await, 1);
    stores.backend.close().await.expect("close");

    // As the store was before the version: no list, and the version not recorded.
    let cql = raw_session(&keyspace).await;
    let status_lists = tomato_store_scylla::schema::STATUS_LISTS;
    for statement in [
        "TRUNCATE orders_by_restaurant_status".to_owned(),
        format!("DELETE FROM schema_versions WHERE version = {status_lists}"),
    ] {
        cql.query_unpaged(statement, ())
            .await
            .expect("undo the version");
    }
    let reopened = tomato_store_scylla::open(&config(&keyspace))
        .await
        .expect("upgrade again");
    assert_eq!(listed(&reopened).await, 1, "the upgrade filled the list");
    reopened.backend.close().await.expect("close");
}
