//! The order service: accepts orders over gRPC, stores them in its own
//! database, and announces each new order with an `OrderCreated` event written
//! to its outbox in the same transaction.

pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
mod schema;

use std::net::SocketAddr;

use anyhow::Context as _;
use proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    listener: TcpListener,
    orders: app::Orders,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        service_kit::db::migrate(
            &config.database.database_url,
            [outbox::MIGRATIONS, db::MIGRATIONS],
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
        Ok(Self {
            listener,
            orders: app::Orders::new(pool),
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests
    /// for at most the configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<OrderServiceServer<grpc::OrderApi>>()
            .await;
        let (reflection_v1, reflection_v1alpha) =
            service_kit::grpc::reflection(proto::FILE_DESCRIPTOR_SET)?;
        let grace = self.config.shutdown.grace();
        let addr = self.local_addr();
        tracing::info!(%addr, "order service listening");

        let drained = service_kit::grpc::drain_signal(
            shutdown.clone(),
            health,
            vec![SERVICE_NAME.to_owned()],
        );
        let server = tonic::transport::Server::builder()
            .layer(service_kit::grpc::trace_layer())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(OrderServiceServer::new(grpc::OrderApi::new(self.orders)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), drained);
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return result.context("grpc server failed"),
            () = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result.context("grpc server failed"),
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "in-flight requests cut off after grace period"
                );
                Ok(())
            }
        }
    }
}
