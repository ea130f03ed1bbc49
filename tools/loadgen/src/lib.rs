//! The saga load generator: places orders through the order service's
//! `CreateOrder` at a fixed rate (open loop) or flat out (closed loop), waits
//! for each saga's outcome event on `order.events.v1`, and reports throughput,
//! saga and RPC latency, outcomes by reason and the CPU and memory of the
//! processes under load.
//!
//! Pure, unit-tested logic: `schedule` (when each send is due), `mix` (which
//! kind each order is), `plan` (what each order contains), `stats`
//! (histograms and the per-second timeline), `tracker` (matching outcome
//! events to placed orders), `report` (text, JSON, Markdown) and the parsing
//! and accounting of `procstat`. The IO parts: `seed` (products and accounts
//! over gRPC), `outcomes` (the Kafka consumer), `driver` (the senders),
//! `progress`, `plot` and `run`.

pub mod cli;
pub mod driver;
pub mod mix;
pub mod outcomes;
pub mod plan;
pub mod plot;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod run;
pub mod schedule;
pub mod seed;
pub mod stats;
pub mod tracker;
