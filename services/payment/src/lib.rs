//! The payment service: customer accounts over gRPC, and the saga's charges
//! and refunds over Kafka (`payment.commands.v1`), each taking effect at most
//! once per order and answered on `saga.replies.v1` through the outbox.

pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod grpc;
pub mod handler;
pub mod replies;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt as _;
use proto::payment::v1::payment_service_server::{PaymentServiceServer, SERVICE_NAME};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Name of the service's Kafka consumer (its group and inbox name).
pub const CONSUMER_NAME: &str = "payment";

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    foundation: Foundation,
    payments: app::Payments,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.payment_limit_minor > 0,
            "PAYMENT_LIMIT_MINOR must be more than zero"
        );
        let foundation = Foundation::build(
            "payment",
            &config.database,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
            config.listen_addr,
        )
        .await?;
        let payments = app::Payments::new(
            foundation.pool().clone(),
            config.kafka.clone(),
            config.payment_limit_minor,
        );
        Ok(Self {
            foundation,
            payments,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.foundation.local_addr()
    }

    /// Serves gRPC and consumes payment commands until `shutdown` is
    /// cancelled (or either stops), then drains in-flight work for at most
    /// the configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "payment service listening");
        let api = GrpcApi {
            routes: tonic::service::Routes::new(PaymentServiceServer::new(grpc::PaymentApi::new(
                self.payments.clone(),
            ))),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let consumer_config = consumer::ConsumerConfig::for_service(
            &self.config.kafka,
            CONSUMER_NAME,
            &[proto::topics::PAYMENT_COMMANDS],
        );
        let consumer = consumer::run(
            consumer_config,
            self.foundation.pool().clone(),
            Arc::new(handler::PaymentHandler::new(self.payments)),
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
