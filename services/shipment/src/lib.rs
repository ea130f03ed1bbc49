//! The shipment service (being built).
