//! The relay against a real PostgreSQL and Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use diesel_async::{AsyncConnection, RunQueryDsl};
use outbox::OutgoingMessage;
use outbox_relay::{Config, Relay};
use service_kit::config::{ShutdownArgs, TelemetryArgs};
use test_support::{TestDatabase, count_rows, create_topic, eventually, receive_until, tail};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

async fn outbox_database(prefix: &str) -> TestDatabase {
    let db = TestDatabase::create(prefix).await.expect("database");
    service_kit::db::migrate(&db.url, [outbox::MIGRATIONS])
        .await
        .expect("migrate");
    db
}

fn message(topic: &str, key: &str, seq: usize) -> OutgoingMessage {
    OutgoingMessage {
        message_id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        key: key.to_owned(),
        message_type: "test.Sequence".to_owned(),
        headers: BTreeMap::from([("x-test".to_owned(), "yes".to_owned())]),
        payload: format!("{key}:{seq}").into_bytes(),
    }
}

/// Enqueues each message in its own committed transaction.
async fn enqueue_each(db: &TestDatabase, messages: &[OutgoingMessage]) {
    let mut conn = db.connect().await.expect("connect");
    for m in messages {
        let m = m.clone();
        conn.transaction::<_, outbox::OutboxError, _>(async |conn| {
            outbox::enqueue(conn, std::slice::from_ref(&m)).await
        })
        .await
        .expect("enqueue");
    }
}

fn relay_config(db: &TestDatabase, batch_size: i64) -> Config {
    Config {
        database_urls: vec![db.url.clone()],
        kafka_brokers: test_support::kafka_brokers(),
        health_listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        batch_size,
        poll_interval_ms: 200,
        telemetry: TelemetryArgs::quiet(),
        shutdown: ShutdownArgs {
            shutdown_grace_seconds: 2,
        },
    }
}

fn payload(received: &test_support::Received) -> String {
    String::from_utf8_lossy(&received.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_rows_reach_kafka_in_key_order_with_their_headers_and_leave_the_outbox() {
    let db = outbox_database("relay_order").await;
    let topic = create_topic("relay-order", 3).await.expect("topic");
    let consumer = tail(&topic).await.expect("consumer");
    let relay = Relay::build(relay_config(&db, 7)).await.expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));

    // Interleaved keys, each message its own transaction, while the relay runs.
    let keys = ["order-a", "order-b", "order-c", "order-d"];
    let per_key = 25;
    let messages: Vec<_> = (0..per_key)
        .flat_map(|seq| keys.iter().map(move |key| (key, seq)))
        .map(|(key, seq)| message(&topic, key, seq))
        .collect();
    enqueue_each(&db, &messages).await;

    let received = receive_until(&consumer, Duration::from_secs(30), |r| {
        r.len() >= messages.len()
    })
    .await
    .expect("every message arrives");

    let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in &received {
        assert_eq!(r.header("message-type"), Some("test.Sequence"));
        assert_eq!(r.header("x-test"), Some("yes"));
        let id = r.header("message-id").expect("message-id header");
        assert!(uuid::Uuid::parse_str(id).is_ok());
        by_key.entry(r.key.as_str()).or_default().push(payload(r));
    }
    for key in keys {
        let expected: Vec<String> = (0..per_key).map(|seq| format!("{key}:{seq}")).collect();
        assert_eq!(by_key.get(key), Some(&expected), "order of {key}");
    }
    let mut conn = db.connect().await.expect("connect");
    eventually(Duration::from_secs(10), "outbox drained", async || {
        Ok((count_rows(&mut conn, "outbox").await? == 0).then_some(()))
    })
    .await
    .expect("outbox empties");

    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
}

fn spawn_relay_process(db: &TestDatabase) -> Child {
    Command::new(env!("CARGO_BIN_EXE_outbox-relay"))
        .env_clear()
        .env("RELAY_DATABASE_URLS", &db.url)
        .env("KAFKA_BROKERS", test_support::kafka_brokers())
        .env("HEALTH_LISTEN_ADDR", "127.0.0.1:0")
        .env("RELAY_POLL_INTERVAL_MS", "200")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("relay binary starts")
}

