//! The start-up and run shape every service's `Application` shares: build
//! (migrate the database, open the pool, bind the listener), then serve the
//! gRPC API next to the service's other long-lived tasks (a consumer, a
//! worker) until shutdown. What the service serves and runs stays its own.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use diesel_migrations::EmbeddedMigrations;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseArgs;
use crate::db::{self, PgPool};
use crate::grpc;

/// A long-lived task run next to the gRPC server, e.g.
/// `("consumer", consumer.boxed())`.
pub type Task = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// A service's gRPC API as [`grpc::serve`] needs it.
pub struct GrpcApi {
    pub routes: tonic::service::Routes,
    /// The name health reports SERVING, e.g. `inventory_service_server::SERVICE_NAME`.
    pub service_name: &'static str,
    /// The descriptor set reflection serves (`proto::FILE_DESCRIPTOR_SET`).
    pub file_descriptor_set: &'static [u8],
    /// Most calls served at once (`GRPC_MAX_IN_FLIGHT`); more are shed.
    pub max_in_flight: usize,
}

/// A service's migrated database, its pool and its bound listener.
pub struct Foundation {
    pool: PgPool,
    listener: TcpListener,
    listen_addr: SocketAddr,
}

impl Foundation {
    /// Runs `migrations` on `database` in order (e.g. `[outbox::MIGRATIONS,
    /// consumer::MIGRATIONS, db::MIGRATIONS]`), opens its pool and binds
    /// `listen_addr` (port 0 picks a free port). `database_name` names the
    /// database in errors, e.g. `inventory`.
    pub async fn build(
        database_name: &str,
        database: &DatabaseArgs,
        migrations: impl IntoIterator<Item = EmbeddedMigrations>,
        listen_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        db::migrate(&database.database_url, migrations)
            .await
            .with_context(|| format!("cannot migrate the {database_name} database"))?;
        let pool = db::pool(&database.database_url, database.database_pool_size)?;
        let listener = TcpListener::bind(listen_addr)
            .await
            .with_context(|| format!("cannot listen on {listen_addr}"))?;
        Ok(Self {
            pool,
            listener,
            listen_addr,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The address the listener is bound to (the configured one if the
    /// socket cannot tell).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.listen_addr)
    }

    /// Serves `api` on the listener (with health, reflection and the
    /// server-span layer) and runs `tasks` next to it, supervised, until
    /// `shutdown` is cancelled or one of them ends (which cancels the
    /// others); then drains in-flight calls for at most `grace`.
    pub async fn run_until_stopped(
        self,
        api: GrpcApi,
        tasks: Vec<Task>,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let server = grpc::serve(
            self.listener,
            api.routes,
            vec![api.service_name.to_owned()],
            api.file_descriptor_set,
            api.max_in_flight,
            shutdown.clone(),
            grace,
        );
        let mut all: Vec<Task> = vec![("grpc", server.boxed())];
        all.extend(tasks);
        grpc::supervise(shutdown, all).await
    }
}
