//! Identifiers: the short ids customers and products are known by across
//! the system, the order id, and [`uuid_id!`](crate::uuid_id) for a
//! service's own UUID ids.

use std::fmt;

/// Longest customer or product identifier.
pub const MAX_ID_LEN: usize = 64;

/// Checks a short identifier: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn parse_identifier(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if raw.len() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} characters"));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may contain only letters, digits, '.', '_' and '-'".to_owned());
    }
    Ok(raw.to_owned())
}

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// 1..=64 characters of `[A-Za-z0-9._-]`.
            pub fn parse(raw: &str) -> Result<Self, String> {
                parse_identifier(raw).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A customer, as the order service accepts it and every later step of
    /// the saga names it.
    CustomerId
);

identifier!(
    /// A product of the catalogue, as orders and reservations name it.
    ProductId
);

/// A newtype over a UUID for an id: `new()` (time-ordered, v7), `parse`
/// ("must be a UUID"), `Display` (hyphenated), `Default`, and conversions
/// from and into [`uuid::Uuid`]. The UUID is the public field `.0`.
///
/// ```
/// domain_types::uuid_id! {
///     /// A payment.
///     pub struct PaymentId;
/// }
/// let id = PaymentId::new();
/// assert_eq!(PaymentId::parse(&id.to_string()), Ok(id));
/// ```
#[macro_export]
macro_rules! uuid_id {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis struct $name(pub $crate::uuid::Uuid);

        impl $name {
            /// A new id; later ids sort after earlier ones (UUID v7).
            pub fn new() -> Self {
                Self($crate::uuid::Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Result<Self, String> {
                $crate::uuid::Uuid::parse_str(raw)
                    .map(Self)
                    .map_err(|_| "must be a UUID".to_owned())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$crate::uuid::Uuid> for $name {
            fn from(id: $crate::uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for $crate::uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id! {
    /// An order: the key of every saga message about it.
    pub struct OrderId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_empty_oversize_and_odd_characters() {
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse(&"c".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(CustomerId::parse("bob smith").is_err());
        assert!(ProductId::parse("sku/1").is_err());
        assert_eq!(
            CustomerId::parse(&"c".repeat(MAX_ID_LEN)).map(|id| id.as_str().len()),
            Ok(MAX_ID_LEN)
        );
    }

    #[test]
    fn letters_digits_dots_underscores_and_dashes_make_an_identifier() {
        let id = ProductId::parse("sku-1.eu_West9").expect("valid");
        assert_eq!(id.as_str(), "sku-1.eu_West9");
        assert_eq!(id.to_string(), "sku-1.eu_West9");
    }

    #[test]
    fn an_order_id_is_a_uuid_and_displays_as_one() {
        assert_eq!(OrderId::parse("nope"), Err("must be a UUID".to_owned()));
        let id = OrderId::new();
        assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
        assert_eq!(uuid::Uuid::from(id), id.0);
    }

    #[test]
    fn new_uuid_ids_sort_in_the_order_they_were_made() {
        let first = OrderId::new();
        let second = OrderId::new();
        assert!(first < second);
    }
}
