-- Source of tracking numbers: each shipment takes the next serial, which the
-- domain maps one-to-one onto a tracking number, so two never collide.
CREATE SEQUENCE tracking_serial AS BIGINT MINVALUE 0 START 0;

-- One row per order the saga asked about: a booked, cancelled or refused
-- shipment, or the tombstone of a cancellation that came first.
CREATE TABLE shipments (
    order_id          UUID        PRIMARY KEY,
    status            TEXT        NOT NULL CHECK (status IN ('CREATED', 'CANCELLED', 'FAILED', 'TOMBSTONE')),
    shipment_id       UUID        UNIQUE,
    tracking_number   TEXT        UNIQUE,
    failure_reason    TEXT,
    -- The address asked for; NULL only for a tombstone.
    ship_recipient    TEXT,
    ship_line1        TEXT,
    ship_line2        TEXT,
    ship_city         TEXT,
    ship_postal_code  TEXT,
    ship_country_code TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Only a booked shipment (created, perhaps cancelled since) has ids.
    CONSTRAINT shipments_booked_have_ids CHECK (
        (status IN ('CREATED', 'CANCELLED')) = (shipment_id IS NOT NULL)
        AND (shipment_id IS NULL) = (tracking_number IS NULL)
    ),
    CONSTRAINT shipments_failed_have_reason CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
);
