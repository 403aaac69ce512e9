//! Command-line arguments and what each command does.

use anyhow::Result;
use chrono::NaiveDate;
use sluice_core::config::{DaemonConfig, Extract, Job, TaskKind, load_job, load_jobs_dir};
use sluice_core::env::process_env;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run extract-transform-load DAGs defined in config files"
)]
pub struct Args {
    /// The daemon config; default ./sluice.toml if it exists, else the embedded defaults.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where `trigger` and `clear` send their change: the running daemon's
/// API by default, the state store with `--local`.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The daemon's address; default from `listen` in the config (the
    /// token from `api_token` / SLUICE_API_TOKEN).
    #[arg(long, conflicts_with = "local")]
    url: Option<String>,
    /// Write to the state store directly, with no daemon involved.
    #[arg(long)]
    local: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check configs, DAG shapes and SQL plans; exit 1 on any error.
    Validate {
        /// Job files or folders of job files; default the config's jobs folder.
        paths: Vec<PathBuf>,
    },
    /// Run one job in this process, like `airflow dags test`.
    Run {
        /// A job name (from the jobs folder) or a job file.
        job: String,
        /// The logical date (YYYY-MM-DD); default the last complete interval.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Run only this task and the tasks it depends on.
        #[arg(long)]
        task: Option<String>,
    },
    /// The daemon: keeps every job on its schedule until SIGTERM.
    Serve,
    /// Run every interval of a job between two dates (inclusive).
    Backfill {
        job: String,
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        /// Run dates that already ran again, every task, replacing what
        /// their loads wrote only where the load mode replaces (a new
        /// load generation: `append` appends again).
        #[arg(long)]
        reset: bool,
    },
    /// Set a task instance to run again (and its downstream tasks with
    /// --downstream); the daemon on the same state store runs it.
    Clear {
        job: String,
        run_id: String,
        task: String,
        #[arg(long)]
        downstream: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Queue a manual run for the daemon to start.
    Trigger {
        job: String,
        /// The logical date (YYYY-MM-DD); default today.
        #[arg(long)]
        date: Option<NaiveDate>,
        #[command(flatten)]
        target: Target,
    },
    /// Recent runs of a job and their task states.
    Runs {
        job: String,
        /// How many runs, newest first.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Stream jobs: who runs each, its files, their offsets and lag.
    Streams,
}

impl Args {
    /// What is logged unless `SLUICE_LOG` says otherwise: the daemon and
    /// the commands that drive it say what they do (runs created and
    /// finished, each task attempt); `run` and `validate` print their own
    /// report, and log only what went wrong.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Validate { .. } | Command::Run { .. } | Command::Runs { .. } => "warn",
            _ => "info",
        }
    }
}

/// Logs go to stderr: readable on a terminal, JSON lines otherwise. Lines
/// logged while a task attempt runs are also kept with the attempt (at
/// `info` and above, whatever `SLUICE_LOG` says), for the API and the UI.
pub fn init_logging(default_level: &str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if std::io::stderr().is_terminal() {
        stderr.compact().boxed()
    } else {
        stderr.json().with_current_span(false).boxed()
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(
            sluice_daemon::task_log::layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();
}

pub async fn dispatch(args: Args) -> Result<ExitCode> {
    let config = match DaemonConfig::load(args.config.as_deref(), &process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    // The file the config came from, for the daemon's start line.
    let config_file = args.config.clone().or_else(|| {
        std::path::Path::new("sluice.toml")
            .exists()
            .then(|| PathBuf::from("sluice.toml"))
    });
    match args.command {
        Command::Validate { paths } => validate(&config, &paths).await,
        Command::Run { job, date, task } => run_job(config, &job, date, task.as_deref()).await,
        Command::Serve => crate::daemon_cmd::serve(config, config_file.as_deref()).await,
        Command::Backfill {
            job,
            from,
            to,
            reset,
        } => crate::daemon_cmd::backfill(config, &job, from, to, reset).await,
        Command::Clear {
            job,
            run_id,
            task,
            downstream,
            target,
        } if !target.local => {
            crate::daemon_cmd::clear_via_api(
                &config,
                target.url.as_deref(),
                &job,
                &run_id,
                &task,
                downstream,
            )
            .await
        }
        Command::Clear {
            job,
            run_id,
            task,
            downstream,
            ..
        } => crate::daemon_cmd::clear(config, &job, &run_id, &task, downstream).await,
        Command::Trigger { job, date, target } if !target.local => {
            crate::daemon_cmd::trigger_via_api(&config, target.url.as_deref(), &job, date).await
        }
        Command::Trigger { job, date, .. } => crate::daemon_cmd::trigger(config, &job, date).await,
        Command::Runs { job, limit } => crate::daemon_cmd::runs(config, &job, limit).await,
        Command::Streams => crate::daemon_cmd::streams(config).await,
    }
}

async fn validate(config: &DaemonConfig, paths: &[PathBuf]) -> Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![config.jobs.clone()]
    } else {
        paths.to_vec()
    };
    let mut errors: Vec<String> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for path in &paths {
        if path.is_dir() {
            let (ok, bad) = load_jobs_dir(path, &process_env)?;
            jobs.extend(ok);
            errors.extend(bad.iter().map(ToString::to_string));
        } else {
            match load_job(path, &process_env) {
                Ok(job) => jobs.push(job),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    for job in &jobs {
        errors.extend(
            sluice_engine::validate::check_job(job, config)
                .await
                .iter()
                .map(ToString::to_string),
        );
    }
    let warnings = config
        .warnings()
        .into_iter()
        .chain(jobs.iter().flat_map(Job::warnings));
    for w in warnings {
        println!("warning: {w}");
    }
    if errors.is_empty() {
        let tasks: usize = jobs.iter().map(|j| j.tasks.len()).sum();
        println!("ok: {} job(s), {tasks} task(s)", jobs.len());
        Ok(ExitCode::SUCCESS)
    } else {
        for e in &errors {
            println!("{e}");
        }
        Ok(ExitCode::from(1))
    }
}

async fn run_job(
    config: DaemonConfig,
    name: &str,
    date: Option<NaiveDate>,
    task: Option<&str>,
) -> Result<ExitCode> {
    let job = match crate::job_lookup::find_batch_job(&config, name) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    let date = date.unwrap_or_else(|| default_date(&job));
    let job = match task {
        None => job,
        Some(id) => match job.only(id) {
            Some(j) => j,
            None => {
                eprintln!(
                    "job \"{}\" has no task \"{id}\"; tasks: {}",
                    job.name,
                    job.dag.order.join(", ")
                );
                return Ok(ExitCode::from(1));
            }
        },
    };
    // Incremental extracts keep their marks in the state store, as under
    // the daemon; other jobs run without opening it.
    let incremental = job
        .tasks
        .iter()
        .any(|t| matches!(&t.kind, TaskKind::Extract(Extract::Sql(q)) if q.incremental.is_some()));
    let marks = if incremental {
        Some(sluice_daemon::state::StateStore::connect(&config.state).await?)
    } else {
        None
    };
    let report =
        sluice_daemon::service::run_once(&config, job, date, marks, crate::signals::stop_signal())
            .await?;
    print!("{}", crate::summary::render(&report));
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The logical date of the last complete interval: yesterday for daily jobs.
fn default_date(job: &Job) -> NaiveDate {
    let today = chrono::Utc::now().with_timezone(&job.timezone).date_naive();
    today.pred_opt().unwrap_or(today)
}
