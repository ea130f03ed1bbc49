-- One account per customer, in one currency. The balance never goes below zero.
CREATE TABLE accounts (
    customer_id   TEXT        PRIMARY KEY,
    balance_minor BIGINT      NOT NULL CHECK (balance_minor >= 0),
    currency      TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The outcome of the saga's payment step, one row per order: what a re-sent
-- ProcessPayment or RefundPayment is answered from.
CREATE TABLE payments (
    order_id       UUID        PRIMARY KEY,
    payment_id     UUID        NOT NULL UNIQUE,
    -- NULL only for a tombstone (a refund that came before any charge).
    customer_id    TEXT,
    amount_minor   BIGINT      CHECK (amount_minor > 0),
    currency       TEXT        CHECK (currency ~ '^[A-Z]{3}$'),
    status         TEXT        NOT NULL
                   CHECK (status IN ('CHARGED', 'REFUNDED', 'DECLINED', 'TOMBSTONE')),
    failure_reason TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT payments_declined_has_reason
        CHECK ((status = 'DECLINED') = (failure_reason IS NOT NULL)),
    CONSTRAINT payments_tombstone_has_no_charge
        CHECK ((status = 'TOMBSTONE') = (customer_id IS NULL)
               AND (status = 'TOMBSTONE') = (amount_minor IS NULL)
               AND (amount_minor IS NULL) = (currency IS NULL))
);

CREATE INDEX payments_by_customer ON payments (customer_id, created_at DESC, payment_id DESC);
