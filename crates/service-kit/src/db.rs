//! The database pool and migrations of a service's own PostgreSQL database.

use diesel::sql_types::BigInt;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

pub type PgPool = Pool<AsyncPgConnection>;

/// Advisory lock key held while migrating, so replicas starting together
/// migrate one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_725f_6d67; // "order_mg"

/// A connection pool of at most `size` connections, opened lazily.
pub fn pool(url: &str, size: usize) -> anyhow::Result<PgPool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Ok(Pool::builder(manager).max_size(size).build()?)
}

/// Runs every pending migration of each set in order, under a session
/// advisory lock. Needs a multi-thread runtime.
pub async fn migrate(
    url: &str,
    sets: impl IntoIterator<Item = EmbeddedMigrations>,
) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    for set in sets {
        harness
            .run_pending_migrations(set)
            .map_err(|error| anyhow::anyhow!("migration failed: {error}"))?;
    }
    let mut conn = harness.into_inner();
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut conn)
        .await?;
    Ok(())
}
