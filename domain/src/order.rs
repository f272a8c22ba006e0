//! Orders: what was bought, at what price, and where it stands. The status machine of docs/api.md
//! lives here as a pure function, [`Order::apply`], so the order actor that serialises commands
//! and the tests that check the table share one definition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::geo::LatLon;
use crate::ids::{MenuItemId, OrderId, RestaurantId, RiderId, UserId};
use crate::money::Money;
use crate::user::ParseError;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(ParseError(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        s
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Where an order stands.
    OrderStatus {
        Placed => "placed",
        Accepted => "accepted",
        Preparing => "preparing",
        ReadyForRider => "ready_for_rider",
        RiderAssigned => "rider_assigned",
        PickedUp => "picked_up",
        Delivered => "delivered",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

impl OrderStatus {
    /// No transition leaves these.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Cancelled | OrderStatus::Expired
        )
    }
}

wire_enum!(
    /// Where the order's payment stands.
    PaymentStatus {
        Pending => "pending",
        Paid => "paid",
        Failed => "failed",
        RefundPending => "refund_pending",
        Refunded => "refunded",
    }
);

impl PaymentStatus {
    /// The payment went through (and may since have been refunded): the seller sees the order.
    pub fn succeeded(self) -> bool {
        matches!(
            self,
            PaymentStatus::Paid | PaymentStatus::RefundPending | PaymentStatus::Refunded
        )
    }
}

wire_enum!(
    /// How the customer pays.
    PaymentMethod {
        Razorpay => "razorpay",
        Stripe => "stripe",
        Test => "test",
    }
);

/// One dish of an order, copied from the menu at the time of ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub item_id: MenuItemId,
    pub name: String,
    pub price: Money,
    pub quantity: u32,
}

/// Where the order goes, copied from the customer's address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAddress {
    pub formatted_address: String,
    pub mobile: String,
    pub location: LatLon,
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An order, as stored and as its actor holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub restaurant_id: RestaurantId,
    pub restaurant_name: String,
    /// Where the rider picks the order up.
    pub pickup: LatLon,
    pub rider_id: Option<RiderId>,
    pub rider_name: Option<String>,
    pub rider_phone: Option<String>,
    pub items: Vec<OrderLine>,
    pub subtotal: Money,
    pub delivery_fee: Money,
    pub platform_fee: Money,
    pub total_amount: Money,
    pub currency: String,
    pub rider_amount: Money,
    pub distance_km: f64,
    pub delivery_address: DeliveryAddress,
    pub status: OrderStatus,
    pub payment_status: PaymentStatus,
    pub payment_method: PaymentMethod,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub history: Vec<HistoryEntry>,
    /// Grows by one with every transition. The store saves an order only over the version it
    /// came from (compare-and-set), so a writer holding a stale copy (a paused former owner of
    /// the order's shard, say) is refused instead of overwriting its successor.
    #[serde(default)]
    pub version: u64,
    /// The shard that owns the order: the shard of its restaurant's region, fixed at placement,
    /// so a command is routed without reading the store.
    #[serde(default)]
    pub shard: u32,
}

/// Something that wants to move an order. Serde, so a command can be sent to the node that owns
/// the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderCommand {
    /// The payment provider says the money arrived. Idempotent.
    ConfirmPayment,
    /// The payment deadline passed.
    Expire,
    /// The customer cancels.
    CancelByCustomer,
    /// The restaurant moves the order on (`accepted`, `preparing`, `ready_for_rider`) or
    /// cancels it.
    SetBySeller(OrderStatus),
    /// A rider won the offer.
    AssignRider {
        rider: RiderId,
        name: String,
        phone: String,
    },
    /// The assigned rider moves the order on (`picked_up`, `delivered`).
    SetByRider { rider: RiderId, status: OrderStatus },
    /// The payment provider returned the money of a cancelled order.
    SettleRefund,
}

