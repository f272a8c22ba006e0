//! The checker of a run under faults (`tomato-load check`): what clients were told (the
//! history, `history.rs`) held against the orders as they ended, after the faults healed and the
//! city went quiet. Each rule is one function over plain data, so the rules are tested with
//! histories that plant each violation; the command only fetches the end state.
//!
//! The registers are small (one order's steps, one rider's orders, one customer's unpaid
//! order), and each rule is checked directly against the end state and the operations that
//! could explain it, which is what a linearizability search over such registers would decide
//! too, without its cost on histories of thousands of operations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::history::{Event, Kind, Op};

/// An order as it ended (the fields of the node's order answer the rules read).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndOrder {
    pub id: String,
    pub user_id: String,
    #[serde(default)]
    pub rider_id: Option<String>,
    pub status: String,
    pub payment_status: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<time::OffsetDateTime>,
    pub history: Vec<Step>,
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Step {
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

/// A rule broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The order's steps are not a path of the status machine, each once, in time order.
    NotAPath { order: String, steps: Vec<String> },
    /// An operation answered ok whose effect is not in the end state.
    OkLost { op: u64, f: Op, order: String },
    /// An operation answered with a definite refusal whose effect is in the end state, and no
    /// other operation that might have done it.
    FailDone { op: u64, f: Op, order: String },
    /// An order acknowledged (placed ok) that is not in the end state at all.
    Missing { op: u64, order: String },
    /// More than one accept of one order answered ok, or the one answered ok is not its rider.
    Accepts {
        order: String,
        told: Vec<String>,
        kept: Option<String>,
    },
    /// Two orders held one rider at once.
    RiderTwice {
        rider: String,
        first: String,
        second: String,
    },
    /// A customer with two unpaid orders at the end.
    TwoUnpaid {
        customer: String,
        orders: Vec<String>,
    },
    /// One key of one user and operation answered differently.
    KeyAnswers { who: String, f: Op, key: String },
    /// One key made more than one order.
    KeyOrders { key: String, orders: Vec<String> },
    /// The order's money is not what its status says (a delivered order unpaid, money kept
    /// on a cancelled or expired order, a refund never settled).
    Money {
        order: String,
        status: String,
        payment: String,
    },
    /// An unpaid order past its payment deadline (and the slack) that has not expired.
    Overdue { order: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NotAPath { order, steps } => {
                write!(
                    f,
                    "order {order}: steps {} are not a path",
                    steps.join(" > ")
                )
            }
            Finding::OkLost { op, f: what, order } => {
                write!(
                    f,
                    "op {op} ({what:?}) answered ok, but order {order} does not show it"
                )
            }
            Finding::FailDone { op, f: what, order } => write!(
                f,
                "op {op} ({what:?}) was refused, but order {order} shows it and nothing else did it"
            ),
            Finding::Missing { op, order } => {
                write!(f, "op {op} acknowledged order {order}, which is not stored")
            }
            Finding::Accepts { order, told, kept } => write!(
                f,
                "order {order}: accepts answered ok for {told:?}, its rider is {kept:?}"
            ),
            Finding::RiderTwice {
                rider,
                first,
                second,
            } => write!(f, "rider {rider} held orders {first} and {second} at once"),
            Finding::TwoUnpaid { customer, orders } => {
                write!(f, "customer {customer} has unpaid orders {orders:?}")
            }
            Finding::KeyAnswers { who, f: what, key } => {
                write!(f, "key {key} of {who} ({what:?}) was answered differently")
            }
            Finding::KeyOrders { key, orders } => write!(f, "key {key} made orders {orders:?}"),
            Finding::Money {
                order,
                status,
                payment,
            } => write!(f, "order {order}: {status} with payment {payment}"),
            Finding::Overdue { order } => {
                write!(
                    f,
                    "order {order} is unpaid past its deadline and not expired"
                )
            }
        }
    }
}

/// The statuses an order may move to from `status`.
fn next_of(status: &str) -> &'static [&'static str] {
    match status {
        "placed" => &["accepted", "cancelled", "expired"],
        "accepted" => &["preparing", "cancelled"],
        "preparing" => &["ready_for_rider", "cancelled"],
        "ready_for_rider" => &["rider_assigned"],
        "rider_assigned" => &["picked_up"],
        "picked_up" => &["delivered"],
        _ => &[],
    }
}

