//! W3C trace context (`traceparent`, `tracestate`) carried in message headers,
//! so a trace continues across the outbox, the relay and Kafka.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of the current `tracing` span as headers; empty when
/// there is no sampled or valid context.
pub fn current_context_headers() -> BTreeMap<String, String> {
    inject(&tracing::Span::current().context())
}

/// Encodes `cx` as W3C trace context headers.
pub fn inject(cx: &Context) -> BTreeMap<String, String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.into_iter().collect()
}

/// Decodes W3C trace context from header pairs; an empty context when absent
/// or malformed.
pub fn extract<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let carrier: HashMap<String, String> = headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    TraceContextPropagator::new().extract(&carrier)
}

/// The trace id of the current span as 32 lowercase hex digits, if it has one.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracted_context_round_trips_through_headers() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = extract([("traceparent", traceparent)]);
        assert!(cx.span().span_context().is_valid());
        let headers = inject(&cx);
        assert_eq!(
            headers.get("traceparent").map(String::as_str),
            Some(traceparent)
        );
    }

    #[test]
    fn malformed_traceparent_yields_no_context() {
        let cx = extract([("traceparent", "not-a-trace")]);
        assert!(!cx.span().span_context().is_valid());
        assert!(inject(&cx).is_empty());
    }
}
