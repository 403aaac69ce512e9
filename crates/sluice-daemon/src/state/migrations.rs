//! The state store's schema, as numbered migrations applied in order at
//! start. Columns use types both SQLite and PostgreSQL read the same way
//! through sqlx's `Any` driver: BIGINT (instants are microseconds since
//! the epoch, flags 0/1) and TEXT. Never edit a migration that has
//! shipped; add the next one.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
    /// Run after `statements`, on PostgreSQL only (functions SQLite has
    /// no counterpart for).
    pub postgres: &'static [&'static str],
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs, runs, task instances, logs, watermarks",
        statements: &[
            "CREATE TABLE jobs (
            name TEXT PRIMARY KEY,
            file TEXT NOT NULL,
            paused BIGINT NOT NULL DEFAULT 0,
            error TEXT,
            updated_at BIGINT NOT NULL
        )",
            "CREATE TABLE dag_runs (
            dag TEXT NOT NULL,
            run_id TEXT NOT NULL,
            logical_date BIGINT NOT NULL,
            interval_start BIGINT NOT NULL,
            interval_end BIGINT NOT NULL,
            run_type TEXT NOT NULL,
            state TEXT NOT NULL,
            params TEXT,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            ended_at BIGINT,
            sla_missed BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (dag, run_id),
            UNIQUE (dag, logical_date)
        )",
            "CREATE INDEX dag_runs_by_state ON dag_runs (state, dag, logical_date)",
            "CREATE TABLE task_instances (
            dag TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task TEXT NOT NULL,
            state TEXT NOT NULL,
            try_number BIGINT NOT NULL DEFAULT 0,
            failures BIGINT NOT NULL DEFAULT 0,
            next_try_at BIGINT,
            first_try_at BIGINT,
            started_at BIGINT,
            ended_at BIGINT,
            rows_in BIGINT,
            rows_out BIGINT,
            bad_records BIGINT,
            bytes_written BIGINT,
            error TEXT,
            worker TEXT,
            heartbeat BIGINT,
            PRIMARY KEY (dag, run_id, task)
        )",
            "CREATE TABLE task_logs (
            dag TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            at BIGINT NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            PRIMARY KEY (dag, run_id, task, attempt, seq)
        )",
            "CREATE TABLE watermarks (
            dag TEXT NOT NULL,
            task TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (dag, task)
        )",
        ],
        postgres: &[],
    },
    Migration {
        version: 2,
        name: "a pending watermark on each task instance",
        statements: &[
            // Set when an incremental extract succeeds; copied into
            // `watermarks` in the transaction that marks its run a success.
            "ALTER TABLE task_instances ADD COLUMN watermark TEXT",
        ],
        postgres: &[],
    },
    Migration {
        version: 3,
        name: "who ended each task instance; sluice_apply: a pass's writes in one round trip",
        // The replica that ran a task's last attempt, kept after it ends
        // (`worker` is cleared): a downstream task on another replica that
        // misses its staged input says where it was written.
        statements: &["ALTER TABLE task_instances ADD COLUMN ended_by TEXT"],
        // Rows come from json_to_recordset, which parses each object once
        // (`->>` on a json value parses it again for each field).
        postgres: &[
            "CREATE OR REPLACE FUNCTION sluice_apply(ops json, claim json)
            RETURNS SETOF text LANGUAGE plpgsql AS $fn$
        DECLARE
            claimed text[];
            announced text[];
            claim_at bigint;
            claim_dag text;
            claim_run text;
            claim_worker text;
            claim_seq bigint;
        BEGIN
            UPDATE task_instances AS ti SET state = v.state, failures = v.failures,
                next_try_at = v.next_try_at, ended_at = v.ended_at, rows_in = v.rows_in,
                rows_out = v.rows_out, bad_records = v.bad_records,
                bytes_written = v.bytes_written, error = v.error, watermark = v.watermark,
                ended_by = ti.worker, worker = NULL
            FROM json_to_recordset(ops->'finished') AS v(dag text, run_id text, task text,
                state text, failures bigint, next_try_at bigint, ended_at bigint,
                rows_in bigint, rows_out bigint, bad_records bigint, bytes_written bigint,
                error text, watermark text)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task;
            UPDATE task_instances AS ti SET state = v.state
            FROM json_to_recordset(ops->'states') AS v(dag text, run_id text, task text,
                state text)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task;
            INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                SELECT v.dag, v.run_id, v.task, v.attempt, v.seq, v.at, v.level, v.message
                FROM json_to_recordset(ops->'logs') AS v(dag text, run_id text, task text,
                    attempt bigint, seq bigint, at bigint, level text, message text)
                ON CONFLICT DO NOTHING;
            IF claim IS NULL THEN
                RETURN;
            END IF;
            claimed := ARRAY(SELECT json_array_elements_text(claim->'tasks'));
            announced := ARRAY(SELECT json_array_elements_text(claim->'announce'));
            -- Read once: `claim->>…` in a statement parses the whole claim
            -- again for every row it is evaluated on.
            claim_at := (claim->>'now')::bigint;
            claim_dag := claim->>'dag';
            claim_run := claim->>'run_id';
            claim_worker := claim->>'worker';
            claim_seq := (claim->>'seq')::bigint;
            RETURN QUERY UPDATE task_instances AS ti SET state = 'running',
                    try_number = ti.try_number
                        + CASE WHEN ti.state = 'up_for_reschedule' THEN 0 ELSE 1 END,
                    started_at = claim_at, first_try_at = COALESCE(ti.first_try_at, claim_at),
                    worker = claim_worker, heartbeat = claim_at, next_try_at = NULL
                WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                    AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
                    AND ti.task = ANY(claimed)
                RETURNING ti.task;
            IF cardinality(announced) > 0 THEN
                INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                    SELECT ti.dag, ti.run_id, ti.task, ti.try_number, claim_seq,
                        claim_at, 'info', 'attempt ' || ti.try_number || ' started'
                    FROM task_instances AS ti
                    WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                        AND ti.task = ANY(announced) AND ti.state = 'running'
                        AND ti.worker = claim_worker AND ti.started_at = claim_at
                    ON CONFLICT DO NOTHING;
            END IF;
        END
        $fn$",
        ],
    },
    Migration {
        version: 4,
        name: "load generation per task instance",
        // NULL until `sluice clear` (or `backfill --reset`) sets a task
        // instance to run again: the run's creation time stands for the
        // first generation, and each clear writes a later instant, so the
        // load marker of a deliberate re-run never matches the last one's.
        statements: &["ALTER TABLE task_instances ADD COLUMN generation BIGINT"],
        postgres: &[],
    },
    Migration {
        version: 5,
        name: "ends of attempts are fenced by their claim",
        // An attempt's end is written only while its claim stands: the
        // task instance is still running, by the same worker, in the same
        // attempt. A replica that was frozen past the heartbeat timeout
        // (its claims re-run elsewhere since) or whose task was cleared or
        // marked failed meanwhile cannot overwrite what happened after.
        // SQLite's batch (runs.rs) has the same condition.
        statements: &[],
        postgres: &[
            "CREATE OR REPLACE FUNCTION sluice_apply(ops json, claim json)
            RETURNS SETOF text LANGUAGE plpgsql AS $fn$
        DECLARE
            claimed text[];
            announced text[];
            claim_at bigint;
            claim_dag text;
            claim_run text;
            claim_worker text;
            claim_seq bigint;
        BEGIN
            UPDATE task_instances AS ti SET state = v.state, failures = v.failures,
                next_try_at = v.next_try_at, ended_at = v.ended_at, rows_in = v.rows_in,
                rows_out = v.rows_out, bad_records = v.bad_records,
                bytes_written = v.bytes_written, error = v.error, watermark = v.watermark,
                ended_by = ti.worker, worker = NULL
            FROM json_to_recordset(ops->'finished') AS v(dag text, run_id text, task text,
                state text, failures bigint, next_try_at bigint, ended_at bigint,
                rows_in bigint, rows_out bigint, bad_records bigint, bytes_written bigint,
                error text, watermark text, fence_worker text, fence_attempt bigint)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task
                AND ti.state = 'running' AND ti.worker = v.fence_worker
                AND ti.try_number = v.fence_attempt;
            UPDATE task_instances AS ti SET state = v.state
            FROM json_to_recordset(ops->'states') AS v(dag text, run_id text, task text,
                state text)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task;
            INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                SELECT v.dag, v.run_id, v.task, v.attempt, v.seq, v.at, v.level, v.message
                FROM json_to_recordset(ops->'logs') AS v(dag text, run_id text, task text,
                    attempt bigint, seq bigint, at bigint, level text, message text)
                ON CONFLICT DO NOTHING;
            IF claim IS NULL THEN
                RETURN;
            END IF;
            claimed := ARRAY(SELECT json_array_elements_text(claim->'tasks'));
            announced := ARRAY(SELECT json_array_elements_text(claim->'announce'));
            -- Read once: `claim->>…` in a statement parses the whole claim
            -- again for every row it is evaluated on.
            claim_at := (claim->>'now')::bigint;
            claim_dag := claim->>'dag';
            claim_run := claim->>'run_id';
            claim_worker := claim->>'worker';
            claim_seq := (claim->>'seq')::bigint;
            RETURN QUERY UPDATE task_instances AS ti SET state = 'running',
                    try_number = ti.try_number
                        + CASE WHEN ti.state = 'up_for_reschedule' THEN 0 ELSE 1 END,
                    started_at = claim_at, first_try_at = COALESCE(ti.first_try_at, claim_at),
                    worker = claim_worker, heartbeat = claim_at, next_try_at = NULL
                WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                    AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
                    AND ti.task = ANY(claimed)
                RETURNING ti.task;
            IF cardinality(announced) > 0 THEN
                INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                    SELECT ti.dag, ti.run_id, ti.task, ti.try_number, claim_seq,
                        claim_at, 'info', 'attempt ' || ti.try_number || ' started'
                    FROM task_instances AS ti
                    WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                        AND ti.task = ANY(announced) AND ti.state = 'running'
                        AND ti.worker = claim_worker AND ti.started_at = claim_at
                    ON CONFLICT DO NOTHING;
            END IF;
        END
        $fn$",
        ],
    },
    Migration {
        version: 6,
        name: "the store picks which ready units a replica claims",
        // A replica with more ready units than free workers used to guess
        // which to claim; replicas guessing the same ones lost most of
        // their claims until their next scan. Now it offers them all with
        // a limit, and the store claims up to the limit among those no
        // other replica holds (FOR UPDATE SKIP LOCKED). The rest of the
        // function is migration 5's.
        statements: &[],
        postgres: &[
            "CREATE OR REPLACE FUNCTION sluice_apply(ops json, claim json)
            RETURNS SETOF text LANGUAGE plpgsql AS $fn$
        DECLARE
            claimed text[];
            announced text[];
            claim_at bigint;
            claim_dag text;
            claim_run text;
            claim_worker text;
            claim_seq bigint;
            offered jsonb;
        BEGIN
            UPDATE task_instances AS ti SET state = v.state, failures = v.failures,
                next_try_at = v.next_try_at, ended_at = v.ended_at, rows_in = v.rows_in,
                rows_out = v.rows_out, bad_records = v.bad_records,
                bytes_written = v.bytes_written, error = v.error, watermark = v.watermark,
                ended_by = ti.worker, worker = NULL
            FROM json_to_recordset(ops->'finished') AS v(dag text, run_id text, task text,
                state text, failures bigint, next_try_at bigint, ended_at bigint,
                rows_in bigint, rows_out bigint, bad_records bigint, bytes_written bigint,
                error text, watermark text, fence_worker text, fence_attempt bigint)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task
                AND ti.state = 'running' AND ti.worker = v.fence_worker
                AND ti.try_number = v.fence_attempt;
            UPDATE task_instances AS ti SET state = v.state
            FROM json_to_recordset(ops->'states') AS v(dag text, run_id text, task text,
                state text)
            WHERE ti.dag = v.dag AND ti.run_id = v.run_id AND ti.task = v.task;
            INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                SELECT v.dag, v.run_id, v.task, v.attempt, v.seq, v.at, v.level, v.message
                FROM json_to_recordset(ops->'logs') AS v(dag text, run_id text, task text,
                    attempt bigint, seq bigint, at bigint, level text, message text)
                ON CONFLICT DO NOTHING;
            IF claim IS NULL THEN
                RETURN;
            END IF;
            announced := ARRAY(SELECT json_array_elements_text(claim->'announce'));
            -- Read once: `claim->>…` in a statement parses the whole claim
            -- again for every row it is evaluated on.
            claim_at := (claim->>'now')::bigint;
            claim_dag := claim->>'dag';
            claim_run := claim->>'run_id';
            claim_worker := claim->>'worker';
            claim_seq := (claim->>'seq')::bigint;
            IF claim->'limit' IS NULL THEN
                claimed := ARRAY(SELECT json_array_elements_text(claim->'tasks'));
            ELSE
                -- The store picks: at most `limit` of the units offered,
                -- skipping those another replica is claiming right now,
                -- re-runs first and the rest at random, then every member
                -- of each unit picked.
                -- As jsonb, parsed once: a json value is parsed again by
                -- every operator applied to it.
                offered := claim->'units';
                claimed := ARRAY(
                    SELECT m FROM (
                        SELECT ti.task FROM task_instances AS ti
                        WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                            AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
                            AND offered ? ti.task
                        ORDER BY ti.try_number = 0, random()
                        LIMIT (claim->>'limit')::int
                        FOR UPDATE SKIP LOCKED
                    ) AS picked,
                    LATERAL jsonb_array_elements_text(offered->picked.task) AS m);
            END IF;
            RETURN QUERY UPDATE task_instances AS ti SET state = 'running',
                    try_number = ti.try_number
                        + CASE WHEN ti.state = 'up_for_reschedule' THEN 0 ELSE 1 END,
                    started_at = claim_at, first_try_at = COALESCE(ti.first_try_at, claim_at),
                    worker = claim_worker, heartbeat = claim_at, next_try_at = NULL
                WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                    AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
                    AND ti.task = ANY(claimed)
                RETURNING ti.task;
            IF cardinality(announced) > 0 THEN
                INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                    SELECT ti.dag, ti.run_id, ti.task, ti.try_number, claim_seq,
                        claim_at, 'info', 'attempt ' || ti.try_number || ' started'
                    FROM task_instances AS ti
                    WHERE ti.dag = claim_dag AND ti.run_id = claim_run
                        AND ti.task = ANY(announced) AND ti.state = 'running'
                        AND ti.worker = claim_worker AND ti.started_at = claim_at
                    ON CONFLICT DO NOTHING;
            END IF;
        END
        $fn$",
        ],
    },
    Migration {
        version: 7,
        name: "stream checkpoints and their owners",
        // One row per stream job: the checkpoint (JSON: each input file's
        // offset and the files the last commit made visible), replaced
        // whole at each commit, and the replica that owns the stream
        // until its lease runs out.
        statements: &["CREATE TABLE streams (
            job TEXT PRIMARY KEY,
            checkpoint TEXT,
            committed_at BIGINT,
            owner TEXT,
            lease_until BIGINT NOT NULL DEFAULT 0
        )"],
        postgres: &[],
    },
];
