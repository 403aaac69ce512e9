//! Finding the job a command names: a job file, or a job's name in the
//! jobs folder.

use anyhow::{Context, Result, bail};
use sluice_core::config::{DaemonConfig, Job, load_job, load_jobs_dir};
use sluice_core::env::process_env;
use std::path::Path;

/// Finds a job by file path or by name in the jobs folder.
pub fn find_job(config: &DaemonConfig, job: &str) -> Result<Job> {
    let as_path = Path::new(job);
    if job.ends_with(".toml") || as_path.is_file() {
        return Ok(load_job(as_path, &process_env)?);
    }
    let (jobs, errors) = load_jobs_dir(&config.jobs, &process_env)
        .with_context(|| format!("reading jobs folder {}", config.jobs.display()))?;
    if let Some(found) = jobs.into_iter().find(|j| j.name == job) {
        return Ok(found);
    }
    for e in errors {
        // The job may be the one that failed to load: show why.
        if e.to_string().contains(&format!("{job}.toml")) {
            return Err(e.into());
        }
    }
    bail!("no job named \"{job}\" in {}", config.jobs.display())
}

/// Finds a job that has runs (`sluice run`, `backfill`): a stream job has
/// none, and is refused with a word on what runs it.
pub fn find_batch_job(config: &DaemonConfig, job: &str) -> Result<Job> {
    let found = find_job(config, job)?;
    if found.is_stream() {
        bail!(
            "{} is a stream job (mode = \"stream\"): it has no runs; `sluice serve` follows it, and `sluice streams` shows where it stands",
            found.name
        );
    }
    Ok(found)
}
