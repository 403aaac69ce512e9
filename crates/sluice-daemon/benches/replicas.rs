//! Scale-out: one run of 300 I/O-bound tasks (each waits 100 ms, as a
//! sensor's poke or a remote query would) on the local PostgreSQL, worked
//! by 1, 2 and 4 replicas of `workers = 4` (executors with their own
//! worker ids, claiming from the one store). Prints each wall time and
//! the speed-up over one replica, and checks that every task ran exactly
//! once whatever the number of replicas.
//!
//! usage: cargo bench --profile dev -p sluice-daemon --bench replicas

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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKS: usize = 300;
const WAIT: Duration = Duration::from_millis(100);
const WORKERS: usize = 4;

/// Tasks that wait, recording which replica ran which task.
struct Wait {
    replica: String,
    ran: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl TaskRunner for Wait {
    fn run(
        &self,
        _: Arc<Job>,
        _: Arc<RunContext>,
        _: Arc<Units>,
        unit: String,
        _: TaskAttempt,
        _: AttemptFence,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>> {
        let (replica, ran) = (self.replica.clone(), self.ran.clone());
        Box::pin(async move {
            tokio::time::sleep(WAIT).await;
            ran.lock().unwrap().entry(unit).or_default().push(replica);
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

/// One run worked by `replicas` executors; the wall time and who ran what.
async fn bench(
    url: &str,
    dir: &std::path::Path,
    replicas: usize,
    day: u64,
) -> (Duration, HashMap<String, Vec<String>>) {
    let text: String = (0..TASKS)
        .map(|i| format!("[tasks.t{i}]\ncheck = \"SELECT true\"\n"))
        .collect();
    let file = dir.join("wide.toml");
    std::fs::write(&file, &text).unwrap();
    let job = parse_job(&text, &file, &|_| None).unwrap();
    let store = StateStore::connect(url).await.unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(day);
    let (start, end) = job.interval_for_date(date);
    let run = new_run(&job, "backfill", start, end, None, Utc::now());
    assert!(store.create_run(&run).await.unwrap());
    let key = (run.dag.clone(), run.run_id.clone());
    let ran = Arc::new(Mutex::new(HashMap::new()));
    let mut set = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for r in 0..replicas {
        let store = StateStore::connect(url).await.unwrap();
        let jobs = JobSet::new(
            dir.to_path_buf(),
            Box::new(|_| None),
            sluice_daemon::jobs::no_checks(),
        );
        let runner = Wait {
            replica: format!("replica-{r}"),
            ran: ran.clone(),
        };
        let mut daemon = Daemon::new(
            store,
            Arc::new(runner),
            Arc::new(SystemClock),
            jobs,
            Options {
                workers: WORKERS,
                schedule: false,
                only: Some(vec![key.clone()]),
                worker_id: format!("bench-replica-{r}"),
                ..Options::default()
            },
        );
        set.spawn(async move { daemon.serve(std::future::pending()).await.unwrap() });
    }
    // Done when the store says the run succeeded. (A replica that did not
    // end the run itself notices at its next scan, up to a second later;
    // that wait is not work.)
    let took = loop {
        if store.run(&key.0, &key.1).await.unwrap().unwrap().state == RunState::Success {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert_eq!(
        store.run(&key.0, &key.1).await.unwrap().unwrap().state,
        RunState::Success
    );
    let ran = Arc::try_unwrap(ran).unwrap().into_inner().unwrap();
    (took, ran)
}

#[tokio::main]
async fn main() {
    let name = format!("sluice_bench_replicas_{}", std::process::id());
    common::psql(&format!("CREATE DATABASE {name}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{TASKS} tasks of {} ms, workers = {WORKERS} per replica, PostgreSQL state store",
        WAIT.as_millis()
    );
    println!(
        "{:>8} {:>10} {:>9} {:>12}  tasks per replica",
        "replicas", "wall s", "speed-up", "ideal s"
    );
    let mut one = None;
    for (day, replicas) in [1usize, 2, 4].into_iter().enumerate() {
        let (took, ran) = bench(&url, dir.path(), replicas, day as u64).await;
        // Every task ran exactly once, whichever replica claimed it.
        assert_eq!(ran.len(), TASKS);
        let twice: Vec<_> = ran.iter().filter(|(_, by)| by.len() != 1).collect();
        assert!(twice.is_empty(), "ran more than once: {twice:?}");
        let mut per: HashMap<&str, usize> = HashMap::new();
        for by in ran.values() {
            *per.entry(by[0].as_str()).or_default() += 1;
        }
        let mut per: Vec<_> = per.into_iter().collect();
        per.sort();
        let base = *one.get_or_insert(took);
        let ideal = WAIT.as_secs_f64() * (TASKS as f64 / (WORKERS * replicas) as f64).ceil();
        println!(
            "{replicas:>8} {:>10.2} {:>8.2}x {:>12.2}  {}",
            took.as_secs_f64(),
            base.as_secs_f64() / took.as_secs_f64(),
            ideal,
            per.iter()
                .map(|(_, n)| n.to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    common::psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}