async fn relay_sessions(conn: &mut diesel_async::AsyncPgConnection, db: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = '{db}' AND application_name = 'outbox-relay'"
    ))
    .get_result(conn)
    .await
    .expect("pg_stat_activity");
    count.n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_after_publishing_but_before_deleting_republishes_on_restart() {
    let db = outbox_database("relay_kill").await;
    let topic = create_topic("relay-kill", 2).await.expect("topic");
    let messages: Vec<_> = (0..10)
        .map(|seq| message(&topic, &format!("order-{}", seq % 3), seq))
        .collect();
    enqueue_each(&db, &messages).await;
    let consumer = tail(&topic).await.expect("consumer");

    // Hold row locks so the relay can publish but its DELETE waits.
    let mut locker = db.connect().await.expect("connect");
    diesel::sql_query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    diesel::sql_query("SELECT id FROM outbox FOR UPDATE")
        .execute(&mut locker)
        .await
        .expect("lock rows");

    let mut first_relay = spawn_relay_process(&db);
    let first = receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 10)
        .await
        .expect("first publication");

    first_relay.kill().await.expect("SIGKILL");
    let mut observer = db.connect().await.expect("connect");
    eventually(
        Duration::from_secs(15),
        "killed relay's session to end",
        async || Ok((relay_sessions(&mut observer, &db.name).await == 0).then_some(())),
    )
    .await
    .expect("session ends");
    diesel::sql_query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("rollback");
    assert_eq!(
        count_rows(&mut observer, "outbox").await.expect("count"),
        10,
        "nothing was deleted before the broker's ack was recorded"
    );

    let _second_relay = spawn_relay_process(&db);
    let second = receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 10)
        .await
        .expect("republication");
    let ids = |batch: &[test_support::Received]| -> BTreeSet<String> {
        batch
            .iter()
            .filter_map(|r| r.header("message-id").map(str::to_owned))
            .collect()
    };
    assert_eq!(ids(&first).len(), 10);
    assert_eq!(
        ids(&first),
        ids(&second),
        "the same messages are published again"
    );
    eventually(Duration::from_secs(10), "outbox drained", async || {
        Ok((count_rows(&mut observer, "outbox").await? == 0).then_some(()))
    })
    .await
    .expect("outbox empties after the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_relay_takes_over_when_the_active_one_is_killed() {
    let db = outbox_database("relay_takeover").await;
    let topic = create_topic("relay-takeover", 2).await.expect("topic");
    let consumer = tail(&topic).await.expect("consumer");
    let keys = ["order-x", "order-y"];
    let batch = |range: std::ops::Range<usize>| -> Vec<OutgoingMessage> {
        range
            .flat_map(|seq| keys.iter().map(move |key| (key, seq)))
            .map(|(key, seq)| message(&topic, key, seq))
            .collect()
    };

    let mut active = spawn_relay_process(&db);
    enqueue_each(&db, &batch(0..5)).await;
    let mut received = receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 10)
        .await
        .expect("the first relay publishes");

    // The second relay starts while the first holds the lease, so it stands by.
    let _standby = spawn_relay_process(&db);
    let mut observer = db.connect().await.expect("connect");
    eventually(
        Duration::from_secs(15),
        "both relays connected",
        async || Ok((relay_sessions(&mut observer, &db.name).await == 2).then_some(())),
    )
    .await
    .expect("standby connects");
    // Killed only after its deletes landed, so no republication is expected.
    eventually(Duration::from_secs(10), "first batch deleted", async || {
        Ok((count_rows(&mut observer, "outbox").await? == 0).then_some(()))
    })
    .await
    .expect("outbox drained");
    active.kill().await.expect("SIGKILL");

    enqueue_each(&db, &batch(5..10)).await;
    let rest = receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 10)
        .await
        .expect("the standby takes over and publishes");
    received.extend(rest);

    let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in &received {
        by_key.entry(r.key.as_str()).or_default().push(payload(r));
    }
    for key in keys {
        let expected: Vec<String> = (0..10).map(|seq| format!("{key}:{seq}")).collect();
        assert_eq!(
            by_key.get(key),
            Some(&expected),
            "nothing lost, order kept for {key}"
        );
    }
}
