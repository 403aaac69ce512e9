-- Runs once, when the PostgreSQL volume is new: Sluice's state store
-- (database sluice, from POSTGRES_DB) and a sample source database.
CREATE ROLE shop LOGIN PASSWORD 'shop';
CREATE DATABASE shop OWNER shop;
\connect shop shop
CREATE TABLE orders (
    id         bigint PRIMARY KEY,
    country    text NOT NULL,
    amount     numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO orders
SELECT i,
       (ARRAY['DE', 'FR', 'NL', 'US', 'JP'])[1 + i % 5],
       round((5 + (i * 37 % 500))::numeric, 2),
       timestamptz '2026-11-24 00:00:00+00' + (i % 259200) * interval '1 second'
FROM generate_series(1, 30000) AS i;
