//! Outbox relay benchmarks against the real PostgreSQL and Kafka started by
//! `scripts/infra.sh up` (see docs/benchmarks.md for figures and how to read them).
//!
//! * `drain`: a 100,000-row backlog in a fresh database, then the relay runs
//!   in-process; messages/s until the outbox is empty and a consumer received
//!   every message, checking each key's order.
//! * `latency`: 1,000 messages/s for 20 s, each committed in its own
//!   transaction by several producers; commit-to-consumed latency percentiles.
//!
//! Run: `cargo bench -p outbox-relay --bench relay_bench [-- drain|latency]`.
//! Knobs (environment): BENCH_ROWS, BENCH_KEYS, BENCH_PAYLOAD_BYTES,
//! BENCH_PARTITIONS, BENCH_RATE, BENCH_SECONDS, BENCH_PRODUCERS,
//! BENCH_OTLP_ENDPOINT (empty: spans are built but not exported), BENCH_LOG,
//! RELAY_BATCH_SIZE, RELAY_POLL_INTERVAL_MS.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use diesel_async::AsyncConnection;
use hdrhistogram::Histogram;
use outbox::OutgoingMessage;
use outbox_relay::{Config, Relay};
use prost::Message as _;
use rdkafka::message::Message as _;
use service_kit::config::{ShutdownArgs, TelemetryArgs};
use service_kit::telemetry::Telemetry;
use test_support::{TestDatabase, create_topic, tail};
use tokio_util::sync::CancellationToken;

