//! Wiring a daemon from the daemon config: the state store, the engine,
//! the watched jobs folder, and the runs the CLI creates (trigger,
//! backfill).

use crate::clock::SystemClock;
use crate::error::{Error, Result};
use crate::executor::{Daemon, EngineRunner, Options, new_run};
use crate::jobs::JobSet;
use crate::state::StateStore;
use chrono::{NaiveDate, Utc};
use sluice_core::config::{DaemonConfig, Job};
use sluice_core::env::process_env;
use sluice_core::schedule::Plan;
use sluice_engine::runner::Engine;
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
            let errors = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(sluice_engine::validate::check_job(job, &cfg))
            });
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }),
    )
}

/// A daemon on `config`'s state store and the data plane's engine.
pub fn daemon(store: StateStore, config: &DaemonConfig, opts: Options) -> Result<Daemon> {
    let engine = Arc::new(Engine::new(config.clone())?.with_marks(Arc::new(store.clone())));
    Ok(Daemon::new(
        store,
        Arc::new(EngineRunner(engine)),
        Arc::new(SystemClock),
        job_set(config),
        opts,
    ))
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

/// Creates the backfill runs of `job` for every interval whose logical
/// date falls in [from, to] (dates in the job's timezone), oldest first.
/// Returns the (dag, run id) of each interval's run, new or existing.
pub async fn create_backfill(
    store: &StateStore,
    job: &Job,
    from: NaiveDate,
    to: NaiveDate,
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
                keys.push((r.dag, r.run_id));
            }
            continue;
        }
        keys.push((run.dag, run.run_id));
    }
    Ok(keys)
}
