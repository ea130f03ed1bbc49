//! The order service: accepts orders over gRPC, stores them in its own
//! database, and announces each new order with an `OrderCreated` event written
//! to its outbox in the same transaction. It closes the saga: the
//! orchestrator's `ApproveOrder` / `RejectOrder` commands set the final status
//! and announce `OrderApproved` / `OrderRejected`.

pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod messaging;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt as _;
use proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    foundation: Foundation,
    orders: app::Orders,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let foundation = Foundation::build(
            "order",
            &config.database,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
            config.listen_addr,
        )
        .await?;
        let orders = app::Orders::new(
            foundation.pool().clone(),
            config.kafka.topic(proto::topics::ORDER_EVENTS),
        );
        Ok(Self {
            foundation,
            orders,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.foundation.local_addr()
    }

    /// Serves gRPC and consumes the saga's verdicts until `shutdown` is
    /// cancelled (or one of them fails), then drains in-flight requests for
    /// at most the configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "order service listening");
        let api = GrpcApi {
            routes: tonic::service::Routes::new(OrderServiceServer::new(grpc::OrderApi::new(
                self.orders.clone(),
            ))),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let consumer_config = consumer::ConsumerConfig::for_service(
            &self.config.kafka,
            messaging::CONSUMER_NAME,
            &[proto::topics::ORDER_COMMANDS],
        );
        let consumer = consumer::run(
            consumer_config,
            self.foundation.pool().clone(),
            Arc::new(messaging::VerdictHandler::new(self.orders)),
            shutdown.clone(),
        );
        self.foundation
            .run_until_stopped(
                api,
                vec![("consumer", consumer.boxed())],
                self.config.shutdown.grace(),
                shutdown,
            )
            .await
    }
}
