//! Shipments as the business sees them: the deliverable countries, tracking
//! numbers, and the rules that answer the saga's create and cancel commands
//! exactly once per order. No IO, no SQL, no proto.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

/// The countries delivered to unless configured otherwise.
pub const DEFAULT_DELIVERABLE_COUNTRIES: &str =
    "AT,BE,CA,CH,DE,DK,ES,FI,FR,GB,IE,IT,LU,NL,NO,PL,PT,SE,US";

pub use domain_types::OrderId;

domain_types::uuid_id! {
    /// A booked shipment.
    pub struct ShipmentId;
}

const TRACKING_PREFIX: &str = "OS";
const TRACKING_DIGITS: usize = 12;
const TRACKING_SPACE: u128 = 1_000_000_000_000;
/// Coprime with 10^12 (odd, not a multiple of 5), so multiplying by it
/// modulo 10^12 is a bijection: distinct serials give distinct numbers.
const TRACKING_MULTIPLIER: u128 = 590_872_612_837;
const TRACKING_OFFSET: u128 = 319_005_174_223;

/// "OS" followed by 12 digits, e.g. `OS319005174223`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackingNumber(String);

/// Every tracking number has been handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tracking serial {0} is beyond the 10^12 tracking numbers")]
pub struct TrackingExhausted(pub u64);

impl TrackingNumber {
    /// The tracking number of the `serial`-th shipment (from a database
    /// sequence). The mapping is one-to-one on `0..10^12`, so tracking numbers
    /// never collide, and consecutive serials do not look consecutive.
    pub fn from_serial(serial: u64) -> Result<Self, TrackingExhausted> {
        let n = u128::from(serial);
        if n >= TRACKING_SPACE {
            return Err(TrackingExhausted(serial));
        }
        let scrambled = (n * TRACKING_MULTIPLIER + TRACKING_OFFSET) % TRACKING_SPACE;
        Ok(Self(format!(
            "{TRACKING_PREFIX}{scrambled:0width$}",
            width = TRACKING_DIGITS
        )))
    }

    /// A stored tracking number.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.strip_prefix(TRACKING_PREFIX) {
            Some(digits)
                if digits.len() == TRACKING_DIGITS
                    && digits.chars().all(|c| c.is_ascii_digit()) =>
            {
                Ok(Self(raw.to_owned()))
            }
            _ => Err(format!("{raw:?} is not OS followed by 12 digits")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(String);

impl CountryCode {
    /// Accepts surrounding blanks and lower case: `" de"` is `DE`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let code = raw.trim();
        if code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_uppercase()))
        } else {
            Err(format!(
                "{raw:?} is not an ISO 3166-1 alpha-2 country code such as \"GB\""
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The countries the carrier delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverableCountries(BTreeSet<CountryCode>);

impl DeliverableCountries {
    /// A comma-separated list such as `"DE, fr,GB"`; empty entries are
    /// skipped, an invalid code or an empty list is an error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let codes = list
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(CountryCode::parse)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if codes.is_empty() {
            return Err("must list at least one country code".to_owned());
        }
        Ok(Self(codes))
    }

    /// Whether an address in `country_code` can be delivered to. An invalid
    /// code is in no list.
    pub fn delivers_to(&self, country_code: &str) -> bool {
        CountryCode::parse(country_code).is_ok_and(|code| self.0.contains(&code))
    }

    pub fn iter(&self) -> impl Iterator<Item = &CountryCode> {
        self.0.iter()
    }
}

impl Default for DeliverableCountries {
    fn default() -> Self {
        Self::parse(DEFAULT_DELIVERABLE_COUNTRIES).unwrap_or_else(|_| Self(BTreeSet::new()))
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

/// What a booked shipment is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub shipment_id: ShipmentId,
    pub tracking_number: TrackingNumber,
}

/// Why a shipment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The address is outside the deliverable countries.
    Undeliverable,
    /// The order's shipment was cancelled (or a cancellation came first).
    OrderCancelled,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undeliverable => "UNDELIVERABLE",
            Self::OrderCancelled => "ORDER_CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "UNDELIVERABLE" => Some(Self::Undeliverable),
            "ORDER_CANCELLED" => Some(Self::OrderCancelled),
            _ => None,
        }
    }
}

/// Where an order's shipment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentState {
    Created(Booking),
    /// Cancelled by the saga's compensation after it was booked.
    Cancelled(Booking),
    Failed(FailureReason),
    /// A cancellation arrived before any creation.
    Tombstone,
}

impl ShipmentState {
    pub fn status(&self) -> &'static str {
        match self {
            Self::Created(_) => "CREATED",
            Self::Cancelled(_) => "CANCELLED",
            Self::Failed(_) => "FAILED",
            Self::Tombstone => "TOMBSTONE",
        }
    }

    pub fn booking(&self) -> Option<&Booking> {
        match self {
            Self::Created(booking) | Self::Cancelled(booking) => Some(booking),
            Self::Failed(_) | Self::Tombstone => None,
        }
    }

    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            Self::Failed(reason) => Some(*reason),
            _ => None,
        }
    }

    /// The answer to a create command for an order in this state: the same
    /// answer every time it is asked.
    pub fn create_reply(&self) -> CreateReply {
        match self {
            Self::Created(booking) => CreateReply::Created(booking.clone()),
            Self::Failed(reason) => CreateReply::Failed(*reason),
            Self::Cancelled(_) | Self::Tombstone => {
                CreateReply::Failed(FailureReason::OrderCancelled)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub order_id: OrderId,
    pub state: ShipmentState,
    /// `None` for a tombstone.
    pub address: Option<Address>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The saga's request to ship an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateShipment {
    pub order_id: OrderId,
    pub address: Address,
}

/// The reply to a create command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateReply {
    Created(Booking),
    Failed(FailureReason),
}

/// What to do with a create command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateDecision {
    /// First time asked, deliverable: book a shipment.
    Book,
    /// First time asked, refused: store the refusal.
    Refuse(FailureReason),
    /// Asked before (or cancelled): answer from the stored state, change nothing.
    Answer(CreateReply),
}

