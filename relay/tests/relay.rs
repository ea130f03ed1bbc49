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

async fn parked_rows(db: &TestDatabase) -> Vec<outbox::ParkedRow> {
    let mut conn = db.connect().await.expect("connect");
    outbox::parked(&mut conn, 100).await.expect("parked rows")
}

async fn outbox_ids(db: &TestDatabase) -> Vec<i64> {
    let mut conn = db.connect().await.expect("connect");
    outbox::fetch_batch(&mut conn, 100)
        .await
        .expect("outbox rows")
        .into_iter()
        .map(|row| row.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_kafka_refuses_is_parked_with_its_error_while_other_keys_are_published() {
    let db = outbox_database("relay_park").await;
    let topic = create_topic("relay-park", 3).await.expect("topic");
    let consumer = tail(&topic).await.expect("consumer");
    // Over the producer's 1 MB message limit (and the broker's default).
    let mut too_large = message(&topic, "order-big", 0);
    too_large.payload = vec![7u8; 2 * 1024 * 1024];
    let messages = vec![
        message(&topic, "order-a", 0),
        too_large.clone(),
        message(&topic, "order-a", 1),
        message(&topic, "order-big", 1),
        message(&topic, "order-c", 0),
    ];
    enqueue_each(&db, &messages).await;
    let relay = Relay::build(relay_config(&db, 100)).await.expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));

    let received = receive_until(&consumer, Duration::from_secs(30), |r| r.len() >= 3)
        .await
        .expect("the other keys are published");
    let payloads: BTreeSet<String> = received.iter().map(payload).collect();
    assert_eq!(
        payloads,
        BTreeSet::from(["order-a:0".into(), "order-a:1".into(), "order-c:0".into()])
    );
    let mut conn = db.connect().await.expect("connect");
    eventually(Duration::from_secs(10), "outbox emptied", async || {
        Ok((count_rows(&mut conn, "outbox").await? == 0).then_some(()))
    })
    .await
    .expect("nothing is left stalling the outbox");
    let parked = parked_rows(&db).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].message_id, too_large.message_id);
    assert!(
        parked[0].error.to_lowercase().contains("too large"),
        "the error is recorded: {}",
        parked[0].error
    );
    assert_eq!(parked[0].held_behind, None);
    assert_eq!(
        parked[1].message_id, messages[3].message_id,
        "the later row of the refused key waits behind it"
    );
    assert_eq!(parked[1].held_behind, Some(parked[0].id));

    // A row of the parked key enqueued later is held too, not published.
    let later = message(&topic, "order-big", 2);
    enqueue_each(&db, std::slice::from_ref(&later)).await;
    let last = message(&topic, "order-d", 0);
    enqueue_each(&db, std::slice::from_ref(&last)).await;
    let after = receive_until(&consumer, Duration::from_secs(30), |r| !r.is_empty())
        .await
        .expect("a later row of another key is published");
    assert_eq!(after.iter().map(payload).collect::<Vec<_>>(), ["order-d:0"]);
    eventually(Duration::from_secs(10), "later row parked", async || {
        Ok((parked_rows(&db).await.len() == 3).then_some(()))
    })
    .await
    .expect("the later row of the parked key is parked behind it");

    // Re-queued (with the relay stopped, to look at the outbox): the key's
    // rows go back under their original ids, in order.
    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
    let ids: Vec<i64> = parked_rows(&db).await.iter().map(|p| p.id).collect();
    assert_eq!(
        outbox::requeue(&mut conn, ids[1]).await.expect("requeue"),
        3,
        "every parked row of the key"
    );
    assert_eq!(outbox_ids(&db).await, ids);
    assert!(parked_rows(&db).await.is_empty());
    assert_eq!(
        outbox::requeue(&mut conn, ids[0]).await.expect("requeue"),
        0,
        "nothing parked any more"
    );

    // The cause is not fixed here, so the relay parks them again.
    let relay = Relay::build(relay_config(&db, 100)).await.expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));
    eventually(Duration::from_secs(30), "rows parked again", async || {
        Ok((parked_rows(&db).await.len() == 3).then_some(()))
    })
    .await
    .expect("parked again");
    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_for_a_missing_topic_is_parked_and_published_once_the_topic_exists_and_it_is_requeued()
 {
    let db = outbox_database("relay_missing").await;
    let missing = test_support::unique("relay-missing").replace('_', "-");
    let first = message(&missing, "order-m", 0);
    let second = message(&missing, "order-m", 1);
    enqueue_each(&db, &[first.clone(), second.clone()]).await;
    let relay = Relay::build(relay_config(&db, 100)).await.expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));

    // The relay waits TOPIC_PROPAGATION_MS (10 s) for a topic to appear
    // before its rows count as refused.
    let parked = eventually(Duration::from_secs(60), "rows parked", async || {
        let parked = parked_rows(&db).await;
        Ok((parked.len() == 2).then_some(parked))
    })
    .await
    .expect("parked");
    assert_eq!(parked[0].message_id, first.message_id);
    assert!(
        parked[0].error.to_lowercase().contains("unknown topic"),
        "{}",
        parked[0].error
    );
    assert_eq!(parked[1].message_id, second.message_id);

    // The operator creates the topic and re-queues the key.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", test_support::kafka_brokers())
            .create()
            .expect("admin");
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                &missing,
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("topic created");
    let consumer = eventually(Duration::from_secs(10), "topic metadata", async || {
        Ok(tail(&missing).await.ok())
    })
    .await
    .expect("consumer");
    let mut conn = db.connect().await.expect("connect");
    assert_eq!(
        outbox::requeue(&mut conn, parked[0].id)
            .await
            .expect("requeue"),
        2
    );
    let received = receive_until(&consumer, Duration::from_secs(60), |r| r.len() >= 2)
        .await
        .expect("published after the re-queue");
    assert_eq!(
        received.iter().map(payload).collect::<Vec<_>>(),
        ["order-m:0", "order-m:1"],
        "in order"
    );
    assert!(parked_rows(&db).await.is_empty());
    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
}

