-- One row per order saga: the order data the commands need, and the pure
-- saga state (phase, completed and compensated steps, failure, attempts,
-- deadline) in columns that round-trip it exactly.
CREATE TABLE sagas (
    order_id         UUID        PRIMARY KEY,
    customer_id      TEXT        NOT NULL,
    items            JSONB       NOT NULL,
    shipping_address JSONB       NOT NULL,
    -- The reservation's total, known once the stock is reserved.
    total_minor      BIGINT,
    total_currency   TEXT,
    phase            TEXT        NOT NULL CHECK (phase IN ('running', 'approving', 'compensating',
                                     'rejecting', 'approved', 'rejected', 'needs_attention')),
    -- The step of 'running' and 'compensating' (also when stuck compensating).
    phase_step       TEXT        CHECK (phase_step IN ('reserve_stock', 'charge_payment', 'create_shipment')),
    -- Where a saga needing attention stopped.
    stuck_phase      TEXT        CHECK (stuck_phase IN ('compensating', 'approving', 'rejecting')),
    completed        TEXT[]      NOT NULL DEFAULT '{}',
    compensated      TEXT[]      NOT NULL DEFAULT '{}',
    failure          TEXT,
    attempts         INT         NOT NULL,
    deadline         TIMESTAMPTZ,
    -- The order's trace: its id, and the W3C context the saga's spans continue.
    trace_id         TEXT,
    trace_headers    JSONB       NOT NULL DEFAULT '{}',
    -- When the current command was (last) sent.
    step_started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The deadline scanner's index: only sagas still waiting for an answer.
CREATE INDEX sagas_due ON sagas (deadline)
    WHERE phase NOT IN ('approved', 'rejected', 'needs_attention');

CREATE INDEX sagas_by_age ON sagas (created_at DESC, order_id DESC);
CREATE INDEX sagas_by_phase_and_age ON sagas (phase, created_at DESC, order_id DESC);

-- What happened to each saga, in order.
CREATE TABLE saga_steps (
    id       BIGSERIAL   PRIMARY KEY,
    order_id UUID        NOT NULL REFERENCES sagas (order_id) ON DELETE CASCADE,
    name     TEXT        NOT NULL,
    outcome  TEXT        NOT NULL CHECK (outcome IN ('started', 'succeeded', 'failed', 'timed_out',
                             'compensated', 'retried', 'approved', 'rejected', 'needs_attention')),
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX saga_steps_by_saga ON saga_steps (order_id, id);
