//! Products, money and stock reservations as the business sees them, with the
//! rules they obey: which reservation an order gets from the products it
//! locked, what a re-sent command is answered, what a release gives back.
//! No IO, no SQL, no proto.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

pub use domain_types::{Currency, Money, OrderId, ProductId};

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 2000;
/// Most lines one reservation may hold.
pub const MAX_LINES: usize = 100;

/// A unit price: never negative.
pub fn unit_price(minor_units: i64, currency: Currency) -> Result<Money, String> {
    Money::check_non_negative(minor_units).map(|minor_units| Money::new(minor_units, currency))
}

/// How many units a line asks for: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if raw < 1 {
            Err("must be at least 1".to_owned())
        } else {
            Ok(Self(raw))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Units in stock: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stock(i32);

impl Stock {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if raw < 0 {
            Err("must not be negative".to_owned())
        } else {
            Ok(Self(raw))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }

    /// The stock after adding `delta`; `Err` when it would fall below zero
    /// or past the largest representable stock.
    pub fn adjusted(self, delta: StockDelta) -> Result<Self, AdjustError> {
        match self.0.checked_add(delta.0) {
            Some(n) if n < 0 => Err(AdjustError::BelowZero { stock: self.0 }),
            Some(n) => Ok(Self(n)),
            None => Err(AdjustError::TooLarge),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdjustError {
    #[error("stock would fall below zero (it is {stock})")]
    BelowZero { stock: i32 },
    #[error("stock would exceed the largest storable value")]
    TooLarge,
}

/// A non-zero change of stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i32);

impl StockDelta {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if raw == 0 {
            Err("must not be zero".to_owned())
        } else {
            Ok(Self(raw))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A product as created through the API, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub unit_price: Money,
    pub stock: Stock,
}

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub unit_price: Money,
    pub stock: Stock,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Position in the product list, ordered by id: the last id seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub after: ProductId,
}

impl PageCursor {
    const PREFIX: &'static str = "p1";

    /// An opaque token: a version prefix and the id in hex.
    pub fn encode(&self) -> String {
        let mut token = String::from(Self::PREFIX);
        for byte in self.after.as_str().bytes() {
            token.push_str(&format!("{byte:02x}"));
        }
        token
    }

    pub fn decode(token: &str) -> Result<Self, String> {
        let invalid = || "is not a token returned by ListProducts".to_owned();
        let hex = token.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(invalid());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid())?;
        let id = String::from_utf8(bytes).map_err(|_| invalid())?;
        Ok(Self {
            after: ProductId::parse(&id).map_err(|_| invalid())?,
        })
    }
}

// ---- reservations ----

/// One line of an order the saga wants reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// A valid ReserveStock command: one or more lines, each product once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    pub order_id: OrderId,
    lines: Vec<OrderLine>,
}

impl ReserveRequest {
    pub fn new(order_id: OrderId, lines: Vec<OrderLine>) -> Result<Self, String> {
        if lines.is_empty() {
            return Err("the order has no lines".to_owned());
        }
        if lines.len() > MAX_LINES {
            return Err(format!("the order has more than {MAX_LINES} lines"));
        }
        let mut seen = BTreeSet::new();
        for line in &lines {
            if !seen.insert(&line.product_id) {
                return Err(format!(
                    "product {} appears on more than one line",
                    line.product_id
                ));
            }
        }
        Ok(Self { order_id, lines })
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The products to lock, in id order: the one order every transaction
    /// locks in, so concurrent reservations never deadlock.
    pub fn product_ids(&self) -> Vec<ProductId> {
        let ids: BTreeSet<&ProductId> = self.lines.iter().map(|l| &l.product_id).collect();
        ids.into_iter().cloned().collect()
    }
}

/// A product as a reservation sees it, locked for the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedProduct {
    pub id: ProductId,
    pub unit_price: Money,
    pub stock: Stock,
}

/// A line as reserved: its quantity at the unit price of the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub unit_price: Money,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    OutOfStock,
    UnknownProduct,
    CurrencyMismatch,
    /// A release came first, or the reservation was released already.
    OrderReleased,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::UnknownProduct => "UNKNOWN_PRODUCT",
            Self::CurrencyMismatch => "CURRENCY_MISMATCH",
            Self::OrderReleased => "ORDER_RELEASED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "OUT_OF_STOCK" => Some(Self::OutOfStock),
            "UNKNOWN_PRODUCT" => Some(Self::UnknownProduct),
            "CURRENCY_MISMATCH" => Some(Self::CurrencyMismatch),
            "ORDER_RELEASED" => Some(Self::OrderReleased),
            _ => None,
        }
    }

    /// The label of the outcome in metrics, e.g. `out_of_stock`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::UnknownProduct => "unknown_product",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::OrderReleased => "order_released",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: FailureReason,
    /// The product that could not be reserved, if one is to blame.
    pub product_id: Option<ProductId>,
}

