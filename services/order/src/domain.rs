//! Orders as the business sees them: identifiers, line items, addresses and
//! statuses, with the rules a valid order obeys. No IO, no SQL, no proto.

use chrono::{DateTime, Utc};
use domain_types::parse_text;
pub use domain_types::{CustomerId, OrderId, ProductId};

/// Most line items one order may hold.
pub const MAX_ITEMS: usize = 50;
/// Largest quantity of one line item.
pub const MAX_QUANTITY: i32 = 1000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if raw < 1 {
            Err("must be at least 1".to_owned())
        } else if raw > MAX_QUANTITY {
            Err(format!("must be at most {MAX_QUANTITY}"))
        } else {
            Ok(Self(raw))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// An empty key means the client sent none.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(format!(
                "must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters"
            ));
        }
        if !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err("may contain only printable ASCII without spaces".to_owned());
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// An ISO 3166-1 alpha-2 country code, upper case.
pub fn parse_country_code(raw: &str) -> Result<String, String> {
    if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code such as \"GB\"".to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country_code: String,
}

/// An order as placed by a customer, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewOrder {
    /// Whether `self` asks for the same order as `existing` does, which a
    /// repeated idempotency key requires.
    pub fn matches(&self, existing: &Order) -> bool {
        self.customer_id == existing.customer_id
            && self.items == existing.items
            && self.shipping_address == existing.shipping_address
    }
}

impl NewOrder {
    /// The order as stored when it is placed: pending, with one history entry.
    pub fn into_order(
        self,
        id: OrderId,
        created_at: DateTime<Utc>,
        trace_id: Option<String>,
    ) -> Order {
        Order {
            id,
            customer_id: self.customer_id,
            status: OrderStatus::Pending,
            rejection_reason: None,
            items: self.items,
            shipping_address: self.shipping_address,
            history: vec![StatusChange {
                status: OrderStatus::Pending,
                reason: None,
                at: created_at,
            }],
            created_at,
            trace_id,
        }
    }
}

