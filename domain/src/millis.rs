//! Instants at the precision the stores keep: milliseconds. A value truncated here before it is
//! stored reads back equal, so what a write hands back is what a later read returns.

use time::OffsetDateTime;

/// `at` truncated to the millisecond.
pub fn to_ms(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at)
}

/// Now, truncated to the millisecond.
pub fn now_ms() -> OffsetDateTime {
    to_ms(OffsetDateTime::now_utc())
}

/// `at` in milliseconds since the Unix epoch (saturating far past the year 292 million).
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_survive_and_the_rest_goes() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("at");
        assert_eq!(to_ms(at).nanosecond(), 123_000_000);
        assert_eq!(unix_ms(at), 1_700_000_000_123);
        assert_eq!(unix_ms(to_ms(at)), unix_ms(at));
        assert_eq!(to_ms(to_ms(at)), to_ms(at));
    }
}
