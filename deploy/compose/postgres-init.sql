-- One database per service (database-per-service). Run once by the postgres image's entrypoint
-- (/docker-entrypoint-initdb.d) on an empty data directory, as POSTGRES_USER, which owns them.
-- Used by docker-compose.yml and by the dev Kubernetes overlay (see kustomization.yaml here).
-- Tables are created by each service's own migrations at start, not here.
CREATE DATABASE order_db;
CREATE DATABASE inventory_db;
CREATE DATABASE payment_db;
CREATE DATABASE shipment_db;
CREATE DATABASE notification_db;
CREATE DATABASE orchestrator_db;
