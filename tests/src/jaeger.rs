//! Traces read back from Jaeger's HTTP query API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn jaeger_query_url() -> String {
    std::env::var("JAEGER_QUERY_URL").unwrap_or_else(|_| "http://127.0.0.1:16686".into())
}

/// Fails when Jaeger's query API does not answer: the suite never skips
/// its trace assertions.
pub async fn ensure_reachable() -> anyhow::Result<()> {
    let answer = tokio::time::timeout(Duration::from_secs(5), jaeger_get("/api/services"))
        .await
        .context("Jaeger query API did not answer within 5 s")?
        .with_context(|| {
            format!(
                "Jaeger query API at {} is unreachable; run `scripts/infra.sh up`",
                jaeger_query_url()
            )
        })?;
    anyhow::ensure!(
        answer.get("data").is_some(),
        "unexpected answer from Jaeger: {answer}"
    );
    Ok(())
}

/// Percent-encodes a query string value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET` on Jaeger's query API, decoded as JSON (`Null` for 404).
pub async fn jaeger_get(path: &str) -> anyhow::Result<serde_json::Value> {
    let base = jaeger_query_url();
    let authority = base
        .strip_prefix("http://")
        .context("JAEGER_QUERY_URL must be http://host:port")?
        .trim_end_matches('/')
        .to_owned();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("Jaeger query API at {base} is unreachable"))?;
        // HTTP/1.0 keeps the response unchunked and closes the connection.
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .context("Jaeger query timed out")??;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response from Jaeger")?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.contains(" 404 ") {
        return Ok(serde_json::Value::Null);
    }
    anyhow::ensure!(
        status_line.contains(" 200 "),
        "Jaeger answered {status_line}: {body}"
    );
    Ok(serde_json::from_str(body)?)
}

/// A reference to another span (its parent, or a span it follows from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `CHILD_OF` or `FOLLOWS_FROM`.
    pub kind: String,
    pub trace_id: String,
    pub span_id: String,
}

/// A span event (Jaeger "log").
#[derive(Debug, Clone)]
pub struct SpanEvent {
    /// Microseconds since the epoch.
    pub timestamp: u64,
    pub fields: Vec<(String, String)>,
}

