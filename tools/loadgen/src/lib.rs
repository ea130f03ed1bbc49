//! The load generator (being built).
