-- Wake the relay only while it sleeps. A notifying transaction's commit is
-- serialised with every other notifying commit of the server (one WAL flush
-- at a time), which capped outbox-writing commits near 300 to 1,800/s
-- (docs/benchmarks.md). The relay polls on its own while rows keep coming
-- and sets `listening` only before it goes to sleep on LISTEN, so under load
-- no transaction notifies.
CREATE TABLE outbox_wakeup (
    -- One row.
    id        BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    listening BOOLEAN NOT NULL DEFAULT true
);

INSERT INTO outbox_wakeup (id, listening) VALUES (true, true);

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM outbox_wakeup WHERE listening) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
