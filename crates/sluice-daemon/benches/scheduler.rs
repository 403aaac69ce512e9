//! Scheduler overhead: how fast the daemon moves task instances through
//! the state store when the tasks themselves do nothing.
//!
//! Three workloads, each on SQLite and on the local PostgreSQL:
//! - fan-out: one DAG run of 1,000 tasks, a root and 999 tasks after it;
//! - chain: one DAG run of 1,000 tasks, each after the one before;
//! - queued: 10 runs of the fan-out DAG queued at once (10,000 task
//!   instances waiting).
//!
//! For each it prints task instances per second (from the first start to
//! the last run finishing), the p50/p99 delay from a task instance
//! becoming ready (its upstreams succeeded) to its start, and the p50/p99
//! scheduling delay: from ready with a worker free to started, which
//! leaves out the wait for one of the 1,024 workers when more tasks than
//! that are ready at once.
//!
//! usage: cargo bench -p sluice-daemon --bench scheduler [-- --sqlite-only]

mod common;

use chrono::Utc;
use futures::future::BoxFuture;
use sluice_core::config::{Job, parse_job};
use sluice_core::template::RunContext;
use sluice_daemon::clock::SystemClock;
use sluice_daemon::executor::{AttemptFence, Daemon, Options, TaskError, TaskRunner, new_run};
use sluice_daemon::jobs::JobSet;
use sluice_daemon::state::{RunState, StateStore};
use sluice_engine::runner::{TaskAttempt, UnitOutput, Units};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks that succeed at once.
struct Noop;

impl TaskRunner for Noop {
    fn run(
        &self,
        _: Arc<Job>,
        _: Arc<RunContext>,
        _: Arc<Units>,
        _: String,
        _: TaskAttempt,
        _: AttemptFence,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>> {
        Box::pin(async {
            Ok(UnitOutput {
                counts: Vec::new(),
                staged: None,
            })
        })
    }

    fn poke(
        &self,
        _: Arc<Job>,
        _: Arc<RunContext>,
        _: String,
    ) -> BoxFuture<'static, Result<bool, TaskError>> {
        Box::pin(async { Ok(true) })
    }

    fn run_succeeded(&self, _: Arc<Job>, _: Arc<RunContext>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn job_text(shape: &str, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("[tasks.t{i}]\ncheck = \"SELECT true\"\n"));
        match (shape, i) {
            (_, 0) => {}
            ("fanout", _) => s.push_str("depends_on = [\"t0\"]\n"),
            _ => s.push_str(&format!("depends_on = [\"t{}\"]\n", i - 1)),
        }
    }
    s
}

/// A new database on the local PostgreSQL: its name and URL.
fn postgres_database() -> (String, String) {
    let name = format!(
        "sluice_bench_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros() % 1_000_000
    );
    common::psql(&format!("CREATE DATABASE {name}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    (name, url)
}

struct Result_ {
    tasks: u64,
    seconds: f64,
    /// p50 and p99 of ready→start and of the scheduling delay.
    ready: (Duration, Duration),
    sched: (Duration, Duration),
}

/// The p50 and p99 of `delays`.
fn percentiles(mut delays: Vec<Duration>) -> (Duration, Duration) {
    delays.sort();
    let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
    (pct(0.5), pct(0.99))
}

async fn bench(state: &str, dir: &Path, shape: &str, runs: usize) -> Result_ {
    let jobs_dir = dir.join(format!("jobs-{shape}-{runs}"));
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let name = format!("{shape}_{runs}");
    let text = job_text(shape, 1000);
    std::fs::write(jobs_dir.join(format!("{name}.toml")), &text).unwrap();
    let job = parse_job(&text, &jobs_dir.join(format!("{name}.toml")), &|_| None).unwrap();
    let store = StateStore::connect(state).await.unwrap();
    let mut keys = Vec::new();
    for r in 0..runs {
        let date =
            chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(r as u64);
        let (start, end) = job.interval_for_date(date);
        let run = new_run(&job, "backfill", start, end, None, Utc::now());
        assert!(store.create_run(&run).await.unwrap());
        keys.push((run.dag.clone(), run.run_id.clone()));
    }
    let opts = Options {
        workers: 1024,
        schedule: false,
        only: Some(keys.clone()),
        ..Options::default()
    };
    let jobs = JobSet::new(
        jobs_dir,
        Box::new(|_| None),
        sluice_daemon::jobs::no_checks(),
    );
    let mut daemon = Daemon::new(
        store.clone(),
        Arc::new(Noop),
        Arc::new(SystemClock),
        jobs,
        opts,
    );
    let t0 = Instant::now();
    daemon.serve(std::future::pending()).await.unwrap();
    let seconds = t0.elapsed().as_secs_f64();
    for (dag, run_id) in &keys {
        assert_eq!(
            store.run(dag, run_id).await.unwrap().unwrap().state,
            RunState::Success
        );
    }
    Result_ {
        tasks: daemon.stats.attempts_finished,
        seconds,
        ready: percentiles(daemon.stats.ready_to_start.clone()),
        sched: percentiles(daemon.stats.scheduling_delay.clone()),
    }
}

#[tokio::main]
async fn main() {
    let sqlite_only = std::env::args().any(|a| a == "--sqlite-only");
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec![(
        "SQLite",
        format!("sqlite://{}/state.db", dir.path().display()),
    )];
    let mut database = None;
    if !sqlite_only {
        let (name, url) = postgres_database();
        backends.push(("PostgreSQL", url));
        database = Some(name);
    }
    println!(
        "{:<11} {:<16} {:>6} {:>8} {:>13} {:>13} {:>13} {:>13}",
        "state",
        "workload",
        "tasks",
        "tasks/s",
        "ready p50 ms",
        "ready p99 ms",
        "sched p50 ms",
        "sched p99 ms"
    );
    for (label, url) in &backends {
        for (shape, runs, what) in [
            ("fanout", 1, "fan-out 1x1000"),
            ("chain", 1, "chain 1x1000"),
            ("fanout", 10, "queued 10x1000"),
        ] {
            let r = bench(url, dir.path(), shape, runs).await;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "{:<11} {:<16} {:>6} {:>8.0} {:>13.2} {:>13.2} {:>13.2} {:>13.2}",
                label,
                what,
                r.tasks,
                r.tasks as f64 / r.seconds,
                ms(r.ready.0),
                ms(r.ready.1),
                ms(r.sched.0),
                ms(r.sched.1)
            );
        }
    }
    if let Some(name) = database {
        common::psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}
