//! The mix of happy and failing orders, and the deterministic draw that picks
//! an order's kind: the kind of order `n` depends only on the seed and `n`, so
//! a run is reproducible whatever order the sends complete in.

use std::fmt;
use std::str::FromStr;

/// What an order is built to do. A failing order fails because of its data
/// (see `plan`), never because the load generator asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Stocked product, funded customer, deliverable country: approved.
    Happy,
    /// A product whose stock is 0: rejected at the reservation.
    OutOfStock,
    /// A product that does not exist: rejected at the reservation.
    UnknownProduct,
    /// A customer whose balance is 0: rejected at the payment.
    InsufficientFunds,
    /// A country outside the deliverable set: rejected at the shipment.
    Undeliverable,
}

impl OrderKind {
    pub const ALL: [OrderKind; 5] = [
        OrderKind::Happy,
        OrderKind::OutOfStock,
        OrderKind::UnknownProduct,
        OrderKind::InsufficientFunds,
        OrderKind::Undeliverable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OrderKind::Happy => "happy",
            OrderKind::OutOfStock => "out_of_stock",
            OrderKind::UnknownProduct => "unknown_product",
            OrderKind::InsufficientFunds => "insufficient_funds",
            OrderKind::Undeliverable => "undeliverable",
        }
    }

    /// Whether the saga of such an order should end approved.
    pub fn expects_approval(self) -> bool {
        self == OrderKind::Happy
    }
}

impl fmt::Display for OrderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OrderKind {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| MixError::UnknownKind(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    #[error(
        "unknown order kind {0:?} (expected happy, out_of_stock, unknown_product, insufficient_funds or undeliverable)"
    )]
    UnknownKind(String),
    #[error("{0:?} is not KIND=WEIGHT with a whole, non-negative weight")]
    BadEntry(String),
    #[error("order kind {0} appears twice")]
    Duplicate(&'static str),
    #[error("the weights add up to zero")]
    Empty,
}

/// Relative weights of the order kinds, e.g.
/// `happy=90,out_of_stock=5,insufficient_funds=3,undeliverable=2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(OrderKind, u32)>,
    total: u64,
}

impl Mix {
    /// Only happy orders.
    pub fn all_happy() -> Self {
        Self {
            weights: vec![(OrderKind::Happy, 1)],
            total: 1,
        }
    }

    /// The kind for a uniform 64-bit draw: kind `k` takes the share
    /// `weight(k) / total` of the draw's range.
    pub fn pick(&self, draw: u64) -> OrderKind {
        // Multiply-shift maps the draw onto 0..total without modulo bias
        // worth speaking of (total is tiny next to 2^64).
        let mut slot = ((u128::from(draw) * u128::from(self.total)) >> 64) as u64;
        for &(kind, weight) in &self.weights {
            if slot < u64::from(weight) {
                return kind;
            }
            slot -= u64::from(weight);
        }
        // Unreachable: slot < total.
        self.weights
            .last()
            .map(|&(kind, _)| kind)
            .unwrap_or(OrderKind::Happy)
    }

