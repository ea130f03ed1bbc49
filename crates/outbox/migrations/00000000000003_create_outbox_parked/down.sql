DROP TABLE IF EXISTS outbox_parked;
