-- Claims up to $1 due PENDING notifications for one worker: rows another
-- worker has locked are skipped, and each claimed row is leased (its
-- next_attempt_at pushed $2 seconds ahead) so no other replica takes it while
-- the delivery runs; a worker that dies loses the lease and the row is retried.
UPDATE notifications AS n
SET next_attempt_at = now() + make_interval(secs => $2),
    claim_token = $3
FROM (
    SELECT id
    FROM notifications
    WHERE delivery_state = 'PENDING' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) AS due
WHERE n.id = due.id
RETURNING n.id, n.order_id, n.customer_id, n.outcome, n.reason, n.attempts,
          n.trace_context, n.created_at
