//! The Prometheus endpoint that `Telemetry::init` starts when
//! `METRICS_LISTEN_ADDR` is set, read back over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::config::TelemetryArgs;
use service_kit::telemetry::Telemetry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("answered in time")
    .expect("response read");
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_metrics_are_served_in_the_prometheus_text_format() {
    let args = TelemetryArgs {
        metrics_listen_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..TelemetryArgs::quiet()
    };
    let telemetry = Telemetry::init(&args, "metrics-test").expect("telemetry");
    let addr = telemetry.metrics_addr().expect("metrics served");
    assert_ne!(addr.port(), 0);

    metrics::counter!("test_messages_total", "outcome" => "handled").increment(3);
    metrics::gauge!("test_backlog", "database" => "order_db").set(7.0);
    metrics::histogram!("test_handle_duration_seconds").record(0.02);
    metrics::histogram!("test_batch_size").record(30.0);

    let response = get(addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("content-type: text/plain; version=0.0.4"));
    assert!(
        response.contains("test_messages_total{outcome=\"handled\"} 3"),
        "{response}"
    );
    assert!(
        response.contains("test_backlog{database=\"order_db\"} 7"),
        "{response}"
    );
    // Latency buckets from 1 ms to 30 s; the 20 ms sample is in le=0.025 and above only.
    assert!(response.contains("test_handle_duration_seconds_bucket{le=\"0.001\"} 0"));
    assert!(response.contains("test_handle_duration_seconds_bucket{le=\"0.01\"} 0"));
    assert!(response.contains("test_handle_duration_seconds_bucket{le=\"0.025\"} 1"));
    assert!(response.contains("test_handle_duration_seconds_bucket{le=\"30\"} 1"));
    assert!(response.contains("test_handle_duration_seconds_count 1"));
    // Size buckets for `_size` histograms.
    assert!(
        response.contains("test_batch_size_bucket{le=\"20\"} 0"),
        "{response}"
    );
    assert!(response.contains("test_batch_size_bucket{le=\"50\"} 1"));

    assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    telemetry.shutdown();
}
