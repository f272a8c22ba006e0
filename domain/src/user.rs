//! Users and their roles. A user is who signed in (by Google or, in development, by e-mail alone);
//! the role decides what the user may do, and `role_version` lets tokens minted before a role
//! change be told apart from the ones minted after it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::UserId;

/// What a user acts as. Customer, seller and rider can be switched between by the user; admin is
/// granted only by configuration or the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Seller,
    Rider,
    Admin,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Customer, Role::Seller, Role::Rider, Role::Admin];

    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Seller => "seller",
            Role::Rider => "rider",
            Role::Admin => "admin",
        }
    }

    /// Whether a user may switch to this role on their own.
    pub fn is_self_assignable(self) -> bool {
        !matches!(self, Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| ParseError(format!("unknown role {s:?}")))
    }
}

/// Why a value could not be parsed; the message is safe to show to the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A normalised e-mail address: trimmed, lower-cased, one `@` with something on either side.
/// Deliverability is the identity provider's business; this only keeps junk out of the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest address RFC 5321 allows.
    pub const MAX_LEN: usize = 254;

    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() || email.len() > Self::MAX_LEN {
            return Err(ParseError(format!(
                "email must be 1 to {} characters",
                Self::MAX_LEN
            )));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(ParseError("email must contain @".into()));
        };
        let well_formed = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !well_formed {
            return Err(ParseError("email is not a valid address".into()));
        }
        Ok(Self(email))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`, a fallback display name.
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(local, _)| local)
    }
}

impl TryFrom<String> for Email {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonName(String);

impl PersonName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let name = raw.trim();
        // As sent, blanks included (what the published schema says), and not blank.
        if name.is_empty() || raw.chars().count() > Self::MAX_CHARS {
            return Err(ParseError(format!(
                "name must be 1 to {} characters",
                Self::MAX_CHARS
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(ParseError(
                "name must not contain control characters".into(),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name of an account created from an e-mail alone (an admin granted before signing
    /// in): the e-mail's local part, which an e-mail's own rules keep short and printable.
    pub fn from_email(email: &Email) -> Self {
        Self::parse(email.local_part()).unwrap_or_else(|_| Self("admin".to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PersonName {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PersonName> for String {
    fn from(name: PersonName) -> Self {
        name.0
    }
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: PersonName,
    pub email: Email,
    /// Profile picture URL, when the identity provider gave one.
    pub image: Option<String>,
    pub role: Role,
    /// Bumped on every role change; tokens carry the version they were minted at.
    pub role_version: u32,
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn roles_round_trip_and_admin_is_not_self_assignable() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(!Role::Admin.is_self_assignable());
        assert!(Role::Rider.is_self_assignable());
    }

    #[test]
    fn emails_are_normalised() {
        let email = Email::parse("  Asha.K@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "asha.k@example.com");
        assert_eq!(email.local_part(), "asha.k");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "", "   ", "no-at", "@x.com", "a@", "a@b@c", "a b@c.d", "a@.com", "a@com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(260))).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse(" Asha ").expect("valid").as_str(), "Asha");
        assert!(PersonName::parse("  ").is_err());
        assert!(PersonName::parse("bell\u{7}").is_err());
        assert!(PersonName::parse(&"x".repeat(101)).is_err());
        assert!(PersonName::parse(&"é".repeat(100)).is_ok());
    }

    proptest! {
        #[test]
        fn parsed_emails_are_stable(raw in "\\PC{0,40}") {
            if let Ok(email) = Email::parse(&raw) {
                // Parsing is idempotent: a normalised address parses to itself.
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
                prop_assert!(email.as_str().len() <= Email::MAX_LEN);
            }
        }

        #[test]
        fn parsed_names_are_stable(raw in "\\PC{0,120}") {
            if let Ok(name) = PersonName::parse(&raw) {
                prop_assert_eq!(PersonName::parse(name.as_str()), Ok(name.clone()));
            }
        }
    }
}
