//! The commands that work with the state store: `serve`, `backfill`,
//! `trigger` and `runs`.

use crate::summary::table;
use anyhow::Result;
use chrono::{NaiveDate, Utc};
use sluice_core::config::DaemonConfig;
use sluice_daemon::clock::{from_micros, micros};
use sluice_daemon::http::{self, Health, JobsView};
use sluice_daemon::metrics::Metrics;
use sluice_daemon::service;
use sluice_daemon::state::{RunState, StateStore};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Runs the daemon and its HTTP server until SIGTERM or SIGINT. On the
/// signal `/readyz` turns 503 at once; the HTTP server stops after the
/// daemon has put back what it could not finish.
pub async fn serve(
    config: DaemonConfig,
    config_file: Option<&std::path::Path>,
) -> Result<ExitCode> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen = \"{}\": {e}", config.listen))?;
    let address = listener.local_addr()?;
    let store = StateStore::connect(&config.state).await?;
    let _sole = store.sole_replica()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new());
    let jobs = Arc::new(JobsView::new());
    let options = service::options(&config);
    let replica = options.worker_id.clone();
    let mut daemon = service::daemon(store.clone(), &config, options)?
        .with_metrics(metrics.clone())
        .with_health(health.clone())
        .with_jobs_view(jobs.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_file.map_or("(embedded defaults)".to_string(), |p| p.display().to_string()),
        state = %store.name(),
        jobs = %config.jobs.display(),
        workers = config.workers,
        listen = %address,
        replica = %replica,
        "sluice serving"
    );
    let router = http::router(http::AppState {
        metrics,
        health: health.clone(),
        store,
        jobs,
        api_token: config.api_token.as_deref().map(Arc::from),
        read_public: config.api_read_public,
        replica: Arc::from(replica.as_str()),
    });
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    tasks.spawn(async move {
        http::serve(listener, router, async {
            let _ = http_stopped.await;
        })
        .await
        .map_err(|e| anyhow::anyhow!("HTTP server on {address}: {e}"))
    });
    // On a runtime worker rather than the main thread: the tasks the loop
    // spawns then start on its thread, without a cross-thread wake-up.
    tasks.spawn(async move {
        let stop = async move {
            crate::signals::stop_signal().await;
            health.drain();
            tracing::info!("stopping: not ready any more, finishing running tasks");
        };
        let served = daemon.serve(stop).await;
        let _ = http_stop.send(());
        served.map_err(Into::into)
    });
    // The first to fail ends the command (dropping the set stops the other).
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    tracing::info!("sluice stopped");
    Ok(ExitCode::SUCCESS)
}

