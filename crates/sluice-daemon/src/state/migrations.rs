//! The state store's schema, as numbered migrations applied in order at
//! start. Columns use types both SQLite and PostgreSQL read the same way
//! through sqlx's `Any` driver: BIGINT (instants are microseconds since
//! the epoch, flags 0/1) and TEXT. Never edit a migration that has
//! shipped; add the next one.

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
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
    },
    Migration {
        version: 2,
        name: "a pending watermark on each task instance",
        statements: &[
            // Set when an incremental extract succeeds; copied into
            // `watermarks` in the transaction that marks its run a success.
            "ALTER TABLE task_instances ADD COLUMN watermark TEXT",
        ],
    },
];