/// Checks the rules that span several items; `Err` holds the index of the
/// offending item and what is wrong.
pub fn check_items(items: &[LineItem]) -> Result<(), Vec<(usize, String)>> {
    let mut problems = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if items[..index]
            .iter()
            .any(|earlier| earlier.product_id == item.product_id)
        {
            problems.push((
                index,
                "product appears more than once; merge the quantities".to_owned(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Approved,
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "PENDING" => Some(Self::Pending),
            "APPROVED" => Some(Self::Approved),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// Longest rejection reason kept on an order.
pub const MAX_REASON_LEN: usize = 500;

/// Why the saga rejected an order, e.g. `"reserve_stock: OUT_OF_STOCK"`:
/// non-empty, bounded, without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionReason(String);

impl RejectionReason {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("rejection reason must not be empty".to_owned());
        }
        parse_text(raw, 1, MAX_REASON_LEN)
            .map(Self)
            .map_err(|problem| format!("rejection reason {problem}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The saga's verdict on a pending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject(RejectionReason),
}

impl Verdict {
    /// The status an order has once the verdict took effect.
    pub fn target(&self) -> OrderStatus {
        match self {
            Self::Approve => OrderStatus::Approved,
            Self::Reject(_) => OrderStatus::Rejected,
        }
    }
}

/// What applying a verdict to an order's current status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The order moves to the verdict's status: record it.
    Apply,
    /// The order already has the verdict's status (a re-sent command):
    /// nothing changes, the outcome is announced again.
    AlreadyDone,
}

/// A verdict that contradicts the order's final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("order is {} and cannot become {}", .from.as_str(), .to.as_str())]
pub struct TransitionRefused {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// The order status rules: PENDING ends APPROVED or REJECTED, once; a final
/// status never changes, and reaching it again is a no-op.
pub fn transition(
    current: OrderStatus,
    verdict: &Verdict,
) -> Result<Transition, TransitionRefused> {
    let target = verdict.target();
    match current {
        OrderStatus::Pending => Ok(Transition::Apply),
        status if status == target => Ok(Transition::AlreadyDone),
        from => Err(TransitionRefused { from, to: target }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: OrderStatus,
    pub rejection_reason: Option<String>,
    pub items: Vec<LineItem>,
    pub shipping_address: Address,
    pub history: Vec<StatusChange>,
    pub created_at: DateTime<Utc>,
    pub trace_id: Option<String>,
}

/// Position in a customer's order list, newest first: the creation time
/// and id of the last order seen (tokens of `ListOrders`).
pub type PageCursor = domain_types::NewestFirst<OrderId>;

#[cfg(test)]
mod tests {
    use super::*;

    fn item(product: &str, quantity: i32) -> LineItem {
        LineItem {
            product_id: ProductId::parse(product).expect("valid product"),
            quantity: Quantity::parse(quantity).expect("valid quantity"),
        }
    }

    #[test]
    fn quantity_must_be_between_one_and_the_maximum() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(MAX_QUANTITY + 1).is_err());
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(
            Quantity::parse(MAX_QUANTITY).map(Quantity::get),
            Ok(MAX_QUANTITY)
        );
    }

    #[test]
    fn an_empty_idempotency_key_means_none() {
        assert_eq!(IdempotencyKey::parse(""), Ok(None));
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)).is_err());
        assert!(matches!(IdempotencyKey::parse("key-1"), Ok(Some(_))));
    }

    #[test]
    fn a_product_listed_twice_is_reported_at_its_second_position() {
        let items = [item("a", 1), item("b", 2), item("a", 3)];
        let problems = check_items(&items).expect_err("duplicate");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 2);
    }

    #[test]
    fn country_codes_are_two_upper_case_letters() {
        assert!(parse_country_code("GB").is_ok());
        assert!(parse_country_code("gb").is_err());
        assert!(parse_country_code("GBR").is_err());
    }

    fn reject(reason: &str) -> Verdict {
        Verdict::Reject(RejectionReason::parse(reason).expect("valid reason"))
    }

    #[test]
    fn a_pending_order_can_be_approved_or_rejected() {
        assert_eq!(
            transition(OrderStatus::Pending, &Verdict::Approve),
            Ok(Transition::Apply)
        );
        assert_eq!(
            transition(OrderStatus::Pending, &reject("reserve_stock: OUT_OF_STOCK")),
            Ok(Transition::Apply)
        );
    }

    #[test]
    fn reaching_the_same_final_status_again_changes_nothing() {
        assert_eq!(
            transition(OrderStatus::Approved, &Verdict::Approve),
            Ok(Transition::AlreadyDone)
        );
        assert_eq!(
            transition(OrderStatus::Rejected, &reject("other reason")),
            Ok(Transition::AlreadyDone)
        );
    }

    #[test]
    fn a_final_status_never_turns_into_the_other() {
        assert_eq!(
            transition(OrderStatus::Rejected, &Verdict::Approve),
            Err(TransitionRefused {
                from: OrderStatus::Rejected,
                to: OrderStatus::Approved
            })
        );
        let refused = transition(OrderStatus::Approved, &reject("late")).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "order is APPROVED and cannot become REJECTED"
        );
    }

    #[test]
    fn a_rejection_reason_must_be_present_and_printable() {
        assert!(RejectionReason::parse("").is_err());
        assert!(RejectionReason::parse("   ").is_err());
        assert!(RejectionReason::parse("bad\nline").is_err());
        assert!(RejectionReason::parse(&"r".repeat(MAX_REASON_LEN + 1)).is_err());
        assert_eq!(
            RejectionReason::parse("create_shipment: TIMEOUT").map(|r| r.as_str().to_owned()),
            Ok("create_shipment: TIMEOUT".to_owned())
        );
    }

    #[test]
    fn page_tokens_handed_out_before_keep_decoding() {
        // The format ListOrders has always used: `<micros>.<order id>`.
        let token = "1700000000123456.0190a5f3-7c1e-7d2a-9b4e-3f6a1c2d4e5f";
        let cursor = PageCursor::decode(token, "ListOrders").expect("old token");
        assert_eq!(cursor.created_at.timestamp_micros(), 1_700_000_000_123_456);
        assert_eq!(
            cursor.id.to_string(),
            "0190a5f3-7c1e-7d2a-9b4e-3f6a1c2d4e5f"
        );
        assert_eq!(cursor.encode(), token);
        assert_eq!(
            PageCursor::decode("12.not-a-uuid", "ListOrders"),
            Err("is not a token returned by ListOrders".to_owned())
        );
    }
}
