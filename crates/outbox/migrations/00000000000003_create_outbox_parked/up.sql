-- Outbox rows Kafka refused for good (too large, unknown or forbidden topic,
-- invalid record), and the later rows of the same topic and key, held behind
-- them so that the key's order holds. Every other key is published as
-- usual. Once the cause is fixed, an operator re-queues the key: its rows go
-- back into the outbox under their original ids, ahead of anything newer.
-- See docs/adr/0004-park-unpublishable-outbox-rows.md.
CREATE TABLE outbox_parked (
    -- The row's id in the outbox; it gets it back when re-queued.
    id           BIGINT      PRIMARY KEY,
    message_id   UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    message_key  TEXT        NOT NULL,
    message_type TEXT        NOT NULL,
    headers      JSONB       NOT NULL,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    -- Why Kafka refused it, or which parked row it waits behind.
    error        TEXT        NOT NULL,
    -- NULL for a row Kafka refused; else the id of the refused row of its key.
    held_behind  BIGINT,
    parked_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX outbox_parked_key ON outbox_parked (topic, message_key, id);
