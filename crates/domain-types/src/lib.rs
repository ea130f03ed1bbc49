//! Domain value types that mean the same in every service: the short
//! identifiers a customer or product is known by, the order id every saga
//! message is keyed by (and the macro that makes a service's own UUID ids),
//! ISO 4217 currencies and money in minor units, bounded free text, page
//! sizes and the page tokens of lists ordered newest first.
//!
//! Pure: no async, no SQL, no proto, no tonic. A rule that belongs to one
//! service (a price is never negative, a charge is positive) stays in that
//! service, which picks the check it needs from here.

pub mod id;
pub mod money;
pub mod page;
pub mod text;

pub use id::{CustomerId, MAX_ID_LEN, OrderId, ProductId};
pub use money::{Currency, Money};
pub use page::{NewestFirst, PageSize, parse_page_token};
pub use text::{parse_multiline_text, parse_text};

/// Re-exported for [`uuid_id!`], so a service need not name it.
pub use uuid;