impl fmt::Display for OrderCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderCommand::ConfirmPayment => f.write_str("confirm payment"),
            OrderCommand::Expire => f.write_str("expire"),
            OrderCommand::CancelByCustomer => f.write_str("cancel"),
            OrderCommand::SetBySeller(status) => write!(f, "move to {status}"),
            OrderCommand::AssignRider { .. } => f.write_str("assign a rider to"),
            OrderCommand::SetByRider { status, .. } => write!(f, "move to {status}"),
            OrderCommand::SettleRefund => f.write_str("settle the refund of"),
        }
    }
}

/// A command the status machine does not allow from the order's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("cannot {command} an order that is {status} with payment {payment}")]
pub struct TransitionError {
    pub command: OrderCommand,
    pub status: OrderStatus,
    pub payment: PaymentStatus,
}

impl Order {
    /// The order after `command`, `Ok(None)` when the command changes nothing (a repeated
    /// payment confirmation, a stale expiry timer), or the refusal. Pure: the caller persists
    /// the new order before anyone is told.
    pub fn apply(
        &self,
        command: OrderCommand,
        now: OffsetDateTime,
    ) -> Result<Option<Order>, TransitionError> {
        use OrderStatus as S;
        use PaymentStatus as P;
        let refuse = || TransitionError {
            command: command.clone(),
            status: self.status,
            payment: self.payment_status,
        };
        let mut next = self.clone();
        let (status, payment) = match (&command, self.status, self.payment_status) {
            (OrderCommand::ConfirmPayment, S::Placed, P::Pending) => (S::Placed, P::Paid),
            // However often the provider repeats itself, the payment counts once.
            (OrderCommand::ConfirmPayment, _, payment) if payment.succeeded() => return Ok(None),
            // Money that arrives after the order expired or was cancelled unpaid is never kept:
            // the order stays where it is and owes the customer a refund.
            (OrderCommand::ConfirmPayment, S::Expired | S::Cancelled, P::Pending) => {
                (self.status, P::RefundPending)
            }
            (OrderCommand::Expire, S::Placed, P::Pending) => (S::Expired, P::Pending),
            (OrderCommand::Expire, _, _) => return Ok(None),
            (OrderCommand::CancelByCustomer, S::Placed, P::Pending) => (S::Cancelled, P::Pending),
            (OrderCommand::CancelByCustomer, S::Placed, P::Paid) => {
                (S::Cancelled, P::RefundPending)
            }
            (OrderCommand::SetBySeller(S::Accepted), S::Placed, P::Paid) => (S::Accepted, P::Paid),
            (OrderCommand::SetBySeller(S::Preparing), S::Accepted, P::Paid) => {
                (S::Preparing, P::Paid)
            }
            (OrderCommand::SetBySeller(S::ReadyForRider), S::Preparing, P::Paid) => {
                (S::ReadyForRider, P::Paid)
            }
            (
                OrderCommand::SetBySeller(S::Cancelled),
                S::Placed | S::Accepted | S::Preparing,
                P::Paid,
            ) => (S::Cancelled, P::RefundPending),
            (OrderCommand::AssignRider { rider, name, phone }, S::ReadyForRider, P::Paid) => {
                next.rider_id = Some(*rider);
                next.rider_name = Some(name.clone());
                next.rider_phone = Some(phone.clone());
                (S::RiderAssigned, P::Paid)
            }
            (
                OrderCommand::SetByRider {
                    rider,
                    status: S::PickedUp,
                },
                S::RiderAssigned,
                P::Paid,
            ) if self.rider_id == Some(*rider) => (S::PickedUp, P::Paid),
            (
                OrderCommand::SetByRider {
                    rider,
                    status: S::Delivered,
                },
                S::PickedUp,
                P::Paid,
            ) if self.rider_id == Some(*rider) => (S::Delivered, P::Paid),
            (OrderCommand::SettleRefund, S::Cancelled | S::Expired, P::RefundPending) => {
                (self.status, P::Refunded)
            }
            // A refund settles once, however often the provider confirms it.
            (OrderCommand::SettleRefund, S::Cancelled | S::Expired, P::Refunded) => {
                return Ok(None);
            }
            _ => return Err(refuse()),
        };
        next.payment_status = payment;
        if payment != P::Pending {
            next.expires_at = None;
        }
        if status != self.status {
            next.status = status;
            next.history.push(HistoryEntry { status, at: now });
        }
        next.updated_at = now;
        next.version = self.version + 1;
        Ok(Some(next))
    }
}