/// Notifications received on `listener` until `wait` passes without one.
async fn notifications(listener: &mut diesel_async::AsyncPgConnection, wait: Duration) -> usize {
    use futures::StreamExt;
    let mut stream = std::pin::pin!(listener.notifications_stream());
    let mut count = 0;
    while let Ok(Some(notification)) = tokio::time::timeout(wait, stream.next()).await {
        notification.expect("notification");
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_that_keep_coming_are_published_without_notifying_and_a_sleeping_relay_is_woken() {
    let db = outbox_database("relay_wakeup").await;
    let topic = create_topic("relay-wakeup", 1).await.expect("topic");
    // A topic just created may not be in the metadata yet.
    let consumer = eventually(Duration::from_secs(10), "topic metadata", async || {
        Ok(tail(&topic).await.ok())
    })
    .await
    .expect("consumer");
    let mut listener = db.connect().await.expect("connect");
    diesel::sql_query("LISTEN outbox")
        .execute(&mut listener)
        .await
        .expect("listen");
    let mut config = relay_config(&db, 100);
    // Far longer than the test: only a notification or its own polling wakes the relay.
    config.poll_interval_ms = 60_000;
    let relay = Relay::build(config).await.expect("relay");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run_until_stopped(shutdown.clone()));

    // The first row wakes the idle relay; it then polls while rows keep
    // coming, so the rows enqueued every 5 ms notify nobody.
    enqueue_each(&db, &[message(&topic, "order-w", 0)]).await;
    receive_until(&consumer, Duration::from_secs(10), |r| !r.is_empty())
        .await
        .expect("the first row is published");
    notifications(&mut listener, Duration::from_millis(20)).await;
    let stream: Vec<_> = (1..=40)
        .map(|seq| message(&topic, "order-w", seq))
        .collect();
    for m in &stream {
        enqueue_each(&db, std::slice::from_ref(m)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = receive_until(&consumer, Duration::from_secs(10), |r| r.len() >= 40)
        .await
        .expect("the stream is published");
    assert_eq!(payload(&received[39]), "order-w:40");
    // Notifying on every insert would give 40; a stall of the machine longer
    // than the relay's 100 ms idle time may let one or two through.
    let notified = notifications(&mut listener, Duration::from_millis(50)).await;
    assert!(
        notified <= 5,
        "{notified} of 40 enqueuing transactions notified while the relay polled"
    );

    // Idle for longer than the relay's 100 ms, then one row: it notifies and
    // is published long before the relay's 60 s poll interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    enqueue_each(&db, &[message(&topic, "order-w", 41)]).await;
    receive_until(&consumer, Duration::from_secs(10), |r| !r.is_empty())
        .await
        .expect("the sleeping relay is woken");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(50)).await,
        1,
        "the row enqueued while the relay slept notified"
    );

    shutdown.cancel();
    running.await.expect("join").expect("relay stops cleanly");
}
