-- The transactional outbox: a service inserts its outgoing Kafka messages here
-- in the same transaction as its state change; the relay publishes them and
-- deletes each row only after the broker acknowledged it.
CREATE TABLE outbox (
    -- Publication order. Rows of one key are written under that key's
    -- aggregate lock, so for one key id order is commit order.
    id           BIGSERIAL PRIMARY KEY,
    message_id   UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    -- Kafka key: the order id, so one order's messages share a partition.
    message_key  TEXT        NOT NULL,
    message_type TEXT        NOT NULL,
    -- Extra Kafka headers, e.g. W3C traceparent/tracestate of the enqueuing span.
    headers      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wake the relay at commit time; NOTIFY is transactional and a statement-level
-- trigger sends one notification per inserting statement.
CREATE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
