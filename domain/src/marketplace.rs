//! The marketplace: restaurants, their menus, customers' addresses and carts.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::geo::LatLon;
use crate::ids::{AddressId, CartLineId, MenuItemId, RestaurantId, UserId};
use crate::money::Money;
use crate::user::ParseError;

/// Checks free text: trimmed, `min..=max` characters, no control characters except newlines.
pub fn text(field: &str, raw: &str, min: usize, max: usize) -> Result<String, ParseError> {
    let value = raw.trim();
    // At most `max` as sent (surrounding blanks count: what the published schema says), at
    // least `min` once trimmed.
    if value.chars().count() < min || raw.chars().count() > max {
        return Err(ParseError(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ParseError(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Checks a phone number: an optional leading `+`, then 7 to 15 digits (E.164's length), with
/// spaces and dashes allowed between them and dropped.
pub fn phone(field: &str, raw: &str) -> Result<String, ParseError> {
    let trimmed = raw.trim();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", trimmed),
    };
    let digits: String = rest.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(7..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(ParseError(format!(
            "{field} must be 7 to 15 digits, optionally starting with +"
        )));
    }
    Ok(format!("{plus}{digits}"))
}

/// A menu price: positive minor units, at most 10 million (100 000 rupees) a dish.
pub fn price(raw: i64) -> Result<Money, ParseError> {
    if !(1..=10_000_000).contains(&raw) {
        return Err(ParseError(
            "price must be a whole number of minor units from 1 to 10000000".into(),
        ));
    }
    Ok(Money::from_minor(raw))
}

/// A restaurant. New ones are unverified and closed; only verified ones are listed and take
/// orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restaurant {
    pub id: RestaurantId,
    pub owner_id: UserId,
    pub name: String,
    pub description: String,
    pub image: Option<String>,
    pub phone: String,
    pub location: LatLon,
    pub formatted_address: String,
    pub is_open: bool,
    pub is_verified: bool,
    pub created_at: OffsetDateTime,
}

/// A dish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuItem {
    pub id: MenuItemId,
    pub restaurant_id: RestaurantId,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub image: Option<String>,
    pub category: Option<String>,
    pub is_available: bool,
}

/// A customer's saved delivery address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub id: AddressId,
    pub user_id: UserId,
    pub formatted_address: String,
    pub mobile: String,
    pub location: LatLon,
    pub created_at: OffsetDateTime,
}

/// The most of one dish a cart line may hold.
pub const MAX_QUANTITY: u32 = 50;

/// One line of a cart, priced at the item's current price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub id: CartLineId,
    pub item_id: MenuItemId,
    pub name: String,
    pub price: Money,
    pub quantity: u32,
    pub is_available: bool,
}

/// A customer's cart: lines of one restaurant at a time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cart {
    pub restaurant_id: Option<RestaurantId>,
    pub lines: Vec<CartLine>,
}

impl Cart {
    /// Current price times quantity, summed.
    pub fn subtotal(&self) -> Money {
        self.lines.iter().fold(Money::ZERO, |sum, line| {
            sum + line.price * i64::from(line.quantity)
        })
    }

    /// Dishes in the cart, counting quantities.
    pub fn item_count(&self) -> u32 {
        self.lines.iter().map(|line| line.quantity).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The quantity `item`'s line holds once `quantity` more are added, or the cart rule that
    /// forbids it: a cart holds one restaurant's dishes at a time, and a line at most
    /// [`MAX_QUANTITY`]. Every store backend calls this on the cart it read in the same write.
    pub fn quantity_after_adding(&self, item: &MenuItem, quantity: u32) -> Result<u32, CartRule> {
        if self
            .restaurant_id
            .is_some_and(|restaurant| restaurant != item.restaurant_id)
        {
            return Err(CartRule::OtherRestaurant);
        }
        let held = self
            .lines
            .iter()
            .find(|line| line.item_id == item.id)
            .map_or(0, |line| line.quantity);
        let total = held.saturating_add(quantity);
        if total > MAX_QUANTITY {
            return Err(CartRule::QuantityLimit);
        }
        Ok(total)
    }
}

/// A cart rule an addition would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CartRule {
    #[error("the cart holds another restaurant's dishes; clear it first")]
    OtherRestaurant,
    #[error("a cart line holds at most {MAX_QUANTITY} of a dish")]
    QuantityLimit,
}

impl CartRule {
    /// The stable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            CartRule::OtherRestaurant => "cart_other_restaurant",
            CartRule::QuantityLimit => "quantity_limit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_and_bounded() {
        assert_eq!(
            phone("mobile", " +91 98450-12345 ").expect("valid"),
            "+919845012345"
        );
        assert!(phone("mobile", "12345").is_err());
        assert!(phone("mobile", "98450abcde").is_err());
        assert!(phone("mobile", "+1234567890123456").is_err());
    }

    #[test]
    fn prices_are_positive_and_bounded() {
        assert!(price(0).is_err());
        assert!(price(-100).is_err());
        assert!(price(10_000_001).is_err());
        assert_eq!(price(19900).expect("valid").minor(), 19900);
    }

    #[test]
    fn carts_hold_one_restaurant_and_bounded_lines() {
        let item = |restaurant: RestaurantId| MenuItem {
            id: MenuItemId::new(),
            restaurant_id: restaurant,
            name: "Dosa".into(),
            description: String::new(),
            price: Money::from_minor(100),
            image: None,
            category: None,
            is_available: true,
        };
        let here = RestaurantId::new();
        let dosa = item(here);
        let mut cart = Cart::default();
        assert_eq!(cart.quantity_after_adding(&dosa, 3), Ok(3));
        cart.restaurant_id = Some(here);
        cart.lines.push(CartLine {
            id: CartLineId::new(),
            item_id: dosa.id,
            name: dosa.name.clone(),
            price: dosa.price,
            quantity: 48,
            is_available: true,
        });
        assert_eq!(cart.quantity_after_adding(&dosa, 2), Ok(MAX_QUANTITY));
        assert_eq!(
            cart.quantity_after_adding(&dosa, 3),
            Err(CartRule::QuantityLimit)
        );
        assert_eq!(cart.quantity_after_adding(&item(here), 50), Ok(50));
        assert_eq!(
            cart.quantity_after_adding(&item(RestaurantId::new()), 1),
            Err(CartRule::OtherRestaurant)
        );
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("name", "  Dosa  ", 1, 10).expect("valid"), "Dosa");
        assert!(text("name", "   ", 1, 10).is_err());
        assert!(text("name", "x\u{0}y", 1, 10).is_err());
        assert!(text("name", "abcdefghijk", 1, 10).is_err());
    }
}
