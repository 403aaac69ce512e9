//! Statements on jobs, DAG runs, task instances and task logs.

use super::StateStore;
use super::states::{RunState, TaskState};
use crate::error::Result;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;

/// A DAG run to create, with its task instances.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub dag: String,
    pub run_id: String,
    pub logical_date: i64,
    pub interval_start: i64,
    pub interval_end: i64,
    /// scheduled, manual or backfill.
    pub run_type: String,
    pub params: Option<String>,
    pub tasks: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub dag: String,
    pub run_id: String,
    pub logical_date: i64,
    pub interval_start: i64,
    pub interval_end: i64,
    pub run_type: String,
    pub state: RunState,
    pub params: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub sla_missed: bool,
}

#[derive(Debug, Clone)]
pub struct TaskInstanceRow {
    pub dag: String,
    pub run_id: String,
    pub task: String,
    pub state: TaskState,
    /// Attempts started, interrupted ones included.
    pub try_number: i64,
    /// Attempts that failed; what retries are counted against.
    pub failures: i64,
    pub next_try_at: Option<i64>,
    pub first_try_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub bad_records: Option<i64>,
    pub bytes_written: Option<i64>,
    pub error: Option<String>,
    /// The replica (worker id) that ended the last attempt.
    pub ended_by: Option<String>,
    /// Set by a clear: the load generation of the attempts since (see
    /// migration 4); `None` means the run's creation time.
    pub generation: Option<i64>,
}

/// The end of an attempt.
#[derive(Debug, Clone)]
pub struct TiUpdate {
    pub state: TaskState,
    pub failures: i64,
    pub next_try_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub bad_records: Option<i64>,
    pub bytes_written: Option<i64>,
    pub error: Option<String>,
    /// An incremental extract's next mark, kept until its run succeeds.
    pub watermark: Option<String>,
}

impl TiUpdate {
    /// An end in `state` with nothing else known yet.
    pub fn to(state: TaskState) -> TiUpdate {
        TiUpdate {
            state,
            failures: 0,
            next_try_at: None,
            ended_at: None,
            rows_in: None,
            rows_out: None,
            bad_records: None,
            bytes_written: None,
            error: None,
            watermark: None,
        }
    }
}

/// Task instances of one run for a worker to claim.
#[derive(Debug)]
pub struct Claim<'a> {
    pub dag: &'a str,
    pub run_id: &'a str,
    pub tasks: &'a [String],
    /// The tasks whose claim starts a new attempt (not a sensor's next
    /// poke): each gets an "attempt N started" log line.
    pub announce: &'a [String],
    pub worker: &'a str,
    pub now: i64,
    /// The log sequence number of those lines.
    pub seq: i64,
    /// On PostgreSQL, with more ready units than free workers: let the
    /// store choose which to claim. `None`: claim all of `tasks`.
    pub pick: Option<Pick<'a>>,
}

/// A choice the store makes for a replica (see migration 6): at most
/// `limit` of `units`, among those no other replica holds or is claiming,
/// re-runs first and the rest at random.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub limit: usize,
    /// Each unit: its head task (the one that decides it is free) and
    /// all its members, the head among them.
    pub units: &'a [(String, Vec<String>)],
}

/// A write the executor batches: many go to the store in one round trip.
#[derive(Debug, Clone)]
pub enum Op {
    /// The end of an attempt, written only while the attempt's claim
    /// stands (see migration 5).
    Finish {
        dag: String,
        run_id: String,
        task: String,
        update: TiUpdate,
        /// The worker that claimed the attempt, and its attempt number.
        worker: String,
        attempt: i64,
    },
    /// A state set outright (upstream_failed).
    SetState {
        dag: String,
        run_id: String,
        task: String,
        state: TaskState,
    },
    /// One line of a task attempt's log.
    Log {
        dag: String,
        run_id: String,
        task: String,
        attempt: i64,
        seq: i64,
        at: i64,
        level: String,
        message: String,
    },
}

/// A string for a JSON parameter. NUL, which PostgreSQL text cannot
/// hold, is dropped: task errors quote bad input, which may hold anything.
fn text(s: &str) -> Value {
    if s.contains('\0') {
        Value::String(s.replace('\0', ""))
    } else {
        Value::String(s.to_string())
    }
}

