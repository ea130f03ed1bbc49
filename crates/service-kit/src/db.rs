//! The database pool and migrations of a service's own PostgreSQL database,
//! taking a connection from the pool, and the errors of a service's queries.

use diesel::sql_types::BigInt;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

pub type PgPool = Pool<AsyncPgConnection>;

/// A connection taken from a [`PgPool`]; it goes back when dropped.
pub type PooledConnection = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Advisory lock key held while migrating, so replicas starting together
/// migrate one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_725f_6d67; // "order_mg"

/// A connection pool of at most `size` connections, opened lazily.
///
/// A connection is handed out again without a `SELECT 1` round trip first
/// (deadpool's `Verified` recycling would add one to every transaction): a
/// connection that broke is found by its next query, which fails as
/// transient (`ClosedConnection`) and is retried, and diesel-async marks it
/// broken so the pool drops it instead of handing it out again.
pub fn pool(url: &str, size: usize) -> anyhow::Result<PgPool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
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

/// A connection from `pool`. An error means the database is unavailable
/// (no connection could be opened in time); retrying may succeed.
pub async fn connection(pool: &PgPool) -> anyhow::Result<PooledConnection> {
    Ok(pool.get().await?)
}

/// Stored data that breaks the domain's rules: a bug or a bad manual edit.
#[derive(Debug, thiserror::Error)]
#[error("stored {what_row} {key} is corrupt: {what}")]
pub struct CorruptRow {
    /// What the row holds, e.g. `product` or `payment of order`.
    pub what_row: &'static str,
    /// The row's key, e.g. the product id.
    pub key: String,
    /// What is wrong with it.
    pub what: String,
}

impl CorruptRow {
    /// The error for the row `what_row` `key`, given what is wrong: ready
    /// for `map_err` on the domain's parse results.
    pub fn of(what_row: &'static str, key: impl std::fmt::Display) -> impl Fn(String) -> Self {
        let key = key.to_string();
        move |what| Self {
            what_row,
            key: key.clone(),
            what,
        }
    }
}

/// Why a query of a service's own tables failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_row_names_the_row_its_key_and_what_is_wrong() {
        let corrupt = CorruptRow::of("payment of order", 42);
        assert_eq!(
            corrupt("unknown status \"X\"".to_owned()).to_string(),
            "stored payment of order 42 is corrupt: unknown status \"X\""
        );
    }
}
