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

use anyhow::Context as _;
use futures::FutureExt as _;
use proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    listener: TcpListener,
    pool: service_kit::db::PgPool,
    orders: app::Orders,
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
        .context("cannot migrate the order database")?;
        let pool = service_kit::db::pool(
            &config.database.database_url,
            config.database.database_pool_size,
        )?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let orders = app::Orders::new(
            pool.clone(),
            config.kafka.topic(proto::topics::ORDER_EVENTS),
        );
        Ok(Self {
            listener,
            pool,
            orders,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Serves gRPC and consumes the saga's verdicts until `shutdown` is
    /// cancelled (or one of them fails), then drains in-flight requests for
    /// at most the configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "order service listening");
        let routes = tonic::service::Routes::new(OrderServiceServer::new(grpc::OrderApi::new(
            self.orders.clone(),
        )));
        let server = service_kit::grpc::serve(
            self.listener,
            routes,
            vec![SERVICE_NAME.to_owned()],
            proto::FILE_DESCRIPTOR_SET,
            shutdown.clone(),
            self.config.shutdown.grace(),
        );
        let consumer_config = consumer::ConsumerConfig::for_service(
            &self.config.kafka,
            messaging::CONSUMER_NAME,
            &[proto::topics::ORDER_COMMANDS],
        );
        let consumer = consumer::run(
            consumer_config,
            self.pool,
            Arc::new(messaging::VerdictHandler::new(self.orders)),
            shutdown.clone(),
        );
        service_kit::grpc::supervise(
            shutdown,
            vec![("grpc", server.boxed()), ("consumer", consumer.boxed())],
        )
        .await
    }
}