/// The benchmark payload: protobuf, like every real message, carrying what
/// the consumer checks (key and per-key sequence) and measures (timestamps).
#[derive(Clone, PartialEq, prost::Message)]
struct BenchEvent {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(uint64, tag = "3")]
    index: u64,
    /// Wall clock, microseconds since the epoch, taken just before the
    /// enqueuing transaction starts.
    #[prost(int64, tag = "4")]
    enqueued_at_us: i64,
    #[prost(bytes = "vec", tag = "5")]
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Settings {
    rows: u64,
    keys: u64,
    payload_bytes: usize,
    partitions: i32,
    rate: u64,
    seconds: u64,
    producers: u64,
    batch_size: i64,
    poll_interval_ms: u64,
    otlp_endpoint: String,
    log_filter: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        // The relay's own defaults, so the benchmark measures what ships.
        let defaults = <Config as clap::Parser>::parse_from([
            "outbox-relay",
            "--database-urls",
            "postgres://unused/unused",
        ]);
        Self {
            rows: env_or("BENCH_ROWS", 100_000),
            keys: env_or("BENCH_KEYS", 1_000),
            payload_bytes: env_or("BENCH_PAYLOAD_BYTES", 200),
            partitions: env_or("BENCH_PARTITIONS", 6),
            rate: env_or("BENCH_RATE", 1_000),
            seconds: env_or("BENCH_SECONDS", 20),
            producers: env_or("BENCH_PRODUCERS", 20),
            batch_size: env_or("RELAY_BATCH_SIZE", defaults.batch_size),
            poll_interval_ms: env_or("RELAY_POLL_INTERVAL_MS", defaults.poll_interval_ms),
            otlp_endpoint: std::env::var("BENCH_OTLP_ENDPOINT").unwrap_or_default(),
            log_filter: std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
        }
    }

    fn relay_config(&self, url: &str) -> Config {
        Config {
            database_urls: vec![url.to_owned()],
            kafka_brokers: test_support::kafka_brokers(),
            health_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch_size: self.batch_size,
            poll_interval_ms: self.poll_interval_ms,
            telemetry: self.telemetry(),
            shutdown: ShutdownArgs {
                shutdown_grace_seconds: 5,
            },
        }
    }

    fn telemetry(&self) -> TelemetryArgs {
        TelemetryArgs {
            log_format: "text".into(),
            log_filter: self.log_filter.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            service_name: Some("outbox-relay-bench".into()),
            sampling_ratio: 1.0,
            metrics_listen_addr: None,
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn key_name(key: u64) -> String {
    format!("order-{key:06}")
}

/// A message as a service would enqueue it: protobuf payload of about
/// `payload_bytes`, a fresh UUID v7 and a sampled W3C trace context.
fn bench_message(
    topic: &str,
    key: u64,
    sequence: u64,
    index: u64,
    payload_bytes: usize,
) -> OutgoingMessage {
    let key = key_name(key);
    let mut event = BenchEvent {
        key: key.clone(),
        sequence,
        index,
        enqueued_at_us: now_us(),
        body: Vec::new(),
    };
    let filler = payload_bytes.saturating_sub(event.encoded_len() + 3);
    event.body = (0..filler)
        .map(|i| u8::try_from((i * 31 + usize::try_from(index).unwrap_or(0)) % 251).unwrap_or(0))
        .collect();
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    OutgoingMessage {
        message_id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        key,
        message_type: "ordersaga.bench.v1.BenchEvent".to_owned(),
        headers: BTreeMap::from([(
            "traceparent".to_owned(),
            format!("00-{trace_id}-{span_id}-01"),
        )]),
        payload: event.encode_to_vec(),
    }
}

async fn outbox_database(prefix: &str) -> anyhow::Result<TestDatabase> {
    let db = TestDatabase::create(prefix).await?;
    service_kit::db::migrate(&db.url, [outbox::MIGRATIONS]).await?;
    Ok(db)
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc: this process (relay, producers, consumer), the
// PostgreSQL server processes, the Kafka broker, and the whole machine.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Component {
    Own,
    Postgres,
    Kafka,
}

#[derive(Debug, Clone, Default)]
struct CpuSample {
    at: Option<Instant>,
    /// Ticks of each process of interest, by pid.
    processes: HashMap<u32, (Component, u64)>,
    busy: u64,
    iowait: u64,
}

impl CpuSample {
    /// Ticks `component` used since `before`; processes started in between
    /// count whole, processes that ended in between are lost.
    fn used_since(&self, before: &CpuSample, component: Component) -> u64 {
        self.processes
            .iter()
            .filter(|(_, (c, _))| *c == component)
            .map(|(pid, (_, ticks))| {
                let earlier = before.processes.get(pid).map_or(0, |(_, t)| *t);
                ticks.saturating_sub(earlier)
            })
            .sum()
    }
}

fn proc_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields after the comm start at "state" (3rd field): utime is 14th, stime 15th.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The broker's JVM runs the main class `kafka.Kafka`.
fn is_kafka_broker(pid: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka"))
        .unwrap_or(false)
}

fn cpu_sample() -> CpuSample {
    let mut sample = CpuSample {
        at: Some(Instant::now()),
        ..CpuSample::default()
    };
    let own = std::process::id();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str() else { continue };
            let Ok(number) = pid.parse::<u32>() else {
                continue;
            };
            let Some((comm, ticks)) = proc_ticks(pid) else {
                continue;
            };
            let component = if number == own {
                Component::Own
            } else if comm == "postgres" {
                Component::Postgres
            } else if comm == "java" && is_kafka_broker(pid) {
                Component::Kafka
            } else {
                continue;
            };
            sample.processes.insert(number, (component, ticks));
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = stat.lines().next()
    {
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = values.get(3).copied().unwrap_or(0);
        sample.iowait = values.get(4).copied().unwrap_or(0);
        let total: u64 = values.iter().take(8).sum();
        sample.busy = total - idle - sample.iowait;
    }
    sample
}

/// CPU use between two samples, in percent of one core (USER_HZ is 100, so
/// ticks per second are percent of a core).
fn cpu_report(before: &CpuSample, after: &CpuSample) -> String {
    let (Some(start), Some(end)) = (before.at, after.at) else {
        return String::new();
    };
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    let pct = |ticks: u64| ticks as f64 / seconds;
    let own = after.used_since(before, Component::Own);
    let postgres = after.used_since(before, Component::Postgres);
    let kafka = after.used_since(before, Component::Kafka);
    let busy = after.busy.saturating_sub(before.busy);
    format!(
        "cpu over {seconds:.1} s (% of one core; {cores} cores = {max}%): bench process (relay, producers, consumer) {:.0}%, \
         postgres {:.0}%, kafka {:.0}%, everything else {:.0}%; machine busy {:.0}%, iowait {:.0}%",
        pct(own),
        pct(postgres),
        pct(kafka),
        pct(busy.saturating_sub(own + postgres + kafka)),
        pct(busy),
        pct(after.iowait.saturating_sub(before.iowait)),
        cores = cores(),
        max = cores() * 100,
    )
}

fn cores() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

fn meminfo_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The consumer: its own thread and runtime, so its timing does not depend on
// the relay's scheduler. Records each index's receive time and checks that
// every key's sequence numbers arrive in order.

struct Consumed {
    received_at_us: Vec<AtomicI64>,
    count: AtomicU64,
    duplicates: AtomicU64,
    order_violations: AtomicU64,
    done_at: std::sync::Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl Consumed {
    fn new(expected: u64) -> Arc<Self> {
        Arc::new(Self {
            received_at_us: (0..expected).map(|_| AtomicI64::new(0)).collect(),
            count: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            order_violations: AtomicU64::new(0),
            done_at: std::sync::Mutex::new(None),
            stop: AtomicBool::new(false),
        })
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn done_at(&self) -> Option<Instant> {
        *self.done_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts consuming `topic` from its current end; returns once positioned.
async fn start_consumer(
    topic: &str,
    expected: u64,
) -> anyhow::Result<(Arc<Consumed>, std::thread::JoinHandle<anyhow::Result<()>>)> {
    let consumed = Consumed::new(expected);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let topic = topic.to_owned();
    let shared = consumed.clone();
    let handle = std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let consumer = match tail(&topic).await {
                    Ok(consumer) => {
                        let _ = ready_tx.send(Ok(()));
                        consumer
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return Ok(());
                    }
                };
                let mut last: HashMap<String, u64> = HashMap::new();
                while !shared.stop.load(Ordering::Relaxed) {
                    let message =
                        match tokio::time::timeout(Duration::from_millis(200), consumer.recv())
                            .await
                        {
                            Ok(message) => message?,
                            Err(_) => continue,
                        };
                    let received_at = now_us();
                    let event = BenchEvent::decode(message.payload().unwrap_or_default())?;
                    match last.get(&event.key) {
                        Some(&previous) if event.sequence <= previous => {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Some(&previous) if event.sequence != previous + 1 => {
                            shared.order_violations.fetch_add(1, Ordering::Relaxed);
                        }
                        None if event.sequence != 0 => {
                            shared.order_violations.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    last.insert(event.key, event.sequence);
                    if let Some(slot) = usize::try_from(event.index)
                        .ok()
                        .and_then(|i| shared.received_at_us.get(i))
                    {
                        slot.store(received_at, Ordering::Relaxed);
                    }
                    let count = shared.count.fetch_add(1, Ordering::Relaxed) + 1;
                    if count == expected {
                        *shared.done_at.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                    }
                }
                Ok(())
            })
        })?;
    ready_rx
        .await
        .context("consumer thread ended before positioning")??;
    Ok((consumed, handle))
}

fn stop_consumer(consumed: &Consumed, handle: std::thread::JoinHandle<anyhow::Result<()>>) {
    consumed.stop.store(true, Ordering::Relaxed);
    match handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("consumer failed: {error:#}"),
        Err(_) => eprintln!("consumer panicked"),
    }
}

fn start_relay(
    settings: &Settings,
    url: &str,
) -> impl std::future::Future<
    Output = anyhow::Result<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
> {
    let config = settings.relay_config(url);
    async move {
        let relay = Relay::build(config).await?;
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));
        Ok((shutdown, running))
    }
}

async fn stop_relay(
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    shutdown.cancel();
    running.await.context("relay task panicked")?
}

// ---------------------------------------------------------------------------

async fn drain(settings: &Settings) -> anyhow::Result<()> {
    println!("\n== drain: {} rows backlog ==", settings.rows);
    let db = outbox_database("bench_drain").await?;
    let topic = create_topic("bench-drain", settings.partitions).await?;

    // The backlog, in id order: message i is key i % keys, sequence i / keys.
    // One connection and 1,000-row INSERTs keep each key's ids in sequence order.
    let insert_started = Instant::now();
    let mut conn = db.connect().await?;
    let chunk = 1_000;
    let mut index = 0;
    while index < settings.rows {
        let end = (index + chunk).min(settings.rows);
        let messages: Vec<_> = (index..end)
            .map(|i| {
                bench_message(
                    &topic,
                    i % settings.keys,
                    i / settings.keys,
                    i,
                    settings.payload_bytes,
                )
            })
            .collect();
        conn.transaction::<_, outbox::OutboxError, _>(async |conn| {
            outbox::enqueue(conn, &messages).await
        })
        .await?;
        index = end;
    }
    let insert_time = insert_started.elapsed();
    println!(
        "backlog inserted: {} rows in {:.2} s ({:.0} rows/s), payload {} bytes",
        settings.rows,
        insert_time.as_secs_f64(),
        settings.rows as f64 / insert_time.as_secs_f64(),
        bench_message(&topic, 0, 0, 0, settings.payload_bytes)
            .payload
            .len(),
    );

    let (consumed, consumer) = start_consumer(&topic, settings.rows).await?;
    let cpu_before = cpu_sample();
    let started = Instant::now();
    let (shutdown, running) = start_relay(settings, &db.url).await?;

    let deadline = started + Duration::from_secs(180);
    let mut outbox_empty_at = None;
    let mut last_progress = (started, 0u64);
    let mut timeline = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if outbox_empty_at.is_none() && outbox::backlog(&mut conn).await? == 0 {
            outbox_empty_at = Some(Instant::now());
        }
        let now = Instant::now();
        if now.duration_since(last_progress.0) >= Duration::from_secs(1) {
            let count = consumed.count();
            timeline.push(
                ((count - last_progress.1) as f64
                    / now.duration_since(last_progress.0).as_secs_f64()) as u64,
            );
            last_progress = (now, count);
        }
        if outbox_empty_at.is_some() && consumed.done_at().is_some() {
            break;
        }
        if now > deadline {
            anyhow::bail!(
                "drain timed out: {} of {} consumed",
                consumed.count(),
                settings.rows
            );
        }
    }
    let cpu_after = cpu_sample();
    let (outbox_empty_at, consumed_at) = (
        outbox_empty_at.unwrap_or(started),
        consumed.done_at().unwrap_or(started),
    );
    stop_relay(shutdown, running).await?;
    stop_consumer(&consumed, consumer);

    let total = outbox_empty_at.max(consumed_at).duration_since(started);
    println!(
        "outbox empty after {:.2} s, all consumed after {:.2} s",
        outbox_empty_at.duration_since(started).as_secs_f64(),
        consumed_at.duration_since(started).as_secs_f64()
    );
    println!(
        "DRAIN RATE: {:.0} msg/s ({} messages in {:.2} s, relay start to empty outbox and all consumed)",
        settings.rows as f64 / total.as_secs_f64(),
        settings.rows,
        total.as_secs_f64()
    );
    println!("consumed per second: {timeline:?}");
    println!("{}", cpu_report(&cpu_before, &cpu_after));
    let violations = consumed.order_violations.load(Ordering::Relaxed);
    println!(
        "per-key order violations: {violations}, duplicates: {}",
        consumed.duplicates.load(Ordering::Relaxed)
    );
    anyhow::ensure!(violations == 0, "per-key order broken");
    Ok(())
}

async fn latency(settings: &Settings) -> anyhow::Result<()> {
    let total = settings.rate * settings.seconds;
    println!(
        "\n== latency: {} msg/s for {} s ({} messages, one transaction each, {} producers) ==",
        settings.rate, settings.seconds, total, settings.producers
    );
    anyhow::ensure!(
        settings.keys.checked_rem(settings.producers) == Some(0),
        "BENCH_KEYS must be a multiple of BENCH_PRODUCERS so that each key has one producer"
    );
    let db = outbox_database("bench_latency").await?;
    let topic = create_topic("bench-latency", settings.partitions).await?;
    let (consumed, consumer) = start_consumer(&topic, total).await?;
    let (shutdown, running) = start_relay(settings, &db.url).await?;
    // Let the relay take its lease and the producer connect before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let committed_at_us: Arc<Vec<AtomicI64>> =
        Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let enqueued_at_us: Arc<Vec<AtomicI64>> =
        Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let mut producers = tokio::task::JoinSet::new();
    let mut connections = Vec::new();
    for _ in 0..settings.producers {
        connections.push(db.connect().await?);
    }
    let cpu_before = cpu_sample();
    let start = Instant::now() + Duration::from_millis(100);
    for (producer, mut conn) in (0..settings.producers).zip(connections) {
        let settings = settings.clone();
        let topic = topic.clone();
        let committed_at_us = committed_at_us.clone();
        let enqueued_at_us = enqueued_at_us.clone();
        producers.spawn(async move {
            // Open loop: message i is due at start + i / rate, whatever the
            // previous commit took; lateness is reported.
            let mut max_late = Duration::ZERO;
            let mut i = producer;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / settings.rate as f64);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                } else {
                    max_late = max_late.max(now - due);
                }
                let message = bench_message(
                    &topic,
                    i % settings.keys,
                    i / settings.keys,
                    i,
                    settings.payload_bytes,
                );
                let index = usize::try_from(i)?;
                enqueued_at_us[index].store(now_us(), Ordering::Relaxed);
                conn.transaction::<_, outbox::OutboxError, _>(async |conn| {
                    outbox::enqueue(conn, std::slice::from_ref(&message)).await
                })
                .await?;
                committed_at_us[index].store(now_us(), Ordering::Relaxed);
                i += settings.producers;
            }
            anyhow::Ok(max_late)
        });
    }
    let mut max_late = Duration::ZERO;
    while let Some(result) = producers.join_next().await {
        max_late = max_late.max(result??);
    }
    let produced_in = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed.done_at().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_after = cpu_sample();
    stop_relay(shutdown, running).await?;
    stop_consumer(&consumed, consumer);

    let mut commit_to_consumed = Histogram::<u64>::new(3)?;
    let mut enqueue_to_consumed = Histogram::<u64>::new(3)?;
    let mut commit_duration = Histogram::<u64>::new(3)?;
    let mut missing = 0;
    let mut consumed_before_commit_returned = 0;
    for i in 0..usize::try_from(total)? {
        let received = consumed.received_at_us[i].load(Ordering::Relaxed);
        let committed = committed_at_us[i].load(Ordering::Relaxed);
        let enqueued = enqueued_at_us[i].load(Ordering::Relaxed);
        if received == 0 {
            missing += 1;
            continue;
        }
        if received < committed {
            consumed_before_commit_returned += 1;
        }
        commit_to_consumed.record(u64::try_from(received - committed).unwrap_or(0))?;
        enqueue_to_consumed.record(u64::try_from(received - enqueued).unwrap_or(0))?;
        commit_duration.record(u64::try_from(committed - enqueued).unwrap_or(0))?;
    }
    println!(
        "produced {total} in {:.2} s ({:.0} msg/s achieved, producers at most {:.0} ms behind schedule)",
        produced_in.as_secs_f64(),
        total as f64 / produced_in.as_secs_f64(),
        max_late.as_secs_f64() * 1000.0
    );
    let line = |name: &str, h: &Histogram<u64>| {
        println!(
            "{name}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.90) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        );
    };
    line("COMMIT-TO-CONSUMED", &commit_to_consumed);
    line(
        "enqueue-to-consumed (payload timestamp, includes the commit)",
        &enqueue_to_consumed,
    );
    line("producer transaction (BEGIN..COMMIT)", &commit_duration);
    println!("{}", cpu_report(&cpu_before, &cpu_after));
    let violations = consumed.order_violations.load(Ordering::Relaxed);
    println!(
        "missing: {missing}, consumed before the producer saw its commit return: {consumed_before_commit_returned}, \
         per-key order violations: {violations}, duplicates: {}",
        consumed.duplicates.load(Ordering::Relaxed)
    );
    anyhow::ensure!(missing == 0, "{missing} messages never arrived");
    anyhow::ensure!(violations == 0, "per-key order broken");
    Ok(())
}

fn print_config(settings: &Settings) {
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("outbox relay benchmark, {date}");
    println!(
        "machine: {} cores (nproc), {} memory, load average {}",
        cores(),
        meminfo_total(),
        loadavg()
    );
    println!(
        "relay: batch size {}, poll interval {} ms, producer linger.ms {}, span export {}",
        settings.batch_size,
        settings.poll_interval_ms,
        outbox_relay::publisher::LINGER_MS,
        if settings.otlp_endpoint.is_empty() {
            "off (spans built, not exported)".to_owned()
        } else {
            settings.otlp_endpoint.clone()
        }
    );
    println!(
        "workload: {} keys, ~{} byte protobuf payloads, traceparent header, {} partitions",
        settings.keys, settings.payload_bytes, settings.partitions
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env();
    // `cargo bench` passes --bench; any other argument selects benchmarks.
    let selected: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let telemetry = Telemetry::init(&settings.telemetry(), "outbox-relay-bench")?;
    print_config(&settings);
    let result = async {
        if wants("drain") {
            drain(&settings).await?;
        }
        if wants("latency") {
            latency(&settings).await?;
        }
        anyhow::Ok(())
    }
    .await;
    println!("load average at the end: {}", loadavg());
    telemetry.shutdown();
    result
}
