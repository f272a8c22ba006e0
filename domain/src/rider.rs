//! Riders: the profile a user with role rider registers, and its identity documents.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::geo::LatLon;
use crate::ids::{OrderId, RiderId, UserId};
use crate::user::ParseError;

/// A rider's profile. Where the rider is *now* lives in the shards' in-memory index; `location`
/// and `last_seen_at` here are the last written-behind snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rider {
    pub id: RiderId,
    pub user_id: UserId,
    pub name: String,
    pub phone_number: String,
    pub aadhar_number: String,
    pub driving_license_number: String,
    pub picture: Option<String>,
    pub is_verified: bool,
    pub is_available: bool,
    pub location: LatLon,
    pub last_seen_at: OffsetDateTime,
    pub current_order_id: Option<OrderId>,
    pub created_at: OffsetDateTime,
}

impl Rider {
    /// Whether dispatch may offer this rider work: verified, online, and carrying nothing.
    pub fn is_dispatchable(&self) -> bool {
        self.is_verified && self.is_available && self.current_order_id.is_none()
    }
}

/// An Aadhaar number: 12 digits (spaces allowed between groups and dropped).
pub fn aadhar(raw: &str) -> Result<String, ParseError> {
    let digits: String = raw.chars().filter(|c| *c != ' ').collect();
    if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(ParseError("aadharNumber must be 12 digits".into()));
    }
    Ok(digits)
}

/// A driving licence number: 8 to 20 letters and digits once spaces and dashes are dropped,
/// upper-cased (Indian licences look like `KA0120190001234`).
pub fn driving_license(raw: &str) -> Result<String, ParseError> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(8..=20).contains(&cleaned.len()) || !cleaned.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ParseError(
            "drivingLicenseNumber must be 8 to 20 letters and digits".into(),
        ));
    }
    Ok(cleaned)
}

/// Shows only the last 4 characters: `XXXXXXXX1234`.
pub fn mask(document: &str) -> String {
    let count = document.chars().count();
    document
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < count { 'X' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_validated_and_masked() {
        assert_eq!(aadhar("1234 5678 9012").expect("valid"), "123456789012");
        assert!(aadhar("1234").is_err());
        assert!(aadhar("1234567890ab").is_err());
        assert_eq!(
            driving_license("ka01-2019 0001234").expect("valid"),
            "KA0120190001234"
        );
        assert!(driving_license("short").is_err());
        assert!(driving_license("KA01/2019/0001234").is_err());
        assert_eq!(mask("123456789012"), "XXXXXXXX9012");
        assert_eq!(mask("abc"), "abc");
    }
}
