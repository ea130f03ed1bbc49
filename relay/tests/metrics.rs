//! The relay's metrics, scraped from the Prometheus endpoint (its own test
//! binary: the recorder is global to the process).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::AsyncConnection;
use outbox::OutgoingMessage;
use outbox_relay::{Config, Relay};
use service_kit::config::{ShutdownArgs, TelemetryArgs};
use test_support::{TestDatabase, create_topic, eventually, receive_until, tail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await??;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_reports_published_rows_refusals_backlog_and_lease() {
    let metrics = service_kit::metrics::install(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("metrics endpoint");
    let db = TestDatabase::create("relay_metrics")
        .await
        .expect("database");
    service_kit::db::migrate(&db.url, [outbox::MIGRATIONS])
        .await
        .expect("migrate");
    let topic = create_topic("relay-metrics", 2).await.expect("topic");
    let consumer = tail(&topic).await.expect("consumer");
    let message = |key: &str, bytes: usize| OutgoingMessage {
        message_id: uuid::Uuid::now_v7(),
        topic: topic.clone(),
        key: key.to_owned(),
        message_type: "test.Metrics".to_owned(),
        headers: BTreeMap::new(),
        payload: vec![1; bytes],
    };
    let mut conn = db.connect().await.expect("connect");
    let messages = vec![
        message("order-1", 10),
        message("order-2", 2 * 1024 * 1024),
        message("order-3", 10),
    ];
    conn.transaction::<_, outbox::OutboxError, _>(async |conn| {
        outbox::enqueue(conn, &messages).await
    })
    .await
    .expect("enqueue");

    let relay = Relay::build(Config {
        database_urls: vec![db.url.clone()],
        kafka_brokers: test_support::kafka_brokers(),
        health_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        batch_size: 100,
        poll_interval_ms: 100,
        telemetry: TelemetryArgs::quiet(),
        shutdown: ShutdownArgs {
            shutdown_grace_seconds: 1,
        },
    })
    .await
    .expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));
    receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 2)
        .await
        .expect("published");

    let database = format!("database=\"{}\"", db.name);
    let expected = [
        format!("relay_published_total{{{database},topic=\"{topic}\"}} 2"),
        format!("relay_publish_errors_total{{{database},reason=\"message_too_large\"}} 1"),
        format!("relay_lease_held{{{database}}} 1"),
        format!("outbox_backlog{{{database}}} 0"),
        format!("outbox_oldest_age_seconds{{{database}}} 0"),
        format!("outbox_parked{{{database}}} 1"),
        format!("relay_batch_size_bucket{{{database},le=\"5\"}} 1"),
    ];
    // The gauges are counted every 2 s.
    let scraped = eventually(Duration::from_secs(15), "metrics reported", async || {
        let body = scrape(metrics.local_addr()).await?;
        Ok(expected
            .iter()
            .all(|line| body.contains(line.as_str()))
            .then_some(body))
    })
    .await;
    if let Err(error) = &scraped {
        let body = scrape(metrics.local_addr()).await.unwrap_or_default();
        panic!("{error:#}\nexpected {expected:#?}\nscraped:\n{body}");
    }

    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
    let body = scrape(metrics.local_addr()).await.expect("scrape");
    assert!(
        body.contains(&format!("relay_lease_held{{{database}}} 0")),
        "the lease is released at shutdown"
    );
}