    /// The expected share of `kind`, 0.0 to 1.0.
    pub fn share(&self, kind: OrderKind) -> f64 {
        let weight = self
            .weights
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |&(_, w)| w);
        f64::from(weight) / self.total as f64
    }

    /// The kinds with a non-zero weight.
    pub fn kinds(&self) -> impl Iterator<Item = OrderKind> + '_ {
        self.weights.iter().map(|&(kind, _)| kind)
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights: Vec<(OrderKind, u32)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, weight) = entry
                .split_once('=')
                .ok_or_else(|| MixError::BadEntry(entry.to_owned()))?;
            let kind: OrderKind = name.trim().parse()?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| MixError::BadEntry(entry.to_owned()))?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(MixError::Duplicate(kind.name()));
            }
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        let total: u64 = weights.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 {
            return Err(MixError::Empty);
        }
        Ok(Self { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(kind, weight)| format!("{kind}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// SplitMix64's finaliser: a bijective mix of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `stream`-th uniform 64-bit draw for order `n` of the run with `seed`:
/// a pure function, stable across versions and platforms (unlike the
/// generators of `rand`, whose streams may change between releases).
pub fn draw(seed: u64, n: u64, stream: u64) -> u64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    mix64(
        mix64(seed.wrapping_add(GAMMA))
            ^ n.wrapping_mul(GAMMA)
            ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const BRIEF_MIX: &str = "happy=90,out_of_stock=5,insufficient_funds=3,undeliverable=2";

    fn counts(mix: &Mix, seed: u64, draws: u64) -> BTreeMap<OrderKind, u64> {
        let mut counts = BTreeMap::new();
        for n in 0..draws {
            *counts.entry(mix.pick(draw(seed, n, 0))).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn a_mix_is_parsed_from_kind_weight_pairs() {
        let mix: Mix = BRIEF_MIX.parse().expect("valid mix");
        assert_eq!(mix.share(OrderKind::Happy), 0.90);
        assert_eq!(mix.share(OrderKind::OutOfStock), 0.05);
        assert_eq!(mix.share(OrderKind::InsufficientFunds), 0.03);
        assert_eq!(mix.share(OrderKind::Undeliverable), 0.02);
        assert_eq!(mix.share(OrderKind::UnknownProduct), 0.0);
        assert_eq!(mix.to_string(), BRIEF_MIX);
        let spaced: Mix = " happy = 1 , unknown_product=1 "
            .parse()
            .expect("valid mix");
        assert_eq!(spaced.share(OrderKind::UnknownProduct), 0.5);
    }

    #[test]
    fn a_bad_mix_is_refused_with_the_reason() {
        assert_eq!(
            "happy=9,sad=1".parse::<Mix>(),
            Err(MixError::UnknownKind("sad".into()))
        );
        assert_eq!(
            "happy".parse::<Mix>(),
            Err(MixError::BadEntry("happy".into()))
        );
        assert_eq!(
            "happy=-1".parse::<Mix>(),
            Err(MixError::BadEntry("happy=-1".into()))
        );
        assert_eq!(
            "happy=1,happy=2".parse::<Mix>(),
            Err(MixError::Duplicate("happy"))
        );
        assert_eq!("happy=0".parse::<Mix>(), Err(MixError::Empty));
        assert_eq!("".parse::<Mix>(), Err(MixError::Empty));
    }

    #[test]
    fn kinds_are_drawn_in_the_proportions_of_the_mix() {
        let mix: Mix = BRIEF_MIX.parse().expect("valid mix");
        let draws = 200_000;
        let counts = counts(&mix, 42, draws);
        for kind in OrderKind::ALL {
            let expected = mix.share(kind) * draws as f64;
            let got = counts.get(&kind).copied().unwrap_or(0) as f64;
            // Five binomial standard deviations, plus one for the empty kinds.
            let tolerance = 5.0 * (expected * (1.0 - mix.share(kind))).sqrt() + 1.0;
            assert!(
                (got - expected).abs() <= tolerance,
                "{kind}: {got} drawn, {expected} expected (tolerance {tolerance:.0})"
            );
        }
        assert_eq!(counts.get(&OrderKind::UnknownProduct), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_kinds_and_another_seed_does_not() {
        let mix: Mix = BRIEF_MIX.parse().expect("valid mix");
        let kinds =
            |seed| -> Vec<OrderKind> { (0..1_000).map(|n| mix.pick(draw(seed, n, 0))).collect() };
        assert_eq!(kinds(7), kinds(7));
        assert_ne!(kinds(7), kinds(8));
        // Pinned values: the stream must not change between versions.
        assert_eq!(draw(1, 0, 0), 0xdce4_23fc_82c0_d5b8);
        assert_eq!(draw(1, 1, 0), 0xddc1_ed05_282d_1d64);
        assert_eq!(draw(42, 7, 3), 0x6f27_b37c_ed46_550a);
    }

    #[test]
    fn the_extremes_of_a_draw_map_to_the_first_and_last_kind() {
        let mix: Mix = "happy=1,undeliverable=1".parse().expect("valid mix");
        assert_eq!(mix.pick(0), OrderKind::Happy);
        assert_eq!(mix.pick(u64::MAX / 2), OrderKind::Happy);
        assert_eq!(mix.pick(u64::MAX / 2 + 1), OrderKind::Undeliverable);
        assert_eq!(mix.pick(u64::MAX), OrderKind::Undeliverable);
    }
}