pub fn decide_create(
    existing: Option<&ShipmentState>,
    address: &Address,
    countries: &DeliverableCountries,
) -> CreateDecision {
    match existing {
        Some(state) => CreateDecision::Answer(state.create_reply()),
        None if countries.delivers_to(&address.country_code) => CreateDecision::Book,
        None => CreateDecision::Refuse(FailureReason::Undeliverable),
    }
}

/// What a cancel command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// The booked shipment is cancelled.
    Cancel,
    /// Nothing was asked for yet: leave a tombstone that refuses a late create.
    LeaveTombstone,
    /// Cancelled, refused or tombstoned already: no effect.
    Nothing,
}

pub fn decide_cancel(existing: Option<&ShipmentState>) -> CancelDecision {
    match existing {
        None => CancelDecision::LeaveTombstone,
        Some(ShipmentState::Created(_)) => CancelDecision::Cancel,
        Some(ShipmentState::Cancelled(_) | ShipmentState::Failed(_) | ShipmentState::Tombstone) => {
            CancelDecision::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn address(country_code: &str) -> Address {
        Address {
            recipient: "Ada Lovelace".into(),
            line1: "12 Analytical Way".into(),
            line2: String::new(),
            city: "London".into(),
            postal_code: "N1 9GU".into(),
            country_code: country_code.into(),
        }
    }

    fn booking() -> Booking {
        Booking {
            shipment_id: ShipmentId::new(),
            tracking_number: TrackingNumber::from_serial(7).expect("in range"),
        }
    }

    #[test]
    fn the_country_list_is_normalised_to_upper_case_without_blanks() {
        let countries = DeliverableCountries::parse(" de, fr ,GB,,").expect("valid");
        let codes: Vec<&str> = countries.iter().map(CountryCode::as_str).collect();
        assert_eq!(codes, ["DE", "FR", "GB"]);
        assert!(countries.delivers_to("FR"));
        assert!(countries.delivers_to("fr"));
        assert!(!countries.delivers_to("US"));
    }

    #[test]
    fn an_invalid_country_code_or_an_empty_list_is_a_config_error() {
        for bad in ["DE,D1", "DE,DEU", "X", "", " , "] {
            assert!(DeliverableCountries::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_country_list_is_valid() {
        let countries = DeliverableCountries::parse(DEFAULT_DELIVERABLE_COUNTRIES).expect("valid");
        assert_eq!(countries.iter().count(), 19);
        assert_eq!(DeliverableCountries::default(), countries);
    }

    #[test]
    fn tracking_numbers_are_os_and_twelve_digits_and_never_repeat() {
        let mut seen = HashSet::new();
        for serial in (0..50_000).chain([999_999_999_999]) {
            let number = TrackingNumber::from_serial(serial).expect("in range");
            assert!(TrackingNumber::parse(number.as_str()).is_ok(), "{number:?}");
            assert!(seen.insert(number), "serial {serial} repeats a number");
        }
        assert_eq!(
            TrackingNumber::from_serial(1_000_000_000_000),
            Err(TrackingExhausted(1_000_000_000_000))
        );
    }

    #[test]
    fn a_first_create_books_a_deliverable_address_and_refuses_others() {
        let countries = DeliverableCountries::default();
        assert_eq!(
            decide_create(None, &address("GB"), &countries),
            CreateDecision::Book
        );
        assert_eq!(
            decide_create(None, &address("JP"), &countries),
            CreateDecision::Refuse(FailureReason::Undeliverable)
        );
    }

    #[test]
    fn a_repeated_create_is_answered_from_the_stored_state() {
        let countries = DeliverableCountries::default();
        let booked = booking();
        let cases = [
            (
                ShipmentState::Created(booked.clone()),
                CreateReply::Created(booked.clone()),
            ),
            (
                ShipmentState::Failed(FailureReason::Undeliverable),
                CreateReply::Failed(FailureReason::Undeliverable),
            ),
            (
                ShipmentState::Cancelled(booked),
                CreateReply::Failed(FailureReason::OrderCancelled),
            ),
            (
                ShipmentState::Tombstone,
                CreateReply::Failed(FailureReason::OrderCancelled),
            ),
        ];
        for (state, reply) in cases {
            assert_eq!(
                decide_create(Some(&state), &address("GB"), &countries),
                CreateDecision::Answer(reply),
                "{state:?}"
            );
        }
    }

    #[test]
    fn a_cancel_applies_once_and_leaves_a_tombstone_when_nothing_was_booked() {
        assert_eq!(decide_cancel(None), CancelDecision::LeaveTombstone);
        assert_eq!(
            decide_cancel(Some(&ShipmentState::Created(booking()))),
            CancelDecision::Cancel
        );
        for state in [
            ShipmentState::Cancelled(booking()),
            ShipmentState::Failed(FailureReason::Undeliverable),
            ShipmentState::Tombstone,
        ] {
            assert_eq!(decide_cancel(Some(&state)), CancelDecision::Nothing);
        }
    }
}
