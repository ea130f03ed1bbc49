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
