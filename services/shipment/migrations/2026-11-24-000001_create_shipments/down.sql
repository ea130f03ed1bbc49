DROP TABLE shipments;
DROP SEQUENCE tracking_serial;
