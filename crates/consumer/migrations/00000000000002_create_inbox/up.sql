-- The inbox: one row per message a consumer has taken effect of, inserted in
-- the same transaction as that effect. A redelivered message finds its row
-- and is skipped. Pruned after a window longer than Kafka's redelivery horizon.
CREATE TABLE inbox (
    consumer    TEXT        NOT NULL,
    message_id  UUID        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX inbox_received_at ON inbox (received_at);

-- Messages a consumer could never handle, kept for inspection and redrive.
-- Each is also published to the dead-letter topic through the outbox.
CREATE TABLE dead_letters (
    id               BIGSERIAL   PRIMARY KEY,
    consumer         TEXT        NOT NULL,
    message_id       UUID        NOT NULL,
    message_type     TEXT        NOT NULL,
    source_topic     TEXT        NOT NULL,
    source_partition INT         NOT NULL,
    source_offset    BIGINT      NOT NULL,
    message_key      TEXT        NOT NULL,
    headers          JSONB       NOT NULL,
    payload          BYTEA       NOT NULL,
    reason           TEXT        NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    redriven_at      TIMESTAMPTZ
);
