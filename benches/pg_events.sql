-- Seeds the `events` table the PostgreSQL benchmark reads: mixed types
-- (bigint key, int, timestamptz, numeric(12,2), short and long text, bool,
-- double), deterministic for a given row count.
-- usage: psql -d DB -v rows=5000000 -f benches/pg_events.sql
\set ON_ERROR_STOP on
\if :{?rows}
\else
\set rows 5000000
\endif
DROP TABLE IF EXISTS events;
CREATE TABLE events (
    id         bigint PRIMARY KEY,
    user_id    int,
    ts         timestamptz,
    amount     numeric(12,2),
    country    text,
    device     text,
    is_mobile  bool,
    payload    text,
    score      double precision
);
-- One backend and a fixed seed: random() replays the same sequence.
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.42);
INSERT INTO events
SELECT g,
       (random() * 2000000)::int,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '6 seconds'
         + random() * interval '6 seconds',
       round((random() * random() * 5000)::numeric, 2),
       (ARRAY['US','DE','FR','GB','IN','BR','JP','CN','CA','AU',
              'ES','IT','NL','SE','PL','MX','KR','ZA','NG','TR'])
         [1 + floor(random() * random() * 20)::int],
       dev.name,
       dev.name IN ('ios', 'android') OR (dev.name = 'web' AND random() < 0.3),
       -- 30 to 200 characters: an event word, then hex noise.
       left((ARRAY['click','view','purchase','signup','logout','search','add_to_cart','share'])
              [1 + floor(random() * 8)::int] || ' '
            || md5(random()::text) || ' ' || md5(random()::text) || ' '
            || md5(random()::text) || ' ' || md5(random()::text) || ' '
            || md5(random()::text) || ' ' || md5(random()::text),
            30 + floor(random() * 171)::int),
       random() * 100
FROM generate_series(1, :rows) AS g
CROSS JOIN LATERAL (
    SELECT (ARRAY['ios','android','web','desktop','tablet','tv'])
             [1 + floor(random() * 6)::int + g * 0] AS name
) dev;
VACUUM (FREEZE, ANALYZE) events;
