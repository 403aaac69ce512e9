//! The HTTP server under load, on SQLite and on the local PostgreSQL:
//! - `/metrics` scraped while 1,000 task instances run through the
//!   scheduler (tasks that hold until released, 1,024 workers);
//! - the API's runs listing, and the UI's job page, for a job with
//!   10,000 runs.
//!
//! Each is compared with `/healthz` on the same server in the same run
//! (the floor: one HTTP round trip that does nothing), and printed as
//! p50 / p99 milliseconds and the p50 ratio to the floor.
//!
//! usage: cargo bench --profile dev -p sluice-daemon --bench http [-- --sqlite-only]

mod common;

use chrono::Utc;
use futures::future::BoxFuture;
use sluice_core::config::{Job, parse_job};
use sluice_core::template::RunContext;
use sluice_daemon::clock::SystemClock;
use sluice_daemon::executor::{AttemptFence, Daemon, Options, TaskError, TaskRunner, new_run};
use sluice_daemon::http::{self, AppState, Health, JobsView};
use sluice_daemon::jobs::JobSet;
use sluice_daemon::metrics::Metrics;
use sluice_daemon::state::StateStore;
use sluice_engine::runner::{TaskAttempt, UnitOutput, Units};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Tasks that start, count themselves and wait until released.
struct Hold {
    running: Arc<AtomicUsize>,
    release: watch::Receiver<bool>,
}