/// How the end state is judged.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// When the check runs.
    pub now: time::OffsetDateTime,
    /// How long past its payment deadline an unpaid order may still be waiting.
    pub slack: time::Duration,
    /// How far apart the nodes' clocks may be: an order's steps (and a rider's orders) are
    /// stamped by whichever node ran them, so times closer than this say nothing of order.
    pub skew: time::Duration,
}

/// Every finding of `history` against `orders` (the end state, by id), within `bounds`.
pub fn check(
    history: &[Event],
    orders: &BTreeMap<String, EndOrder>,
    bounds: Bounds,
) -> Vec<Finding> {
    let (now, slack) = (bounds.now, bounds.slack);
    let mut findings = Vec::new();
    findings.extend(paths(orders, bounds.skew));
    findings.extend(told(history, orders));
    findings.extend(accepts(history, orders));
    findings.extend(riders(orders, bounds.skew));
    findings.extend(unpaid(orders));
    findings.extend(keys(history));
    findings.extend(money(orders, now, slack));
    findings
}

/// The orders the history names, to fetch for the end state.
pub fn orders_named(history: &[Event]) -> BTreeSet<String> {
    history.iter().filter_map(|e| e.order.clone()).collect()
}

fn completions(history: &[Event]) -> impl Iterator<Item = &Event> {
    history.iter().filter(|e| e.kind != Kind::Invoke)
}

/// Each order's steps form a path of the status machine from `placed`, each once, in time
/// (up to the clocks' `skew`).
fn paths(orders: &BTreeMap<String, EndOrder>, skew: time::Duration) -> Vec<Finding> {
    let mut findings = Vec::new();
    for order in orders.values() {
        let steps: Vec<String> = order.history.iter().map(|s| s.status.clone()).collect();
        let legal = steps.first().is_some_and(|s| s == "placed")
            && steps
                .windows(2)
                .all(|w| next_of(&w[0]).contains(&w[1].as_str()))
            && steps.last() == Some(&order.status)
            && order.history.windows(2).all(|w| w[1].at + skew >= w[0].at);
        if !legal {
            findings.push(Finding::NotAPath {
                order: order.id.clone(),
                steps,
            });
        }
    }
    findings
}

/// Whether `order` shows what operation `e` asked for.
fn shows(e: &Event, order: &EndOrder) -> bool {
    let reached = |status: &str| order.history.iter().any(|s| s.status == status);
    match e.f {
        Op::Place => true,
        Op::Pay => order.payment_status != "pending",
        Op::Cancel => order.status == "cancelled",
        Op::SellerStatus | Op::RiderStatus => e.value.as_deref().is_some_and(reached),
        // An accept's rider is read from its answer; a refused one names none.
        Op::Accept => reached("rider_assigned"),
    }
}

/// Every ok operation shows in the end state; a definite refusal does not, unless another
/// operation that may have happened (ok or info) explains it.
fn told(history: &[Event], orders: &BTreeMap<String, EndOrder>) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Which (order, op, value) some operation may have done.
    let mut may_have: BTreeSet<(String, Op, Option<String>)> = BTreeSet::new();
    for e in completions(history) {
        if matches!(e.kind, Kind::Ok | Kind::Info)
            && let Some(order) = &e.order
        {
            may_have.insert((order.clone(), e.f, e.value.clone()));
        }
    }
    for e in completions(history) {
        let Some(id) = &e.order else { continue };
        let Some(order) = orders.get(id) else {
            if e.kind == Kind::Ok && e.f == Op::Place {
                findings.push(Finding::Missing {
                    op: e.op,
                    order: id.clone(),
                });
            }
            continue;
        };
        match e.kind {
            Kind::Ok if !shows(e, order) => findings.push(Finding::OkLost {
                op: e.op,
                f: e.f,
                order: id.clone(),
            }),
            // A refused accept is held against its rider in `accepts`, which knows the rider.
            Kind::Fail
                if e.f != Op::Accept
                    && e.f != Op::Place
                    && shows(e, order)
                    && !may_have.contains(&(id.clone(), e.f, e.value.clone())) =>
            {
                findings.push(Finding::FailDone {
                    op: e.op,
                    f: e.f,
                    order: id.clone(),
                })
            }
            _ => {}
        }
    }
    findings
}