fn opt_text(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

/// The rows a batch of ops writes, each list one JSON parameter: no value
/// is ever spliced into SQL, and the statement text (so its prepared
/// plan) is the same whatever the batch holds.
#[derive(Debug, Default)]
struct OpRows {
    /// One final end per task instance; a state set after the end in the
    /// same batch overrides the end's state.
    finished: Vec<Value>,
    /// Task instances whose state alone is set (upstream_failed).
    states: Vec<Value>,
    logs: Vec<Value>,
}

impl OpRows {
    /// Folds `ops`, in order, into one write per task instance, so the
    /// statements that write them touch disjoint rows and their order no
    /// longer matters.
    fn new(ops: &[Op]) -> OpRows {
        type Key<'a> = (&'a str, &'a str, &'a str);
        let mut finished: Vec<Value> = Vec::new();
        let mut states: Vec<Value> = Vec::new();
        let mut by_key: HashMap<Key<'_>, (bool, usize)> = HashMap::new();
        let mut logs = Vec::new();
        for op in ops {
            match op {
                Op::Finish {
                    dag,
                    run_id,
                    task,
                    update: u,
                    worker,
                    attempt,
                } => {
                    let row = json!({
                        "dag": text(dag), "run_id": text(run_id), "task": text(task),
                        "fence_worker": text(worker), "fence_attempt": attempt,
                        "state": u.state.as_str(), "failures": u.failures,
                        "next_try_at": u.next_try_at, "ended_at": u.ended_at,
                        "rows_in": u.rows_in, "rows_out": u.rows_out,
                        "bad_records": u.bad_records, "bytes_written": u.bytes_written,
                        "error": opt_text(&u.error), "watermark": opt_text(&u.watermark),
                    });
                    let key = (dag.as_str(), run_id.as_str(), task.as_str());
                    match by_key.get(&key) {
                        Some(&(true, i)) => finished[i] = row,
                        Some(&(false, i)) => {
                            // The end supersedes a state set before it.
                            states[i] = Value::Null;
                            by_key.insert(key, (true, finished.len()));
                            finished.push(row);
                        }
                        None => {
                            by_key.insert(key, (true, finished.len()));
                            finished.push(row);
                        }
                    }
                }
                Op::SetState {
                    dag,
                    run_id,
                    task,
                    state,
                } => {
                    let key = (dag.as_str(), run_id.as_str(), task.as_str());
                    match by_key.get(&key) {
                        Some(&(true, i)) => finished[i]["state"] = state.as_str().into(),
                        Some(&(false, i)) => states[i]["state"] = state.as_str().into(),
                        None => {
                            by_key.insert(key, (false, states.len()));
                            states.push(json!({
                                "dag": text(dag), "run_id": text(run_id),
                                "task": text(task), "state": state.as_str(),
                            }));
                        }
                    }
                }
                Op::Log {
                    dag,
                    run_id,
                    task,
                    attempt,
                    seq,
                    at,
                    level,
                    message,
                } => logs.push(json!({
                    "dag": text(dag), "run_id": text(run_id), "task": text(task),
                    "attempt": attempt, "seq": seq, "at": at,
                    "level": text(level), "message": text(message),
                })),
            }
        }
        states.retain(|v| !v.is_null());
        OpRows {
            finished,
            states,
            logs,
        }
    }
}

/// SQLite's statements for one batch of ops and an optional claim, sent
/// as one multi-statement query: SQLite runs in-process, so what a batch
/// costs is the hops to its worker thread, one per query. Parameters:
/// $1 ends, $2 states, $3 logs (JSON arrays); $4 tasks to claim and $5
/// tasks to announce (JSON arrays), $6 now, $7 worker, $8 dag, $9 run_id,
/// $10 log sequence number.
const SQLITE_APPLY: &str = "
BEGIN IMMEDIATE;
UPDATE task_instances SET state = v.state, failures = v.failures,
    next_try_at = v.next_try_at, ended_at = v.ended_at, rows_in = v.rows_in,
    rows_out = v.rows_out, bad_records = v.bad_records, bytes_written = v.bytes_written,
    error = v.error, watermark = v.watermark, ended_by = worker, worker = NULL