impl Order {
    /// When the order last became `ready_for_rider` (dispatch's start), if it ever did.
    pub fn ready_since(&self) -> Option<OffsetDateTime> {
        self.history
            .iter()
            .rev()
            .find(|h| h.status == OrderStatus::ReadyForRider)
            .map(|h| h.at)
    }

    /// Whether the order already carries what `command` would do: a command sent again after
    /// its answer was lost (the node that ran it died, or the reply went astray) finds its own
    /// effect and counts as done instead of being refused as a transition from the new state.
    /// The status must have been reached (it may have moved on since) and, for a rider's
    /// commands, by the same rider.
    pub fn shows(&self, command: &OrderCommand) -> bool {
        use OrderStatus as S;
        let reached = |status: OrderStatus| self.history.iter().any(|h| h.status == status);
        match command {
            OrderCommand::ConfirmPayment => self.payment_status != PaymentStatus::Pending,
            OrderCommand::Expire => self.status == S::Expired,
            OrderCommand::CancelByCustomer => self.status == S::Cancelled,
            OrderCommand::SetBySeller(status) => reached(*status),
            OrderCommand::AssignRider { rider, .. } => self.rider_id == Some(*rider),
            OrderCommand::SetByRider { rider, status } => {
                self.rider_id == Some(*rider) && reached(*status)
            }
            OrderCommand::SettleRefund => self.payment_status == PaymentStatus::Refunded,
        }
    }
}

/// Prices of the platform (config `[pricing]`; the defaults of docs/api.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// Delivery fee below the free-delivery threshold.
    pub delivery_fee: i64,
    /// Subtotal from which delivery is free.
    pub free_delivery_from: i64,
    /// Fee on every order.
    pub platform_fee: i64,
    /// What the rider earns per started kilometre.
    pub rider_per_km: i64,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            currency: "INR".into(),
            delivery_fee: 4900,
            free_delivery_from: 25000,
            platform_fee: 700,
            rider_per_km: 1700,
        }
    }
}

/// The priced parts of an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub subtotal: Money,
    pub delivery_fee: Money,
    pub platform_fee: Money,
    pub total_amount: Money,
    pub rider_amount: Money,
    /// Rounded to 2 decimals, as shown.
    pub distance_km: f64,
}

impl Pricing {
    /// Prices an order of `subtotal` delivered `exact_km` from the restaurant.
    pub fn quote(&self, subtotal: Money, exact_km: f64) -> Quote {
        let delivery_fee = if subtotal.minor() < self.free_delivery_from {
            Money::from_minor(self.delivery_fee)
        } else {
            Money::ZERO
        };
        let platform_fee = Money::from_minor(self.platform_fee);
        let started_km = exact_km.max(0.0).ceil() as i64;
        Quote {
            subtotal,
            delivery_fee,
            platform_fee,
            total_amount: subtotal + delivery_fee + platform_fee,
            rider_amount: Money::from_minor(self.rider_per_km) * started_km,
            distance_km: (exact_km * 100.0).round() / 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: OrderStatus, payment: PaymentStatus) -> Order {
        let now = OffsetDateTime::now_utc();
        let here = LatLon::new(12.97, 77.59).expect("point");
        Order {
            id: OrderId::new(),
            user_id: UserId::new(),
            restaurant_id: RestaurantId::new(),
            restaurant_name: "Dosa Corner".into(),
            pickup: here,
            rider_id: None,
            rider_name: None,
            rider_phone: None,
            items: vec![],
            subtotal: Money::from_minor(20000),
            delivery_fee: Money::from_minor(4900),
            platform_fee: Money::from_minor(700),
            total_amount: Money::from_minor(25600),
            currency: "INR".into(),
            rider_amount: Money::from_minor(3400),
            distance_km: 1.5,
            delivery_address: DeliveryAddress {
                formatted_address: "1 MG Road".into(),
                mobile: "+919845012345".into(),
                location: here,
            },
            status,
            payment_status: payment,
            payment_method: PaymentMethod::Test,
            expires_at: Some(now),
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry { status, at: now }],
            version: 0,
            shard: 0,
        }
    }

