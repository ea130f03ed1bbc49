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

use anyhow::Context as _;
use futures::FutureExt as _;
use proto::inventory::v1::inventory_service_server::{InventoryServiceServer, SERVICE_NAME};
use service_kit::db::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Name of the Kafka consumer (its group and inbox name, before the prefix).
pub const CONSUMER_NAME: &str = "inventory";

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
        .context("cannot migrate the inventory database")?;
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

    /// Serves gRPC and consumes the saga's commands until `shutdown` is
    /// cancelled (or either stops early), then drains for at most the
    /// configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "inventory service listening");
        let kafka = &self.config.kafka;
        let routes = tonic::service::Routes::new(InventoryServiceServer::new(
            grpc::InventoryApi::new(app::Catalogue::new(self.pool.clone())),
        ));
        let grpc = service_kit::grpc::serve(
            self.listener,
            routes,
            vec![SERVICE_NAME.to_owned()],
            proto::FILE_DESCRIPTOR_SET,
            shutdown.clone(),
            self.config.shutdown.grace(),
        );
        let handler = handler::InventoryHandler::new(app::Reservations::new(
            kafka.topic(proto::topics::SAGA_REPLIES),
        ));
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                kafka,
                CONSUMER_NAME,
                &[proto::topics::INVENTORY_COMMANDS],
            ),
            self.pool,
            Arc::new(handler),
            shutdown.clone(),
        );
        service_kit::grpc::supervise(
            shutdown,
            vec![("grpc", grpc.boxed()), ("consumer", consumer.boxed())],
        )
        .await
    }
}
