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

use anyhow::Context as _;
use futures::FutureExt as _;
use proto::shipment::v1::shipment_service_server::{SERVICE_NAME, ShipmentServiceServer};
use service_kit::db::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The consumer name: the inbox's consumer and the Kafka consumer group.
pub const CONSUMER_NAME: &str = "shipment";

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        service_kit::db::migrate(
            &config.database.database_url,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
        )
        .await
        .context("cannot migrate the shipment database")?;
        let pool = service_kit::db::pool(
            &config.database.database_url,
            config.database.database_pool_size,
        )?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            pool,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Serves gRPC and consumes commands until `shutdown` is cancelled (or one
    /// of them fails), then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let kafka = &self.config.kafka;
        tracing::info!(%addr, "shipment service listening");
        let routes = tonic::service::Routes::new(ShipmentServiceServer::new(
            grpc::ShipmentApi::new(app::Shipments::new(self.pool.clone())),
        ));
        let server = service_kit::grpc::serve(
            self.listener,
            routes,
            vec![SERVICE_NAME.to_owned()],
            proto::FILE_DESCRIPTOR_SET,
            shutdown.clone(),
            self.config.shutdown.grace(),
        );
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
            self.pool,
            Arc::new(handler),
            shutdown.clone(),
        );
        service_kit::grpc::supervise(
            shutdown,
            vec![("grpc", server.boxed()), ("consumer", consumer.boxed())],
        )
        .await
    }
}
