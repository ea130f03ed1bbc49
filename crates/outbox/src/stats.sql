-- What the relay reports as gauges: rows waiting, the age of the oldest
-- (the head of the publication order), rows parked.
SELECT (SELECT count(*) FROM outbox) AS backlog,
       (SELECT extract(epoch FROM now() - created_at)::float8
        FROM outbox ORDER BY id LIMIT 1) AS oldest_age_seconds,
       (SELECT count(*) FROM outbox_parked) AS parked