/// At most one accept per order answered ok, and its rider is the order's; a rider refused an
/// order (definitely) is not its rider unless another accept of that rider may have won it.
fn accepts(history: &[Event], orders: &BTreeMap<String, EndOrder>) -> Vec<Finding> {
    // A caller's rider id, from any answer that named it as the order's rider.
    let mut rider_of: BTreeMap<&str, &str> = BTreeMap::new();
    for e in completions(history) {
        if e.kind == Kind::Ok
            && matches!(e.f, Op::Accept | Op::RiderStatus)
            && let Some(rider) = &e.rider
        {
            rider_of.insert(&e.who, rider);
        }
    }
    let mut told: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut may_win: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut refused: Vec<&Event> = Vec::new();
    for e in completions(history).filter(|e| e.f == Op::Accept) {
        let Some(order) = e.order.as_deref() else {
            continue;
        };
        match e.kind {
            Kind::Ok => {
                told.entry(order)
                    .or_default()
                    .insert(e.rider.clone().unwrap_or_default());
                may_win.insert((order, &e.who));
            }
            Kind::Info => {
                may_win.insert((order, &e.who));
            }
            Kind::Fail => refused.push(e),
            Kind::Invoke => {}
        }
    }
    let mut findings = Vec::new();
    for (order, riders) in &told {
        let kept = orders.get(*order).and_then(|o| o.rider_id.clone());
        if riders.len() > 1 || kept.as_ref().is_some_and(|k| !riders.contains(k)) {
            findings.push(Finding::Accepts {
                order: (*order).to_owned(),
                told: riders.iter().cloned().collect(),
                kept,
            });
        }
    }
    for e in refused {
        let (Some(order), Some(rider)) = (e.order.as_deref(), rider_of.get(e.who.as_str())) else {
            continue;
        };
        let kept = orders.get(order).and_then(|o| o.rider_id.as_deref());
        if kept == Some(*rider) && !may_win.contains(&(order, e.who.as_str())) {
            findings.push(Finding::FailDone {
                op: e.op,
                f: Op::Accept,
                order: order.to_owned(),
            });
        }
    }
    findings
}

/// Per rider, the spans [assigned, delivered or cancelled) of its orders never overlap (by
/// more than the clocks' `skew`). Each end is stamped by whichever node wrote it, so a span's
/// ends may be off by the skew against each other and against another span's: two spans
/// overlap only if each starts, skew and all, before the other ends; sorting by start decides
/// nothing on its own (a node ahead makes a later span look earlier).
fn riders(orders: &BTreeMap<String, EndOrder>, skew: time::Duration) -> Vec<Finding> {
    let mut spans: BTreeMap<&str, Vec<(time::OffsetDateTime, time::OffsetDateTime, &str)>> =
        BTreeMap::new();
    for order in orders.values() {
        let Some(rider) = order.rider_id.as_deref() else {
            continue;
        };
        let at = |status: &str| {
            order
                .history
                .iter()
                .find(|s| s.status == status)
                .map(|s| s.at)
        };
        let Some(from) = at("rider_assigned") else {
            continue;
        };
        let until = at("delivered").or_else(|| at("cancelled")).unwrap_or(
            time::PrimitiveDateTime::new(time::Date::MAX, time::Time::MIDNIGHT).assume_utc(),
        );
        spans
            .entry(rider)
            .or_default()
            .push((from, until, &order.id));
    }
    let mut findings = Vec::new();
    for (rider, mut spans) in spans {
        spans.sort();
        for (i, first) in spans.iter().enumerate() {
            // Later starts only grow: once one starts, skew and all, after `first` ends, so do
            // the rest.
            for second in spans[i + 1..]
                .iter()
                .take_while(|second| second.0 + skew < first.1)
            {
                if first.0 + skew < second.1 {
                    findings.push(Finding::RiderTwice {
                        rider: rider.to_owned(),
                        first: first.2.to_owned(),
                        second: second.2.to_owned(),
                    });
                }
            }
        }
    }
    findings
}