/// The answer to a ReserveStock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveAnswer {
    Reserved {
        lines: Vec<ReservedLine>,
        total: Money,
    },
    Refused(Refusal),
}

/// The sum of quantity times unit price overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the order total does not fit in 64 bits of minor units")]
pub struct TotalOverflow;

/// The total of `lines`, which share one currency; `None` for no lines.
pub fn total_of(lines: &[ReservedLine]) -> Result<Option<Money>, TotalOverflow> {
    let Some(first) = lines.first() else {
        return Ok(None);
    };
    let mut sum: i64 = 0;
    for line in lines {
        let amount = line
            .unit_price
            .minor_units()
            .checked_mul(i64::from(line.quantity.get()))
            .ok_or(TotalOverflow)?;
        sum = sum.checked_add(amount).ok_or(TotalOverflow)?;
    }
    Ok(Some(Money::new(sum, first.unit_price.currency().clone())))
}

/// Decides a reservation from the products locked for it (those of
/// `request` that exist, any order): every line or none. Checks, each
/// naming the first offending product in id order: every product exists,
/// all share one currency, each has enough stock. On success the lines
/// keep the request's order and carry the current unit prices.
pub fn decide(
    request: &ReserveRequest,
    locked: &[LockedProduct],
) -> Result<ReserveAnswer, TotalOverflow> {
    let by_id: BTreeMap<&ProductId, &LockedProduct> = locked.iter().map(|p| (&p.id, p)).collect();
    let refuse = |reason, product_id: &ProductId| {
        Ok(ReserveAnswer::Refused(Refusal {
            reason,
            product_id: Some(product_id.clone()),
        }))
    };
    let ids = request.product_ids();
    if let Some(unknown) = ids.iter().find(|id| !by_id.contains_key(id)) {
        return refuse(FailureReason::UnknownProduct, unknown);
    }
    let products: Vec<&LockedProduct> =
        ids.iter().filter_map(|id| by_id.get(id).copied()).collect();
    if let Some(first) = products.first()
        && let Some(other) = products
            .iter()
            .find(|p| p.unit_price.currency() != first.unit_price.currency())
    {
        return refuse(FailureReason::CurrencyMismatch, &other.id);
    }
    let wanted: BTreeMap<&ProductId, i32> = request
        .lines
        .iter()
        .map(|l| (&l.product_id, l.quantity.get()))
        .collect();
    if let Some(short) = products
        .iter()
        .find(|p| p.stock.get() < wanted.get(&p.id).copied().unwrap_or(0))
    {
        return refuse(FailureReason::OutOfStock, &short.id);
    }
    let lines: Vec<ReservedLine> = request
        .lines
        .iter()
        .filter_map(|line| {
            by_id.get(&line.product_id).map(|p| ReservedLine {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                unit_price: p.unit_price.clone(),
            })
        })
        .collect();
    let total = total_of(&lines)?.ok_or(TotalOverflow)?;
    Ok(ReserveAnswer::Reserved { lines, total })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Released,
    Failed,
    Tombstone,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Released => "RELEASED",
            Self::Failed => "FAILED",
            Self::Tombstone => "TOMBSTONE",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "RESERVED" => Some(Self::Reserved),
            "RELEASED" => Some(Self::Released),
            "FAILED" => Some(Self::Failed),
            "TOMBSTONE" => Some(Self::Tombstone),
            _ => None,
        }
    }
}

/// What the inventory recorded for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: OrderId,
    pub status: ReservationStatus,
    /// What is (RESERVED) or was (RELEASED) held; empty otherwise.
    pub lines: Vec<ReservedLine>,
    /// Why it was refused, when FAILED.
    pub failure: Option<Refusal>,
    pub updated_at: DateTime<Utc>,
}

impl Reservation {
    /// The answer to a ReserveStock re-sent for this order: exactly the
    /// first answer, or ORDER_RELEASED once stock was given back or a
    /// release came first.
    pub fn repeated_answer(&self) -> Result<ReserveAnswer, TotalOverflow> {
        let released = || {
            ReserveAnswer::Refused(Refusal {
                reason: FailureReason::OrderReleased,
                product_id: None,
            })
        };
        Ok(match self.status {
            ReservationStatus::Reserved => ReserveAnswer::Reserved {
                lines: self.lines.clone(),
                total: total_of(&self.lines)?.ok_or(TotalOverflow)?,
            },
            ReservationStatus::Failed => match &self.failure {
                Some(refusal) => ReserveAnswer::Refused(refusal.clone()),
                None => released(),
            },
            ReservationStatus::Released | ReservationStatus::Tombstone => released(),
        })
    }

