//! The saga orchestrator. Today it holds the saga definition: a pure state
//! machine ([`saga`]) that, given a saga's state and an incoming reply or
//! timeout, returns the new state and the commands to send. Persistence,
//! Kafka and the timeout scanner wrap around it without changing it.

pub mod saga;