FROM (SELECT value ->> '$.dag' AS dag, value ->> '$.run_id' AS run_id,
        value ->> '$.task' AS task, value ->> '$.state' AS state,
        value ->> '$.failures' AS failures, value ->> '$.next_try_at' AS next_try_at,
        value ->> '$.ended_at' AS ended_at, value ->> '$.rows_in' AS rows_in,
        value ->> '$.rows_out' AS rows_out, value ->> '$.bad_records' AS bad_records,
        value ->> '$.bytes_written' AS bytes_written, value ->> '$.error' AS error,
        value ->> '$.watermark' AS watermark, value ->> '$.fence_worker' AS fence_worker,
        value ->> '$.fence_attempt' AS fence_attempt
      FROM jsonb_each($1)) AS v
WHERE task_instances.dag = v.dag AND task_instances.run_id = v.run_id
    AND task_instances.task = v.task AND task_instances.state = 'running'
    AND task_instances.worker = v.fence_worker
    AND task_instances.try_number = v.fence_attempt;
UPDATE task_instances SET state = v.state
FROM (SELECT value ->> '$.dag' AS dag, value ->> '$.run_id' AS run_id,
        value ->> '$.task' AS task, value ->> '$.state' AS state
      FROM jsonb_each($2)) AS v
WHERE task_instances.dag = v.dag AND task_instances.run_id = v.run_id
    AND task_instances.task = v.task;
INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
SELECT value ->> '$.dag', value ->> '$.run_id', value ->> '$.task', value ->> '$.attempt',
    value ->> '$.seq', value ->> '$.at', value ->> '$.level', value ->> '$.message'
FROM jsonb_each($3) WHERE true ON CONFLICT DO NOTHING;
UPDATE task_instances SET state = 'running',
    try_number = try_number + CASE WHEN state = 'up_for_reschedule' THEN 0 ELSE 1 END,
    started_at = $6, first_try_at = COALESCE(first_try_at, $6), worker = $7, heartbeat = $6,
    next_try_at = NULL
WHERE dag = $8 AND run_id = $9 AND state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
    AND task IN (SELECT value FROM json_each($4))
RETURNING task;
INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
SELECT dag, run_id, task, try_number, $10, $6, 'info', 'attempt ' || try_number || ' started'
FROM task_instances
WHERE dag = $8 AND run_id = $9 AND task IN (SELECT value FROM json_each($5))
    AND state = 'running' AND worker = $7 AND started_at = $6
ON CONFLICT DO NOTHING;
COMMIT;
";

/// PostgreSQL's: the function migration 3 creates, one round trip.
const POSTGRES_APPLY: &str =
    "SELECT task FROM sluice_apply(CAST($1 AS json), CAST($2 AS json)) AS t(task)";

const RUN_COLUMNS: &str = "dag, run_id, logical_date, interval_start, interval_end, run_type, state, params, created_at, started_at, ended_at, sla_missed";
const TI_COLUMNS: &str = "dag, run_id, task, state, try_number, failures, next_try_at, first_try_at, started_at, ended_at, rows_in, rows_out, bad_records, bytes_written, error, ended_by, generation";

