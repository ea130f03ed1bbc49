//! The inventory service: owns the product catalogue and its stock. Serves
//! the catalogue over gRPC, and takes the saga's ReserveStock / ReleaseStock
//! commands from Kafka: a reservation takes every line of an order or none,
//! its outcome is stored per order so a re-sent command gets the same answer,
//! and each reply goes out through the outbox in the same transaction.

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
use proto::inventory::v1::inventory_service_server::{InventoryServiceServer, SERVICE_NAME};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Name of the Kafka consumer (its group and inbox name, before the prefix).
pub const CONSUMER_NAME: &str = "inventory";

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
            "inventory",
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

    /// Serves gRPC and consumes the saga's commands until `shutdown` is
    /// cancelled (or either stops early), then drains for at most the
    /// configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "inventory service listening");
        let kafka = &self.config.kafka;
        let pool = self.foundation.pool().clone();
        let api = GrpcApi {
            routes: tonic::service::Routes::new(InventoryServiceServer::new(
                grpc::InventoryApi::new(app::Catalogue::new(pool.clone())),
            )),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let handler = handler::InventoryHandler::new(app::Reservations::new(
            kafka.topic(proto::topics::SAGA_REPLIES),
        ));
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                kafka,
                CONSUMER_NAME,
                &[proto::topics::INVENTORY_COMMANDS],
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
