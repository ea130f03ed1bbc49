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

use futures::FutureExt as _;
use proto::notification::v1::notification_service_server::{
    NotificationServiceServer, SERVICE_NAME,
};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The consumer name: the inbox's consumer and the Kafka consumer group.
pub const CONSUMER_NAME: &str = "notification";

/// A built service: migrated database, pool, bound listener and, when a
/// webhook is configured, its delivery worker.
pub struct Application {
    foundation: Foundation,
    deliverer: Option<delivery::Deliverer>,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let foundation = Foundation::build(
            "notification",
            &config.database,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
            config.listen_addr,
        )
        .await?;
        let deliverer = match &config.webhook_url.0 {
            Some(url) => Some(delivery::Deliverer::new(
                foundation.pool().clone(),
                url.clone(),
                config.delivery_policy(),
            )?),
            None => None,
        };
        Ok(Self {
            foundation,
            deliverer,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.foundation.local_addr()
    }

    /// Serves gRPC, consumes order events and delivers notifications until
    /// `shutdown` is cancelled (or one of them fails), then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "notification service listening");
        let pool = self.foundation.pool().clone();
        let api = GrpcApi {
            routes: tonic::service::Routes::new(NotificationServiceServer::new(
                grpc::NotificationApi::new(app::Notifications::new(pool.clone())),
            )),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let handler = messaging::NotificationHandler::new(self.deliverer.is_some());
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                &self.config.kafka,
                CONSUMER_NAME,
                &[proto::topics::ORDER_EVENTS],
            ),
            pool,
            Arc::new(handler),
            shutdown.clone(),
        );
        let mut tasks: Vec<service_kit::serving::Task> = vec![("consumer", consumer.boxed())];
        match self.deliverer {
            Some(deliverer) => tasks.push(("delivery", deliverer.run(shutdown.clone()).boxed())),
            None => tracing::warn!("no webhook configured: notifications are only recorded"),
        }
        self.foundation
            .run_until_stopped(api, tasks, self.config.shutdown.grace(), shutdown)
            .await
    }
}
