//! The binary form of a region's batch of positions, the one message every copying node decodes
//! for every position of its regions. postcard (varints, no field names): a position takes 43
//! bytes or less where the JSON envelope took 165, and decoding it parses no text (no UUID or
//! RFC 3339 strings). A room's event travels as its sender and its JSON side by side, so a node
//! that hears its own event back skips it without parsing the JSON, and the JSON is not escaped
//! into a second JSON string. Everything else between nodes stays JSON, rare enough to be read
//! by eye in `redis-cli monitor`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tomato_domain::{LatLon, RiderId};
use tomato_shards::Position;

/// A batch as it travels.
#[derive(Serialize, Deserialize)]
struct Batch<'a> {
    from: &'a str,
    positions: Vec<Wire>,
}

/// A position as it travels: the rider's UUID as 16 bytes, the time as Unix nanoseconds, the
/// rider's dispatchable flag as one byte (0 unknown, 1 no, 2 yes).
#[derive(Serialize, Deserialize)]
struct Wire {
    rider: RiderId,
    lat: f64,
    lon: f64,
    seen_at_ns: i64,
    flag: u8,
}

/// The bytes of `from`'s batch of `positions`.
pub(crate) fn encode(from: &str, positions: &[Position]) -> Option<Vec<u8>> {
    let positions = positions
        .iter()
        .map(|p| Wire {
            rider: p.rider,
            lat: p.at.lat(),
            lon: p.at.lon(),
            // Unix nanoseconds fit an i64 until 2262.
            seen_at_ns: i64::try_from(p.seen_at.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            flag: match p.dispatchable {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            },
        })
        .collect();
    postcard::to_allocvec(&Batch { from, positions }).ok()
}

/// Who sent a batch and its positions; `None` for bytes that are not a batch. A position out
/// of range (which no node sends) is left out rather than trusted.
pub(crate) fn decode(bytes: &[u8]) -> Option<(String, Vec<Position>)> {
    let batch: Batch<'_> = postcard::from_bytes(bytes).ok()?;
    let positions = batch
        .positions
        .into_iter()
        .filter_map(|w| {
            Some(Position {
                rider: w.rider,
                at: LatLon::new(w.lat, w.lon).ok()?,
                seen_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(w.seen_at_ns))
                    .ok()?,
                dispatchable: match w.flag {
                    1 => Some(false),
                    2 => Some(true),
                    _ => None,
                },
            })
        })
        .collect();
    Some((batch.from.to_owned(), positions))
}

/// Who sent a batch or an event, read without decoding the rest: both begin with their
/// sender.
pub(crate) fn sender(bytes: &[u8]) -> Option<&str> {
    postcard::take_from_bytes::<&str>(bytes)
        .ok()
        .map(|(from, _)| from)
}

/// A room's event as it travels: who sent it and its JSON, as is.
#[derive(Serialize, Deserialize)]
struct Event<'a> {
    from: &'a str,
    payload: &'a str,
}

/// The bytes of `from`'s event `payload`.
pub(crate) fn encode_event(from: &str, payload: &str) -> Option<Vec<u8>> {
    postcard::to_allocvec(&Event { from, payload }).ok()
}

/// Who sent an event and its payload; `None` for bytes that are not an event.
pub(crate) fn decode_event(bytes: &[u8]) -> Option<(String, String)> {
    let event: Event<'_> = postcard::from_bytes(bytes).ok()?;
    Some((event.from.to_owned(), event.payload.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn position(lat: f64, lon: f64, nanos: i64) -> Position {
        Position {
            rider: RiderId::new(),
            at: LatLon::new(lat, lon).expect("a point"),
            seen_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).expect("a time"),
            dispatchable: match nanos % 3 {
                0 => None,
                1 => Some(false),
                _ => Some(true),
            },
        }
    }

    proptest! {
        #[test]
        fn a_batch_comes_back_as_it_went(
            points in proptest::collection::vec(
                (-90.0f64..=90.0, -180.0f64..=180.0, 0i64..4_000_000_000_000_000_000),
                0..50,
            )
        ) {
            let sent: Vec<Position> =
                points.iter().map(|(lat, lon, ns)| position(*lat, *lon, *ns)).collect();
            let bytes = encode("node-a", &sent).expect("encoded");
            prop_assert!(bytes.len() <= 8 + 43 * sent.len());
            prop_assert_eq!(sender(&bytes), Some("node-a"));
            prop_assert_eq!(decode(&bytes), Some(("node-a".to_owned(), sent)));
        }
    }

    #[test]
    fn a_position_of_today_takes_43_bytes_or_less() {
        let one =
            encode("n", &[position(12.97, 77.59, 1_796_000_000_123_456_789)]).expect("encoded");
        let two = encode(
            "n",
            &[
                position(12.97, 77.59, 1_796_000_000_123_456_789),
                position(12.98, 77.6, 1_796_000_001_123_456_789),
            ],
        )
        .expect("encoded");
        assert!(
            two.len() - one.len() <= 43,
            "{} bytes",
            two.len() - one.len()
        );
    }

    #[test]
    fn bytes_that_are_not_a_batch_are_refused() {
        assert_eq!(decode(b"{\"kind\":\"positions\"}"), None);
        assert_eq!(decode(&[]), None);
        let bytes = encode("n", &[position(1.0, 2.0, 3)]).expect("encoded");
        assert_eq!(decode(&bytes[..bytes.len() - 3]), None);
    }

    #[test]
    fn a_position_out_of_range_is_left_out() {
        let bytes = postcard::to_allocvec(&Batch {
            from: "n",
            positions: vec![
                Wire {
                    rider: RiderId::new(),
                    lat: f64::NAN,
                    lon: 0.0,
                    seen_at_ns: 0,
                    flag: 0,
                },
                Wire {
                    rider: RiderId::new(),
                    lat: 10.0,
                    lon: 200.0,
                    seen_at_ns: 0,
                    flag: 0,
                },
            ],
        })
        .expect("encoded");
        assert_eq!(decode(&bytes), Some(("n".to_owned(), Vec::new())));
    }

    proptest! {
        #[test]
        fn an_event_comes_back_as_it_went(from in "[a-z0-9-]{0,20}", payload in ".{0,200}") {
            let bytes = encode_event(&from, &payload).expect("encoded");
            prop_assert_eq!(sender(&bytes), Some(from.as_str()));
            prop_assert_eq!(decode_event(&bytes), Some((from, payload)));
        }
    }

    #[test]
    fn bytes_that_are_not_an_event_are_refused() {
        assert_eq!(decode_event(&[]), None);
        assert_eq!(sender(&[]), None);
        let bytes = encode_event("node-1", "{\"room\":\"user:1\"}").expect("encoded");
        assert_eq!(decode_event(&bytes[..bytes.len() - 1]), None);
        // A length past the end.
        assert_eq!(decode_event(&[200, 1, b'a']), None);
    }
}
