-- The sagas whose deadline has passed, earliest first, locked for the
-- scanner's transaction. SKIP LOCKED: a saga another replica (or a reply
-- handler) holds is left to it, not waited for. Served by the partial index
-- sagas_due; the phase predicate must match the index's.
SELECT order_id, customer_id, items, shipping_address, total_minor, total_currency,
       phase, phase_step, stuck_phase, completed, compensated, failure, attempts,
       deadline, trace_id, trace_headers, step_started_at, created_at, updated_at
FROM sagas
WHERE deadline <= now()
  AND phase NOT IN ('approved', 'rejected', 'needs_attention')
ORDER BY deadline
LIMIT $1
FOR UPDATE SKIP LOCKED
