//! The consumer's metrics, scraped from the Prometheus endpoint (its own
//! test binary: the recorder is global to the process).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use consumer::{ConsumerConfig, Handler, HandlerError, Incoming};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use test_support::{TestDatabase, create_topic, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Takes effect of everything but "poison"; "flaky" fails once for now.
#[derive(Default)]
struct Picky {
    failed_once: Mutex<HashSet<Uuid>>,
}

impl Handler for Picky {
    fn handle<'a>(
        &'a self,
        _conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            match message.payload.as_slice() {
                b"poison" => Err(HandlerError::Permanent("poison".to_owned())),
                b"flaky"
                    if self
                        .failed_once
                        .lock()
                        .expect("lock")
                        .insert(message.message_id) =>
                {
                    Err(HandlerError::Transient(anyhow::anyhow!("not yet")))
                }
                _ => Ok(()),
            }
        })
    }
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: consumer\r\nConnection: close\r\n\r\n")
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
async fn the_consumer_reports_outcomes_retries_dead_letters_durations_and_lag() {
    let metrics = service_kit::metrics::install(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("metrics endpoint");
    let db = TestDatabase::create("consumer_metrics")
        .await
        .expect("database");
    service_kit::db::migrate(&db.url, [outbox::MIGRATIONS, consumer::MIGRATIONS])
        .await
        .expect("migrate");
    let topic = create_topic("consumer-metrics", 1).await.expect("topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", test_support::kafka_brokers())
        .create()
        .expect("producer");
    let send = async |id: Uuid, payload: &str| {
        let id = id.to_string();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("order-1")
                    .payload(payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "message-id",
                        value: Some(&id),
                    })),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    };
    let twice = Uuid::now_v7();
    send(twice, "first").await;
    send(twice, "first").await;
    send(Uuid::now_v7(), "poison").await;
    send(Uuid::now_v7(), "flaky").await;
    send(Uuid::now_v7(), "last").await;

    let name = test_support::unique("metrics-consumer");
    let mut config = ConsumerConfig::new(&name, &test_support::kafka_brokers(), &[&topic]);
    config.lag_interval = Duration::from_millis(500);
    config.max_batch = 1;
    let shutdown = CancellationToken::new();
    let pool = service_kit::db::pool(&db.url, 4).expect("pool");
    let running = tokio::spawn(consumer::run(
        config,
        pool,
        Arc::new(Picky::default()),
        shutdown.clone(),
    ));

    let labels = format!("consumer=\"{name}\",topic=\"{topic}\"");
    let expected = [
        format!("consumer_messages_total{{{labels},outcome=\"handled\"}} 3"),
        format!("consumer_messages_total{{{labels},outcome=\"duplicate\"}} 1"),
        format!("consumer_messages_total{{{labels},outcome=\"dead_lettered\"}} 1"),
        format!("consumer_dead_letters_total{{{labels}}} 1"),
        format!("consumer_retries_total{{consumer=\"{name}\",kind=\"transient\"}} 1"),
        format!("consumer_handle_duration_seconds_count{{consumer=\"{name}\"}} 4"),
        format!("consumer_lag{{{labels},partition=\"0\"}} 0"),
    ];
    let scraped = eventually(Duration::from_secs(30), "metrics reported", async || {
        let body = scrape(metrics.local_addr()).await?;
        Ok(expected
            .iter()
            .all(|line| body.contains(line.as_str()))
            .then_some(()))
    })
    .await;
    if let Err(error) = &scraped {
        let body = scrape(metrics.local_addr()).await.unwrap_or_default();
        panic!("{error:#}\nexpected {expected:#?}\nscraped:\n{body}");
    }
    shutdown.cancel();
    running
        .await
        .expect("join")
        .expect("consumer stops cleanly");
}
