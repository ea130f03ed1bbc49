//! Tracing set-up: structured logs carrying trace and span ids (and the
//! order id when one is in scope), spans exported over OTLP, and the
//! Prometheus `/metrics` endpoint when `METRICS_LISTEN_ADDR` is set. An
//! unreachable collector costs at most the bounded batch queue: spans beyond
//! it are dropped, requests never wait for export.

use std::net::SocketAddr;
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
use crate::metrics::MetricsServer;

/// Keeps the tracer provider and the metrics endpoint alive; call
/// [`Telemetry::shutdown`] last thing in `main` to flush buffered spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    metrics: Option<MetricsServer>,
}

impl Telemetry {
    /// Installs the global subscriber and, when `args.metrics_listen_addr`
    /// is set, the global metrics recorder with its `/metrics` endpoint.
    /// `default_service_name` is used when `OTEL_SERVICE_NAME` is not set.
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
        let metrics = args
            .metrics_listen_addr
            .map(crate::metrics::install)
            .transpose()?;
        tracing::info!(
            service = %service_name,
            endpoint = %args.otlp_endpoint,
            metrics = ?metrics.as_ref().map(MetricsServer::local_addr),
            "telemetry started"
        );
        Ok(Self {
            provider: Some(provider),
            metrics,
        })
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Flushes and stops span export.
    pub fn shutdown(mut self) {
        self.metrics.take();
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry shutdown failed: {error}");
        }
    }
}

/// The JSON log format with the OpenTelemetry `trace_id` and `span_id` of
/// the current span on every line, so logs and traces correlate, and the
/// `order_id` field of the innermost span in scope that has one, so every
/// line about an order can be found by its id.
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
        let order_id = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let extensions = span.extensions();
                let fields = extensions.get::<tracing_subscriber::fmt::FormattedFields<N>>()?;
                order_id_field(fields.as_str())
            })
        });
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        writer.write_str("{")?;
        if let Some(ids) = ids {
            write!(
                writer,
                "\"trace_id\":\"{}\",\"span_id\":\"{}\",",
                ids.trace_id(),
                ids.span_id()
            )?;
        }
        if let Some(order_id) = order_id {
            write!(writer, "\"order_id\":{order_id},")?;
        }
        writer.write_str(rest)
    }
}

/// The `order_id` of a span's fields as formatted by `JsonFields` (a JSON
/// object), as a JSON value ready to write.
fn order_id_field(fields: &str) -> Option<String> {
    if !fields.contains("\"order_id\"") {
        return None;
    }
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(fields).ok()?;
    map.remove("order_id").map(|value| value.to_string())
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

    fn capture_json(log: impl FnOnce()) -> Vec<serde_json::Value> {
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
        tracing::dispatcher::with_default(&dispatch, log);
        let output = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
        output
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_ids_of_their_span() {
        let lines = capture_json(|| {
            let span = tracing::info_span!("work", order_id = "o-1");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}");
        };
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
        assert_eq!(line["span"]["order_id"], "o-1");
        assert_eq!(line["fields"]["message"], "inside");
    }

    #[test]
    fn json_log_lines_carry_the_order_id_of_the_innermost_span_that_has_one() {
        let lines = capture_json(|| {
            tracing::info!("outside");
            let outer = tracing::info_span!("consume", order_id = %"o-\"1\"");
            let _outer = outer.enter();
            let inner = tracing::info_span!("reserve", sku = "sku-1");
            let _inner = inner.enter();
            tracing::info!("in a span without order id");
            let innermost = tracing::info_span!("nested", order_id = "o-2");
            let _innermost = innermost.enter();
            tracing::info!("in a span with its own");
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].get("order_id").is_none(), "no order in scope");
        assert_eq!(lines[1]["order_id"], "o-\"1\"");
        assert_eq!(lines[1]["span"]["sku"], "sku-1");
        assert_eq!(lines[1]["trace_id"], lines[2]["trace_id"]);
        assert_eq!(lines[2]["order_id"], "o-2");
    }
}
