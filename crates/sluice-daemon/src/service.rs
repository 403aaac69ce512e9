//! Wiring a daemon from the daemon config: the state store, the engine,
//! the watched jobs folder, and the runs the CLI creates (trigger,
//! backfill).

use crate::clock::SystemClock;
use crate::error::{Error, Result};
use crate::executor::{Daemon, EngineRunner, Options, new_run};
use crate::jobs::JobSet;
use crate::state::{self, StateStore};
use chrono::{NaiveDate, Utc};
use sluice_core::config::{DaemonConfig, Job, TaskKind};
use sluice_core::env::process_env;
use sluice_core::schedule::Plan;
use sluice_engine::runner::{Engine, RunReport, TaskReport, TaskState};
use std::sync::Arc;

/// The jobs folder of `config`, each job checked as `sluice validate`
/// does (SQL planned against upstream schemas) before it replaces the
/// running version.
pub fn job_set(config: &DaemonConfig) -> JobSet {
    let cfg = config.clone();
    JobSet::new(
        config.jobs.clone(),
        Box::new(process_env),
        Box::new(move |job| {
            let cfg = cfg.clone();
            Box::pin(async move {
                let errors = sluice_engine::validate::check_job(job, &cfg).await;
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
            })
        }),
    )
}

/// A daemon on `config`'s state store and the data plane's engine.
pub fn daemon(store: StateStore, config: &DaemonConfig, opts: Options) -> Result<Daemon> {
    let engine = Arc::new(Engine::new(config.clone())?.with_marks(Arc::new(store.clone())));
    Ok(Daemon::new(
        store,
        Arc::new(EngineRunner(engine.clone())),
        Arc::new(SystemClock),
        job_set(config),
        opts,
    )
    .with_streams(engine))
}

/// The daemon options `config` asks for.
pub fn options(config: &DaemonConfig) -> Options {
    Options {
        workers: config.workers,
        shutdown_grace: config.shutdown_grace,
        state_outage_limit: config.state_outage_limit,
        ..Options::default()
    }
}

/// Creates a manual run of `job` for the interval whose logical date falls
/// on `date`. Returns the run id, and whether it was new (a run for that
/// logical date may exist already).
pub async fn trigger(
    store: &StateStore,
    job: &Job,
    date: NaiveDate,
    params: Option<serde_json::Value>,
) -> Result<(String, bool)> {
    if job.is_stream() {
        return Err(crate::error::Error::Invalid(format!(
            "{} is a stream job: it runs while the daemon runs and has no runs to trigger",
            job.name
        )));
    }
    let (start, end) = job.interval_for_date(date);
    let run = new_run(job, "manual", start, end, params, Utc::now());
    let created = store.create_run(&run).await?;
    if !created {
        let existing = store
            .run_at(&job.name, run.logical_date)
            .await?
            .map_or(run.run_id, |r| r.run_id);
        return Ok((existing, false));
    }
    Ok((run.run_id, true))
}

