-- Moves rows ($1: ids) whose topic and key has an earlier parked row to
-- outbox_parked, behind it. A row whose key was re-queued in the meantime
-- is no longer held and stays in the outbox.
WITH moved AS (
    DELETE FROM outbox o
    WHERE o.id = ANY($1)
      AND EXISTS (
          SELECT 1 FROM outbox_parked p
          WHERE p.topic = o.topic AND p.message_key = o.message_key AND p.id < o.id
      )
    RETURNING o.*
)
INSERT INTO outbox_parked
    (id, message_id, topic, message_key, message_type, headers, payload, created_at,
     error, held_behind)
SELECT m.id, m.message_id, m.topic, m.message_key, m.message_type, m.headers,
       m.payload, m.created_at, 'held behind parked row ' || b.id, b.id
FROM moved m
CROSS JOIN LATERAL (
    SELECT coalesce(min(p.id) FILTER (WHERE p.held_behind IS NULL), min(p.id)) AS id
    FROM outbox_parked p
    WHERE p.topic = m.topic AND p.message_key = m.message_key AND p.id < m.id
) b