/// At the end, no customer has two orders waiting for their payment.
fn unpaid(orders: &BTreeMap<String, EndOrder>) -> Vec<Finding> {
    let mut by_customer: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for order in orders.values() {
        if order.status == "placed" && order.payment_status == "pending" {
            by_customer
                .entry(&order.user_id)
                .or_default()
                .push(order.id.clone());
        }
    }
    by_customer
        .into_iter()
        .filter(|(_, orders)| orders.len() > 1)
        .map(|(customer, orders)| Finding::TwoUnpaid {
            customer: customer.to_owned(),
            orders,
        })
        .collect()
}

/// One answer per (user, operation, key), the same bytes each time, and one order per key.
fn keys(history: &[Event]) -> Vec<Finding> {
    // (user, operation, key) -> the (status, answer hash) pairs it was answered with.
    type Answers<'h> = BTreeMap<(&'h str, Op, &'h str), BTreeSet<(u16, u64)>>;
    let mut answers: Answers = BTreeMap::new();
    let mut made: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for e in completions(history).filter(|e| matches!(e.kind, Kind::Ok | Kind::Fail)) {
        let Some(key) = e.key.as_deref() else {
            continue;
        };
        if let (Some(status), Some(answer)) = (e.status, e.answer) {
            answers
                .entry((&e.who, e.f, key))
                .or_default()
                .insert((status, answer));
        }
        if e.f == Op::Place
            && e.kind == Kind::Ok
            && let Some(order) = &e.order
        {
            made.entry(key).or_default().insert(order.clone());
        }
    }
    let mut findings: Vec<Finding> = answers
        .into_iter()
        .filter(|(_, answers)| answers.len() > 1)
        .map(|((who, f, key), _)| Finding::KeyAnswers {
            who: who.to_owned(),
            f,
            key: key.to_owned(),
        })
        .collect();
    findings.extend(made.into_iter().filter(|(_, orders)| orders.len() > 1).map(
        |(key, orders)| Finding::KeyOrders {
            key: key.to_owned(),
            orders: orders.into_iter().collect(),
        },
    ));
    findings
}

/// Money matches the status at the end: paid while the order goes on or is delivered, never
/// kept on one cancelled or expired (pending or refunded, a refund settled by now); and no
/// unpaid order outlives its deadline by more than `slack`.
fn money(
    orders: &BTreeMap<String, EndOrder>,
    now: time::OffsetDateTime,
    slack: time::Duration,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for order in orders.values() {
        let (status, payment) = (order.status.as_str(), order.payment_status.as_str());
        let right = match status {
            "placed" => matches!(payment, "pending" | "paid"),
            "cancelled" | "expired" => matches!(payment, "pending" | "refunded"),
            _ => payment == "paid",
        };
        if !right {
            findings.push(Finding::Money {
                order: order.id.clone(),
                status: status.to_owned(),
                payment: payment.to_owned(),
            });
        }
        if status == "placed"
            && payment == "pending"
            && order.expires_at.is_some_and(|at| at + slack < now)
        {
            findings.push(Finding::Overdue {
                order: order.id.clone(),
            });
        }
    }
    findings
}

