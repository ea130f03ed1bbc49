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

use anyhow::Context as _;
use futures::FutureExt as _;
use proto::payment::v1::payment_service_server::{PaymentServiceServer, SERVICE_NAME};
use service_kit::db::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Name of the service's Kafka consumer (its group and inbox name).
pub const CONSUMER_NAME: &str = "payment";

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
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
        service_kit::db::migrate(
            &config.database.database_url,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
        )
        .await
        .context("cannot migrate the payment database")?;
        let pool = service_kit::db::pool(
            &config.database.database_url,
            config.database.database_pool_size,
        )?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let payments = app::Payments::new(
            pool.clone(),
            config.kafka.clone(),
            config.payment_limit_minor,
        );
        Ok(Self {
            listener,
            pool,
            payments,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Serves gRPC and consumes payment commands until `shutdown` is
    /// cancelled (or either stops), then drains in-flight work for at most
    /// the configured grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "payment service listening");
        let routes = tonic::service::Routes::new(PaymentServiceServer::new(grpc::PaymentApi::new(
            self.payments.clone(),
        )));
        let grpc = service_kit::grpc::serve(
            self.listener,
            routes,
            vec![SERVICE_NAME.to_owned()],
            proto::FILE_DESCRIPTOR_SET,
            shutdown.clone(),
            self.config.shutdown.grace(),
        );
        let consumer_config = consumer::ConsumerConfig::for_service(
            &self.config.kafka,
            CONSUMER_NAME,
            &[proto::topics::PAYMENT_COMMANDS],
        );
        let consumer = consumer::run(
            consumer_config,
            self.pool,
            Arc::new(handler::PaymentHandler::new(self.payments)),
            shutdown.clone(),
        );
        service_kit::grpc::supervise(
            shutdown,
            vec![("grpc", grpc.boxed()), ("consumer", consumer.boxed())],
        )
        .await
    }
}
