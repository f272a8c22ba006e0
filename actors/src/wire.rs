//! The actors' messages, replies and errors survive a trip through JSON unchanged: the cluster
//! sends them to the node that owns the order or rider, and a kind or code lost on the way would
//! change what the client sees.

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tomato_domain::{
    ErrorKind, LatLon, OrderCommand, OrderId, OrderStatus, PaymentStatus, RiderId, TransitionError,
};
use tomato_store::{Conflict, StoreError};

use crate::{Accept, Apply, Moved, OrderError, Reject, StoreFault, TakeOrder};

fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).expect("serialises");
    serde_json::from_str(&text).expect("deserialises")
}

#[test]
fn commands_cross_unchanged() {
    let rider = RiderId::new();
    for command in [
        OrderCommand::ConfirmPayment,
        OrderCommand::Expire,
        OrderCommand::CancelByCustomer,
        OrderCommand::SetBySeller(OrderStatus::Preparing),
        OrderCommand::AssignRider {
            rider,
            name: "Asha".into(),
            phone: "+919845012345".into(),
        },
        OrderCommand::SetByRider {
            rider,
            status: OrderStatus::PickedUp,
        },
        OrderCommand::SettleRefund,
    ] {
        let apply = round_trip(&Apply {
            command: command.clone(),
            repeat: true,
        });
        assert_eq!((apply.command, apply.repeat), (command, true));
    }
    let accept = round_trip(&Accept {
        rider,
        name: "Asha".into(),
        phone: "+919845012345".into(),
        repeat: false,
    });
    assert_eq!((accept.rider, accept.name.as_str()), (rider, "Asha"));
    let reject = round_trip(&Reject {
        rider,
        repeat: false,
    });
    assert_eq!(reject.rider, rider);
    let order = OrderId::new();
    let take = round_trip(&TakeOrder {
        order,
        shard: 7,
        name: "Asha".into(),
        phone: "+919845012345".into(),
    });
    assert_eq!((take.order, take.shard), (order, 7));
    let at = LatLon::new(12.97, 77.59).expect("valid");
    let seen_at = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
    let moved = round_trip(&Moved { at, seen_at });
    assert_eq!((moved.at, moved.seen_at), (at, seen_at));
}

#[test]
fn errors_keep_kind_and_code() {
    let errors = [
        OrderError::Transition(TransitionError {
            command: OrderCommand::Expire,
            status: OrderStatus::Delivered,
            payment: PaymentStatus::Paid,
        }),
        OrderError::NotFound,
        OrderError::OfferNotHeld,
        OrderError::AlreadyTaken,
        OrderError::RiderBusy,
        OrderError::from(StoreError::Conflict(Conflict::UnpaidOrderExists)),
        OrderError::from(StoreError::Unavailable("timed out".into())),
        OrderError::Crashed,
        OrderError::Unavailable,
        OrderError::NotOwner,
        OrderError::Stale,
    ];
    for err in errors {
        let back = round_trip(&err);
        assert_eq!(back, err);
        assert_eq!((back.kind(), back.code()), (err.kind(), err.code()));
    }
    let conflict = OrderError::from(StoreError::Conflict(Conflict::UnpaidOrderExists));
    assert_eq!(
        (conflict.kind(), conflict.code()),
        (ErrorKind::Conflict, "unpaid_order_exists")
    );
    assert!(matches!(
        OrderError::from(StoreError::Stale),
        OrderError::Stale
    ));
    let fault = StoreFault::from(StoreError::Backend("disk full".into()));
    assert_eq!(
        (fault.kind, fault.code.as_str()),
        (ErrorKind::Internal, "internal")
    );
    assert!(fault.message.contains("disk full"), "{}", fault.message);
}
