//! The deadline scanner: delivers `DeadlinePassed` to sagas whose answer is
//! overdue. State lives only in the database and rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so any number of replicas may scan, and a
//! restart loses nothing.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::Sagas;

/// How often the `sagas_in_flight` gauge is refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Scans every `interval` until `shutdown`; a failed scan (database down)
/// is logged and retried on the next tick.
pub async fn run(
    sagas: Sagas,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauge_refreshed: Option<Instant> = None;
    tracing::info!(
        interval_ms = interval.as_millis(),
        "deadline scanner started"
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Drain: a full batch means more may be due.
        while !shutdown.is_cancelled() {
            match sagas.scan_deadlines().await {
                Ok(due) if i64::try_from(due).unwrap_or(i64::MAX) >= sagas.scan_batch() => {}
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "deadline scan failed");
                    break;
                }
            }
        }
        if gauge_refreshed.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
            gauge_refreshed = Some(Instant::now());
            if let Err(error) = sagas.refresh_in_flight().await {
                tracing::warn!(error = format!("{error:#}"), "cannot count sagas in flight");
            }
        }
    }
    tracing::info!("deadline scanner stopped");
    Ok(())
}
