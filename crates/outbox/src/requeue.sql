-- Moves every parked row of the topic and key of parked row $1 back into
-- the outbox under its original id, so they are published first and in order.
WITH target AS (
    SELECT topic, message_key FROM outbox_parked WHERE id = $1
), moved AS (
    DELETE FROM outbox_parked p USING target t
    WHERE p.topic = t.topic AND p.message_key = t.message_key
    RETURNING p.*
)
INSERT INTO outbox (id, message_id, topic, message_key, message_type, headers, payload, created_at)
SELECT id, message_id, topic, message_key, message_type, headers, payload, created_at
FROM moved
ORDER BY id
