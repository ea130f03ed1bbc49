//! Drives a [`Handler`] the way the runtime does, against a real database,
//! for the services' integration tests (feature `testing`).

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use tokio::sync::Barrier;

use crate::{Handler, HandlerError, Incoming};

/// Runs two batches at once, each in one transaction on its own connection
/// to `url`, as two partition lanes do: `lock_batch`, then each message in
/// order. After its first message each lane waits (at most `meet`) for the
/// other to have handled its first too, so that batches locking rows
/// message by message hold one row each when they reach for the next.
/// A lane blocked behind the other's locks never arrives, hence the bound.
pub async fn two_lanes_meeting_after_first<H: Handler>(
    url: &str,
    handler: Arc<H>,
    batches: [Vec<Incoming>; 2],
    meet: Duration,
) -> [Result<(), HandlerError>; 2] {
    let barrier = Arc::new(Barrier::new(2));
    let [one, two] = batches;
    let (first, second) = tokio::join!(
        lane(url, handler.clone(), one, barrier.clone(), meet),
        lane(url, handler, two, barrier, meet),
    );
    [first, second]
}

async fn lane<H: Handler>(
    url: &str,
    handler: Arc<H>,
    batch: Vec<Incoming>,
    after_first: Arc<Barrier>,
    meet: Duration,
) -> Result<(), HandlerError> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|error| HandlerError::Transient(error.into()))?;
    conn.transaction::<_, HandlerError, _>(async |conn| {
        handler.lock_batch(conn, &batch).await?;
        for (index, message) in batch.iter().enumerate() {
            handler.handle(conn, message).await?;
            if index == 0 {
                let _ = tokio::time::timeout(meet, after_first.wait()).await;
            }
        }
        Ok(())
    })
    .await
}

/// A row lock held by a transaction of its own until [`RowLock::release`]
/// (or drop): another session's work on the same rows.
pub struct RowLock {
    end: Option<tokio::sync::oneshot::Sender<()>>,
    holder: tokio::task::JoinHandle<()>,
}

impl RowLock {
    /// Runs `locking_sql` (e.g. `SELECT ... FOR UPDATE`) in a transaction on
    /// a connection of its own to `url` and returns once it holds the locks.
    pub async fn take(url: &str, locking_sql: &str) -> anyhow::Result<Self> {
        use diesel_async::RunQueryDsl as _;
        let mut conn = AsyncPgConnection::establish(url).await?;
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let sql = locking_sql.to_owned();
        let holder = tokio::spawn(async move {
            let held = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    diesel::sql_query(sql).execute(conn).await?;
                    let _ = locked_tx.send(Ok(()));
                    let _ = ended.await;
                    Ok(())
                })
                .await;
            if let Err(error) = held {
                eprintln!("row lock holder failed: {error}");
            }
        });
        match locked.await {
            Ok(result) => result.map(|()| Self {
                end: Some(end),
                holder,
            }),
            Err(_) => anyhow::bail!("the locking statement failed: {locking_sql}"),
        }
    }

    /// Ends the holding transaction and waits until its locks are gone.
    pub async fn release(mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(());
        }
        let _ = (&mut self.holder).await;
    }
}

/// Handles `batch` as one lane does (`lock_batch`, then each message) in
/// one transaction on a connection of its own to `url`, giving up after
/// `within`: `None` if it did not finish in time (e.g. it waited for a lock).
pub async fn handle_batch_within<H: Handler>(
    url: &str,
    handler: &H,
    batch: &[Incoming],
    within: Duration,
) -> Option<Result<(), HandlerError>> {
    let mut conn = match AsyncPgConnection::establish(url).await {
        Ok(conn) => conn,
        Err(error) => return Some(Err(HandlerError::Transient(error.into()))),
    };
    tokio::time::timeout(
        within,
        conn.transaction::<_, HandlerError, _>(async |conn| {
            handler.lock_batch(conn, batch).await?;
            for message in batch {
                handler.handle(conn, message).await?;
            }
            Ok(())
        }),
    )
    .await
    .ok()
}

/// Handles each message of `batch` in a transaction of its own on one
/// connection to `url`, in order, as the runtime replays a batch whose
/// transaction failed.
pub async fn handle_one_by_one<H: Handler>(
    url: &str,
    handler: &H,
    batch: &[Incoming],
) -> Result<(), HandlerError> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|error| HandlerError::Transient(error.into()))?;
    for message in batch {
        conn.transaction::<_, HandlerError, _>(async |conn| handler.handle(conn, message).await)
            .await?;
    }
    Ok(())
}

/// Whether a lane's transaction was PostgreSQL's deadlock victim.
pub fn deadlocked(result: &Result<(), HandlerError>) -> bool {
    matches!(result, Err(error) if error.to_string().contains("deadlock detected"))
}

/// Checks the outcome of [`two_lanes_meeting_after_first`] for batches that
/// lock shared rows: no lane deadlocked and at least one batch committed;
/// then replays each failed batch one message per transaction, as the
/// runtime does. Panics (it is for tests) when any of that does not hold.
pub async fn finish_lanes<H: Handler>(
    url: &str,
    handler: &H,
    batches: &[Vec<Incoming>; 2],
    results: &[Result<(), HandlerError>; 2],
) {
    assert!(
        !results.iter().any(deadlocked),
        "a lane deadlocked: {results:?}"
    );
    assert!(
        results.iter().any(Result::is_ok),
        "no batch committed: {results:?}"
    );
    for (batch, result) in batches.iter().zip(results) {
        if result.is_err()
            && let Err(error) = handle_one_by_one(url, handler, batch).await
        {
            panic!("a replayed message failed: {error}");
        }
    }
}
