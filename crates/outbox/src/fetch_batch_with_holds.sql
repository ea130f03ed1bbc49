-- The oldest rows in publication order, each with whether an earlier parked
-- row of its topic and key holds it back. One statement, so one snapshot:
-- a key re-queued meanwhile is either wholly parked or wholly back.
SELECT o.id, o.message_id, o.topic, o.message_key, o.message_type, o.headers,
       o.payload, o.created_at,
       EXISTS (
           SELECT 1 FROM outbox_parked p
           WHERE p.topic = o.topic AND p.message_key = o.message_key AND p.id < o.id
       ) AS held
FROM outbox o
ORDER BY o.id
LIMIT $1
