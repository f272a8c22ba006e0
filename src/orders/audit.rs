//! The store's audit after a fault drill (`tomato audit`): every order a node acknowledged is
//! stored, paid and delivered, each step of its way applied once and in time order, and its
//! version counts exactly its writes, so nothing was lost or written twice while nodes died,
//! paused or took over each other's zones.

use std::fmt;

use tomato_domain::{Order, OrderId, OrderStatus, PaymentStatus};
use tomato_store::OrderStore;

/// The way of a delivered order, one history entry per step.
pub const DELIVERED: [OrderStatus; 7] = [
    OrderStatus::Placed,
    OrderStatus::Accepted,
    OrderStatus::Preparing,
    OrderStatus::ReadyForRider,
    OrderStatus::RiderAssigned,
    OrderStatus::PickedUp,
    OrderStatus::Delivered,
];

/// What is wrong with one acknowledged order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Not in the store: an acknowledged order was lost.
    Missing,
    /// Its steps are not the delivered way, each once (a step missing, repeated, or the order
    /// not delivered).
    Steps(Vec<OrderStatus>),
    /// A step is dated before the one it follows.
    BackInTime,
    /// Delivered but not paid.
    Payment(PaymentStatus),
    /// Its version is not its count of writes (placement is version 0, then the payment and one
    /// per step after placement): a write was applied twice or lost.
    Version { found: u64, writes: u64 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Missing => write!(f, "not in the store"),
            Finding::Steps(steps) => {
                let steps: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
                write!(f, "steps {}", steps.join(" > "))
            }
            Finding::BackInTime => write!(f, "a step is dated before the one it follows"),
            Finding::Payment(status) => write!(f, "payment {}", status.as_str()),
            Finding::Version { found, writes } => {
                write!(f, "version {found} after {writes} writes")
            }
        }
    }
}

/// What is wrong with `order`, which should have been delivered: nothing when it was, once.
pub fn delivered_once(order: &Order) -> Vec<Finding> {
    let mut findings = Vec::new();
    let steps: Vec<OrderStatus> = order.history.iter().map(|h| h.status).collect();
    if steps != DELIVERED {
        findings.push(Finding::Steps(steps));
    }
    if !order.history.is_sorted_by_key(|h| h.at) {
        findings.push(Finding::BackInTime);
    }
    if order.payment_status != PaymentStatus::Paid {
        findings.push(Finding::Payment(order.payment_status));
    }
    let paid = u64::from(order.payment_status.succeeded());
    let moves = u64::try_from(order.history.len().saturating_sub(1)).unwrap_or(u64::MAX);
    let writes = paid + moves;
    if order.version != writes {
        findings.push(Finding::Version {
            found: order.version,
            writes,
        });
    }
    findings
}

/// The audit of a list of acknowledged orders.
#[derive(Debug, Default)]
pub struct Audit {
    pub audited: usize,
    /// The orders with something wrong, and what.
    pub findings: Vec<(OrderId, Finding)>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Reads every order of `ids` from the store and checks that it was delivered once.
pub async fn audit(orders: &dyn OrderStore, ids: &[OrderId]) -> anyhow::Result<Audit> {
    let mut audit = Audit::default();
    for id in ids {
        audit.audited += 1;
        match orders.get(*id).await? {
            None => audit.findings.push((*id, Finding::Missing)),
            Some(order) => {
                for finding in delivered_once(&order) {
                    audit.findings.push((*id, finding));
                }
            }
        }
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use tomato_domain::{HistoryEntry, RestaurantId, UserId};
    use tomato_store::conformance::order_for;

    use super::*;

    /// An order paid, then moved through `steps` after placement, a minute apart.
    fn moved(steps: &[OrderStatus]) -> Order {
        let mut order = order_for(UserId::new(), RestaurantId::new());
        order.payment_status = PaymentStatus::Paid;
        order.version = 1;
        for status in steps {
            let at = order.history.last().expect("placed").at + Duration::minutes(1);
            order.history.push(HistoryEntry {
                status: *status,
                at,
            });
            order.status = *status;
            order.version += 1;
        }
        order
    }

    #[test]
    fn a_delivered_order_written_once_is_clean() {
        assert_eq!(delivered_once(&moved(&DELIVERED[1..])), vec![]);
    }

    #[test]
    fn a_step_repeated_or_missing_is_found() {
        let mut twice = DELIVERED[1..].to_vec();
        twice.insert(4, OrderStatus::RiderAssigned);
        let order = moved(&twice);
        assert_eq!(
            delivered_once(&order),
            vec![Finding::Steps(
                order.history.iter().map(|h| h.status).collect()
            )]
        );
        let stuck = moved(&DELIVERED[1..5]);
        assert!(matches!(delivered_once(&stuck)[..], [Finding::Steps(_)]));
    }

    #[test]
    fn a_write_applied_twice_or_back_in_time_or_unpaid_is_found() {
        let mut order = moved(&DELIVERED[1..]);
        order.version += 1;
        assert_eq!(
            delivered_once(&order),
            vec![Finding::Version {
                found: 8,
                writes: 7
            }]
        );
        let mut order = moved(&DELIVERED[1..]);
        order.history[3].at = order.history[1].at - Duration::minutes(5);
        assert_eq!(delivered_once(&order), vec![Finding::BackInTime]);
        let mut order = moved(&DELIVERED[1..]);
        order.payment_status = PaymentStatus::Pending;
        order.version -= 1;
        assert_eq!(
            delivered_once(&order),
            vec![Finding::Payment(PaymentStatus::Pending)]
        );
    }
}