impl TaskRunner for Hold {
    fn run(
        &self,
        _: Arc<Job>,
        _: Arc<RunContext>,
        _: Arc<Units>,
        _: String,
        _: TaskAttempt,
        _: AttemptFence,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>> {
        let (running, mut release) = (self.running.clone(), self.release.clone());
        Box::pin(async move {
            running.fetch_add(1, Ordering::SeqCst);
            let _ = release.wait_for(|r| *r).await;
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

/// A job of `n` independent tasks.
fn job_text(n: usize) -> String {
    (0..n)
        .map(|i| format!("[tasks.t{i}]\ncheck = \"SELECT true\"\n"))
        .collect()
}

/// One GET over a new connection (as Prometheus and browsers do when
/// idle): how long until the whole body arrived, and the body.
fn get(addr: &str, path: &str) -> (Duration, String) {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        &text[..text.len().min(300)]
    );
    (took, text)
}

/// p50 and p99 of `n` GETs of `path`, in ms.
async fn timed(addr: &str, path: &str, n: usize) -> (f64, f64) {
    let (addr, path) = (addr.to_string(), path.to_string());
    let mut times = tokio::task::spawn_blocking(move || {
        (0..n).map(|_| get(&addr, &path).0).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[n / 2]), ms(times[(n - 1) * 99 / 100]))
}

fn row(label: &str, what: &str, (p50, p99): (f64, f64), floor: f64) {
    println!(
        "{label:<11} {what:<44} {p50:>8.2} {p99:>8.2} {:>8.1}x",
        p50 / floor
    );
}

async fn server(
    store: &StateStore,
    view: Arc<JobsView>,
    metrics: Arc<Metrics>,
) -> (String, tokio::task::JoinSet<()>) {
    let health = Arc::new(Health::new());
    health.jobs_loaded();
    let state = AppState {
        metrics,
        health,
        store: store.clone(),
        jobs: view,
        api_token: None,
        read_public: false,
        replica: Arc::from("bench"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut set = tokio::task::JoinSet::new();
    set.spawn(async move {
        http::serve(listener, http::router(state), std::future::pending())
            .await
            .unwrap();
    });
    (addr, set)
}

/// `/metrics` while 1,000 tasks run.
async fn metrics_under_load(label: &str, url: &str, dir: &Path) {
    let jobs_dir = dir.join("jobs-hold");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let text = job_text(1000);
    let file = jobs_dir.join("hold.toml");
    std::fs::write(&file, &text).unwrap();
    let job = parse_job(&text, &file, &|_| None).unwrap();
    let store = StateStore::connect(url).await.unwrap();
    let (start, end) = job.interval_for_date(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    let run = new_run(&job, "backfill", start, end, None, Utc::now());
    assert!(store.create_run(&run).await.unwrap());
    let (tx, rx) = watch::channel(false);
    let running = Arc::new(AtomicUsize::new(0));
    let hold = Hold {
        running: running.clone(),
        release: rx,
    };
    let metrics = Arc::new(Metrics::new());
    let view = Arc::new(JobsView::new());
    let (addr, _server) = server(&store, view.clone(), metrics.clone()).await;
    let jobs = JobSet::new(
        jobs_dir,
        Box::new(|_| None),
        sluice_daemon::jobs::no_checks(),
    );
    let mut daemon = Daemon::new(
        store.clone(),
        Arc::new(hold),
        Arc::new(SystemClock),
        jobs,
        Options {
            workers: 1024,
            schedule: false,
            only: Some(vec![(run.dag.clone(), run.run_id.clone())]),
            ..Options::default()
        },
    )
    .with_metrics(metrics)
    .with_jobs_view(view);
    let mut work = tokio::task::JoinSet::new();
    work.spawn(async move { daemon.serve(std::future::pending()).await.unwrap() });
    let t0 = Instant::now();
    while running.load(Ordering::SeqCst) < 1000 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "tasks never all started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The scrape says so too.
    let (_, body) = get(&addr, "/metrics");
    assert!(
        body.contains("sluice_tasks_running{dag=\"hold\"} 1000"),
        "{body}"
    );
    let floor = timed(&addr, "/healthz", 200).await;
    row(label, "/healthz (floor)", floor, floor.0);
    row(
        label,
        "/metrics, 1,000 tasks running",
        timed(&addr, "/metrics", 200).await,
        floor.0,
    );
    tx.send(true).unwrap();
    while let Some(r) = work.join_next().await {
        r.unwrap();
    }
}

/// The runs listing and the job page for a job with 10,000 runs.
async fn many_runs(label: &str, url: &str, dir: &Path) {
    let jobs_dir = dir.join("jobs-many");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let text = "schedule = \"@daily\"\n[tasks.a]\ncheck = \"SELECT true\"\n[tasks.b]\ncheck = \"SELECT true\"\ndepends_on = [\"a\"]\n";
    let file = jobs_dir.join("many.toml");
    std::fs::write(&file, text).unwrap();
    let job = Arc::new(parse_job(text, &file, &|_| None).unwrap());
    let store = StateStore::connect(url).await.unwrap();
    store
        .upsert_job("many", "many.toml", None, Utc::now().timestamp_micros())
        .await
        .unwrap();
    let first = chrono::NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
    for r in 0..10_000u64 {
        let (start, end) = job.interval_for_date(first + chrono::Days::new(r));
        let run = new_run(&job, "scheduled", start, end, None, Utc::now());
        assert!(store.create_run(&run).await.unwrap());
    }
    let view = Arc::new(JobsView::new());
    view.set([job]);
    let (addr, _server) = server(&store, view, Arc::new(Metrics::new())).await;
    let floor = timed(&addr, "/healthz", 200).await;
    row(label, "/healthz (floor)", floor, floor.0);
    for (what, path) in [
        (
            "runs listing, 10,000 runs (first 100)",
            "/api/v1/dags/many/runs",
        ),
        (
            "runs listing, last page",
            "/api/v1/dags/many/runs?limit=100&offset=9900",
        ),
        (
            "runs listing, by state",
            "/api/v1/dags/many/runs?state=queued&limit=100",
        ),
        ("UI job page (grid of the last 25 runs)", "/ui/dags/many"),
        ("UI job list", "/"),
    ] {
        row(label, what, timed(&addr, path, 100).await, floor.0);
    }
}

#[tokio::main]
async fn main() {
    let sqlite_only = std::env::args().any(|a| a == "--sqlite-only");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:<11} {:<44} {:>8} {:>8} {:>9}",
        "state", "request", "p50 ms", "p99 ms", "p50/floor"
    );
    let sqlite = |name: &str| format!("sqlite://{}/{name}.db", dir.path().display());
    metrics_under_load("SQLite", &sqlite("hold"), dir.path()).await;
    many_runs("SQLite", &sqlite("many"), dir.path()).await;
    if !sqlite_only {
        let name = format!("sluice_bench_http_{}", std::process::id());
        common::psql(&format!("CREATE DATABASE {name}"));
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        metrics_under_load("PostgreSQL", &url, dir.path()).await;
        common::psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        common::psql(&format!("CREATE DATABASE {name}"));
        many_runs("PostgreSQL", &url, dir.path()).await;
        common::psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}