/// `tomato-load check`: reads the history, fetches every order it names from the first target
/// (as the admin), and answers the findings and the orders read (by id).
pub async fn against_nodes(
    args: &crate::cli::CheckArgs,
) -> anyhow::Result<(Vec<Finding>, BTreeMap<String, EndOrder>)> {
    let history = crate::history::read(&args.history)?;
    let base = args.target.url()?;
    let api = crate::api::Api::new(base)?;
    let admin = crate::setup::admin(&api, &args.target.admin_email).await?;
    let mut orders = BTreeMap::new();
    for id in orders_named(&history) {
        match api
            .get(&format!("/api/order/{id}"), Some(&admin.token))
            .await
        {
            Ok(answer) => {
                let order: EndOrder = serde_json::from_value(answer["order"].clone())
                    .map_err(|err| anyhow::anyhow!("order {id}: {err}"))?;
                orders.insert(id, order);
            }
            // Never stored (a refused placement names no order, so this is one an answer
            // named): `told` finds it missing if it was acknowledged.
            Err(err) if err.status == Some(reqwest::StatusCode::NOT_FOUND) => {}
            Err(err) => anyhow::bail!("reading order {id}: {err}"),
        }
    }
    let seconds = |s: u64| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
    let bounds = Bounds {
        now: time::OffsetDateTime::now_utc(),
        slack: seconds(args.slack_s),
        skew: seconds(args.skew_s),
    };
    Ok((check(&history, &orders, bounds), orders))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: time::OffsetDateTime = datetime!(2026-12-08 12:00 UTC);

    fn at(s: i64) -> time::OffsetDateTime {
        T0 + time::Duration::seconds(s)
    }

    /// An order of customer `user` that went through `steps`, one a second from T0.
    fn order(id: &str, user: &str, rider: Option<&str>, steps: &[&str], payment: &str) -> EndOrder {
        EndOrder {
            id: id.into(),
            user_id: user.into(),
            rider_id: rider.map(Into::into),
            status: (*steps.last().expect("a step")).into(),
            payment_status: payment.into(),
            expires_at: None,
            history: steps
                .iter()
                .zip(0..)
                .map(|(s, n)| Step {
                    status: (*s).into(),
                    at: at(n),
                })
                .collect(),
        }
    }

    const DELIVERED: [&str; 7] = [
        "placed",
        "accepted",
        "preparing",
        "ready_for_rider",
        "rider_assigned",
        "picked_up",
        "delivered",
    ];

    fn end(orders: Vec<EndOrder>) -> BTreeMap<String, EndOrder> {
        orders.into_iter().map(|o| (o.id.clone(), o)).collect()
    }

    /// A completed operation.
    fn done(op: u64, kind: Kind, f: Op, who: &str, order: &str) -> Event {
        Event {
            op,
            kind,
            f,
            node: "n1".into(),
            who: who.into(),
            at_ms: op * 10,
            order: Some(order.into()),
            value: None,
            key: None,
            rider: None,
            status: Some(match kind {
                Kind::Ok => 200,
                Kind::Fail => 409,
                _ => 503,
            }),
            code: None,
            answer: Some(op),
        }
    }

    fn step(op: u64, kind: Kind, f: Op, order: &str, value: &str) -> Event {
        Event {
            value: Some(value.into()),
            ..done(op, kind, f, "seller", order)
        }
    }

    fn accept(op: u64, kind: Kind, who: &str, order: &str, rider: Option<&str>) -> Event {
        Event {
            rider: rider.map(Into::into),
            ..done(op, kind, Op::Accept, who, order)
        }
    }

    fn run(history: &[Event], orders: &BTreeMap<String, EndOrder>) -> Vec<Finding> {
        let bounds = Bounds {
            now: at(3600),
            slack: time::Duration::seconds(60),
            skew: time::Duration::ZERO,
        };
        check(history, orders, bounds)
    }

    #[test]
    fn times_within_the_clocks_skew_say_nothing_of_order() {
        let mut late = order("o2", "c2", None, &["placed", "accepted"], "paid");
        late.history[1].at = at(-5);
        let bounds = Bounds {
            now: at(3600),
            slack: time::Duration::seconds(60),
            skew: time::Duration::seconds(10),
        };
        assert_eq!(check(&[], &end(vec![late.clone()]), bounds), []);
        late.history[1].at = at(-15);
        assert_eq!(
            check(&[], &end(vec![late]), bounds).len(),
            1,
            "past the skew"
        );
    }

    /// A clean delivery: rider r1 (user u-r1) accepted, picked up and delivered.
    fn clean() -> (Vec<Event>, BTreeMap<String, EndOrder>) {
        let history = vec![
            done(1, Kind::Ok, Op::Place, "c1", "o1"),
            done(2, Kind::Ok, Op::Pay, "c1", "o1"),
            step(3, Kind::Ok, Op::SellerStatus, "o1", "accepted"),
            step(4, Kind::Ok, Op::SellerStatus, "o1", "preparing"),
            step(5, Kind::Ok, Op::SellerStatus, "o1", "ready_for_rider"),
            accept(6, Kind::Ok, "u-r1", "o1", Some("r1")),
            Event {
                rider: Some("r1".into()),
                who: "u-r1".into(),
                ..step(7, Kind::Ok, Op::RiderStatus, "o1", "picked_up")
            },
        ];
        let orders = end(vec![order("o1", "c1", Some("r1"), &DELIVERED, "paid")]);
        (history, orders)
    }

    #[test]
    fn a_clean_delivery_has_no_finding() {
        let (history, orders) = clean();
        assert_eq!(run(&history, &orders), []);
    }

    #[test]
    fn steps_out_of_the_machine_or_repeated_are_found() {
        let skipped = order("o2", "c2", None, &["placed", "preparing"], "paid");
        let twice = order(
            "o3",
            "c3",
            None,
            &["placed", "accepted", "accepted"],
            "paid",
        );
        let found = run(&[], &end(vec![skipped, twice]));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| matches!(f, Finding::NotAPath { .. })));
    }

    #[test]
    fn steps_back_in_time_are_found() {
        let mut late = order("o2", "c2", None, &["placed", "accepted"], "paid");
        late.history[1].at = at(-5);
        assert!(matches!(
            run(&[], &end(vec![late]))[..],
            [Finding::NotAPath { .. }]
        ));
    }

    #[test]
    fn an_ok_whose_effect_is_missing_is_found() {
        let (mut history, orders) = clean();
        history.push(step(8, Kind::Ok, Op::SellerStatus, "o1", "cancelled"));
        assert_eq!(
            run(&history, &orders),
            [Finding::OkLost {
                op: 8,
                f: Op::SellerStatus,
                order: "o1".into()
            }]
        );
    }

    #[test]
    fn an_acknowledged_order_not_stored_is_found() {
        let history = [done(1, Kind::Ok, Op::Place, "c1", "gone")];
        assert_eq!(
            run(&history, &BTreeMap::new()),
            [Finding::Missing {
                op: 1,
                order: "gone".into()
            }]
        );
    }

    #[test]
    fn a_refusal_of_what_happened_is_found_unless_another_try_explains_it() {
        let (mut history, orders) = clean();
        // The seller was told its `accepted` failed, yet only ever asked once: a lie.
        history[2].kind = Kind::Fail;
        assert_eq!(
            run(&history, &orders),
            [Finding::FailDone {
                op: 3,
                f: Op::SellerStatus,
                order: "o1".into()
            }]
        );
        // A retry that timed out may be the one that did it.
        history.push(step(9, Kind::Info, Op::SellerStatus, "o1", "accepted"));
        assert_eq!(run(&history, &orders), []);
    }

    #[test]
    fn the_winner_of_an_accept_told_already_taken_is_found() {
        let (mut history, orders) = clean();
        // r1's accept answered 409 already_taken, yet the order is r1's (F2 of the review).
        history[5] = accept(6, Kind::Fail, "u-r1", "o1", None);
        let found = run(&history, &orders);
        assert!(
            found.contains(&Finding::FailDone {
                op: 6,
                f: Op::Accept,
                order: "o1".into()
            }),
            "{found:?}"
        );
    }

    #[test]
    fn two_accepts_answered_ok_or_a_kept_rider_not_told_are_found() {
        let (mut history, orders) = clean();
        history.push(accept(8, Kind::Ok, "u-r2", "o1", Some("r2")));
        assert!(matches!(
            run(&history, &orders)[..],
            [Finding::Accepts { .. }]
        ));
        let (mut history, mut orders) = clean();
        history.truncate(6);
        orders.get_mut("o1").expect("o1").rider_id = Some("r9".into());
        assert!(matches!(
            run(&history, &orders)[..],
            [Finding::Accepts { .. }]
        ));
    }

    #[test]
    fn one_rider_holding_two_orders_at_once_is_found() {
        let first = order("o1", "c1", Some("r1"), &DELIVERED[..6], "paid");
        let mut second = order("o2", "c2", Some("r1"), &DELIVERED[..5], "paid");
        for s in &mut second.history {
            s.at += time::Duration::seconds(2);
        }
        let found = run(&[], &end(vec![first.clone(), second.clone()]));
        assert!(
            matches!(&found[..], [Finding::RiderTwice { rider, .. }] if rider == "r1"),
            "{found:?}"
        );
        // One after the other is fine.
        let mut done_first = order("o1", "c1", Some("r1"), &DELIVERED, "paid");
        done_first.history[6].at = at(5);
        let mut later = second;
        for s in &mut later.history {
            s.at += time::Duration::seconds(10);
        }
        assert_eq!(run(&[], &end(vec![done_first, later])), []);
    }

    #[test]
    fn spans_stamped_by_a_clock_ahead_say_nothing_of_overlap() {
        // Seen with a node 90 s ahead: o2 was assigned and delivered (by that node and then a
        // true one) well before o1 was assigned, but its assignment's stamp is later than
        // o1's, and o1's delivery (by the node ahead) later than o2's assignment's stamp.
        let ahead = |s: i64| at(s + 90);
        let mut earlier = order("o2", "c2", Some("r1"), &DELIVERED, "paid");
        earlier.history[4].at = ahead(53);
        earlier.history[5].at = ahead(55);
        earlier.history[6].at = at(58);
        let mut later = order("o1", "c1", Some("r1"), &DELIVERED, "paid");
        later.history[4].at = at(141);
        later.history[5].at = ahead(148);
        later.history[6].at = ahead(150);
        let bounds = Bounds {
            now: at(3600),
            slack: time::Duration::seconds(60),
            skew: time::Duration::seconds(95),
        };
        assert_eq!(check(&[], &end(vec![earlier, later]), bounds), []);
    }

    #[test]
    fn two_unpaid_orders_of_one_customer_are_found() {
        let a = order("o1", "c1", None, &["placed"], "pending");
        let b = order("o2", "c1", None, &["placed"], "pending");
        assert!(matches!(
            run(&[], &end(vec![a, b]))[..],
            [Finding::TwoUnpaid { .. }]
        ));
    }

    #[test]
    fn one_key_answered_twice_differently_or_making_two_orders_is_found() {
        let keyed = |op, kind, order: &str, answer| Event {
            key: Some("k1".into()),
            answer: Some(answer),
            ..done(op, kind, Op::Place, "c1", order)
        };
        let orders = end(vec![
            order("o1", "c1", None, &["placed"], "paid"),
            order("o2", "c1", None, &["placed", "cancelled"], "pending"),
        ]);
        // The same answer twice is a replay: fine.
        let replayed = [keyed(1, Kind::Ok, "o1", 7), keyed(2, Kind::Ok, "o1", 7)];
        assert_eq!(run(&replayed, &orders), []);
        // A 409 for the key that made the order (F4 of the review).
        let contradicted = [keyed(1, Kind::Ok, "o1", 7), keyed(2, Kind::Fail, "o1", 8)];
        assert!(matches!(
            run(&contradicted, &orders)[..],
            [Finding::KeyAnswers { .. }]
        ));
        let two = [keyed(1, Kind::Ok, "o1", 7), keyed(2, Kind::Ok, "o2", 7)];
        assert!(
            run(&two, &orders)
                .iter()
                .any(|f| matches!(f, Finding::KeyOrders { orders, .. } if orders.len() == 2))
        );
    }

    #[test]
    fn money_that_does_not_match_the_status_is_found() {
        for (steps, payment) in [
            (&DELIVERED[..], "pending"),
            (&["placed", "cancelled"][..], "paid"),
            (&["placed", "expired"][..], "paid"),
            (&["placed", "cancelled"][..], "refund_pending"),
        ] {
            let found = run(&[], &end(vec![order("o1", "c1", None, steps, payment)]));
            assert!(
                matches!(found[..], [Finding::Money { .. }]),
                "{steps:?} {payment}: {found:?}"
            );
        }
        for (steps, payment) in [
            (&["placed", "cancelled"][..], "refunded"),
            (&["placed", "expired"][..], "pending"),
        ] {
            assert_eq!(
                run(&[], &end(vec![order("o1", "c1", None, steps, payment)])),
                []
            );
        }
    }

    #[test]
    fn an_unpaid_order_past_its_deadline_is_found() {
        let mut late = order("o1", "c1", None, &["placed"], "pending");
        late.expires_at = Some(at(60));
        assert_eq!(
            run(&[], &end(vec![late.clone()])),
            [Finding::Overdue { order: "o1".into() }]
        );
        late.expires_at = Some(at(3590));
        assert_eq!(run(&[], &end(vec![late])), [], "within the slack");
    }
}