/// A state column, read into its enum.
fn state<S: std::str::FromStr<Err = super::UnknownState>>(r: &AnyRow, i: usize) -> sqlx::Result<S> {
    r.try_get::<String, _>(i)?
        .parse()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn run_row(r: &AnyRow) -> sqlx::Result<RunRow> {
    Ok(RunRow {
        dag: r.try_get(0)?,
        run_id: r.try_get(1)?,
        logical_date: r.try_get(2)?,
        interval_start: r.try_get(3)?,
        interval_end: r.try_get(4)?,
        run_type: r.try_get(5)?,
        state: state(r, 6)?,
        params: r.try_get(7)?,
        created_at: r.try_get(8)?,
        started_at: r.try_get(9)?,
        ended_at: r.try_get(10)?,
        sla_missed: r.try_get::<i64, _>(11)? != 0,
    })
}

fn ti_row(r: &AnyRow) -> sqlx::Result<TaskInstanceRow> {
    Ok(TaskInstanceRow {
        dag: r.try_get(0)?,
        run_id: r.try_get(1)?,
        task: r.try_get(2)?,
        state: state(r, 3)?,
        try_number: r.try_get(4)?,
        failures: r.try_get(5)?,
        next_try_at: r.try_get(6)?,
        first_try_at: r.try_get(7)?,
        started_at: r.try_get(8)?,
        ended_at: r.try_get(9)?,
        rows_in: r.try_get(10)?,
        rows_out: r.try_get(11)?,
        bad_records: r.try_get(12)?,
        bytes_written: r.try_get(13)?,
        error: r.try_get(14)?,
        ended_by: r.try_get(15)?,
        generation: r.try_get(16)?,
    })
}

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

impl StateStore {
    /// Runs a statement; returns how many rows it changed.
    pub(super) async fn exec(&self, query: AnyQuery<'_>) -> Result<u64> {
        let done = query.execute(self.pool()).await.map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    /// Runs `query` and decodes each row with `decode`.
    pub(super) async fn fetch<T>(
        &self,
        query: AnyQuery<'_>,
        decode: fn(&AnyRow) -> sqlx::Result<T>,
    ) -> Result<Vec<T>> {
        let rows = query
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| decode(r).map_err(|e| self.err(e)))
            .collect()
    }

    /// Records a job file as loaded (error = None) or as failing to load.
    pub async fn upsert_job(
        &self,
        name: &str,
        file: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO jobs (name, file, paused, error, updated_at) VALUES ($1, $2, 0, $3, $4)
             ON CONFLICT (name) DO UPDATE SET file = excluded.file, error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(file)
        .bind(error)
        .bind(now)).await?;
        Ok(())
    }

    /// The load error recorded for a job, if its last edit did not load.
    pub async fn job_error(&self, name: &str) -> Result<Option<String>> {
        let errors: Vec<Option<String>> = self
            .fetch(
                sqlx::query("SELECT error FROM jobs WHERE name = $1").bind(name),
                |r| r.try_get(0),
            )
            .await?;
        Ok(errors.into_iter().next().flatten())
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let done = self
            .exec(
                sqlx::query("UPDATE jobs SET paused = $1 WHERE name = $2")
                    .bind(i64::from(paused))
                    .bind(name),
            )
            .await?;
        Ok(done == 1)
    }

    /// Names of the paused jobs.
    pub async fn paused_jobs(&self) -> Result<Vec<String>> {
        self.fetch(
            sqlx::query("SELECT name FROM jobs WHERE paused <> 0"),
            |r| r.try_get(0),
        )
        .await
    }

    /// The logical date of the latest scheduled run of `dag`.
    pub async fn last_scheduled(&self, dag: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(logical_date) FROM dag_runs WHERE dag = $1 AND run_type = 'scheduled'",
        )
        .bind(dag)
        .fetch_one(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        row.try_get::<Option<i64>, _>(0).map_err(|e| self.err(e))
    }

    /// Creates a run and its task instances, unless `dag` already has a
    /// run for that logical date. Returns whether it was created.
    pub async fn create_run(&self, run: &NewRun) -> Result<bool> {
        let mut tx = self.pool().begin().await.map_err(|e| self.err(e))?;
        let done = sqlx::query(
            "INSERT INTO dag_runs (dag, run_id, logical_date, interval_start, interval_end, run_type, state, params, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&run.dag)
        .bind(&run.run_id)
        .bind(run.logical_date)
        .bind(run.interval_start)
        .bind(run.interval_end)
        .bind(&run.run_type)
        .bind(&run.params)
        .bind(run.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for task in &run.tasks {
            sqlx::query(
                "INSERT INTO task_instances (dag, run_id, task, state) VALUES ($1, $2, $3, 'scheduled')",
            )
            .bind(&run.dag)
            .bind(&run.run_id)
            .bind(task)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Adds task instances a job gained after its run was created.
    pub async fn add_task_instance(&self, dag: &str, run_id: &str, task: &str) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO task_instances (dag, run_id, task, state) VALUES ($1, $2, $3, 'scheduled') ON CONFLICT DO NOTHING",
        )
        .bind(dag)
        .bind(run_id)
        .bind(task)).await?;
        Ok(())
    }

    /// Runs in one of `states`, oldest logical date first.
    pub async fn runs_in(&self, states: &[RunState]) -> Result<Vec<RunRow>> {
        let marks: Vec<String> = (1..=states.len()).map(|i| format!("${i}")).collect();
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM dag_runs WHERE state IN ({}) ORDER BY logical_date, dag",
            marks.join(", ")
        )));
        for state in states {
            query = query.bind(state.as_str());
        }
        self.fetch(query, run_row).await
    }

    /// The most recent runs of `dag`, newest first.
    pub async fn recent_runs(&self, dag: &str, limit: i64) -> Result<Vec<RunRow>> {
        self.fetch(
            sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag = $1 ORDER BY logical_date DESC LIMIT $2"
        )))
        .bind(dag)
        .bind(limit),
            run_row,
        )
        .await
    }

    pub async fn run(&self, dag: &str, run_id: &str) -> Result<Option<RunRow>> {
        Ok(self
            .fetch(
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag = $1 AND run_id = $2"
                )))
                .bind(dag)
                .bind(run_id),
                run_row,
            )
            .await?
            .pop())
    }

    /// The run of `dag` for a logical date.
    pub async fn run_at(&self, dag: &str, logical_date: i64) -> Result<Option<RunRow>> {
        Ok(self
            .fetch(
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag = $1 AND logical_date = $2"
                )))
                .bind(dag)
                .bind(logical_date),
                run_row,
            )
            .await?
            .pop())
    }

    /// Moves a run from `from` to `to`; false if it was not in `from`, or
    /// if it would end while the store holds a task instance of it that
    /// has not ended (or, to succeed, that did not succeed).
    pub async fn move_run(
        &self,
        dag: &str,
        run_id: &str,
        from: RunState,
        to: RunState,
        now: i64,
    ) -> Result<bool> {
        let (started, ended) = match to {
            RunState::Running => (Some(now), None),
            RunState::Success | RunState::Failed => (None, Some(now)),
            RunState::Queued => (None, None),
        };
        // A run ends by what the store says of its tasks, not by what one
        // replica believes: a replica whose late ends were fenced off
        // (migration 5) must not close a run whose task another replica
        // runs or will run again. Task instances that never started
        // (a task since removed from the job file) do not hold it open.
        let sql = match to {
            RunState::Success => concat!(
                "UPDATE dag_runs SET state = $1, started_at = COALESCE($2, started_at), ended_at = COALESCE($3, ended_at)
                 WHERE dag = $4 AND run_id = $5 AND state = $6",
                " AND NOT EXISTS (SELECT 1 FROM task_instances t WHERE t.dag = $4 AND t.run_id = $5
                     AND t.state <> 'success' AND NOT (t.state = 'scheduled' AND t.try_number = 0))"
            ),
            RunState::Failed => concat!(
                "UPDATE dag_runs SET state = $1, started_at = COALESCE($2, started_at), ended_at = COALESCE($3, ended_at)
                 WHERE dag = $4 AND run_id = $5 AND state = $6",
                " AND NOT EXISTS (SELECT 1 FROM task_instances t WHERE t.dag = $4 AND t.run_id = $5
                     AND t.state NOT IN ('success', 'failed', 'upstream_failed')
                     AND NOT (t.state = 'scheduled' AND t.try_number = 0))"
            ),
            _ => {
                "UPDATE dag_runs SET state = $1, started_at = COALESCE($2, started_at), ended_at = COALESCE($3, ended_at)
                 WHERE dag = $4 AND run_id = $5 AND state = $6"
            }
        };
        let update = sqlx::query(sql)
            .bind(to.as_str())
            .bind(started)
            .bind(ended)
            .bind(dag)
            .bind(run_id)
            .bind(from.as_str());
        if to != RunState::Success {
            return Ok(self.exec(update).await? == 1);
        }
        // A run's success and the marks its incremental extracts reached
        // are committed together: a mark never runs ahead of the output.
        let mut tx = self.pool().begin().await.map_err(|e| self.err(e))?;
        let done = update
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected();
        if done == 1 {
            sqlx::query(
                "INSERT INTO watermarks (dag, task, value, updated_at)
                 SELECT dag, task, watermark, $1 FROM task_instances
                 WHERE dag = $2 AND run_id = $3 AND watermark IS NOT NULL
                 ON CONFLICT (dag, task) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(now)
            .bind(dag)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(done == 1)
    }

    /// The mark the last successful run of `dag` left for `task`.
    pub async fn watermark(&self, dag: &str, task: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM watermarks WHERE dag = $1 AND task = $2")
            .bind(dag)
            .bind(task)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.err(e))
    }

    /// Advances `task`'s mark outright (for `sluice run`, which keeps no
    /// run rows).
    pub async fn set_watermark(&self, dag: &str, task: &str, value: &str, now: i64) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO watermarks (dag, task, value, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (dag, task) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(dag)
            .bind(task)
            .bind(value)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// Marks a run's SLA as missed; true the first time only.
    pub async fn mark_sla_missed(&self, dag: &str, run_id: &str) -> Result<bool> {
        let done = self.exec(sqlx::query(
            "UPDATE dag_runs SET sla_missed = 1 WHERE dag = $1 AND run_id = $2 AND sla_missed = 0",
        )
        .bind(dag)
        .bind(run_id)).await?;
        Ok(done == 1)
    }

    pub async fn task_instances(&self, dag: &str, run_id: &str) -> Result<Vec<TaskInstanceRow>> {
        self.fetch(
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {TI_COLUMNS} FROM task_instances WHERE dag = $1 AND run_id = $2"
            )))
            .bind(dag)
            .bind(run_id),
            ti_row,
        )
        .await
    }

    /// Applies `ops` in one transaction and one round trip: the executor
    /// finishes hundreds of no-op tasks a second, and a statement each
    /// would spend its time waiting on the database.
    pub async fn apply(&self, ops: &[Op]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.apply_rows(OpRows::new(ops), None).await.map(drop)
    }

    /// Applies `ops`, then claims for its worker those of the claim's
    /// tasks (of one run) still waiting to run and logs their start, in
    /// one transaction and one round trip; returns the tasks it got. The
    /// conditional update is what keeps two processes from both running a
    /// task. A sensor's later pokes (up_for_reschedule) are not new
    /// attempts.
    pub async fn apply_and_claim(&self, ops: &[Op], claim: &Claim<'_>) -> Result<Vec<String>> {
        self.apply_rows(OpRows::new(ops), Some(claim)).await
    }

    async fn apply_rows(&self, rows: OpRows, claim: Option<&Claim<'_>>) -> Result<Vec<String>> {
        let got = if self.is_postgres() {
            let ops = json!({
                "finished": rows.finished, "states": rows.states, "logs": rows.logs,
            });
            let claim = claim.map(|c| {
                let mut claim = json!({
                    "dag": text(c.dag), "run_id": text(c.run_id),
                    "tasks": c.tasks.iter().map(|t| text(t)).collect::<Vec<_>>(),
                    "announce": c.announce.iter().map(|t| text(t)).collect::<Vec<_>>(),
                    "worker": text(c.worker), "now": c.now, "seq": c.seq,
                });
                if let Some(pick) = &c.pick {
                    let units: serde_json::Map<String, Value> = pick
                        .units
                        .iter()
                        .map(|(head, members)| {
                            let members: Vec<Value> = members.iter().map(|m| text(m)).collect();
                            (head.clone(), Value::from(members))
                        })
                        .collect();
                    claim["limit"] = json!(pick.limit);
                    claim["units"] = Value::Object(units);
                }
                claim.to_string()
            });
            sqlx::query(POSTGRES_APPLY)
                .bind(ops.to_string())
                .bind(claim)
                .fetch_all(self.pool())
                .await
        } else {
            // One replica holds a SQLite store: it claims what it chose.
            debug_assert!(claim.is_none_or(|c| c.pick.is_none()));
            let list = |tasks: &[String]| {
                Value::from(tasks.iter().map(|t| text(t)).collect::<Vec<_>>()).to_string()
            };
            let none: &[String] = &[];
            // BEGIN and COMMIT travel in the same query (a hop each would
            // double a chain's cost); a failed statement leaves the
            // transaction open, so it is rolled back before the connection
            // goes back to the pool.
            let mut conn = self.pool().acquire().await.map_err(|e| self.err(e))?;
            let got = sqlx::query(SQLITE_APPLY)
                .bind(Value::from(rows.finished).to_string())
                .bind(Value::from(rows.states).to_string())
                .bind(Value::from(rows.logs).to_string())
                .bind(list(claim.map_or(none, |c| c.tasks)))
                .bind(list(claim.map_or(none, |c| c.announce)))
                .bind(claim.map_or(0, |c| c.now))
                .bind(claim.map_or("", |c| c.worker))
                .bind(claim.map_or("", |c| c.dag))
                .bind(claim.map_or("", |c| c.run_id))
                .bind(claim.map_or(0, |c| c.seq))
                .fetch_all(&mut *conn)
                .await;
            if got.is_err() {
                // Fails harmlessly when the failure came before BEGIN.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            }
            got
        }
        .map_err(|e| self.err(e))?;
        got.iter()
            .map(|r| r.try_get(0).map_err(|e| self.err(e)))
            .collect()
    }

    /// Whether `worker` still holds its claim on a task instance: it is
    /// running, on that worker, at attempt `try_number`. What an attempt
    /// asks just before it publishes (see `sluice_engine::fence`).
    pub async fn holds_claim(
        &self,
        dag: &str,
        run_id: &str,
        task: &str,
        worker: &str,
        try_number: i64,
    ) -> Result<bool> {
        let rows = self
            .fetch(
                sqlx::query(
                    "SELECT try_number FROM task_instances WHERE dag = $1 AND run_id = $2 \
                     AND task = $3 AND state = 'running' AND worker = $4 AND try_number = $5",
                )
                .bind(dag.to_string())
                .bind(run_id.to_string())
                .bind(task.to_string())
                .bind(worker.to_string())
                .bind(try_number),
                |r| r.try_get::<i64, _>(0),
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Keeps this worker's running task instances from looking abandoned.
    pub async fn heartbeat(&self, worker: &str, now: i64) -> Result<()> {
        self.exec(
            sqlx::query(
                "UPDATE task_instances SET heartbeat = $1 WHERE worker = $2 AND state = 'running'",
            )
            .bind(now)
            .bind(worker),
        )
        .await?;
        Ok(())
    }

    /// Puts back task instances whose worker stopped heart-beating before
    /// `stale_before` (a crash, kill -9, a lost node), so they run again.
    /// The interrupted attempt does not count against the task's retries.
    pub async fn requeue_abandoned(&self, stale_before: i64) -> Result<u64> {
        let done = self
            .exec(
                sqlx::query(
                    "UPDATE task_instances SET state = 'scheduled', worker = NULL
             WHERE state = 'running' AND (heartbeat IS NULL OR heartbeat < $1)",
                )
                .bind(stale_before),
            )
            .await?;
        Ok(done)
    }

    /// Puts back this worker's running task instances that are not in
    /// `running` (dag, run id, task): claims whose commit reached the
    /// store although the answer did not reach the worker. Returns how
    /// many.
    pub async fn requeue_unowned(
        &self,
        worker: &str,
        running: &std::collections::HashSet<(String, String, String)>,
    ) -> Result<u64> {
        let claimed: Vec<(String, String, String)> = self
            .fetch(
                sqlx::query(
                    "SELECT dag, run_id, task FROM task_instances WHERE worker = $1 AND state = 'running'",
                )
                .bind(worker),
                |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
            )
            .await?;
        let mut n = 0;
        for key in claimed {
            if !running.contains(&key) {
                self.requeue(&key.0, &key.1, &key.2).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Puts back one of this worker's running task instances (shutdown).
    pub async fn requeue(&self, dag: &str, run_id: &str, task: &str) -> Result<()> {
        self.exec(
            sqlx::query(
                "UPDATE task_instances SET state = 'scheduled', worker = NULL
             WHERE dag = $1 AND run_id = $2 AND task = $3 AND state = 'running'",
            )
            .bind(dag)
            .bind(run_id)
            .bind(task),
        )
        .await?;
        Ok(())
    }

    /// Sets `tasks` of a run to run again (`sluice clear`): each that has
    /// ended goes back to `scheduled` with its retries counted afresh and
    /// a new load generation (`now`), and the run, if it had ended, back
    /// to `queued`. Attempt numbers keep counting, so an attempt of before
    /// the clear is never mistaken for one after it. Task instances not
    /// ended (waiting or running) are left as they are. Returns the tasks
    /// set to run again.
    pub async fn clear(
        &self,
        dag: &str,
        run_id: &str,
        tasks: &[String],
        now: i64,
    ) -> Result<Vec<String>> {
        let mut tx = self.pool().begin().await.map_err(|e| self.err(e))?;
        let mut cleared = Vec::new();
        for task in tasks {
            let done = sqlx::query(
                "UPDATE task_instances SET state = 'scheduled', failures = 0, next_try_at = NULL,
                    first_try_at = NULL, started_at = NULL, ended_at = NULL, rows_in = NULL,
                    rows_out = NULL, bad_records = NULL, bytes_written = NULL, error = NULL,
                    watermark = NULL, worker = NULL, generation = $1
                 WHERE dag = $2 AND run_id = $3 AND task = $4
                    AND state IN ('success', 'failed', 'upstream_failed')",
            )
            .bind(now)
            .bind(dag)
            .bind(run_id)
            .bind(task)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            if done.rows_affected() == 1 {
                cleared.push(task.clone());
            }
        }
        if !cleared.is_empty() {
            sqlx::query(
                "UPDATE dag_runs SET state = 'queued', ended_at = NULL
                 WHERE dag = $1 AND run_id = $2 AND state IN ('success', 'failed')",
            )
            .bind(dag)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(cleared)
    }

    /// One page of `dag`'s runs, newest logical date first, optionally in
    /// one state, and how many there are in all.
    pub async fn runs_page(
        &self,
        dag: &str,
        state: Option<RunState>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<RunRow>, i64)> {
        let filter = if state.is_some() {
            "dag = $1 AND state = $2"
        } else {
            "dag = $1 AND $2 IS NULL"
        };
        let state = state.map(RunState::as_str);
        let rows = self
            .fetch(
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM dag_runs WHERE {filter} \
                     ORDER BY logical_date DESC, run_id LIMIT $3 OFFSET $4"
                )))
                .bind(dag)
                .bind(state)
                .bind(limit)
                .bind(offset),
                run_row,
            )
            .await?;
        let total: Vec<i64> = self
            .fetch(
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT count(*) FROM dag_runs WHERE {filter}"
                )))
                .bind(dag)
                .bind(state),
                |r| r.try_get(0),
            )
            .await?;
        Ok((rows, total.first().copied().unwrap_or(0)))
    }

    /// Every job's row: (name, paused, load error).
    pub async fn jobs(&self) -> Result<Vec<(String, bool, Option<String>)>> {
        self.fetch(
            sqlx::query("SELECT name, paused, error FROM jobs ORDER BY name"),
            |r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? != 0, r.try_get(2)?)),
        )
        .await
    }

    /// Marks a run that has not ended as failed (an operator's decision),
    /// and its task instances that have not ended with it; a task
    /// attempt still running finishes, but its end no longer matters.
    /// False if the run had ended.
    pub async fn fail_run(&self, dag: &str, run_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool().begin().await.map_err(|e| self.err(e))?;
        let done = sqlx::query(
            "UPDATE dag_runs SET state = 'failed', ended_at = $1
             WHERE dag = $2 AND run_id = $3 AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(dag)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        if done == 1 {
            sqlx::query(
                "UPDATE task_instances SET state = 'failed', ended_at = $1, worker = NULL,
                    error = COALESCE(error, 'marked failed by an operator')
                 WHERE dag = $2 AND run_id = $3
                    AND state IN ('scheduled', 'running', 'up_for_retry', 'up_for_reschedule')",
            )
            .bind(now)
            .bind(dag)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(done == 1)
    }

    /// A task attempt's log lines, in order: (when, level, message).
    pub async fn logs(
        &self,
        dag: &str,
        run_id: &str,
        task: &str,
        attempt: i64,
    ) -> Result<Vec<(i64, String, String)>> {
        self.fetch(
            sqlx::query(
                "SELECT at, level, message FROM task_logs WHERE dag = $1 AND run_id = $2 AND task = $3 AND attempt = $4 ORDER BY seq",
            )
            .bind(dag)
            .bind(run_id)
            .bind(task)
            .bind(attempt),
            |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        )
        .await
    }
}
