//! The senders: open loop (each send at its scheduled time, whatever the
//! answers do) and closed loop (a fixed number of calls in flight). Both
//! record into the shared state that the outcome consumer also writes to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::order::v1::order_service_client::OrderServiceClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::mix::Mix;
use crate::plan::{Catalogue, plan};
use crate::schedule::Schedule;
use crate::stats::LatencyHistogram;
use crate::tracker::{Observation, Outcome, SagaTally, Tracker};

/// Everything the senders and the consumer record, under one lock (held for
/// microseconds per event).
#[derive(Debug, Default)]
pub struct State {
    pub tracker: Tracker,
    pub tally: SagaTally,
    pub rpc_latency: LatencyHistogram,
    pub schedule_lag: LatencyHistogram,
    pub errors_by_code: BTreeMap<String, u64>,
    /// When the last CreateOrder call was made, since the start.
    pub last_send: Duration,
    pub scheduled: u64,
}

/// What every task of a run shares.
#[derive(Debug)]
pub struct Shared {
    pub start: Instant,
    pub run_id: String,
    pub seed: u64,
    pub mix: Mix,
    pub catalogue: Catalogue,
    pub rpc_timeout: Duration,
    pub stop: CancellationToken,
    state: Mutex<State>,
    pub sent: AtomicU64,
    pub rpc_ok: AtomicU64,
    pub rpc_errors: AtomicU64,
    pub completed: AtomicU64,
}

impl Shared {
    pub fn new(
        start: Instant,
        run_id: String,
        seed: u64,
        mix: Mix,
        catalogue: Catalogue,
        rpc_timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self {
            start,
            run_id,
            seed,
            mix,
            catalogue,
            rpc_timeout,
            stop,
            state: Mutex::new(State::default()),
            sent: AtomicU64::new(0),
            rpc_ok: AtomicU64::new(0),
            rpc_errors: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An outcome event arrived now.
    pub fn outcome(&self, order_id: String, outcome: Outcome) {
        let received = self.start.elapsed();
        let mut state = self.state();
        if let Observation::Completed(completion) =
            state.tracker.observe(&order_id, outcome, received)
        {
            state.tally.record(&completion);
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Places order `n`, due at `scheduled` (since the start).
    async fn send(&self, mut client: OrderServiceClient<Channel>, n: u64, scheduled: Duration) {
        let plan = plan(self.seed, &self.mix, &self.catalogue, n);
        let mut request = tonic::Request::new(plan.request(&self.run_id));
        request.set_timeout(self.rpc_timeout);
        let sent_at = self.start.elapsed();
        {
            let mut state = self.state();
            state.scheduled += 1;
            state.tally.timeline.scheduled(scheduled);
            state.last_send = state.last_send.max(sent_at);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        let answer = client.create_order(request).await;
        let answered_at = self.start.elapsed();
        let mut state = self.state();
        state
            .rpc_latency
            .record(answered_at.saturating_sub(sent_at));
        state.schedule_lag.record(sent_at.saturating_sub(scheduled));
        match answer {
            Ok(response) => {
                self.rpc_ok.fetch_add(1, Ordering::Relaxed);
                let order_id = response.into_inner().order_id;
                if let Some(completion) = state.tracker.placed(order_id, plan.kind, scheduled) {
                    state.tally.record(&completion);
                    self.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(status) => {
                self.rpc_errors.fetch_add(1, Ordering::Relaxed);
                *state
                    .errors_by_code
                    .entry(format!("{:?}", status.code()))
                    .or_insert(0) += 1;
            }
        }
    }
}

/// Sends on `schedule` until it ends or `stop`; at most `max_in_flight`
/// calls outstanding (a send beyond that waits for a slot, and its latency
/// still counts from its scheduled time). Returns once every call answered.
pub async fn open_loop(
    shared: Arc<Shared>,
    clients: Vec<OrderServiceClient<Channel>>,
    schedule: Schedule,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, offset) in schedule.iter() {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep_until((shared.start + offset).into()) => {}
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let client = clients[(n as usize) % clients.len()].clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            shared.send(client, n, offset).await;
            drop(slot);
        });
        // Reap finished calls as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// `concurrency` workers, each placing an order as soon as its previous call
/// answered, until `duration` passed or `stop`. The scheduled time of each
/// send is the moment it is made.
pub async fn closed_loop(
    shared: Arc<Shared>,
    clients: Vec<OrderServiceClient<Channel>>,
    concurrency: u32,
    duration: Duration,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let shared = shared.clone();
        let next = next.clone();
        let client = clients[(worker as usize) % clients.len()].clone();
        workers.spawn(async move {
            loop {
                let now = shared.start.elapsed();
                if now >= duration || shared.stop.is_cancelled() {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                shared.send(client.clone(), n, now).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}
