CREATE TABLE products (
    id                TEXT        PRIMARY KEY,
    name              TEXT        NOT NULL,
    description       TEXT        NOT NULL,
    unit_price_minor  BIGINT      NOT NULL CHECK (unit_price_minor >= 0),
    currency          TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Units available to reserve; never negative, whatever the code does.
    stock             INT         NOT NULL CHECK (stock >= 0),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The outcome of the saga's commands per order: the answer to a re-sent
-- ReserveStock, and what a ReleaseStock gives back.
CREATE TABLE reservations (
    order_id          UUID        PRIMARY KEY,
    status            TEXT        NOT NULL
                      CHECK (status IN ('RESERVED', 'RELEASED', 'FAILED', 'TOMBSTONE')),
    -- Set when FAILED: OUT_OF_STOCK, UNKNOWN_PRODUCT or CURRENCY_MISMATCH.
    failure_reason    TEXT,
    failed_product_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);

-- What a RESERVED (later RELEASED) reservation holds, at the prices of the
-- moment it was made.
CREATE TABLE reservation_lines (
    order_id          UUID   NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    line_no           INT    NOT NULL,
    product_id        TEXT   NOT NULL REFERENCES products (id),
    quantity          INT    NOT NULL CHECK (quantity > 0),
    unit_price_minor  BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    currency          TEXT   NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
