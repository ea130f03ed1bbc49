CREATE TABLE orders (
    id                UUID        PRIMARY KEY,
    customer_id       TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED')),
    rejection_reason  TEXT,
    ship_recipient    TEXT        NOT NULL,
    ship_line1        TEXT        NOT NULL,
    ship_line2        TEXT        NOT NULL,
    ship_city         TEXT        NOT NULL,
    ship_postal_code  TEXT        NOT NULL,
    ship_country_code TEXT        NOT NULL,
    -- NULL when the client sent none; NULLs never conflict.
    idempotency_key   TEXT,
    -- W3C trace id of the trace that follows this order's saga.
    trace_id          TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_idempotency_key UNIQUE (customer_id, idempotency_key)
);

CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id   UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    INT  NOT NULL,
    product_id TEXT NOT NULL,
    quantity   INT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE order_status_history (
    id       BIGSERIAL   PRIMARY KEY,
    order_id UUID        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status   TEXT        NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX order_status_history_by_order ON order_status_history (order_id, id);
