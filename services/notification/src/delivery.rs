//! The delivery worker: claims due notifications (safe with several
//! replicas: `FOR UPDATE SKIP LOCKED` plus a lease), POSTs each to the
//! webhook with its id as `Idempotency-Key`, and stores the attempt's outcome:
//! delivered, retried later with backoff, or failed.
//!
//! Delivery is at least once: a worker that dies between the webhook's answer
//! and recording it loses its lease and the notification is sent again with
//! the same idempotency key.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use service_kit::db::PgPool;
use service_kit::trace_context;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::db::{self, Claimed, Recorded};
use crate::domain::{AttemptResult, DeliveryPolicy, NextStep};

/// How long one webhook call may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim keeps other workers away; longer than a call can take.
const LEASE: Duration = Duration::from_secs(30);
/// How often the worker looks for due notifications when idle.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Notifications claimed and delivered concurrently per round.
const BATCH: usize = 16;

/// The JSON body POSTed to the webhook.
#[derive(Debug, serde::Serialize)]
struct WebhookBody<'a> {
    notification_id: String,
    order_id: String,
    customer_id: &'a str,
    outcome: &'a str,
    reason: &'a str,
    created_at: String,
}

pub struct Deliverer {
    pool: PgPool,
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without credentials, for spans and logs.
    shown_url: String,
    policy: DeliveryPolicy,
}

impl Deliverer {
    pub fn new(pool: PgPool, url: reqwest::Url, policy: DeliveryPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A webhook that redirects is misconfigured; a POST must not turn into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "ordersaga-notification/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .context("cannot build the webhook HTTP client")?;
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        Ok(Self {
            pool,
            client,
            url,
            shown_url: shown.to_string(),
            policy,
        })
    }

    /// Delivers due notifications until `shutdown`; the round in flight
    /// finishes (each call is bounded by [`REQUEST_TIMEOUT`]).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(url = %self.shown_url, "notification delivery started");
        while !shutdown.is_cancelled() {
            let busy = match self.deliver_due().await {
                Ok(claimed) => claimed == BATCH,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot claim notifications");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        Ok(())
    }

    /// One round: claims a batch and delivers it. Returns how many were claimed.
    async fn deliver_due(&self) -> anyhow::Result<usize> {
        let token = Uuid::new_v4();
        let claimed = {
            let mut conn = self.pool.get().await.context("database unavailable")?;
            db::claim_due(&mut conn, BATCH as i64, LEASE, token).await?
        };
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|c| self.deliver(c, token))).await;
        Ok(count)
    }

    async fn deliver(&self, claimed: Claimed, token: Uuid) {
        let attempt = u32::try_from(claimed.attempts)
            .unwrap_or(0)
            .saturating_add(1);
        let span = tracing::info_span!(
            "notification.deliver",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.full = %self.shown_url,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            order_id = %claimed.order_id,
            notification_id = %claimed.id,
            attempt,
        );
        if let Err(error) = span.set_parent(trace_context::extract(claimed.trace_headers())) {
            tracing::debug!(%error, "cannot continue the order's trace");
        }
        self.attempt(&claimed, attempt, token)
            .instrument(span)
            .await;
    }

    async fn attempt(&self, claimed: &Claimed, attempt: u32, token: Uuid) {
        let span = tracing::Span::current();
        let started = Instant::now();
        let result = self.post(claimed).await;
        metrics::histogram!("notification_delivery_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let step = self
            .policy
            .next_step(attempt, result, rand::random::<f64>());
        let (recorded, label) = match &step {
            NextStep::Delivered => (Recorded::Delivered, "delivered"),
            NextStep::RetryAfter { delay, error } => (
                Recorded::Retry {
                    error,
                    next_attempt_at: Utc::now()
                        + chrono::Duration::from_std(*delay).unwrap_or(chrono::Duration::MAX),
                },
                "retry",
            ),
            NextStep::Failed { error } => (Recorded::Failed { error }, "failed"),
        };
        if !matches!(step, NextStep::Delivered) {
            span.record("otel.status_code", "ERROR");
        }
        metrics::counter!("notification_deliveries_total", "result" => label).increment(1);
        let stored = async {
            let mut conn = self.pool.get().await.context("database unavailable")?;
            anyhow::Ok(db::record_attempt(&mut conn, claimed.id, token, recorded).await?)
        }
        .await;
        match (stored, &step) {
            (Ok(true), NextStep::Delivered) => {
                tracing::info!(order_id = %claimed.order_id, attempt, "notification delivered");
            }
            (Ok(true), NextStep::RetryAfter { delay, error }) => tracing::info!(
                order_id = %claimed.order_id,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = error.as_str(),
                "notification delivery failed, will retry"
            ),
            (Ok(true), NextStep::Failed { error }) => tracing::warn!(
                order_id = %claimed.order_id,
                attempt,
                error = error.as_str(),
                "notification delivery failed for good"
            ),
            (Ok(false), _) => tracing::warn!(
                order_id = %claimed.order_id,
                "notification claim lost before the attempt was recorded"
            ),
            (Err(error), _) => tracing::warn!(
                order_id = %claimed.order_id,
                error = format!("{error:#}"),
                "cannot record the delivery attempt; it will be retried after the lease"
            ),
        }
    }

    async fn post(&self, claimed: &Claimed) -> AttemptResult {
        let span = tracing::Span::current();
        let body = WebhookBody {
            notification_id: claimed.id.to_string(),
            order_id: claimed.order_id.to_string(),
            customer_id: &claimed.customer_id,
            outcome: &claimed.outcome,
            reason: &claimed.reason,
            created_at: claimed
                .created_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", claimed.id.to_string())
            .json(&body);
        for (name, value) in trace_context::inject(&span.context()) {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                span.record("http.response.status_code", status);
                if !response.status().is_success() {
                    span.record("error.type", status.to_string());
                }
                AttemptResult::from_status(status)
            }
            Err(error) if error.is_timeout() => {
                span.record("error.type", "timeout");
                AttemptResult::Retryable(format!(
                    "webhook did not answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            }
            Err(error) => {
                span.record("error.type", "connection");
                AttemptResult::Retryable(format!("webhook unreachable: {}", error_chain(&error)))
            }
        }
    }
}

/// An error and its sources, `outer: inner: ...`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
