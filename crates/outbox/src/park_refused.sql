-- Moves rows Kafka refused ($1: ids, $2: the error of each) to outbox_parked.
WITH refused AS (
    SELECT * FROM unnest($1::bigint[], $2::text[]) AS r (id, error)
), moved AS (
    DELETE FROM outbox o USING refused r
    WHERE o.id = r.id
    RETURNING o.id, o.message_id, o.topic, o.message_key, o.message_type,
              o.headers, o.payload, o.created_at, r.error
)
INSERT INTO outbox_parked
    (id, message_id, topic, message_key, message_type, headers, payload, created_at, error)
SELECT id, message_id, topic, message_key, message_type, headers, payload, created_at, error
FROM moved
