//! Tracing set-up: structured logs carrying trace and span ids, and spans
//! exported over OTLP. An unreachable collector costs at most the bounded
//! batch queue: spans beyond it are dropped, requests never wait for export.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Dispatch;
use tracing::dispatcher::WeakDispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
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
        let json = JsonWithTrace::new();
        let logs = if args.log_format == "json" {
            tracing_subscriber::fmt::layer()
                .event_format(json.clone())
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .with_filter(log_filter)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_filter(log_filter)
                .boxed()
        };
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(otel).with(logs));
        json.attach(&dispatch);
        tracing::dispatcher::set_global_default(dispatch)?;
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

/// The JSON log format with the OpenTelemetry `trace_id` and `span_id` of
/// the current span on every line, so logs and traces correlate.
///
/// Inside a subscriber callback tracing hides the dispatcher (no re-entrant
/// dispatch), so the formatter reaches the OpenTelemetry layer through a
/// weak handle set once the dispatcher exists.
#[derive(Clone)]
pub struct JsonWithTrace {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonWithTrace {
    pub fn new() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false),
            dispatch: Arc::default(),
        }
    }

    /// Points the formatter at the dispatcher it is installed in.
    pub fn attach(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }
}

impl Default for JsonWithTrace {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTrace
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;

        // Read before formatting: the inner formatter holds span extensions.
        let ids = ctx
            .lookup_current()
            .zip(self.dispatch.get().and_then(WeakDispatch::upgrade))
            .and_then(|(span, dispatch)| {
                tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
            })
            .map(|cx| cx.span().span_context().clone())
            .filter(|ids| ids.is_valid());
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match (line.strip_prefix('{'), ids) {
            (Some(rest), Some(ids)) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writer.write_str(&line),
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::JsonWithTrace;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_ids_of_their_span() {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let json = JsonWithTrace::new();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(json.clone())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(move || writer.clone()),
            );
        let dispatch = tracing::Dispatch::new(subscriber);
        json.attach(&dispatch);
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("work", order_id = "o-1");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let output = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
        let line: serde_json::Value = serde_json::from_str(output.trim()).expect("one JSON line");
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
        assert_eq!(line["span"]["order_id"], "o-1");
        assert_eq!(line["fields"]["message"], "inside");
    }
}