impl SpanEvent {
    /// The event's name (the `event` field).
    pub fn name(&self) -> &str {
        self.field("event").unwrap_or_default()
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub operation: String,
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    pub start_time: u64,
    pub duration: u64,
    pub tags: Vec<(String, String)>,
    pub events: Vec<SpanEvent>,
}

impl Span {
    /// The parent span id: the `CHILD_OF` reference, else the first
    /// `FOLLOWS_FROM` one.
    pub fn parent_span_id(&self) -> Option<&str> {
        self.references
            .iter()
            .find(|r| r.kind == "CHILD_OF")
            .or_else(|| self.references.first())
            .map(|r| r.span_id.as_str())
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_event(&self, name: &str) -> bool {
        self.events.iter().any(|e| e.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn key_values(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|kv| (text(&kv["key"]), text(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_trace(data: &serde_json::Value) -> Trace {
    let processes = &data["processes"];
    let spans = data["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|span| {
                    let process = span["processID"].as_str().unwrap_or_default();
                    Span {
                        trace_id: text(&span["traceID"]),
                        span_id: text(&span["spanID"]),
                        service: text(&processes[process]["serviceName"]),
                        operation: text(&span["operationName"]),
                        references: span["references"]
                            .as_array()
                            .map(|refs| {
                                refs.iter()
                                    .map(|r| Reference {
                                        kind: text(&r["refType"]),
                                        trace_id: text(&r["traceID"]),
                                        span_id: text(&r["spanID"]),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        start_time: span["startTime"].as_u64().unwrap_or_default(),
                        duration: span["duration"].as_u64().unwrap_or_default(),
                        tags: key_values(&span["tags"]),
                        events: span["logs"]
                            .as_array()
                            .map(|logs| {
                                logs.iter()
                                    .map(|log| SpanEvent {
                                        timestamp: log["timestamp"].as_u64().unwrap_or_default(),
                                        fields: key_values(&log["fields"]),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Trace {
        trace_id: text(&data["traceID"]),
        spans,
    }
}

/// Trace `trace_id` as Jaeger has it now (no spans if unknown).
pub async fn fetch_trace(trace_id: &str) -> anyhow::Result<Trace> {
    let answer = jaeger_get(&format!("/api/traces/{trace_id}")).await?;
    Ok(answer
        .get("data")
        .and_then(|d| d.as_array())
        .and_then(|d| d.first())
        .map(parse_trace)
        .unwrap_or_else(|| Trace {
            trace_id: trace_id.to_owned(),
            spans: Vec::new(),
        }))
}

/// Fetches trace `trace_id` until `complete` holds for it, for at most
/// `timeout`; then waits a little more for stragglers and fetches it again
/// (so counts such as "exactly one root" see every span that arrived).
pub async fn wait_trace(
    trace_id: &str,
    timeout: Duration,
    complete: impl Fn(&Trace) -> bool,
) -> anyhow::Result<Trace> {
    let deadline = Instant::now() + timeout;
    loop {
        let trace = fetch_trace(trace_id).await?;
        if complete(&trace) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return fetch_trace(trace_id).await;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "trace {trace_id} incomplete after {timeout:?}; it has: {}",
                trace.summary()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ids of the traces (last hour, up to `limit`) with a span of `service`
/// tagged `key` = `value`.
pub async fn find_traces(
    service: &str,
    key: &str,
    value: &str,
    limit: usize,
) -> anyhow::Result<BTreeSet<String>> {
    let tags = serde_json::json!({ key: value }).to_string();
    let path = format!(
        "/api/traces?service={}&tags={}&lookback=1h&limit={limit}",
        encode(service),
        encode(&tags)
    );
    let answer = jaeger_get(&path).await?;
    Ok(answer
        .get("data")
        .and_then(|d| d.as_array())
        .map(|traces| traces.iter().map(|t| text(&t["traceID"])).collect())
        .unwrap_or_default())
}

impl Trace {
    /// Spans without a reference to another span: the trace's roots.
    pub fn roots(&self) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.references.is_empty())
            .collect()
    }

    /// Spans whose parent is not in this trace (lost or never exported).
    pub fn orphans(&self) -> Vec<&Span> {
        let ids: BTreeSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        self.spans
            .iter()
            .filter(|s| s.parent_span_id().is_some_and(|p| !ids.contains(p)))
            .collect()
    }

    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }

    pub fn has_service(&self, service: &str) -> bool {
        self.spans.iter().any(|s| s.service == service)
    }

    /// Spans named `operation`, earliest first.
    pub fn named(&self, operation: &str) -> Vec<&Span> {
        let mut spans: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.operation == operation)
            .collect();
        spans.sort_by_key(|s| s.start_time);
        spans
    }

    /// The earliest span named `operation`.
    pub fn first(&self, operation: &str) -> Option<&Span> {
        self.named(operation).into_iter().next()
    }

    pub fn has_operation(&self, operation: &str) -> bool {
        self.spans.iter().any(|s| s.operation == operation)
    }

    /// Spans with an event named `name`.
    pub fn with_event(&self, name: &str) -> Vec<&Span> {
        self.spans.iter().filter(|s| s.has_event(name)).collect()
    }

    /// `service: operation` of every span, in start order, for messages.
    pub fn summary(&self) -> String {
        let mut spans: Vec<&Span> = self.spans.iter().collect();
        spans.sort_by_key(|s| s.start_time);
        let lines: Vec<String> = spans
            .iter()
            .map(|s| {
                let events: Vec<&str> = s.events.iter().map(SpanEvent::name).collect();
                if events.is_empty() {
                    format!("{}: {}", s.service, s.operation)
                } else {
                    format!("{}: {} {events:?}", s.service, s.operation)
                }
            })
            .collect();
        format!("{} spans [\n  {}\n]", spans.len(), lines.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode(r#"{"a":"b c"}"#), "%7B%22a%22%3A%22b%20c%22%7D");
        assert_eq!(encode("order-service"), "order-service");
    }

    #[test]
    fn a_trace_is_parsed_with_references_tags_and_events() {
        let data = serde_json::json!({
            "traceID": "t1",
            "processes": { "p1": { "serviceName": "orchestrator" } },
            "spans": [
                { "traceID": "t1", "spanID": "a", "operationName": "root", "processID": "p1",
                  "references": [], "startTime": 10, "duration": 5, "tags": [], "logs": [] },
                { "traceID": "t1", "spanID": "b", "operationName": "child", "processID": "p1",
                  "references": [{ "refType": "CHILD_OF", "traceID": "t1", "spanID": "a" }],
                  "startTime": 12, "duration": 1,
                  "tags": [{ "key": "order_id", "type": "string", "value": "o-1" }],
                  "logs": [{ "timestamp": 13, "fields": [{ "key": "event", "type": "string", "value": "saga.step.timeout" }] }] },
                { "traceID": "t1", "spanID": "c", "operationName": "lost", "processID": "p1",
                  "references": [{ "refType": "CHILD_OF", "traceID": "t1", "spanID": "zz" }],
                  "startTime": 11, "duration": 1, "tags": [], "logs": [] }
            ]
        });
        let trace = parse_trace(&data);
        assert_eq!(trace.roots().len(), 1);
        assert_eq!(trace.roots()[0].span_id, "a");
        assert_eq!(trace.orphans().len(), 1);
        let child = trace.first("child").expect("child");
        assert_eq!(child.parent_span_id(), Some("a"));
        assert_eq!(child.tag("order_id"), Some("o-1"));
        assert!(child.has_event("saga.step.timeout"));
        assert_eq!(trace.with_event("saga.step.timeout").len(), 1);
        assert_eq!(trace.services().len(), 1);
    }
}
