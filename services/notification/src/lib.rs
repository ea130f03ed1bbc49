//! The notification service: consumes the order outcome events
//! (`OrderApproved`, `OrderRejected` on `order.events.v1`), records exactly
//! one notification per order, delivers it to a webhook with retries and
//! backoff (a worker in the same process, safe with several replicas), and
//! lists a customer's notifications over gRPC.

pub mod app;
pub mod config;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod grpc;
pub mod messaging;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt as _;
use proto::notification::v1::notification_service_server::{
    NotificationServiceServer, SERVICE_NAME,
};
use service_kit::db::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The consumer name: the inbox's consumer and the Kafka consumer group.
pub const CONSUMER_NAME: &str = "notification";

/// A built service: migrated database, pool, bound listener and, when a
/// webhook is configured, its delivery worker.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    deliverer: Option<delivery::Deliverer>,
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
        .context("cannot migrate the notification database")?;
        let pool = service_kit::db::pool(
            &config.database.database_url,
            config.database.database_pool_size,
        )?;
        let deliverer = match &config.webhook_url.0 {
            Some(url) => Some(delivery::Deliverer::new(
                pool.clone(),
                url.clone(),
                config.delivery_policy(),
            )?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            pool,
            deliverer,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// Serves gRPC, consumes order events and delivers notifications until
    /// `shutdown` is cancelled (or one of them fails), then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "notification service listening");
        let routes = tonic::service::Routes::new(NotificationServiceServer::new(
            grpc::NotificationApi::new(app::Notifications::new(self.pool.clone())),
        ));
        let server = service_kit::grpc::serve(
            self.listener,
            routes,
            vec![SERVICE_NAME.to_owned()],
            proto::FILE_DESCRIPTOR_SET,
            shutdown.clone(),
            self.config.shutdown.grace(),
        );
        let handler = messaging::NotificationHandler::new(self.deliverer.is_some());
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                &self.config.kafka,
                CONSUMER_NAME,
                &[proto::topics::ORDER_EVENTS],
            ),
            self.pool,
            Arc::new(handler),
            shutdown.clone(),
        );
        let mut tasks = vec![("grpc", server.boxed()), ("consumer", consumer.boxed())];
        match self.deliverer {
            Some(deliverer) => tasks.push(("delivery", deliverer.run(shutdown.clone()).boxed())),
            None => tracing::warn!("no webhook configured: notifications are only recorded"),
        }
        service_kit::grpc::supervise(shutdown, tasks).await
    }
}