/// Sets task `task` of run `run_id` to run again (`sluice clear`), and
/// with `downstream` every task below it. A run that succeeded has had
/// its staging removed, so the extracts and transforms whose output a
/// cleared task reads run again too (they only write staging); loads,
/// checks and sensors upstream do not. Returns the tasks set to run
/// again, in DAG order: a task still waiting or running is not among them.
pub async fn clear(
    store: &StateStore,
    job: &Job,
    run_id: &str,
    task: &str,
    downstream: bool,
) -> Result<Vec<String>> {
    if job.task(task).is_none() {
        return Err(Error::NotFound(format!(
            "job {} has no task \"{task}\"; its tasks: {}",
            job.name,
            job.dag.order.join(", ")
        )));
    }
    let Some(run) = store.run(&job.name, run_id).await? else {
        return Err(Error::NotFound(format!(
            "job {} has no run \"{run_id}\" (sluice runs {} lists them)",
            job.name, job.name
        )));
    };
    let mut chosen = std::collections::HashSet::from([task.to_string()]);
    if downstream {
        let mut stack = vec![task.to_string()];
        while let Some(t) = stack.pop() {
            for d in job.dag.downstream.get(&t).into_iter().flatten() {
                if chosen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
    }
    if run.state == state::RunState::Success {
        let mut stack: Vec<String> = chosen.iter().cloned().collect();
        while let Some(t) = stack.pop() {
            for u in job.dag.upstream.get(&t).into_iter().flatten() {
                let produces = job.task(u).is_some_and(|u| {
                    matches!(u.kind, TaskKind::Extract(_) | TaskKind::Transform(_))
                });
                if produces && chosen.insert(u.clone()) {
                    stack.push(u.clone());
                }
            }
        }
    }
    let tasks: Vec<String> = job
        .dag
        .order
        .iter()
        .filter(|t| chosen.contains(*t))
        .cloned()
        .collect();
    let now = crate::clock::micros(Utc::now());
    store.clear(&job.name, run_id, &tasks, now).await
}

/// Creates the backfill runs of `job` for every interval whose logical
/// date falls in [from, to] (dates in the job's timezone), oldest first.
/// Returns the (dag, run id) of each interval's run, new or existing. An
/// existing run that has ended is left as it is, or with `reset` runs
/// again from its first task, as a clear of every task would.
pub async fn create_backfill(
    store: &StateStore,
    job: &Job,
    from: NaiveDate,
    to: NaiveDate,
    reset: bool,
) -> Result<Vec<(String, String)>> {
    if to < from {
        return Err(Error::Invalid(format!("--to {to} is before --from {from}")));
    }
    let intervals: Vec<_> = match &job.schedule {
        Some(schedule) => {
            // Each day's first tick; the day after `to` bounds the range.
            let day_start = |d: NaiveDate| job.interval_for_date(d).0;
            let plan = Plan {
                schedule,
                start: day_start(from),
                end: to.succ_opt().map(day_start),
                catchup: true,
            };
            let now = Utc::now().with_timezone(&job.timezone);
            plan.due(None, &now, 100_000)
                .into_iter()
                .filter(|i| i.start.date_naive() >= from && i.start.date_naive() <= to)
                .map(|i| (i.start, i.end))
                .collect()
        }
        None => {
            let mut v = Vec::new();
            let mut d = from;
            while d <= to {
                v.push(job.interval_for_date(d));
                d = d.succ_opt().expect("date in range");
            }
            v
        }
    };
    let mut keys = Vec::new();
    for (start, end) in intervals {
        let run = new_run(job, "backfill", start, end, None, Utc::now());
        if !store.create_run(&run).await? {
            let existing = store.run_at(&job.name, run.logical_date).await?;
            if let Some(r) = existing {
                if reset && r.state.is_terminal() {
                    // Every task again, under a new load generation.
                    let now = crate::clock::micros(Utc::now());
                    store.clear(&r.dag, &r.run_id, &job.dag.order, now).await?;
                }
                keys.push((r.dag, r.run_id));
            }
            continue;
        }
        keys.push((run.dag, run.run_id));
    }
    Ok(keys)
}

/// `sluice run`: one run of `job` for `date` in this process, on the
/// daemon's executor with a state store of its own in a temporary folder,
/// so that retries, timeouts and sensors behave exactly as under `serve`.
/// Incremental extracts read their marks from `marks` (the configured
/// state store), and the marks the run leaves are written there once it
/// has succeeded. Returns what each task did, in DAG order.
pub async fn run_once(
    config: &DaemonConfig,
    job: Job,
    date: NaiveDate,
    marks: Option<StateStore>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<RunReport> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-run-")
        .tempdir()
        .map_err(|e| {
            Error::Invalid(format!(
                "cannot create the run's temporary state store: {e}"
            ))
        })?;
    let store = StateStore::connect(&format!("sqlite://{}/state.db", dir.path().display())).await?;
    let (run_id, _) = trigger(&store, &job, date, None).await?;
    let mut engine = Engine::new(config.clone())?;
    if let Some(marks) = &marks {
        engine = engine.with_marks(Arc::new(marks.clone()));
    }
    let opts = Options {
        schedule: false,
        only: Some(vec![(job.name.clone(), run_id.clone())]),
        ..options(config)
    };
    let job = Arc::new(job);
    let mut daemon = Daemon::new(
        store.clone(),
        Arc::new(EngineRunner(Arc::new(engine))),
        Arc::new(SystemClock),
        JobSet::fixed((*job).clone()),
        opts,
    );
    daemon.serve(stop).await?;
    let tis = store.task_instances(&job.name, &run_id).await?;
    let mut tasks = Vec::new();
    for id in &job.dag.order {
        let task = job.task(id).expect("task of the job");
        let Some(ti) = tis.iter().find(|t| &t.task == id) else {
            continue;
        };
        let state = match ti.state {
            state::TaskState::Success => TaskState::Success,
            state::TaskState::UpstreamFailed => TaskState::UpstreamFailed,
            _ => TaskState::Failed,
        };
        let count = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        let duration = match (ti.first_try_at, ti.ended_at) {
            (Some(s), Some(e)) if e >= s => std::time::Duration::from_micros((e - s) as u64),
            _ => std::time::Duration::ZERO,
        };
        tasks.push(TaskReport {
            task: id.clone(),
            kind: task.kind.key(),
            state,
            rows_in: count(ti.rows_in),
            rows_out: count(ti.rows_out),
            bad_records: count(ti.bad_records),
            bytes_written: count(ti.bytes_written),
            duration,
            attempts: u32::try_from(ti.try_number).unwrap_or(0),
            error: ti.error.clone(),
            watermark: None,
        });
    }
    let report = RunReport {
        job: job.name.clone(),
        run_id,
        tasks,
    };
    if report.success()
        && let Some(marks) = &marks
    {
        let now = Utc::now().timestamp_micros();
        for t in &report.tasks {
            if let Some(mark) = store.watermark(&job.name, &t.task).await? {
                marks.set_watermark(&job.name, &t.task, &mark, now).await?;
            }
        }
    }
    Ok(report)
}
