//! Money: an amount in minor units (cents) of an ISO 4217 currency.

use std::fmt;

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 4217 code of three upper-case letters such as \"EUR\"".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in minor units (cents) of a currency. Which amounts are
/// allowed (a price, a balance, a charge) is the using service's rule:
/// check the units with [`Money::check_non_negative`] or
/// [`Money::check_positive`] before building one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

impl Money {
    pub fn new(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// Minor units that must be zero or more (a price, a balance).
    pub fn check_non_negative(minor_units: i64) -> Result<i64, String> {
        if minor_units < 0 {
            Err("must not be negative".to_owned())
        } else {
            Ok(minor_units)
        }
    }

    /// Minor units that must be more than zero (a top-up, a charge).
    pub fn check_positive(minor_units: i64) -> Result<i64, String> {
        if minor_units <= 0 {
            Err("must be more than zero".to_owned())
        } else {
            Ok(minor_units)
        }
    }
}

/// `1999 EUR`: minor units and currency, as logs show it.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor_units, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_currency_is_three_upper_case_letters() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".into())
        );
        for bad in ["eur", "EURO", "EU", "", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn money_keeps_its_minor_units_and_currency_and_shows_both() {
        let money = Money::new(1_999, Currency::parse("EUR").expect("currency"));
        assert_eq!(money.minor_units(), 1_999);
        assert_eq!(money.currency().as_str(), "EUR");
        assert_eq!(money.to_string(), "1999 EUR");
    }

    #[test]
    fn zero_is_non_negative_but_not_positive() {
        assert_eq!(Money::check_non_negative(0), Ok(0));
        assert!(Money::check_non_negative(-1).is_err());
        assert!(Money::check_positive(0).is_err());
        assert!(Money::check_positive(-5).is_err());
        assert_eq!(Money::check_positive(1), Ok(1));
    }
}
