//! gRPC serving pieces: the server-span layer, health and reflection, and
//! the proto timestamp of a point in time.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tower_http::classify::GrpcFailureClass;
use tower_http::trace::{MakeSpan, OnFailure, TraceLayer};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace_context;

/// A tower layer that opens a server span per RPC, continuing the caller's W3C
/// trace context from the request metadata. Health and reflection calls get none.
pub fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    ServerSpan,
    (),
    (),
    (),
    (),
    RecordFailure,
> {
    TraceLayer::new_for_grpc()
        .make_span_with(ServerSpan)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(RecordFailure)
}

#[derive(Debug, Clone, Copy)]
pub struct ServerSpan;

impl<B> MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> Span {
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
            return Span::none();
        }
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = trace_context::extract(
            request
                .headers()
                .iter()
                .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v))),
        );
        if let Err(error) = span.set_parent(parent) {
            tracing::debug!(%error, "cannot continue caller trace");
        }
        span
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RecordFailure;

impl OnFailure<GrpcFailureClass> for RecordFailure {
    fn on_failure(&mut self, failure: GrpcFailureClass, _latency: Duration, span: &Span) {
        span.record("otel.status_code", "ERROR");
        if let GrpcFailureClass::Code(code) = failure {
            span.record("rpc.grpc.status_code", code.get());
        }
    }
}

/// gRPC server reflection (v1 and v1alpha) over the given descriptor set.
pub fn reflection(
    file_descriptor_set: &'static [u8],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Resolves when `shutdown` is cancelled, after flipping every service's
/// health to NOT_SERVING so load balancers stop sending traffic.
pub async fn drain_signal(
    shutdown: CancellationToken,
    health: HealthReporter,
    services: Vec<String>,
) {
    shutdown.cancelled().await;
    for service in services.iter().map(String::as_str).chain([""]) {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    tracing::info!("grpc server draining");
}

/// Serves `routes` (plus health and reflection over `file_descriptor_set`)
/// on `listener` with the server-span layer and at most `max_in_flight`
/// calls at once (the rest are shed as UNAVAILABLE, see
/// [`crate::overload`]), until `shutdown`; then flips health to NOT_SERVING
/// and drains in-flight calls for at most `grace`. `services` are the names
/// whose health is reported SERVING, e.g. `OrderServiceServer::<_>::NAME`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    services: Vec<String>,
    file_descriptor_set: &'static [u8],
    max_in_flight: usize,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let (health, health_service) = tonic_health::server::health_reporter();
    for service in services.iter().map(String::as_str).chain([""]) {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let (reflection_v1, reflection_v1alpha) = reflection(file_descriptor_set)?;
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let drained = drain_signal(shutdown.clone(), health, services);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .layer(trace_layer())
        .layer(crate::overload::InFlightLimitLayer::new(max_in_flight))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drained);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("grpc server failed"),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("grpc server failed"),
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "in-flight requests cut off after grace period"
            );
            Ok(())
        }
    }
}

/// Runs long-lived tasks until the first one ends: an early end (error or
/// not) cancels `shutdown` so the others stop, and is reported as an error
/// unless shutdown was already requested.
pub async fn supervise(
    shutdown: CancellationToken,
    tasks: Vec<(
        &'static str,
        futures::future::BoxFuture<'static, anyhow::Result<()>>,
    )>,
) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for (name, task) in tasks {
        set.spawn(async move { (name, task.await) });
    }
    let mut first_error: Option<anyhow::Error> = None;
    while let Some(joined) = set.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(error) => ("task", Err(anyhow::anyhow!("task panicked: {error}"))),
        };
        let early = !shutdown.is_cancelled();
        match result {
            Err(error) => {
                tracing::error!(task = name, error = format!("{error:#}"), "task failed");
                first_error.get_or_insert(error.context(format!("{name} failed")));
            }
            Ok(()) if early => {
                tracing::error!(task = name, "task ended before shutdown");
                first_error.get_or_insert(anyhow::anyhow!("{name} ended before shutdown"));
            }
            Ok(()) => {}
        }
        shutdown.cancel();
    }
    first_error.map_or(Ok(()), Err)
}

/// The proto timestamp of `at` (seconds and nanoseconds since the epoch).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_keeps_seconds_and_sub_second_nanos() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("time");
        assert_eq!(
            timestamp(at),
            prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789
            }
        );
    }
}
