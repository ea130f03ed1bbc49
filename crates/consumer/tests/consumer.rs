//! The consumer runtime against a real PostgreSQL and Kafka. The tests publish
//! directly to Kafka, playing the part of the relay upstream.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consumer::retry::RetryPolicy;
use consumer::{ConsumerConfig, Handler, HandlerError, Incoming};
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use test_support::{
    PrivateKafka, PrivatePostgres, TestDatabase, count_rows, create_topic_on, eventually,
    receive_until, tail,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records each message's effect as a row in `effects`; misbehaves on request.
#[derive(Default)]
struct RecordingHandler {
    reject_poison: AtomicBool,
    attempts: Mutex<HashMap<Uuid, u32>>,
    /// A message with payload "gate" waits for this, holding up its lane.
    gate_open: AtomicBool,
    gate_reached: AtomicBool,
}

impl Handler for RecordingHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        message: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                let n = attempts.entry(message.message_id).or_default();
                *n += 1;
                *n
            };
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            if payload == "gate" {
                self.gate_reached.store(true, Ordering::SeqCst);
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !AtomicBool::load(&self.gate_open, Ordering::SeqCst)
                    && std::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            if payload.starts_with("poison")
                && AtomicBool::load(&self.reject_poison, Ordering::SeqCst)
            {
                return Err(HandlerError::Permanent(format!(
                    "cannot decode {payload:?}"
                )));
            }
            if let Some(failures) = payload.strip_prefix("flaky:") {
                let failures: u32 = failures.parse().unwrap_or(0);
                if attempt <= failures {
                    return Err(HandlerError::Transient(anyhow::anyhow!("simulated outage")));
                }
            }
            diesel::sql_query(
                "INSERT INTO effects (message_id, message_key, payload) VALUES ($1, $2, $3)",
            )
            .bind::<SqlUuid, _>(message.message_id)
            .bind::<Text, _>(&message.key)
            .bind::<Text, _>(&payload)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

struct Harness {
    url: String,
    _db: Option<TestDatabase>,
    topic: String,
    dead_letter_topic: String,
    handler: Arc<RecordingHandler>,
    producer: FutureProducer,
    shutdown: CancellationToken,
    /// The consumer's configuration until it runs.
    consumer: Mutex<Option<ConsumerConfig>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn start(partitions: i32) -> Self {
        let db = TestDatabase::create("consumer").await.expect("database");
        let url = db.url.clone();
        Self::start_on(url, Some(db), partitions, &test_support::kafka_brokers()).await
    }

    /// Runs against the database at `url`, which the caller created, and the
    /// broker at `brokers`.
    async fn start_on(
        url: String,
        db: Option<TestDatabase>,
        partitions: i32,
        brokers: &str,
    ) -> Self {
        let h = Self::prepare_on(url, db, partitions, brokers).await;
        h.run_consumer(|_| {});
        h
    }

    /// Everything but the consumer, which starts with [`Self::run_consumer`].
    async fn prepare(partitions: i32) -> Self {
        let db = TestDatabase::create("consumer").await.expect("database");
        let url = db.url.clone();
        Self::prepare_on(url, Some(db), partitions, &test_support::kafka_brokers()).await
    }

    /// Starts the consumer, with its configuration changed by `configure`.
    fn run_consumer(&self, configure: impl FnOnce(&mut ConsumerConfig)) {
        let mut config = self
            .consumer
            .lock()
            .expect("lock")
            .take()
            .expect("the consumer runs once");
        configure(&mut config);
        let pool = service_kit::db::pool(&self.url, 8).expect("pool");
        tokio::spawn(consumer::run(
            config,
            pool,
            self.handler.clone(),
            self.shutdown.clone(),
        ));
    }

    async fn prepare_on(
        url: String,
        db: Option<TestDatabase>,
        partitions: i32,
        brokers: &str,
    ) -> Self {
        service_kit::db::migrate(&url, [outbox::MIGRATIONS, consumer::MIGRATIONS])
            .await
            .expect("migrate");
        let mut conn = AsyncPgConnection::establish(&url).await.expect("connect");
        diesel::sql_query(
            "CREATE TABLE effects (id BIGSERIAL PRIMARY KEY, message_id UUID NOT NULL, \
             message_key TEXT NOT NULL, payload TEXT NOT NULL, \
             txid BIGINT NOT NULL DEFAULT txid_current())",
        )
        .execute(&mut conn)
        .await
        .expect("effects table");
        let topic = create_topic_on(brokers, "consumer-in", partitions)
            .await
            .expect("topic");
        let dead_letter_topic = create_topic_on(brokers, "consumer-dlq", 1)
            .await
            .expect("dlq topic");
        let handler = Arc::new(RecordingHandler::default());
        handler.reject_poison.store(true, Ordering::SeqCst);
        let shutdown = CancellationToken::new();

        let mut config =
            ConsumerConfig::new(&test_support::unique("test-consumer"), brokers, &[&topic]);
        config.dead_letter_topic = dead_letter_topic.clone();
        config.retry = RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            max_attempts: 5,
        };

        // The relay publishes what the consumer enqueues (dead letters, redrives).
        let relay = outbox_relay::Relay::build(outbox_relay::Config {
            database_urls: vec![url.clone()],
            kafka_brokers: brokers.to_owned(),
            health_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch_size: 100,
            poll_interval_ms: 100,
            telemetry: service_kit::config::TelemetryArgs::quiet(),
            shutdown: service_kit::config::ShutdownArgs {
                shutdown_grace_seconds: 1,
            },
        })
        .await
        .expect("relay");
        tokio::spawn(relay.run_until_stopped(shutdown.clone()));

        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("partitioner", "murmur2_random")
            .create()
            .expect("producer");
        Self {
            url,
            _db: db,
            topic,
            dead_letter_topic,
            handler,
            producer,
            shutdown,
            consumer: Mutex::new(Some(config)),
        }
    }

    async fn produce(&self, key: &str, message_id: Option<Uuid>, payload: &str) {
        let id = message_id.map(|id| id.to_string());
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "message-type",
            value: Some("test.Payload"),
        });
        if let Some(id) = &id {
            headers = headers.insert(Header {
                key: "message-id",
                value: Some(id),
            });
        }
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }

    /// The handled payloads, in the order their effects committed.
    async fn effects(&self) -> Vec<(String, String, Uuid)> {
        self.effects_with_txid()
            .await
            .into_iter()
            .map(|(key, payload, id, _)| (key, payload, id))
            .collect()
    }

    /// The effects and the id of the transaction each committed in.
    async fn effects_with_txid(&self) -> Vec<(String, String, Uuid, i64)> {
        #[derive(diesel::QueryableByName)]
        struct Effect {
            #[diesel(sql_type = Text)]
            message_key: String,
            #[diesel(sql_type = Text)]
            payload: String,
            #[diesel(sql_type = SqlUuid)]
            message_id: Uuid,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            txid: i64,
        }
        let mut conn = self.connect().await;
        diesel::sql_query("SELECT message_key, payload, message_id, txid FROM effects ORDER BY id")
            .load::<Effect>(&mut conn)
            .await
            .expect("effects")
            .into_iter()
            .map(|e| (e.message_key, e.payload, e.message_id, e.txid))
            .collect()
    }

    /// Sends a message the way a service does: through its outbox, in its
    /// own transaction, for the relay to publish.
    async fn enqueue(&self, key: &str, payload: &str) {
        let message = outbox::OutgoingMessage {
            message_id: Uuid::now_v7(),
            topic: self.topic.clone(),
            key: key.to_owned(),
            message_type: "test.Payload".to_owned(),
            headers: Default::default(),
            payload: payload.as_bytes().to_vec(),
        };
        let mut conn = self.connect().await;
        conn.transaction::<_, outbox::OutboxError, _>(async |conn| {
            outbox::enqueue(conn, std::slice::from_ref(&message)).await
        })
        .await
        .expect("enqueue");
    }

    async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect")
    }

    /// Starts the consumer with a "gate" message at the head of partition 0
    /// that holds up its lane until every message already produced is
    /// waiting behind it, then opens the gate.
    async fn run_consumer_behind_gate(&self, configure: impl FnOnce(&mut ConsumerConfig)) {
        self.run_consumer(configure);
        eventually(Duration::from_secs(60), "gate reached", async || {
            Ok(AtomicBool::load(&self.handler.gate_reached, Ordering::SeqCst).then_some(()))
        })
        .await
        .expect("the gate message is handled");
        // Everything was produced before the consumer started; it is fetched
        // and handed to the lane within milliseconds.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.handler.gate_open.store(true, Ordering::SeqCst);
    }

    async fn wait_for_effects(&self, count: usize) -> Vec<(String, String, Uuid)> {
        eventually(
            Duration::from_secs(60),
            &format!("{count} effects"),
            async || {
                let effects = self.effects().await;
                Ok((effects.len() >= count).then_some(effects))
            },
        )
        .await
        .expect("effects recorded")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_delivered_twice_has_exactly_one_effect() {
    let h = Harness::start(1).await;
    let duplicated = Uuid::now_v7();
    h.produce("order-1", Some(duplicated), "first").await;
    h.produce("order-1", Some(duplicated), "first").await;
    h.produce("order-1", Some(Uuid::now_v7()), "second").await;

    let effects = h.wait_for_effects(2).await;
    // One partition: once "second" is handled, both copies of "first" were seen.
    assert_eq!(
        effects.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.effects().await.len(),
        2,
        "the redelivery had no second effect"
    );
    assert_eq!(
        h.handler.attempts.lock().expect("lock").get(&duplicated),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_of_sixteen_keys_are_each_handled_in_order_under_load() {
    let h = Harness::start(4).await;
    let keys: Vec<String> = (0..16).map(|k| format!("order-{k}")).collect();
    let per_key = 40;
    let sends = (0..per_key).flat_map(|seq| keys.iter().map(move |key| (key.clone(), seq)));
    for (key, seq) in sends {
        h.produce(&key, Some(Uuid::now_v7()), &format!("{key}:{seq}"))
            .await;
    }
    let effects = h.wait_for_effects(keys.len() * per_key).await;
    assert_eq!(effects.len(), keys.len() * per_key, "no duplicates");
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, payload, _) in &effects {
        by_key
            .entry(key.as_str())
            .or_default()
            .push(payload.as_str());
    }
    for key in &keys {
        let expected: Vec<String> = (0..per_key).map(|seq| format!("{key}:{seq}")).collect();
        let got: Vec<String> = by_key[key.as_str()]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        assert_eq!(got, expected, "handling order of {key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_a_redrive_redelivers_it() {
    let h = Harness::start(1).await;
    let dead_letters = tail(&h.dead_letter_topic).await.expect("dlq consumer");
    let poison_id = Uuid::now_v7();
    h.produce("order-7", Some(Uuid::now_v7()), "before").await;
    h.produce("order-7", Some(poison_id), "poison-pill").await;
    h.produce("order-7", Some(Uuid::now_v7()), "after").await;

    // Later messages on the same partition are still handled.
    let effects = h.wait_for_effects(2).await;
    assert_eq!(
        effects.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["before", "after"]
    );

    let dead = receive_until(&dead_letters, Duration::from_secs(30), |r| !r.is_empty())
        .await
        .expect("dead letter published");
    let dead = &dead[0];
    assert_eq!(dead.key, "order-7");
    assert_eq!(dead.payload, b"poison-pill");
    assert!(
        dead.header("dlq-reason")
            .is_some_and(|r| r.contains("cannot decode"))
    );
    assert_eq!(dead.header("dlq-source-topic"), Some(h.topic.as_str()));
    assert_eq!(dead.header("dlq-source-partition"), Some("0"));
    assert_eq!(dead.header("dlq-source-offset"), Some("1"));
    assert_eq!(
        dead.header("dlq-original-message-id"),
        Some(poison_id.to_string().as_str())
    );

    // Once the handler is fixed, a redrive brings the message back through Kafka.
    h.handler.reject_poison.store(false, Ordering::SeqCst);
    let mut conn = h.connect().await;
    let pending = consumer::deadletter::pending(&mut conn, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    consumer::deadletter::redrive(&mut conn, pending[0].id)
        .await
        .expect("redrive");
    assert!(
        consumer::deadletter::redrive(&mut conn, pending[0].id)
            .await
            .is_err(),
        "a dead letter is redriven once"
    );
    let effects = h.wait_for_effects(3).await;
    assert_eq!(effects[2].1, "poison-pill");
    assert_eq!(
        effects[2].2, poison_id,
        "redelivered with its original message id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_until_the_message_takes_effect_once() {
    let h = Harness::start(1).await;
    let id = Uuid::now_v7();
    h.produce("order-9", Some(id), "flaky:3").await;
    let effects = h.wait_for_effects(1).await;
    assert_eq!(effects.len(), 1);
    assert_eq!(h.handler.attempts.lock().expect("lock").get(&id), Some(&4));
    let mut conn = h.connect().await;
    assert_eq!(
        count_rows(&mut conn, "dead_letters").await.expect("count"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_without_a_message_id_is_dead_lettered_and_the_partition_moves_on() {
    let h = Harness::start(1).await;
    h.produce("order-3", None, "anonymous").await;
    h.produce("order-3", Some(Uuid::now_v7()), "named").await;
    let effects = h.wait_for_effects(1).await;
    assert_eq!(effects[0].1, "named");
    let mut conn = h.connect().await;
    let pending = consumer::deadletter::pending(&mut conn, 10)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert!(pending[0].reason.contains("message-id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_for_ten_seconds_under_load_loses_nothing_and_applies_nothing_twice() {
    let server = PrivatePostgres::start().expect("private postgres");
    let mut admin = AsyncPgConnection::establish(&server.url("postgres"))
        .await
        .expect("admin");
    diesel::sql_query("CREATE DATABASE fault")
        .execute(&mut admin)
        .await
        .expect("create");
    drop(admin);
    let h = Arc::new(
        Harness::start_on(server.url("fault"), None, 3, &test_support::kafka_brokers()).await,
    );

    // A steady load of 200 messages over about 5 s, on 8 keys.
    let total = 200;
    let producer = {
        let h = h.clone();
        tokio::spawn(async move {
            for seq in 0..total {
                h.produce(
                    &format!("order-{}", seq % 8),
                    Some(Uuid::now_v7()),
                    &format!("m{seq}"),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    h.wait_for_effects(20).await;
    server.stop().expect("stop postgres");
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.resume().expect("restart postgres");
    producer.await.expect("producer");

    let effects = h.wait_for_effects(total).await;
    let ids: std::collections::BTreeSet<Uuid> = effects.iter().map(|e| e.2).collect();
    assert_eq!(ids.len(), total, "every message took effect");
    assert_eq!(effects.len(), total, "none took effect twice");
    let mut conn = h.connect().await;
    assert_eq!(
        count_rows(&mut conn, "dead_letters").await.expect("count"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_killed_and_restarted_under_load_loses_nothing_and_applies_nothing_twice() {
    let mut kafka = PrivateKafka::start().await.expect("private kafka");
    let db = TestDatabase::create("kafka_fault").await.expect("database");
    let url = db.url.clone();
    let h = Arc::new(Harness::start_on(url, Some(db), 3, &kafka.brokers()).await);

    // Through the outbox, so the relay rides out the outage too: 240
    // messages on 8 keys over about 6 s.
    let total = 240;
    let enqueuer = {
        let h = h.clone();
        tokio::spawn(async move {
            for seq in 0..total {
                h.enqueue(
                    &format!("order-{}", seq % 8),
                    &format!("order-{}:{seq}", seq % 8),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    h.wait_for_effects(20).await;
    kafka.kill().expect("kill broker");
    tokio::time::sleep(Duration::from_secs(8)).await;
    kafka.resume().await.expect("restart broker");
    enqueuer.await.expect("enqueuer");

    let effects = h.wait_for_effects(total).await;
    let ids: std::collections::BTreeSet<Uuid> = effects.iter().map(|e| e.2).collect();
    assert_eq!(ids.len(), total, "every message took effect");
    assert_eq!(effects.len(), total, "none took effect twice");
    let mut last_seq: HashMap<&str, usize> = HashMap::new();
    for (key, payload, _) in &effects {
        let seq: usize = payload
            .rsplit(':')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("sequence");
        if let Some(previous) = last_seq.insert(key.as_str(), seq) {
            assert!(seq > previous, "{key}: {seq} handled after {previous}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_messages_of_a_partition_are_handled_several_per_transaction_in_order() {
    let h = Harness::prepare(1).await;
    h.produce("order-0", Some(Uuid::now_v7()), "gate").await;
    let total = 70;
    for seq in 0..total {
        h.produce(
            &format!("order-{}", seq % 3),
            Some(Uuid::now_v7()),
            &format!("m{seq}"),
        )
        .await;
    }
    h.run_consumer_behind_gate(|config| config.max_batch = 32)
        .await;

    h.wait_for_effects(total + 1).await;
    let effects = h.effects_with_txid().await;
    let payloads: Vec<&str> = effects.iter().map(|e| e.1.as_str()).collect();
    let expected: Vec<String> = std::iter::once("gate".to_owned())
        .chain((0..total).map(|seq| format!("m{seq}")))
        .collect();
    assert_eq!(payloads, expected, "one partition: handled in offset order");
    let mut per_transaction: BTreeMap<i64, usize> = BTreeMap::new();
    for effect in &effects[1..] {
        *per_transaction.entry(effect.3).or_default() += 1;
    }
    let largest = per_transaction.values().copied().max().unwrap_or(0);
    assert!(
        largest <= 32,
        "at most max_batch per transaction: {per_transaction:?}"
    );
    // One transaction each would be 70; 32 + 32 + 6 would be 3.
    assert!(
        per_transaction.len() <= total / 4,
        "the waiting messages shared transactions: {per_transaction:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_in_a_batch_is_dead_lettered_alone_and_the_others_take_effect_once_in_order()
 {
    let h = Harness::prepare(1).await;
    h.produce("order-1", Some(Uuid::now_v7()), "gate").await;
    let poison_id = Uuid::now_v7();
    for seq in 0..10 {
        if seq == 5 {
            h.produce("order-1", Some(poison_id), "poison-in-batch")
                .await;
        } else {
            h.produce(
                &format!("order-{}", seq % 2),
                Some(Uuid::now_v7()),
                &format!("m{seq}"),
            )
            .await;
        }
    }
    h.run_consumer_behind_gate(|config| config.max_batch = 32)
        .await;

    let effects = h.wait_for_effects(10).await;
    let payloads: Vec<&str> = effects.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        payloads,
        ["gate", "m0", "m1", "m2", "m3", "m4", "m6", "m7", "m8", "m9"],
        "every other message took effect once, in order"
    );
    let mut conn = h.connect().await;
    eventually(
        Duration::from_secs(30),
        "dead letter recorded",
        async || {
            let pending = consumer::deadletter::pending(&mut conn, 10).await?;
            Ok((!pending.is_empty()).then_some(pending))
        },
    )
    .await
    .map(|pending| {
        assert_eq!(pending.len(), 1, "only the poison message is dead");
        assert_eq!(pending[0].message_id, poison_id);
    })
    .expect("dead letter");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.effects().await.len(), 10, "nothing took effect twice");
    let attempts = h.handler.attempts.lock().expect("lock").clone();
    assert!(
        attempts.get(&poison_id).copied().unwrap_or(0) >= 2,
        "the poison message failed in a batch, then alone: {attempts:?}"
    );
}

#[derive(diesel::QueryableByName)]
struct InboxRow {
    #[diesel(sql_type = SqlUuid)]
    message_id: Uuid,
}

async fn inbox_ids(conn: &mut AsyncPgConnection) -> Vec<Uuid> {
    diesel::sql_query("SELECT message_id FROM inbox ORDER BY received_at")
        .load::<InboxRow>(conn)
        .await
        .expect("inbox")
        .into_iter()
        .map(|row| row.message_id)
        .collect()
}

async fn insert_inbox_row(conn: &mut AsyncPgConnection, id: Uuid, age: &str) {
    diesel::sql_query(format!(
        "INSERT INTO inbox (consumer, message_id, received_at) \
         VALUES ('c', $1, now() - interval '{age}')"
    ))
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await
    .expect("inbox row");
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_removes_inbox_rows_older_than_the_window_and_keeps_newer_ones() {
    let db = TestDatabase::create("inbox_prune").await.expect("database");
    service_kit::db::migrate(&db.url, [outbox::MIGRATIONS, consumer::MIGRATIONS])
        .await
        .expect("migrate");
    let mut conn = db.connect().await.expect("connect");
    let (old, recent, fresh) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    insert_inbox_row(&mut conn, old, "3 hours").await;
    insert_inbox_row(&mut conn, recent, "50 minutes").await;
    insert_inbox_row(&mut conn, fresh, "0 seconds").await;

    let pruned = consumer::prune_inbox(&mut conn, Duration::from_secs(3600))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert_eq!(inbox_ids(&mut conn).await, [recent, fresh]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_consumer_prunes_the_inbox_at_its_configured_interval_and_window() {
    let h = Harness::prepare(1).await;
    let mut conn = h.connect().await;
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    insert_inbox_row(&mut conn, recent, "20 minutes").await;
    h.run_consumer(|config| {
        config.inbox_retention = Duration::from_secs(30 * 60);
        config.inbox_prune_interval = Duration::from_millis(200);
    });
    // Inserted after the first pruning pass, so only a later pass removes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    insert_inbox_row(&mut conn, old, "31 minutes").await;
    eventually(
        Duration::from_secs(10),
        "old inbox row pruned",
        async || Ok((inbox_ids(&mut conn).await == [recent]).then_some(())),
    )
    .await
    .expect("pruned by the running consumer");
}
