//! Tracing set-up: structured logs carrying trace and span ids, and spans
//! exported over OTLP. An unreachable collector costs at most the bounded
//! batch queue: spans beyond it are dropped, requests never wait for export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryArgs;

/// Keeps the tracer provider alive; call [`Telemetry::shutdown`] last thing
/// in `main` to flush buffered spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. `default_service_name` is used when
    /// `OTEL_SERVICE_NAME` is not set.
    pub fn init(args: &TelemetryArgs, default_service_name: &str) -> anyhow::Result<Self> {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let service_name = args
            .service_name
            .clone()
            .unwrap_or_else(|| default_service_name.to_owned());
        let provider = tracer_provider(args, &service_name)?;
        let tracer = provider.tracer(service_name.clone());

        // The log filter governs log lines only: spans are exported at INFO
        // and above whatever the log verbosity, so quiet logs never break traces.
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_error_records_to_exceptions(true)
            .with_filter(LevelFilter::INFO);
        let log_filter = EnvFilter::try_new(&args.log_filter)?;
        let logs = if args.log_format == "json" {
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(log_filter)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_filter(log_filter)
                .boxed()
        };
        tracing_subscriber::registry()
            .with(otel)
            .with(logs)
            .try_init()?;
        global::set_tracer_provider(provider.clone());
        tracing::info!(service = %service_name, endpoint = %args.otlp_endpoint, "telemetry started");
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Flushes and stops span export.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry shutdown failed: {error}");
        }
    }
}

fn tracer_provider(args: &TelemetryArgs, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        args.sampling_ratio.clamp(0.0, 1.0),
    )));
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.namespace", "ordersaga"))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource);
    if !args.otlp_endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(args.otlp_endpoint.clone())
            .with_timeout(std::time::Duration::from_secs(3))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}
