//! The notification service (being built).
