//! The shipment service: answers the saga's `CreateShipment` and
//! `CancelShipment` commands from `shipment.commands.v1` (booking a shipment
//! with a tracking number, refusing undeliverable addresses, cancelling as
//! compensation, each at most once per order) with replies written to its
//! outbox, and serves the shipments over gRPC.

pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod replies;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt as _;
use proto::shipment::v1::shipment_service_server::{SERVICE_NAME, ShipmentServiceServer};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The consumer name: the inbox's consumer and the Kafka consumer group.
pub const CONSUMER_NAME: &str = "shipment";

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    foundation: Foundation,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let foundation = Foundation::build(
            "shipment",
            &config.database,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
            config.listen_addr,
        )
        .await?;
        Ok(Self { foundation, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.foundation.local_addr()
    }

    /// Serves gRPC and consumes commands until `shutdown` is cancelled (or one
    /// of them fails), then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let kafka = &self.config.kafka;
        tracing::info!(%addr, "shipment service listening");
        let pool = self.foundation.pool().clone();
        let api = GrpcApi {
            routes: tonic::service::Routes::new(ShipmentServiceServer::new(
                grpc::ShipmentApi::new(app::Shipments::new(pool.clone())),
            )),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let handler = messaging::ShipmentHandler::new(
            kafka.topic(proto::topics::SAGA_REPLIES),
            self.config.deliverable_countries.clone(),
        );
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                kafka,
                CONSUMER_NAME,
                &[proto::topics::SHIPMENT_COMMANDS],
            ),
            pool,
            Arc::new(handler),
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