/// Runs every interval of `job` between two dates, in this process.
pub async fn backfill(
    config: DaemonConfig,
    name: &str,
    from: NaiveDate,
    to: NaiveDate,
    reset: bool,
) -> Result<ExitCode> {
    // A job that is missing, does not load or is a stream: exit 1 with
    // its error.
    let job = crate::job_lookup::find_batch_job(&config, name)?;
    let store = StateStore::connect(&config.state).await?;
    let _sole = store.sole_replica()?;
    let keys = service::create_backfill(&store, &job, from, to, reset).await?;
    if keys.is_empty() {
        println!("no intervals of {} between {from} and {to}", job.name);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = sluice_daemon::executor::Options {
        schedule: false,
        only: Some(keys.clone()),
        ..service::options(&config)
    };
    let mut daemon = service::daemon(store, &config, opts)?;
    daemon.jobs_mut().insert(job.clone());
    daemon.serve(crate::signals::stop_signal()).await?;
    let store = daemon.store();
    // The report waits out a state store outage as the daemon did.
    let limit = config.state_outage_limit;
    let mut ok = true;
    for (dag, run_id) in &keys {
        if let Some(run) = patiently(limit, || store.run(dag, run_id)).await? {
            ok &= run.state == RunState::Success;
        }
    }
    let limit_rows = keys.len() as i64;
    let table = patiently(limit, || async {
        runs_table(store, &job.name, limit_rows).await.map_err(|e| {
            match e.downcast::<sluice_daemon::Error>() {
                Ok(state) => state,
                Err(other) => sluice_daemon::Error::Invalid(format!("{other:#}")),
            }
        })
    })
    .await?;
    print!("{table}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sets a task instance (and with `downstream` the tasks below it) to run
/// again; the daemon sharing the state store runs it.
pub async fn clear(
    config: DaemonConfig,
    name: &str,
    run_id: &str,
    task: &str,
    downstream: bool,
) -> Result<ExitCode> {
    let job = crate::job_lookup::find_job(&config, name)?;
    let store = StateStore::connect(&config.state).await?;
    match service::clear(&store, &job, run_id, task, downstream).await {
        Ok(cleared) if cleared.is_empty() => {
            println!(
                "nothing to clear in {} {run_id}: the tasks have not ended",
                job.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(cleared) => {
            println!("cleared {} {run_id}: {}", job.name, cleared.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ sluice_daemon::Error::NotFound(_)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// Queues a manual run; the daemon sharing the state store starts it.
pub async fn trigger(
    config: DaemonConfig,
    name: &str,
    date: Option<NaiveDate>,
) -> Result<ExitCode> {
    // A job that is missing or does not load: exit 1 with its error.
    let job = crate::job_lookup::find_job(&config, name)?;
    let date = date.unwrap_or_else(|| Utc::now().with_timezone(&job.timezone).date_naive());
    let store = StateStore::connect(&config.state).await?;
    let (run_id, created) = service::trigger(&store, &job, date, None).await?;
    if created {
        println!("queued {} {run_id}", job.name);
    } else {
        println!("{} already has a run for {date}: {run_id}", job.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// What an API refusal means for the command: its message, exit 1.
fn refused(answer: &crate::api_client::Answer) -> ExitCode {
    match answer.status {
        401 => eprintln!(
            "{} (set SLUICE_API_TOKEN, or api_token in the config, to the daemon's token)",
            answer.message()
        ),
        _ => eprintln!("{}", answer.message()),
    }
    ExitCode::from(1)
}

/// `sluice trigger` through the running daemon's API.
pub async fn trigger_via_api(
    config: &DaemonConfig,
    url: Option<&str>,
    name: &str,
    date: Option<NaiveDate>,
) -> Result<ExitCode> {
    let base = crate::api_client::base_url(url, config);
    let body = match date {
        Some(d) => serde_json::json!({ "logical_date": d.to_string() }),
        None => serde_json::json!({}),
    };
    let answer = crate::api_client::post(
        &base,
        config.api_token.as_deref(),
        &["dags", name, "runs"],
        &body,
    )
    .await?;
    match answer.status {
        201 => {
            println!(
                "queued {name} {}",
                answer.body["run_id"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        // Already there: nothing to do, as with --local.
        409 => {
            println!("{}", answer.message());
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(refused(&answer)),
    }
}

/// `sluice clear` through the running daemon's API.
pub async fn clear_via_api(
    config: &DaemonConfig,
    url: Option<&str>,
    name: &str,
    run_id: &str,
    task: &str,
    downstream: bool,
) -> Result<ExitCode> {
    let base = crate::api_client::base_url(url, config);
    let answer = crate::api_client::post(
        &base,
        config.api_token.as_deref(),
        &["dags", name, "runs", run_id, "tasks", task, "clear"],
        &serde_json::json!({ "downstream": downstream }),
    )
    .await?;
    match answer.status {
        200 => {
            let cleared: Vec<&str> = answer.body["task_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                .unwrap_or_default();
            println!("cleared {name} {run_id}: {}", cleared.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        409 => {
            println!("nothing to clear in {name} {run_id}: the tasks have not ended");
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(refused(&answer)),
    }
}

/// Prints each stream job's owner and, per input file, where reading
/// stands as of its last commit.
pub async fn streams(config: DaemonConfig) -> Result<ExitCode> {
    let store = StateStore::connect(&config.state).await?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for s in store.streams().await? {
        let owner = match &s.owner {
            Some(o) if s.lease_until >= micros(now) => o.clone(),
            Some(o) => format!("{o} (lease lapsed)"),
            None => "-".into(),
        };
        let committed = s
            .committed_at
            .map(|t| from_micros(t).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "never".into());
        let cp: sluice_engine::stream::Checkpoint = match &s.checkpoint {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("stream {}: checkpoint does not read: {e}", s.job))?,
            None => Default::default(),
        };
        if cp.cursors.is_empty() {
            rows.push(vec![
                s.job.clone(),
                owner.clone(),
                committed.clone(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (fp, c) in &cp.cursors {
            rows.push(vec![
                s.job.clone(),
                owner.clone(),
                committed.clone(),
                format!("{} ({fp})", c.path.display()),
                c.offset.to_string(),
                c.size.saturating_sub(c.offset).to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no stream jobs have run");
    } else {
        print!(
            "{}",
            table(
                &[
                    "stream",
                    "owner",
                    "committed (UTC)",
                    "file",
                    "offset",
                    "lag bytes"
                ],
                &rows,
                99
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the recent runs of a job and their task states.
pub async fn runs(config: DaemonConfig, name: &str, limit: i64) -> Result<ExitCode> {
    let store = StateStore::connect(&config.state).await?;
    print!("{}", runs_table(&store, name, limit).await?);
    Ok(ExitCode::SUCCESS)
}

async fn runs_table(store: &StateStore, dag: &str, limit: i64) -> Result<String> {
    let runs = store.recent_runs(dag, limit).await?;
    let mut rows = Vec::new();
    for r in &runs {
        let tis = store.task_instances(&r.dag, &r.run_id).await?;
        let mut tasks: Vec<String> = tis
            .iter()
            .map(|t| {
                if t.try_number > 1 {
                    format!("{}={} (try {})", t.task, t.state, t.try_number)
                } else {
                    format!("{}={}", t.task, t.state)
                }
            })
            .collect();
        tasks.sort();
        let duration = match (r.started_at, r.ended_at) {
            (Some(s), Some(e)) => format!("{:.1}s", (e - s) as f64 / 1e6),
            _ => String::new(),
        };
        rows.push(vec![
            r.run_id.clone(),
            r.state.to_string(),
            r.started_at
                .map(|t| from_micros(t).format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            duration,
            tasks.join(" "),
        ]);
    }
    if rows.is_empty() {
        return Ok(format!("no runs of {dag}\n"));
    }
    Ok(table(
        &["run", "state", "started (UTC)", "duration", "tasks"],
        &rows,
        99,
    ))
}

/// Runs `read` until it succeeds or fails otherwise than by a state store
/// error, or `limit` has passed, with growing waits between tries.
async fn patiently<T, F, Fut>(limit: std::time::Duration, mut read: F) -> sluice_daemon::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sluice_daemon::Result<T>>,
{
    let since = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match read().await {
            Err(e @ sluice_daemon::Error::State { .. }) if since.elapsed() < limit => {
                tracing::warn!(error = %e, "state store failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
