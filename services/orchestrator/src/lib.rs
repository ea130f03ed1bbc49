//! The saga orchestrator: starts an order's saga on `OrderCreated`, applies
//! every participant's reply and order event to it, sends the resulting
//! commands through its outbox, scans for missed deadlines, and serves the
//! sagas (and operator actions) over gRPC. The saga itself is a pure state
//! machine ([`saga`]); persistence, Kafka and the scanner wrap around it.

pub mod app;
pub mod config;
pub mod db;
pub mod grpc;
pub mod handler;
pub mod messages;
pub mod record;
pub mod saga;
pub mod scanner;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt as _;
use proto::orchestrator::v1::orchestrator_service_server::{
    OrchestratorServiceServer, SERVICE_NAME,
};
use service_kit::serving::{Foundation, GrpcApi};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The consumer name: the inbox's consumer and the Kafka consumer group.
pub const CONSUMER_NAME: &str = "orchestrator";

/// A built service: migrated database, pool and bound listener.
pub struct Application {
    foundation: Foundation,
    sagas: app::Sagas,
    config: Config,
}

impl Application {
    /// Migrates the database, opens the pool and binds the listener (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let foundation = Foundation::build(
            "orchestrator",
            &config.database,
            [outbox::MIGRATIONS, consumer::MIGRATIONS, db::MIGRATIONS],
            config.listen_addr,
        )
        .await?;
        let sagas = app::Sagas::new(
            foundation.pool().clone(),
            config.kafka.clone(),
            config.timing(),
            config.saga_deadline_scan_batch,
        );
        Ok(Self {
            foundation,
            sagas,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.foundation.local_addr()
    }

    /// Serves gRPC, consumes order events and replies, and scans deadlines
    /// until `shutdown` is cancelled (or one of them fails), then drains.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(%addr, "orchestrator listening");
        let api = GrpcApi {
            routes: tonic::service::Routes::new(OrchestratorServiceServer::new(
                grpc::OrchestratorApi::new(self.sagas.clone()),
            )),
            service_name: SERVICE_NAME,
            file_descriptor_set: proto::FILE_DESCRIPTOR_SET,
            max_in_flight: self.config.grpc.max_in_flight(),
        };
        let consumer = consumer::run(
            consumer::ConsumerConfig::for_service(
                &self.config.kafka,
                CONSUMER_NAME,
                &[proto::topics::ORDER_EVENTS, proto::topics::SAGA_REPLIES],
            ),
            self.foundation.pool().clone(),
            Arc::new(handler::SagaHandler::new(self.sagas.clone())),
            shutdown.clone(),
        );
        let scanner = scanner::run(self.sagas, self.config.scan_interval(), shutdown.clone());
        self.foundation
            .run_until_stopped(
                api,
                vec![
                    ("consumer", consumer.boxed()),
                    ("deadline-scanner", scanner.boxed()),
                ],
                self.config.shutdown.grace(),
                shutdown,
            )
            .await
    }
}