    /// The whole table of docs/api.md: every (command, status, payment) that is allowed, with the
    /// result; everything else must be refused (or, for the idempotent ones, change nothing).
    #[test]
    fn the_status_machine_is_exactly_the_table() {
        use OrderCommand as C;
        use OrderStatus as S;
        use PaymentStatus as P;
        let rider = RiderId::new();
        let assign = C::AssignRider {
            rider,
            name: "Ravi".into(),
            phone: "+919845011111".into(),
        };
        let pick_up = C::SetByRider {
            rider,
            status: S::PickedUp,
        };
        let deliver = C::SetByRider {
            rider,
            status: S::Delivered,
        };
        let allowed: &[(C, S, P, S, P)] = &[
            (C::ConfirmPayment, S::Placed, P::Pending, S::Placed, P::Paid),
            (C::Expire, S::Placed, P::Pending, S::Expired, P::Pending),
            (
                C::CancelByCustomer,
                S::Placed,
                P::Pending,
                S::Cancelled,
                P::Pending,
            ),
            (
                C::CancelByCustomer,
                S::Placed,
                P::Paid,
                S::Cancelled,
                P::RefundPending,
            ),
            (
                C::SetBySeller(S::Accepted),
                S::Placed,
                P::Paid,
                S::Accepted,
                P::Paid,
            ),
            (
                C::SetBySeller(S::Cancelled),
                S::Placed,
                P::Paid,
                S::Cancelled,
                P::RefundPending,
            ),
            (
                C::SetBySeller(S::Preparing),
                S::Accepted,
                P::Paid,
                S::Preparing,
                P::Paid,
            ),
            (
                C::SetBySeller(S::Cancelled),
                S::Accepted,
                P::Paid,
                S::Cancelled,
                P::RefundPending,
            ),
            (
                C::SetBySeller(S::ReadyForRider),
                S::Preparing,
                P::Paid,
                S::ReadyForRider,
                P::Paid,
            ),
            (
                C::SetBySeller(S::Cancelled),
                S::Preparing,
                P::Paid,
                S::Cancelled,
                P::RefundPending,
            ),
            (
                assign.clone(),
                S::ReadyForRider,
                P::Paid,
                S::RiderAssigned,
                P::Paid,
            ),
            (
                pick_up.clone(),
                S::RiderAssigned,
                P::Paid,
                S::PickedUp,
                P::Paid,
            ),
            (deliver.clone(), S::PickedUp, P::Paid, S::Delivered, P::Paid),
            (
                C::SettleRefund,
                S::Cancelled,
                P::RefundPending,
                S::Cancelled,
                P::Refunded,
            ),
            (
                C::SettleRefund,
                S::Expired,
                P::RefundPending,
                S::Expired,
                P::Refunded,
            ),
            // Late money: kept nowhere, owed back.
            (
                C::ConfirmPayment,
                S::Expired,
                P::Pending,
                S::Expired,
                P::RefundPending,
            ),
            (
                C::ConfirmPayment,
                S::Cancelled,
                P::Pending,
                S::Cancelled,
                P::RefundPending,
            ),
        ];
        let mut commands = vec![
            C::ConfirmPayment,
            C::Expire,
            C::CancelByCustomer,
            C::SettleRefund,
            assign.clone(),
        ];
        commands.extend(OrderStatus::ALL.iter().map(|s| C::SetBySeller(*s)));
        commands.extend(
            OrderStatus::ALL
                .iter()
                .map(|s| C::SetByRider { rider, status: *s }),
        );
        let now = OffsetDateTime::now_utc();
        for command in &commands {
            for &status in OrderStatus::ALL {
                for &payment in PaymentStatus::ALL {
                    let mut before = order(status, payment);
                    // The rider commands name the order's assigned rider.
                    before.rider_id = Some(rider);
                    let outcome = before.apply(command.clone(), now);
                    let expected = allowed
                        .iter()
                        .find(|(c, s, p, _, _)| c == command && *s == status && *p == payment);
                    match (expected, outcome) {
                        (Some((_, _, _, to, pay)), Ok(Some(after))) => {
                            assert_eq!((after.status, after.payment_status), (*to, *pay));
                            assert!(after.shows(command), "{command} shows after it ran");
                            if *to != status {
                                assert_eq!(after.history.last().map(|h| h.status), Some(*to));
                            }
                        }
                        (None, Err(_)) => {}
                        // Idempotent commands: a repeat or a stale timer changes nothing.
                        (None, Ok(None))
                            if matches!(command, C::Expire)
                                || (*command == C::ConfirmPayment && payment.succeeded())
                                || (*command == C::SettleRefund
                                    && matches!(status, S::Cancelled | S::Expired)
                                    && payment == P::Refunded) => {}
                        (expected, outcome) => panic!(
                            "{command} from {status}/{payment}: expected {expected:?}, got {outcome:?}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn only_the_assigned_rider_moves_the_order() {
        let mut assigned = order(OrderStatus::RiderAssigned, PaymentStatus::Paid);
        let (rider, other) = (RiderId::new(), RiderId::new());
        assigned.rider_id = Some(rider);
        let now = OffsetDateTime::now_utc();
        let by = |rider| OrderCommand::SetByRider {
            rider,
            status: OrderStatus::PickedUp,
        };
        assert!(assigned.apply(by(other), now).is_err());
        let picked = assigned
            .apply(by(rider), now)
            .expect("allowed")
            .expect("changed");
        assert_eq!(picked.status, OrderStatus::PickedUp);
        let ready = order(OrderStatus::ReadyForRider, PaymentStatus::Paid);
        let won = ready
            .apply(
                OrderCommand::AssignRider {
                    rider,
                    name: "Ravi".into(),
                    phone: "+91".into(),
                },
                now,
            )
            .expect("allowed")
            .expect("changed");
        assert_eq!(
            (won.rider_id, won.rider_name.as_deref()),
            (Some(rider), Some("Ravi"))
        );
    }

    #[test]
    fn a_command_shows_once_its_status_was_reached_by_the_same_rider() {
        let now = OffsetDateTime::now_utc();
        let (rider, other) = (RiderId::new(), RiderId::new());
        let accept = OrderCommand::SetBySeller(OrderStatus::Accepted);
        let paid = order(OrderStatus::Placed, PaymentStatus::Paid);
        assert!(!paid.shows(&accept));
        let accepted = paid.apply(accept.clone(), now).expect("ok").expect("moved");
        let preparing = accepted
            .apply(OrderCommand::SetBySeller(OrderStatus::Preparing), now)
            .expect("ok")
            .expect("moved");
        // Moved on since: the acceptance still shows, the next step does not.
        assert!(preparing.shows(&accept));
        assert!(!preparing.shows(&OrderCommand::SetBySeller(OrderStatus::ReadyForRider)));
        let mut picked = order(OrderStatus::PickedUp, PaymentStatus::Paid);
        picked.rider_id = Some(rider);
        let pick_up = |rider| OrderCommand::SetByRider {
            rider,
            status: OrderStatus::PickedUp,
        };
        assert!(picked.shows(&pick_up(rider)));
        assert!(!picked.shows(&pick_up(other)));
        let assign = |rider| OrderCommand::AssignRider {
            rider,
            name: "Ravi".into(),
            phone: "+91".into(),
        };
        assert!(picked.shows(&assign(rider)));
        assert!(!picked.shows(&assign(other)));
    }

    #[test]
    fn payment_clears_the_deadline_and_repeats_change_nothing() {
        let placed = order(OrderStatus::Placed, PaymentStatus::Pending);
        let now = OffsetDateTime::now_utc();
        let paid = placed
            .apply(OrderCommand::ConfirmPayment, now)
            .expect("allowed")
            .expect("changed");
        assert_eq!(paid.expires_at, None);
        assert_eq!(paid.history.len(), 1, "payment is not a status change");
        assert_eq!(paid.apply(OrderCommand::ConfirmPayment, now), Ok(None));
        let expired = placed
            .apply(OrderCommand::Expire, now)
            .expect("allowed")
            .expect("changed");
        let late = expired
            .apply(OrderCommand::ConfirmPayment, now)
            .expect("allowed")
            .expect("changed");
        assert_eq!(
            (late.status, late.payment_status),
            (OrderStatus::Expired, PaymentStatus::RefundPending)
        );
    }

    #[test]
    fn pricing_follows_the_contract() {
        let pricing = Pricing::default();
        let small = pricing.quote(Money::from_minor(24999), 3.456);
        assert_eq!(small.delivery_fee.minor(), 4900);
        assert_eq!(small.platform_fee.minor(), 700);
        assert_eq!(small.total_amount.minor(), 24999 + 4900 + 700);
        assert_eq!(small.distance_km, 3.46);
        assert_eq!(small.rider_amount.minor(), 4 * 1700);
        let large = pricing.quote(Money::from_minor(25000), 2.0);
        assert_eq!(large.delivery_fee.minor(), 0);
        assert_eq!(large.total_amount.minor(), 25700);
        assert_eq!(large.rider_amount.minor(), 2 * 1700);
    }

    #[test]
    fn orders_round_trip_through_json() {
        let order = order(OrderStatus::Accepted, PaymentStatus::Paid);
        let json = serde_json::to_string(&order).expect("serialise");
        assert!(json.contains("\"status\":\"accepted\""));
        assert!(json.contains("\"paymentStatus\":\"paid\""));
        let back: Order = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back.id, order.id);
        assert_eq!(back.status, order.status);
        assert_eq!(back.history, order.history);
    }

    fn command() -> impl proptest::strategy::Strategy<Value = OrderCommand> {
        use proptest::prelude::*;
        let rider = RiderId::new();
        prop_oneof![
            Just(OrderCommand::ConfirmPayment),
            Just(OrderCommand::Expire),
            Just(OrderCommand::CancelByCustomer),
            Just(OrderCommand::SettleRefund),
            proptest::sample::select(OrderStatus::ALL).prop_map(OrderCommand::SetBySeller),
            Just(OrderCommand::AssignRider {
                rider,
                name: "Ravi".into(),
                phone: "+91".into(),
            }),
            proptest::sample::select(OrderStatus::ALL)
                .prop_map(move |status| OrderCommand::SetByRider { rider, status }),
        ]
    }

    proptest::proptest! {
        /// Whatever sequence of commands arrives, every change bumps the version by exactly one
        /// and a refusal or a no-op leaves it alone: the version counts persisted transitions,
        /// which is what makes it a fence.
        #[test]
        fn the_version_counts_transitions(commands in proptest::collection::vec(command(), 0..40)) {
            let now = OffsetDateTime::now_utc();
            let mut current = order(OrderStatus::Placed, PaymentStatus::Pending);
            let mut changes = 0u64;
            for command in commands {
                // A refusal or a no-op leaves the order, version and all, as it was.
                if let Ok(Some(next)) = current.apply(command, now) {
                    proptest::prop_assert_eq!(next.version, current.version + 1);
                    proptest::prop_assert_eq!(next.shard, current.shard);
                    changes += 1;
                    current = next;
                }
            }
            proptest::prop_assert_eq!(current.version, changes);
        }
    }
}
