//! The outbox relay: the only process that writes to Kafka. For each
//! configured service database it holds a lease (a Postgres advisory lock),
//! publishes committed outbox rows in id order with an idempotent producer,
//! and deletes a row only after the broker acknowledged it. A crash between
//! publish and delete re-publishes on restart: delivery is at least once and
//! consumers deduplicate by message id.

pub mod config;
pub mod publisher;
pub mod worker;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use publisher::Publisher;
use worker::WorkerSettings;

pub struct Relay {
    config: Config,
    publisher: Publisher,
    health_listener: TcpListener,
}

impl Relay {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let publisher =
            Publisher::new(&config.kafka_brokers).context("cannot create the Kafka producer")?;
        let health_listener = TcpListener::bind(config.health_listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.health_listen_addr))?;
        Ok(Self {
            config,
            publisher,
            health_listener,
        })
    }

    pub fn health_addr(&self) -> SocketAddr {
        self.health_listener
            .local_addr()
            .unwrap_or(self.config.health_listen_addr)
    }

    /// Publishes until `shutdown`, then finishes the batches in flight and
    /// flushes the producer within the grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let settings = WorkerSettings {
            batch_size: self.config.batch_size,
            poll_interval: self.config.poll_interval(),
        };
        let mut workers = JoinSet::new();
        for url in &self.config.database_urls {
            workers.spawn(worker::run(
                url.clone(),
                self.publisher.clone(),
                settings.clone(),
                shutdown.clone(),
            ));
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tracing::info!(addr = %self.health_addr(), databases = self.config.database_urls.len(), "relay started");
        let health_server = tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.health_listener),
                service_kit::grpc::drain_signal(shutdown.clone(), health, Vec::new()),
            );
        let health_task = tokio::spawn(health_server);

        let grace = self.config.shutdown.grace();
        let mut early_exit = None;
        // Biased: after a shutdown the workers end on their own, and a worker
        // that ended because of the shutdown is not an early exit.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            finished = workers.join_next() => early_exit = finished,
        }
        if let Some(result) = early_exit {
            shutdown.cancel();
            anyhow::bail!("a relay worker ended unexpectedly: {result:?}");
        }
        if tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("relay workers cut off after grace period");
        }
        self.publisher.flush(grace);
        health_task.await.context("health server panicked")??;
        Ok(())
    }
}
