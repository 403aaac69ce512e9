//! Statements on jobs, DAG runs, task instances and task logs.

use super::StateStore;
use crate::error::Result;
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
    pub state: String,
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
    pub state: String,
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
}

/// The end of an attempt.
#[derive(Debug, Clone, Default)]
pub struct TiUpdate {
    pub state: String,
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
}

/// A write the executor batches: many go to the store in one round trip.
#[derive(Debug, Clone)]
pub enum Op {
    /// The end of an attempt.
    Finish {
        dag: String,
        run_id: String,
        task: String,
        update: TiUpdate,
    },
    /// A state set outright (upstream_failed).
    SetState {
        dag: String,
        run_id: String,
        task: String,
        state: String,
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

/// A string as an SQL literal. Both SQLite and PostgreSQL (with its
/// default standard_conforming_strings) read '' as one quote and nothing
/// else as special; NUL, which PostgreSQL text cannot hold, is dropped.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn lit_opt_str(s: &Option<String>) -> String {
    s.as_deref().map_or("NULL".to_string(), lit)
}

fn lit_opt_int(v: Option<i64>) -> String {
    v.map_or("NULL".to_string(), |v| v.to_string())
}

/// Rows per statement when ops are batched.
const ROWS_PER_STATEMENT: usize = 1000;

/// Writes `ops` as few statements: each run of finished attempts as one
/// UPDATE from a VALUES list, all log lines as one INSERT (per 1,000
/// rows), other state changes one by one, in the order given. Parsing a
/// statement costs SQLite about as much as running it, so 1,000 finished
/// tasks written as 2,000 statements kept the next claims waiting tens of
/// milliseconds.
fn write_ops(ops: &[Op], out: &mut String) {
    let mut finished: Vec<&Op> = Vec::new();
    for op in ops {
        match op {
            Op::Finish { .. } => finished.push(op),
            Op::SetState {
                dag,
                run_id,
                task,
                state,
            } => {
                write_finished(&finished, out);
                finished.clear();
                out.push_str(&format!(
                    "UPDATE task_instances SET state = {} WHERE dag = {} AND run_id = {} AND task = {};\n",
                    lit(state),
                    lit(dag),
                    lit(run_id),
                    lit(task)
                ));
            }
            Op::Log { .. } => {}
        }
    }
    write_finished(&finished, out);
    let logs: Vec<&Op> = ops.iter().filter(|o| matches!(o, Op::Log { .. })).collect();
    for chunk in logs.chunks(ROWS_PER_STATEMENT) {
        out.push_str(
            "INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message) VALUES ",
        );
        for (i, op) in chunk.iter().enumerate() {
            if let Op::Log {
                dag,
                run_id,
                task,
                attempt,
                seq,
                at,
                level,
                message,
            } = op
            {
                out.push_str(&format!(
                    "{}({}, {}, {}, {attempt}, {seq}, {at}, {}, {})",
                    if i == 0 { "" } else { ", " },
                    lit(dag),
                    lit(run_id),
                    lit(task),
                    lit(level),
                    lit(message)
                ));
            }
        }
        out.push_str(" ON CONFLICT DO NOTHING;\n");
    }
}

/// Ends of attempts as UPDATE … FROM (VALUES …), which SQLite (3.33 and
/// later) and PostgreSQL both take; the casts give PostgreSQL the column
/// types a VALUES list of NULLs would not have. When one task ended twice
/// in the batch, its last end is the one written.
fn write_finished(ops: &[&Op], out: &mut String) {
    let mut last: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut rows: Vec<(&str, &str, &str, &TiUpdate)> = Vec::new();
    for op in ops {
        if let Op::Finish {
            dag,
            run_id,
            task,
            update,
        } = op
        {
            let key = (dag.as_str(), run_id.as_str(), task.as_str());
            match last.get(&key) {
                Some(&i) => rows[i].3 = update,
                None => {
                    last.insert(key, rows.len());
                    rows.push((key.0, key.1, key.2, update));
                }
            }
        }
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        out.push_str(
            "UPDATE task_instances SET state = CAST(v.column4 AS TEXT), failures = CAST(v.column5 AS BIGINT), \
             next_try_at = CAST(v.column6 AS BIGINT), ended_at = CAST(v.column7 AS BIGINT), \
             rows_in = CAST(v.column8 AS BIGINT), rows_out = CAST(v.column9 AS BIGINT), \
             bad_records = CAST(v.column10 AS BIGINT), bytes_written = CAST(v.column11 AS BIGINT), \
             error = CAST(v.column12 AS TEXT), watermark = CAST(v.column13 AS TEXT), worker = NULL FROM (VALUES ",
        );
        for (i, (dag, run_id, task, u)) in chunk.iter().enumerate() {
            out.push_str(&format!(
                "{}({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                if i == 0 { "" } else { ", " },
                lit(dag),
                lit(run_id),
                lit(task),
                lit(&u.state),
                u.failures,
                lit_opt_int(u.next_try_at),
                lit_opt_int(u.ended_at),
                lit_opt_int(u.rows_in),
                lit_opt_int(u.rows_out),
                lit_opt_int(u.bad_records),
                lit_opt_int(u.bytes_written),
                lit_opt_str(&u.error),
                lit_opt_str(&u.watermark),
            ));
        }
        out.push_str(
            ") AS v WHERE task_instances.dag = v.column1 AND task_instances.run_id = v.column2 \
             AND task_instances.task = v.column3;\n",
        );
    }
}

const RUN_COLUMNS: &str = "dag, run_id, logical_date, interval_start, interval_end, run_type, state, params, created_at, started_at, ended_at, sla_missed";
const TI_COLUMNS: &str = "dag, run_id, task, state, try_number, failures, next_try_at, first_try_at, started_at, ended_at, rows_in, rows_out, bad_records, bytes_written, error";

fn run_row(r: &AnyRow) -> sqlx::Result<RunRow> {
    Ok(RunRow {
        dag: r.try_get(0)?,
        run_id: r.try_get(1)?,
        logical_date: r.try_get(2)?,
        interval_start: r.try_get(3)?,
        interval_end: r.try_get(4)?,
        run_type: r.try_get(5)?,
        state: r.try_get(6)?,
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
        state: r.try_get(3)?,
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
    })
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

impl StateStore {
    /// Runs a statement; returns how many rows it changed.
    async fn exec(&self, query: AnyQuery<'_>) -> Result<u64> {
        let done = query.execute(self.pool()).await.map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    /// Runs `query` and decodes each row with `decode`.
    async fn fetch<T>(
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

    /// Runs in one of `states` (names from this crate, never user
    /// input), oldest logical date first.
    pub async fn runs_in(&self, states: &[&str]) -> Result<Vec<RunRow>> {
        let list = states
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.fetch(
            sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM dag_runs WHERE state IN ({list}) ORDER BY logical_date, dag"
        ))),
            run_row,
        )
        .await
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

    /// Moves a run from `from` to `to`; false if it was not in `from`.
    pub async fn move_run(
        &self,
        dag: &str,
        run_id: &str,
        from: &str,
        to: &str,
        now: i64,
    ) -> Result<bool> {
        let (started, ended) = match to {
            "running" => (Some(now), None),
            "success" | "failed" => (None, Some(now)),
            _ => (None, None),
        };
        let update = sqlx::query(
            "UPDATE dag_runs SET state = $1, started_at = COALESCE($2, started_at), ended_at = COALESCE($3, ended_at)
             WHERE dag = $4 AND run_id = $5 AND state = $6",
        )
        .bind(to)
        .bind(started)
        .bind(ended)
        .bind(dag)
        .bind(run_id)
        .bind(from);
        if to != "success" {
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
        let mut sql = String::from("BEGIN;\n");
        write_ops(ops, &mut sql);
        sql.push_str("COMMIT;\n");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Applies `ops`, then claims for its worker those of the claim's
    /// tasks (of one run) still waiting to run and logs their start, in
    /// one transaction and one round trip; returns the tasks it got. The
    /// conditional update is what keeps two processes from both running a
    /// task. A sensor's later pokes (up_for_reschedule) are not new
    /// attempts.
    pub async fn apply_and_claim(&self, ops: &[Op], claim: &Claim<'_>) -> Result<Vec<String>> {
        let mut sql = String::from("BEGIN;\n");
        write_ops(ops, &mut sql);
        let (dag, run_id, now) = (lit(claim.dag), lit(claim.run_id), claim.now);
        let list = |tasks: &[String]| tasks.iter().map(|t| lit(t)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(
            "UPDATE task_instances SET state = 'running',
                 try_number = try_number + CASE WHEN state = 'up_for_reschedule' THEN 0 ELSE 1 END,
                 started_at = {now}, first_try_at = COALESCE(first_try_at, {now}), worker = {worker}, heartbeat = {now}, next_try_at = NULL
             WHERE dag = {dag} AND run_id = {run_id} AND state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')
                 AND task IN ({tasks})
             RETURNING task;\n",
            worker = lit(claim.worker),
            tasks = list(claim.tasks),
        ));
        // The start of each new attempt goes in the task's log in the same
        // transaction (a round trip of its own would double a chain's
        // cost); the attempt number is the one the claim just set.
        if !claim.announce.is_empty() {
            sql.push_str(&format!(
                "INSERT INTO task_logs (dag, run_id, task, attempt, seq, at, level, message)
                 SELECT dag, run_id, task, try_number, {seq}, {now}, 'info', 'attempt ' || try_number || ' started'
                 FROM task_instances
                 WHERE dag = {dag} AND run_id = {run_id} AND task IN ({tasks})
                     AND state = 'running' AND worker = {worker} AND started_at = {now}
                 ON CONFLICT DO NOTHING;\n",
                seq = claim.seq,
                worker = lit(claim.worker),
                tasks = list(claim.announce),
            ));
        }
        sql.push_str("COMMIT;\n");
        let rows = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(|e| self.err(e)))
            .collect()
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