    pub fn total(&self) -> Result<Option<Money>, TotalOverflow> {
        total_of(&self.lines)
    }
}

/// What a ReleaseStock does for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleasePlan {
    /// Give back exactly these lines and mark the reservation RELEASED.
    GiveBack(Vec<ReservedLine>),
    /// Nothing held: refused before, or released already.
    NothingToDo(ReservationStatus),
    /// Never reserved: leave a tombstone so a late reservation is refused.
    Tombstone,
}

impl ReleasePlan {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::GiveBack(_) => "released",
            Self::NothingToDo(ReservationStatus::Failed) => "nothing_reserved",
            Self::NothingToDo(_) => "already_released",
            Self::Tombstone => "tombstone",
        }
    }
}

pub fn plan_release(existing: Option<&Reservation>) -> ReleasePlan {
    match existing {
        None => ReleasePlan::Tombstone,
        Some(r) if r.status == ReservationStatus::Reserved => {
            ReleasePlan::GiveBack(r.lines.clone())
        }
        Some(r) => ReleasePlan::NothingToDo(r.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> ProductId {
        ProductId::parse(raw).expect("valid id")
    }

    fn money(minor: i64, currency: &str) -> Money {
        unit_price(minor, Currency::parse(currency).expect("currency")).expect("money")
    }

    fn product(raw: &str, price: i64, currency: &str, stock: i32) -> LockedProduct {
        LockedProduct {
            id: id(raw),
            unit_price: money(price, currency),
            stock: Stock::parse(stock).expect("stock"),
        }
    }

    fn request(lines: &[(&str, i32)]) -> ReserveRequest {
        ReserveRequest::new(
            OrderId::new(),
            lines
                .iter()
                .map(|(p, q)| OrderLine {
                    product_id: id(p),
                    quantity: Quantity::parse(*q).expect("quantity"),
                })
                .collect(),
        )
        .expect("valid request")
    }

    fn refusal(answer: ReserveAnswer) -> (FailureReason, Option<String>) {
        match answer {
            ReserveAnswer::Refused(r) => (r.reason, r.product_id.map(|p| p.as_str().to_owned())),
            ReserveAnswer::Reserved { .. } => panic!("expected a refusal"),
        }
    }

    fn reservation(status: ReservationStatus, failure: Option<Refusal>) -> Reservation {
        Reservation {
            order_id: OrderId::new(),
            status,
            lines: vec![ReservedLine {
                product_id: id("a"),
                quantity: Quantity::parse(2).expect("quantity"),
                unit_price: money(150, "EUR"),
            }],
            failure,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_reservation_with_enough_stock_prices_every_line_and_totals_them() {
        let answer = decide(
            &request(&[("b", 3), ("a", 2)]),
            &[product("a", 250, "EUR", 5), product("b", 100, "EUR", 3)],
        )
        .expect("no overflow");
        let ReserveAnswer::Reserved { lines, total } = answer else {
            panic!("expected a reservation");
        };
        let summary: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.product_id.as_str(),
                    l.quantity.get(),
                    l.unit_price.minor_units(),
                )
            })
            .collect();
        assert_eq!(summary, [("b", 3, 100), ("a", 2, 250)]);
        assert_eq!(total, money(800, "EUR"));
    }

    #[test]
    fn an_unknown_product_refuses_the_whole_reservation_naming_it() {
        let answer = decide(
            &request(&[("a", 1), ("zz", 1), ("m", 1)]),
            &[product("a", 1, "EUR", 5)],
        )
        .expect("no overflow");
        assert_eq!(
            refusal(answer),
            (FailureReason::UnknownProduct, Some("m".to_owned()))
        );
    }

    #[test]
    fn out_of_stock_names_the_first_short_product_in_id_order() {
        let answer = decide(
            &request(&[("c", 9), ("b", 9), ("a", 1)]),
            &[
                product("a", 1, "EUR", 5),
                product("b", 1, "EUR", 2),
                product("c", 1, "EUR", 2),
            ],
        )
        .expect("no overflow");
        assert_eq!(
            refusal(answer),
            (FailureReason::OutOfStock, Some("b".to_owned()))
        );
    }

    #[test]
    fn a_line_may_take_exactly_the_remaining_stock() {
        let answer =
            decide(&request(&[("a", 5)]), &[product("a", 1, "EUR", 5)]).expect("no overflow");
        assert!(matches!(answer, ReserveAnswer::Reserved { .. }));
    }

    #[test]
    fn products_in_different_currencies_are_refused_as_a_currency_mismatch() {
        let answer = decide(
            &request(&[("a", 1), ("b", 1)]),
            &[product("a", 1, "EUR", 5), product("b", 1, "USD", 5)],
        )
        .expect("no overflow");
        assert_eq!(
            refusal(answer),
            (FailureReason::CurrencyMismatch, Some("b".to_owned()))
        );
    }

    #[test]
    fn a_total_that_overflows_is_an_error_not_a_wrapped_amount() {
        let result = decide(
            &request(&[("a", 2)]),
            &[product("a", i64::MAX / 2 + 1, "EUR", 5)],
        );
        assert_eq!(result, Err(TotalOverflow));
    }

    #[test]
    fn a_request_needs_lines_and_each_product_once() {
        let order_id = OrderId::new();
        let line = |p: &str| OrderLine {
            product_id: id(p),
            quantity: Quantity::parse(1).expect("quantity"),
        };
        assert!(ReserveRequest::new(order_id, vec![]).is_err());
        assert!(ReserveRequest::new(order_id, vec![line("a"), line("a")]).is_err());
        let ok = ReserveRequest::new(order_id, vec![line("b"), line("a")]).expect("valid");
        assert_eq!(ok.product_ids(), [id("a"), id("b")]);
    }

    #[test]
    fn a_re_sent_reservation_gets_the_first_answer_again() {
        let reserved = reservation(ReservationStatus::Reserved, None);
        let ReserveAnswer::Reserved { lines, total } =
            reserved.repeated_answer().expect("no overflow")
        else {
            panic!("expected the reservation again");
        };
        assert_eq!(lines, reserved.lines);
        assert_eq!(total, money(300, "EUR"));

        let failure = Refusal {
            reason: FailureReason::OutOfStock,
            product_id: Some(id("a")),
        };
        let failed = reservation(ReservationStatus::Failed, Some(failure.clone()));
        assert_eq!(
            failed.repeated_answer(),
            Ok(ReserveAnswer::Refused(failure))
        );
    }

    #[test]
    fn a_reservation_after_a_release_is_refused_as_order_released() {
        for status in [ReservationStatus::Released, ReservationStatus::Tombstone] {
            let answer = reservation(status, None)
                .repeated_answer()
                .expect("no overflow");
            assert_eq!(refusal(answer), (FailureReason::OrderReleased, None));
        }
    }

    #[test]
    fn a_release_gives_back_only_what_is_held_and_only_once() {
        let reserved = reservation(ReservationStatus::Reserved, None);
        assert_eq!(
            plan_release(Some(&reserved)),
            ReleasePlan::GiveBack(reserved.lines.clone())
        );
        for status in [
            ReservationStatus::Released,
            ReservationStatus::Failed,
            ReservationStatus::Tombstone,
        ] {
            assert_eq!(
                plan_release(Some(&reservation(status, None))),
                ReleasePlan::NothingToDo(status)
            );
        }
        assert_eq!(plan_release(None), ReleasePlan::Tombstone);
    }

    #[test]
    fn stock_adjustments_never_go_below_zero_or_overflow() {
        let stock = Stock::parse(3).expect("stock");
        let delta = |d| StockDelta::parse(d).expect("delta");
        assert_eq!(stock.adjusted(delta(-3)).map(Stock::get), Ok(0));
        assert_eq!(
            stock.adjusted(delta(-4)),
            Err(AdjustError::BelowZero { stock: 3 })
        );
        assert_eq!(stock.adjusted(delta(i32::MAX)), Err(AdjustError::TooLarge));
        assert!(StockDelta::parse(0).is_err());
        assert!(Stock::parse(-1).is_err());
    }

    #[test]
    fn a_unit_price_is_never_negative_and_a_line_asks_for_at_least_one() {
        let eur = || Currency::parse("EUR").expect("currency");
        assert!(unit_price(-1, eur()).is_err());
        assert_eq!(unit_price(0, eur()).map(|p| p.minor_units()), Ok(0));
        assert!(Quantity::parse(0).is_err());
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
    }

    #[test]
    fn a_page_cursor_round_trips_and_rejects_garbage() {
        let cursor = PageCursor {
            after: id("sku-9.x"),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Ok(cursor));
        assert!(PageCursor::decode("garbage").is_err());
        assert!(PageCursor::decode("p1zz").is_err());
        assert!(PageCursor::decode("p1616").is_err());
        assert!(PageCursor::decode("p1").is_err());
    }
}
