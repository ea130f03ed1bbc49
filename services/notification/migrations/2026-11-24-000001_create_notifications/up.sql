-- One notification per order outcome, and the state of its webhook delivery.
CREATE TABLE notifications (
    id              UUID        PRIMARY KEY,
    order_id        UUID        NOT NULL,
    customer_id     TEXT        NOT NULL,
    outcome         TEXT        NOT NULL CHECK (outcome IN ('APPROVED', 'REJECTED')),
    -- Why the order was rejected; empty when approved.
    reason          TEXT        NOT NULL DEFAULT '',
    delivery_state  TEXT        NOT NULL
        CHECK (delivery_state IN ('PENDING', 'DELIVERED', 'FAILED', 'NOT_CONFIGURED')),
    -- Delivery attempts made so far, and why the last one failed.
    attempts        INT         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT,
    -- When a PENDING row is due; while a worker delivers it, the end of its lease.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by the worker that claimed the row; only it may record the attempt.
    claim_token     UUID,
    -- W3C trace context current when the notification was recorded.
    trace_context   JSONB       NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMPTZ,
    CONSTRAINT notifications_one_per_order UNIQUE (order_id)
);

CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at DESC, id DESC);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE delivery_state = 'PENDING';
