//! `sluice serve` end to end, on SQLite and on the machine's PostgreSQL:
//! runs created on schedule with catchup, retries with growing delays,
//! timeouts that publish nothing, kill -9 and restart, SIGTERM, and an
//! invalid edit to a running job file.

mod common;

use chrono::{DateTime, Timelike, Utc};
use common::{files_under, fresh_postgres_database};
use sluice_daemon::clock::from_micros;
use sluice_daemon::state::{RunRow, StateStore, TaskInstanceRow};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A scratch folder with a daemon config, a jobs folder and a state store.
struct Env {
    dir: tempfile::TempDir,
    state: String,
}

impl Env {
    fn new(backend: Backend, extra_config: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = match backend {
            Backend::Sqlite => format!("sqlite://{}/state/sluice.db", dir.path().display()),
            Backend::Postgres => fresh_postgres_database(),
        };
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let config = format!(
            "jobs = \"{d}/jobs\"\nstate = \"{state}\"\nstaging = \"file://{d}/staging\"\ndead_letter = \"file://{d}/dead\"\nlisten = \"127.0.0.1:0\"\nworkers = 4\n{extra_config}",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("sluice.toml"), config).unwrap();
        Env { dir, state }
    }

    fn with_workers(self, n: usize) -> Env {
        let file = self.path().join("sluice.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            text.replace("workers = 4", &format!("workers = {n}")),
        )
        .unwrap();
        self
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_job(&self, name: &str, text: &str) {
        let text = text.replace("$DIR", &self.path().display().to_string());
        // Write then rename, so the daemon never reads half a file.
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path().join("jobs").join(format!("{name}.toml"))).unwrap();
    }

    fn sluice(&self) -> Command {
        let mut c = common::sluice(self.path());
        c.arg("--config").arg(self.path().join("sluice.toml"));
        c
    }

    /// Starts `sluice serve`, its logs going to `serve-N.log`.
    fn serve(&self, n: u32) -> Child {
        self.serve_with(n, &[])
    }

    /// `serve` with extra environment variables.
    fn serve_with(&self, n: u32, vars: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.log_path(n)).unwrap();
        self.sluice()
            .arg("serve")
            .env("SLUICE_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice serve")
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.path().join(format!("serve-{n}.log"))
    }

    fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    async fn store(&self) -> StateStore {
        StateStore::connect(&self.state).await.expect("state store")
    }
}

/// Polls `f` every 50 ms until it returns Some, failing after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_jsonl(path: &Path, rows: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..rows {
        writeln!(
            f,
            "{{\"ts\":\"2026-11-24T10:{:02}:{:02}Z\",\"user\":\"u{}\",\"bytes\":{},\"path\":\"/item/{}\"}}",
            (i / 60) % 60,
            i % 60,
            i % 97,
            i,
            i % 1000
        )
        .unwrap();
    }
}

fn stop(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait().expect("wait")
}

/// The latest run of `dag`, once it has finished.
async fn finished_run(store: StateStore, dag: &'static str) -> Option<RunRow> {
    store
        .recent_runs(dag, 1)
        .await
        .unwrap()
        .pop()
        .filter(|r| r.state.as_str() == "success" || r.state.as_str() == "failed")
}

async fn ti(store: &StateStore, dag: &str, run_id: &str, task: &str) -> Option<TaskInstanceRow> {
    store
        .task_instances(dag, run_id)
        .await
        .ok()?
        .into_iter()
        .find(|t| t.task == task)
}

/// The instants at which each attempt of a task started, from its logs.
async fn attempt_starts(
    store: &StateStore,
    dag: &str,
    run_id: &str,
    task: &str,
    n: i64,
) -> Vec<i64> {
    let mut v = Vec::new();
    for attempt in 1..=n {
        let lines = store.logs(dag, run_id, task, attempt).await.unwrap();
        let started = lines
            .iter()
            .find(|(_, _, m)| m == &format!("attempt {attempt} started"));
        v.push(started.unwrap_or_else(|| panic!("{lines:?}")).0);
    }
    v
}

// ---------------------------------------------------------------------
// 1. Runs on schedule, with catchup creating exactly the missed intervals.

const EVERY_2S: &str = r#"
schedule = "*/2 * * * * *"
start = "$START"
catchup = true
max_active_runs = 2

[tasks.events]
extract = "logs"
path = "$DIR/data/events.jsonl"
format = "jsonl"

[tasks.out]
load = "parquet"
input = "events"
url = "file://$DIR/out/{{ ts_nodash }}/"
"#;

async fn schedules_with_catchup(backend: Backend) {
    let env = Env::new(backend, "");
    write_jsonl(&env.path().join("data/events.jsonl"), 50);
    // Ten seconds ago, on an even second: five intervals are already over.
    let now = Utc::now();
    let start = (now - chrono::Duration::seconds(10))
        .with_nanosecond(0)
        .unwrap();
    let start = start - chrono::Duration::seconds(i64::from(start.second() % 2));
    env.write_job(
        "every2s",
        &EVERY_2S.replace("$START", &start.format("%Y-%m-%dT%H:%M:%S").to_string()),
    );
    let mut daemon = env.serve(1);
    let store = env.store().await;
    wait_for("eight successful runs", Duration::from_secs(60), || async {
        let runs = store.recent_runs("every2s", 100).await.unwrap();
        (runs
            .iter()
            .filter(|r| r.state.as_str() == "success")
            .count()
            >= 8)
            .then_some(())
    })
    .await;
    let first_seen = now;
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(1));
    let mut runs = store.recent_runs("every2s", 100).await.unwrap();
    runs.reverse();
    assert!(runs.len() >= 8);
    // Consecutive intervals from `start`, none missing, none twice.
    for (i, r) in runs.iter().enumerate() {
        let expected = start + chrono::Duration::seconds(2 * i as i64);
        assert_eq!(from_micros(r.logical_date), expected, "run {i}: {r:?}");
        assert_eq!(r.interval_end - r.interval_start, 2_000_000);
        assert_eq!(r.run_type, "scheduled");
    }
    // The missed intervals were all created at the first scan; later ones
    // when their interval ended, not before.
    let first_created = runs[0].created_at;
    for r in &runs {
        let end: DateTime<Utc> = from_micros(r.interval_end);
        assert!(
            r.created_at >= r.interval_end,
            "created before its interval ended: {r:?}"
        );
        if end <= first_seen {
            assert!(
                r.created_at - first_created < 1_500_000,
                "missed interval made late: {r:?}"
            );
        } else {
            assert!(
                r.created_at - r.interval_end < 1_500_000,
                "run made late: {r:?}"
            );
        }
    }
    // max_active_runs = 2: five runs were queued at once, never more than
    // two ran together.
    for r in &runs {
        let Some(t) = r.started_at else { continue };
        let overlapping = runs
            .iter()
            .filter(|o| o.started_at.is_some_and(|s| s <= t) && o.ended_at.is_none_or(|e| e > t))
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} runs at once at {t}: {runs:?}"
        );
    }
    // Each successful run published its own output.
    for r in runs.iter().filter(|r| r.state.as_str() == "success") {
        let ts = from_micros(r.logical_date)
            .format("%Y%m%dT%H%M%S")
            .to_string();
        let files = files_under(&env.path().join("out").join(&ts));
        assert_eq!(
            files.iter().filter(|f| f.ends_with(".parquet")).count(),
            1,
            "{ts}: {files:?}"
        );
        let t = ti(&store, "every2s", &r.run_id, "out").await.unwrap();
        assert_eq!(
            (t.state.as_str(), t.try_number, t.rows_out),
            ("success", 1, Some(50))
        );
    }
}

// ---------------------------------------------------------------------
// 3. Retries with growing delays, retries exhausted, timeouts.

const FLAKY: &str = r#"
retries = 3
retry_delay = "1s"
[tasks.late]
extract = "logs"
path = "$DIR/late/*.jsonl"
format = "jsonl"
[tasks.late_out]
load = "parquet"
input = "late"
url = "file://$DIR/out/flaky/"
"#;

const BROKEN: &str = r#"
retries = 1
retry_delay = "200ms"
[tasks.missing]
extract = "logs"
path = "$DIR/never/*.jsonl"
format = "jsonl"
[tasks.missing_out]
load = "parquet"
input = "missing"
url = "file://$DIR/out/broken/"
"#;

const SLOW: &str = r#"
[tasks.big]
extract = "logs"
path = "$DIR/data/big.jsonl"
format = "jsonl"
[tasks.big_out]
load = "parquet"
input = "big"
url = "file://$DIR/out/slow/"
timeout = "20ms"
"#;

async fn retries_and_timeouts(backend: Backend) {
    let env = Env::new(backend, "");
    write_jsonl(&env.path().join("data/big.jsonl"), 300_000);
    env.write_job("flaky", FLAKY);
    env.write_job("broken", BROKEN);
    env.write_job("slow", SLOW);
    let mut daemon = env.serve(1);
    for job in ["flaky", "broken", "slow"] {
        let out =
            common::run(
                env.sluice()
                    .args(["trigger", job, "--date", "2026-11-24", "--local"]),
            );
        assert!(out.status.success());
        assert!(
            common::stdout(&out).contains("queued"),
            "{}",
            common::stdout(&out)
        );
    }
    let store = env.store().await;
    let run_id = |dag: &str| {
        let store = store.clone();
        let dag = dag.to_string();
        async move {
            store
                .recent_runs(&dag, 1)
                .await
                .unwrap()
                .pop()
                .map(|r| r.run_id)
        }
    };
    let flaky_run = wait_for("the flaky run", Duration::from_secs(20), || run_id("flaky")).await;
    // After the second failure the input appears: the third attempt works.
    wait_for("two failures", Duration::from_secs(30), || async {
        ti(&store, "flaky", &flaky_run, "late_out")
            .await
            .filter(|t| t.failures == 2)
    })
    .await;
    std::fs::create_dir_all(env.path().join("late")).unwrap();
    write_jsonl(&env.path().join("late/a.jsonl"), 10);
    let finished = |dag: &'static str| finished_run(store.clone(), dag);
    let flaky = wait_for("flaky to finish", Duration::from_secs(30), || {
        finished("flaky")
    })
    .await;
    let broken = wait_for("broken to finish", Duration::from_secs(30), || {
        finished("broken")
    })
    .await;
    let slow = wait_for("slow to finish", Duration::from_secs(30), || {
        finished("slow")
    })
    .await;
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(1));

    assert_eq!(flaky.state.as_str(), "success");
    let t = ti(&store, "flaky", &flaky.run_id, "late_out")
        .await
        .unwrap();
    assert_eq!(
        (t.state.as_str(), t.try_number, t.failures),
        ("success", 3, 2)
    );
    let starts = attempt_starts(&store, "flaky", &flaky.run_id, "late_out", 3).await;
    let (d1, d2) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(d1 >= 750_000, "first retry after {d1} us");
    assert!(d2 > d1, "delays must grow: {d1} then {d2} us");
    assert_eq!(files_under(&env.path().join("out/flaky")).len(), 1);

    assert_eq!(broken.state.as_str(), "failed");
    let t = ti(&store, "broken", &broken.run_id, "missing_out")
        .await
        .unwrap();
    assert_eq!(
        (t.state.as_str(), t.try_number),
        ("failed", 2),
        "retries + 1 attempts"
    );
    assert!(
        t.error.as_deref().unwrap_or("").contains("no files match"),
        "{t:?}"
    );
    // The fused producer shares its load's fate.
    let p = ti(&store, "broken", &broken.run_id, "missing")
        .await
        .unwrap();
    assert_eq!(p.state.as_str(), "failed");

    assert_eq!(slow.state.as_str(), "failed");
    let t = ti(&store, "slow", &slow.run_id, "big_out").await.unwrap();
    assert!(
        t.error.as_deref().unwrap_or("").contains("timed out"),
        "{t:?}"
    );
    let published: Vec<String> = files_under(&env.path().join("out/slow"));
    assert!(
        published.is_empty(),
        "a timed-out load published {published:?}"
    );
}

// ---------------------------------------------------------------------
// 4. kill -9 mid-run, then restart: nothing lost, nothing run twice.

const CHAIN: &str = r#"
[tasks.small]
extract = "logs"
path = "$DIR/data/small.jsonl"
format = "jsonl"
[tasks.small_out]
load = "parquet"
input = "small"
url = "file://$DIR/out/small/"

[tasks.events]
extract = "logs"
path = "$DIR/data/big.jsonl"
format = "jsonl"
depends_on = ["small_out"]

[tasks.per_user]
transform = "SELECT user, count(*) AS hits, sum(bytes) AS bytes FROM events GROUP BY user"

[tasks.per_user_out]
load = "parquet"
input = "per_user"
url = "file://$DIR/out/per_user/"

[tasks.events_out]
load = "parquet"
input = "events"
url = "file://$DIR/out/events/"
"#;

/// Triggers the CHAIN job with `rows` events, starts the daemon, and
/// returns once its big extract is running.
async fn chain_with_events_running(env: &Env, rows: usize) -> (StateStore, String, Child) {
    write_jsonl(&env.path().join("data/big.jsonl"), rows);
    write_jsonl(&env.path().join("data/small.jsonl"), 10);
    env.write_job("chain", CHAIN);
    let out =
        common::run(
            env.sluice()
                .args(["trigger", "chain", "--date", "2026-11-24", "--local"]),
        );
    assert!(out.status.success());
    let store = env.store().await;
    let run_id = store.recent_runs("chain", 1).await.unwrap()[0]
        .run_id
        .clone();
    let daemon = env.serve(1);
    wait_for("events to be running", Duration::from_secs(30), || async {
        ti(&store, "chain", &run_id, "events")
            .await
            .filter(|t| t.state.as_str() == "running")
    })
    .await;
    (store, run_id, daemon)
}

async fn kill_and_restart(backend: Backend) {
    let env = Env::new(backend, "");
    let rows = 400_000;
    let (store, run_id, mut daemon) = chain_with_events_running(&env, rows).await;
    stop(&mut daemon, "-KILL");
    let small_before = ti(&store, "chain", &run_id, "small_out").await.unwrap();
    assert_eq!(
        small_before.state.as_str(),
        "success",
        "small_out finished before the kill"
    );
    let interrupted = ti(&store, "chain", &run_id, "events").await.unwrap();
    assert_eq!(
        interrupted.state.as_str(),
        "running",
        "the kill left events running"
    );

    let mut daemon = env.serve(2);
    let run = run_finished(&store, "chain", &run_id).await;
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(2));
    assert_eq!(run.state.as_str(), "success", "{}", env.log(2));
    for t in store.task_instances("chain", &run_id).await.unwrap() {
        assert_eq!(t.state.as_str(), "success", "{t:?}");
    }
    // small_out ran once: the restart did not run it again.
    let small = ti(&store, "chain", &run_id, "small_out").await.unwrap();
    assert_eq!(small.try_number, 1);
    assert_eq!(small.ended_at, small_before.ended_at);
    assert!(
        !env.log(2).contains("\"task\":\"small_out\""),
        "small_out ran again"
    );
    // The interrupted one ran again, and its attempt before the kill does
    // not count as a failure.
    let events = ti(&store, "chain", &run_id, "events").await.unwrap();
    assert_eq!((events.try_number, events.failures), (2, 0));
    // Outputs hold each row once.
    let count = |dir: &str| {
        common::python_script(
            "import sys, pyarrow.dataset as ds; print(ds.dataset(sys.argv[1], format='parquet').count_rows())",
            &[&env.path().join("out").join(dir).display().to_string()],
        )
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    assert_eq!(count("events"), rows);
    assert_eq!(count("per_user"), 97);
    assert_eq!(count("small"), 10);
    // The run's staging is gone after success: no file (hidden ones and
    // the publish manifests included), no folder.
    let left: Vec<_> = walkdir(&env.path().join("staging"));
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

/// Every entry under `dir`, folders and hidden files included.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            out.extend(walkdir(&e.path()));
        }
    }
    out
}

// ---------------------------------------------------------------------
// SIGTERM: running tasks get the grace period, the rest go back.

async fn sigterm_requeues_what_does_not_finish(backend: Backend) {
    let env = Env::new(backend, "shutdown_grace = \"1ms\"\n");
    let (store, run_id, mut daemon) = chain_with_events_running(&env, 400_000).await;
    let t0 = Instant::now();
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(1));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let events = ti(&store, "chain", &run_id, "events").await.unwrap();
    assert_eq!(
        events.state.as_str(),
        "scheduled",
        "put back for the next process: {events:?}"
    );
    assert!(env.log(1).contains("it will run again"), "{}", env.log(1));
}

// ---------------------------------------------------------------------
// 6. An invalid edit keeps the last valid version running.

async fn invalid_edit_keeps_last_valid_version(backend: Backend) {
    let env = Env::new(backend, "");
    write_jsonl(&env.path().join("data/events.jsonl"), 5);
    let start = (Utc::now() - chrono::Duration::seconds(4)).format("%Y-%m-%dT%H:%M:%S");
    let good = EVERY_2S
        .replace("$START", &start.to_string())
        .replace("catchup = true", "catchup = false");
    env.write_job("every2s", &good);
    let mut daemon = env.serve(1);
    let store = env.store().await;
    wait_for("a run", Duration::from_secs(30), || async {
        let runs = store.recent_runs("every2s", 100).await.unwrap();
        runs.iter()
            .any(|r| r.state.as_str() == "success")
            .then_some(())
    })
    .await;
    // A typo in a key: the file no longer loads.
    env.write_job(
        "every2s",
        &good.replace("format = \"jsonl\"", "fromat = \"jsonl\""),
    );
    let error = wait_for(
        "the error to be recorded",
        Duration::from_secs(20),
        || async { store.job_error("every2s").await.unwrap() },
    )
    .await;
    assert!(error.contains("tasks.events.fromat"), "{error}");
    assert!(error.contains("every2s.toml"), "{error}");
    let before = store.recent_runs("every2s", 1000).await.unwrap().len();
    // The last valid version keeps running on schedule.
    wait_for(
        "more runs after the bad edit",
        Duration::from_secs(20),
        || async {
            let runs = store.recent_runs("every2s", 1000).await.unwrap();
            (runs
                .iter()
                .filter(|r| r.state.as_str() == "success")
                .count()
                > before + 1)
                .then_some(())
        },
    )
    .await;
    let log = env.log(1);
    assert!(log.contains("job file not loaded"), "{log}");
    assert!(log.contains("fromat"), "{log}");
    // Durations too long for any date: an error naming the key, and the
    // daemon goes on (they once panicked it, or made an SLA miss at once).
    env.write_job(
        "every2s",
        &good.replace(
            "max_active_runs = 2",
            "max_active_runs = 2\nsla = \"9999999999d\"\ntimeout = \"99999999999999999999s\"",
        ),
    );
    let error = wait_for("the duration error", Duration::from_secs(20), || async {
        store
            .job_error("every2s")
            .await
            .unwrap()
            .filter(|e| e.contains("sla"))
    })
    .await;
    assert!(error.contains("timeout"), "{error}");
    let before = store.recent_runs("every2s", 1000).await.unwrap().len();
    wait_for(
        "runs after the huge durations",
        Duration::from_secs(20),
        || async {
            let runs = store.recent_runs("every2s", 1000).await.unwrap();
            (runs
                .iter()
                .filter(|r| r.state.as_str() == "success")
                .count()
                > before + 1)
                .then_some(())
        },
    )
    .await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon must keep serving"
    );
    // Fixing the file clears the error.
    env.write_job(
        "every2s",
        &good.replace("max_active_runs = 2", "max_active_runs = 3"),
    );
    wait_for("the error to clear", Duration::from_secs(20), || async {
        store
            .job_error("every2s")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0));
}

// ---------------------------------------------------------------------
// Sensors poke on their interval without holding a worker slot.

const WAITS: &str = r#"
[tasks.ready]
sensor = "object_exists"
url = "file://$DIR/flags/{{ ds }}/_SUCCESS"
poke_interval = "200ms"
timeout = "1m"
[tasks.after]
check = "SELECT true"
depends_on = ["ready"]
"#;

const GIVES_UP: &str = r#"
[tasks.never]
sensor = "object_exists"
url = "file://$DIR/flags/never"
poke_interval = "100ms"
timeout = "1s"
"#;

async fn sensors_wait_without_a_worker(backend: Backend) {
    // One worker: if a waiting sensor held it, nothing else could run.
    let env = Env::new(backend, "").with_workers(1);
    write_jsonl(&env.path().join("data/small.jsonl"), 10);
    env.write_job("waits", WAITS);
    env.write_job("gives_up", GIVES_UP);
    env.write_job("chain", CHAIN.replace("big.jsonl", "small.jsonl").as_str());
    let mut daemon = env.serve(1);
    for job in ["waits", "gives_up", "chain"] {
        assert!(
            common::run(
                env.sluice()
                    .args(["trigger", job, "--date", "2026-11-24", "--local"])
            )
            .status
            .success()
        );
    }
    let store = env.store().await;
    let done = |dag: &'static str| finished_run(store.clone(), dag);
    // The other job finishes while the sensor still waits.
    let chain = wait_for("chain to finish", Duration::from_secs(30), || done("chain")).await;
    assert_eq!(chain.state.as_str(), "success");
    let waits = store.recent_runs("waits", 1).await.unwrap().pop().unwrap();
    assert_eq!(waits.state.as_str(), "running");
    let sensor = ti(&store, "waits", &waits.run_id, "ready").await.unwrap();
    assert!(
        sensor.state.as_str() == "up_for_reschedule" || sensor.state.as_str() == "running",
        "{sensor:?}"
    );
    // The sensor that never sees its object fails at its timeout, once.
    let gave_up = wait_for("gives_up to fail", Duration::from_secs(30), || {
        done("gives_up")
    })
    .await;
    assert_eq!(gave_up.state.as_str(), "failed");
    let t = ti(&store, "gives_up", &gave_up.run_id, "never")
        .await
        .unwrap();
    assert!(
        t.error
            .as_deref()
            .unwrap_or("")
            .contains("sensor timed out after 1s"),
        "{t:?}"
    );
    assert_eq!(t.try_number, 1, "pokes are one attempt");
    // The flag appears: the sensor succeeds and its downstream runs.
    std::fs::create_dir_all(env.path().join("flags/2026-11-24")).unwrap();
    std::fs::write(env.path().join("flags/2026-11-24/_SUCCESS"), "").unwrap();
    let waits = wait_for("waits to finish", Duration::from_secs(30), || done("waits")).await;
    assert_eq!(waits.state.as_str(), "success");
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0));
}

// ---------------------------------------------------------------------
// `sluice backfill` runs every interval between two dates; `runs` lists them.

const DAILY: &str = r#"
schedule = "0 3 * * *"
timezone = "Asia/Seoul"
[tasks.events]
extract = "logs"
path = "$DIR/data/events.jsonl"
format = "jsonl"
[tasks.out]
load = "parquet"
input = "events"
url = "file://$DIR/out/daily/{{ ds }}/"
"#;

async fn backfill_runs_each_interval(backend: Backend) {
    let env = Env::new(backend, "");
    write_jsonl(&env.path().join("data/events.jsonl"), 7);
    env.write_job("daily", DAILY);
    let out = common::run(env.sluice().args([
        "backfill",
        "daily",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-22",
    ]));
    assert!(out.status.success());
    let table = common::stdout(&out);
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        assert!(
            table.contains(&format!("backfill__{day}T03:00:00+09:00  success")),
            "{table}"
        );
        let files = files_under(&env.path().join("out/daily").join(day));
        assert_eq!(files.len(), 1, "{day}: {files:?}");
    }
    let store = env.store().await;
    let runs = store.recent_runs("daily", 10).await.unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    // A second backfill of the same dates makes no new runs.
    let again = common::run(env.sluice().args([
        "backfill",
        "daily",
        "--from",
        "2026-11-21",
        "--to",
        "2026-11-21",
    ]));
    assert!(again.status.success());
    assert_eq!(store.recent_runs("daily", 10).await.unwrap().len(), 3);
    let listed = common::run(env.sluice().args(["runs", "daily"]));
    assert_eq!(
        common::stdout(&listed).lines().count(),
        4,
        "header and three runs"
    );
}

// ---------------------------------------------------------------------
// 8. An error another attempt would meet again fails at once, whatever
// `retries` says; what can change (a server not answering) is retried.

const BAD_SQL: &str = r#"
retries = 3
retry_delay = "100ms"
[tasks.bad]
extract = "sql"
connection = "postgres://postgres@127.0.0.1:5432/test"
query = "SELEC 1"
[tasks.bad_out]
load = "parquet"
input = "bad"
url = "file://$DIR/out/bad_sql/"
"#;

const REFUSED: &str = r#"
retries = 3
retry_delay = "100ms"
[tasks.src]
extract = "sql"
connection = "postgres://postgres@127.0.0.1:1/test"
query = "SELECT 1 AS x"
[tasks.src_out]
load = "parquet"
input = "src"
url = "file://$DIR/out/refused/"
"#;

async fn user_errors_fail_at_once(backend: Backend) {
    let env = Env::new(backend, "");
    env.write_job("bad_sql", BAD_SQL);
    env.write_job("refused", REFUSED);
    for job in ["bad_sql", "refused"] {
        let out = common::run(env.sluice().args([
            "backfill",
            job,
            "--from",
            "2026-11-24",
            "--to",
            "2026-11-24",
        ]));
        assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    }
    let store = env.store().await;
    let run = store
        .recent_runs("bad_sql", 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(run.state.as_str(), "failed");
    let t = ti(&store, "bad_sql", &run.run_id, "bad_out").await.unwrap();
    assert_eq!(
        (t.state.as_str(), t.try_number, t.failures),
        ("failed", 1, 1),
        "a syntax error is not retried: {t:?}"
    );
    assert!(
        t.error.as_deref().unwrap_or("").contains("syntax error"),
        "{t:?}"
    );
    let lines = store
        .logs("bad_sql", &run.run_id, "bad_out", 1)
        .await
        .unwrap();
    assert!(
        lines.iter().any(|(_, _, m)| m.contains("not retried")),
        "the log says why: {lines:?}"
    );

    let run = store
        .recent_runs("refused", 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(run.state.as_str(), "failed");
    let t = ti(&store, "refused", &run.run_id, "src_out").await.unwrap();
    assert_eq!(
        (t.state.as_str(), t.try_number, t.failures),
        ("failed", 4, 4),
        "a refused connection is retried 3 times: {t:?}"
    );
    assert!(
        t.error.as_deref().unwrap_or("").contains("connecting"),
        "{t:?}"
    );
    assert!(files_under(&env.path().join("out")).is_empty());
}

// ---------------------------------------------------------------------
// `sluice run` runs on the daemon's executor: the same jobs end each task
// in the same state after the same number of attempts as under `serve`
// (retries, a timeout, a sensor that waits and one that gives up).

async fn run_and_serve_agree(backend: Backend) {
    let env = Env::new(backend, "");
    write_jsonl(&env.path().join("data/big.jsonl"), 300_000);
    write_jsonl(&env.path().join("data/small.jsonl"), 10);
    let jobs = ["broken", "slow", "waits", "gives_up", "chain"];
    env.write_job("broken", BROKEN);
    env.write_job("slow", SLOW);
    env.write_job("waits", WAITS);
    env.write_job("gives_up", GIVES_UP);
    env.write_job("chain", CHAIN.replace("big.jsonl", "small.jsonl").as_str());
    // The flag the waiting sensor looks for appears while it waits.
    let flag = env.path().join("flags/2026-11-24/_SUCCESS");
    let raise_flag = || {
        std::thread::sleep(Duration::from_millis(700));
        std::fs::create_dir_all(flag.parent().unwrap()).unwrap();
        std::fs::write(&flag, "").unwrap();
    };
    type States = std::collections::BTreeMap<(String, String), (String, i64)>;
    let mut by_run = States::new();
    for job in jobs {
        let _ = std::fs::remove_file(&flag);
        let child = env
            .sluice()
            .args(["run", job, "--date", "2026-11-24"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if job == "waits" {
            raise_flag();
        }
        let out = child.wait_with_output().unwrap();
        let text = common::stdout(&out);
        // task kind state rows-in rows-out bad duration tries
        for line in text.lines().skip(1).take_while(|l| !l.is_empty()) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 8, "{text}");
            by_run.insert(
                (job.to_string(), cols[0].to_string()),
                (cols[2].to_string(), cols[7].parse().unwrap()),
            );
        }
    }
    let _ = std::fs::remove_file(&flag);
    let mut daemon = env.serve(1);
    let store = env.store().await;
    let mut by_serve = States::new();
    for job in jobs {
        let out =
            common::run(
                env.sluice()
                    .args(["trigger", job, "--date", "2026-11-24", "--local"]),
            );
        assert!(out.status.success(), "{}", common::stderr(&out));
        if job == "waits" {
            raise_flag();
        }
        let dag: &'static str = job;
        let run = wait_for("the run to finish", Duration::from_secs(60), || {
            finished_run(store.clone(), dag)
        })
        .await;
        for t in store.task_instances(job, &run.run_id).await.unwrap() {
            by_serve.insert(
                (job.to_string(), t.task),
                (t.state.to_string(), t.try_number),
            );
        }
    }
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(1));
    assert_eq!(by_run, by_serve);
    // And they are what each scenario should give.
    let get = |job: &str, task: &str| by_run[&(job.to_string(), task.to_string())].clone();
    assert_eq!(
        get("broken", "missing_out"),
        ("failed".into(), 2),
        "retries = 1"
    );
    assert_eq!(get("slow", "big_out"), ("failed".into(), 1));
    assert_eq!(
        get("waits", "ready"),
        ("success".into(), 1),
        "pokes are one attempt"
    );
    assert_eq!(get("waits", "after"), ("success".into(), 1));
    assert_eq!(get("gives_up", "never"), ("failed".into(), 1));
    assert_eq!(get("chain", "per_user_out"), ("success".into(), 1));
}

// ---------------------------------------------------------------------
// 10. SIGKILL after a SQL load committed but before the state store
// heard of it: the restarted daemon finds the load's marker in the
// target and does not append the rows again.

#[derive(Clone, Copy, Debug)]
enum Target {
    Postgres,
    Maria,
    Sqlite,
}

/// Runs SQL on the load target; returns its output trimmed.
fn target_sql(target: Target, url: &str, sql: &str) -> String {
    match target {
        Target::Postgres => common::psql(common::database_of(url), sql),
        Target::Maria => common::mariadb(common::database_of(url), sql),
        Target::Sqlite => common::python_script(
            "import sqlite3, sys\nfor r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print(*r)",
            &[url.trim_start_matches("sqlite://"), sql],
        ),
    }
    .trim()
    .to_string()
}

async fn killed_after_load_commit(target: Target) {
    let env = Env::new(Backend::Sqlite, "");
    let url = match target {
        Target::Postgres => common::fresh_postgres_database(),
        Target::Maria => common::fresh_mariadb_database(),
        Target::Sqlite => {
            let file = env.path().join("data/target.db");
            std::fs::File::create(&file).unwrap();
            format!("sqlite://{}", file.display())
        }
    };
    let rows = 5000;
    write_jsonl(&env.path().join("data/events.jsonl"), rows);
    env.write_job(
        "crash",
        &format!(
            "[tasks.events]\nextract = \"logs\"\npath = \"$DIR/data/events.jsonl\"\nformat = \"jsonl\"\n\
             [tasks.load]\nload = \"sql\"\ninput = \"events\"\nconnection = \"{url}\"\ntable = \"events\"\n\
             mode = \"append\"\ncreate = true\nbatch_size = 700\n"
        ),
    );
    let out =
        common::run(
            env.sluice()
                .args(["trigger", "crash", "--date", "2026-11-24", "--local"]),
        );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let store = env.store().await;
    let run_id = store.recent_runs("crash", 1).await.unwrap()[0]
        .run_id
        .clone();
    let mut daemon = env.serve_with(1, &[("SLUICE_FAULT_PAUSE", "after_load_commit:load")]);
    // The marker commits with the rows; the test build then holds the
    // task before it can report.
    let markers = "SELECT count(*) FROM sluice_loads WHERE job = 'crash'";
    wait_for("the load to commit", Duration::from_secs(60), || async {
        (env.log(1).contains("fault injection") && target_sql(target, &url, markers) == "1")
            .then_some(())
    })
    .await;
    stop(&mut daemon, "-KILL");
    let before = ti(&store, "crash", &run_id, "load").await.unwrap();
    assert_eq!(
        before.state.as_str(),
        "running",
        "the kill came before success was recorded"
    );
    assert_eq!(
        target_sql(target, &url, "SELECT count(*) FROM events"),
        rows.to_string()
    );

    let mut daemon = env.serve(2);
    let run = run_finished(&store, "crash", &run_id).await;
    assert_eq!(stop(&mut daemon, "-TERM").code(), Some(0), "{}", env.log(2));
    assert_eq!(run.state.as_str(), "success", "{}", env.log(2));
    let load = ti(&store, "crash", &run_id, "load").await.unwrap();
    assert_eq!(
        (load.try_number, load.rows_out),
        (2, Some(rows as i64)),
        "{load:?}"
    );
    assert!(
        env.log(2).contains("not loading again"),
        "the retry says why it loaded nothing: {}",
        env.log(2)
    );
    // Each source row once, and one marker.
    assert_eq!(
        target_sql(target, &url, "SELECT count(*) FROM events"),
        rows.to_string()
    );
    assert_eq!(target_sql(target, &url, markers), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_load_commit_on_postgres() {
    killed_after_load_commit(Target::Postgres).await
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_load_commit_on_mariadb() {
    killed_after_load_commit(Target::Maria).await
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_load_commit_on_sqlite() {
    killed_after_load_commit(Target::Sqlite).await
}

// ---------------------------------------------------------------------
// 9. The state store's connections are cut again and again mid-run: the
// daemon waits the outage out, every run finishes, each task once.

fn cut_job() -> String {
    let mut job = String::from("retries = 0\n");
    for i in 0..4 {
        job.push_str(&format!(
            "[tasks.e{i}]\nextract = \"logs\"\npath = \"$DIR/data/events.jsonl\"\nformat = \"jsonl\"\n\
             [tasks.c{i}]\ncheck = \"SELECT count(*) > 0 FROM e{i}\"\n\
             [tasks.o{i}]\nload = \"parquet\"\ninput = \"e{i}\"\nurl = \"file://$DIR/out/{i}/{{{{ ds }}}}/\"\n"
        ));
    }
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connections_cut_mid_run() {
    let env = Env::new(Backend::Postgres, "");
    write_jsonl(&env.path().join("data/events.jsonl"), 200_000);
    env.write_job("cut", &cut_job());
    let db = env.state.rsplit('/').next().unwrap().to_string();
    let log = std::fs::File::create(env.log_path(1)).unwrap();
    let mut backfill = env
        .sluice()
        .args([
            "backfill",
            "cut",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-08",
        ])
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sluice backfill");
    let store = env.store().await;
    // Once the runs exist, cut every connection to the state store every
    // few milliseconds until the backfill ends: idle ones the pool
    // replaces unseen, so statements in flight must be hit too.
    wait_for("the runs", Duration::from_secs(30), || async {
        (store.recent_runs("cut", 100).await.ok()?.len() == 8).then_some(())
    })
    .await;
    let kill = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let t0 = Instant::now();
    let mut cut = 0;
    // Until the command has ended, its report after the runs included.
    let status = loop {
        if let Some(status) = backfill.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the backfill hangs: {}",
            env.log(1)
        );
        cut += common::psql("test", &kill)
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let log = env.log(1);
    assert!(status.success(), "{log}");
    assert!(cut >= 3, "only {cut} connections were cut: {log}");
    assert!(
        log.contains("state store failed"),
        "no outage was met: {log}"
    );
    let store = env.store().await;
    let runs = store.recent_runs("cut", 100).await.unwrap();
    assert_eq!(runs.len(), 8);
    for r in &runs {
        assert_eq!(r.state.as_str(), "success", "{r:?}");
        for t in store.task_instances("cut", &r.run_id).await.unwrap() {
            assert_eq!((t.state.as_str(), t.failures), ("success", 0), "{t:?}");
        }
    }
    // Each load published once per date.
    for i in 0..4 {
        for day in 1..=8 {
            let dir = env.path().join(format!("out/{i}/2026-11-{day:02}"));
            assert_eq!(files_under(&dir).len(), 1, "{}", dir.display());
        }
    }
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    schedules_with_catchup,
    retries_and_timeouts,
    kill_and_restart,
    sigterm_requeues_what_does_not_finish,
    invalid_edit_keeps_last_valid_version,
    sensors_wait_without_a_worker,
    backfill_runs_each_interval,
    user_errors_fail_at_once,
    run_and_serve_agree
);

/// The run once it has finished, success or failed (a minute at most).
async fn run_finished(store: &StateStore, dag: &str, run_id: &str) -> RunRow {
    wait_for("the run to finish", Duration::from_secs(60), || async {
        store
            .run(dag, run_id)
            .await
            .unwrap()
            .filter(|r| r.state.as_str() == "success" || r.state.as_str() == "failed")
    })
    .await
}

// ---------------------------------------------------------------------
// 12. A task claimed by a replica that cannot see its upstream's staged
// output (a file:// staging folder on another machine) says which task
// and which replica wrote it.

#[tokio::test(flavor = "multi_thread")]
async fn missing_staged_input_names_its_task_and_replica() {
    let env = Env::new(Backend::Sqlite, "");
    write_jsonl(&env.path().join("data/events.jsonl"), 100);
    env.write_job(
        "split",
        "retries = 0\n[tasks.events]\nextract = \"logs\"\npath = \"$DIR/data/events.jsonl\"\nformat = \"jsonl\"\n\
         [tasks.busy]\ntransform = \"SELECT user, count(*) AS n FROM events GROUP BY user\"\n\
         [tasks.out]\nload = \"parquet\"\ninput = \"busy\"\nurl = \"file://$DIR/out/\"\n",
    );
    let out =
        common::run(
            env.sluice()
                .args(["trigger", "split", "--date", "2026-11-24", "--local"]),
        );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let store = env.store().await;
    let run_id = store.recent_runs("split", 1).await.unwrap()[0]
        .run_id
        .clone();
    // Replica "machine-a" runs the extract, then is stopped for good as
    // the transform starts.
    let mut a = env.serve_with(
        1,
        &[
            // The load runs fused with the transform it reads: one unit,
            // named for the load.
            ("SLUICE_FAULT_PAUSE", "before_inputs:out"),
            ("HOSTNAME", "machine-a"),
        ],
    );
    wait_for(
        "the transform to start",
        Duration::from_secs(60),
        || async { env.log(1).contains("fault injection").then_some(()) },
    )
    .await;
    stop(&mut a, "-KILL");
    // Replica "machine-b" has its own local staging folder.
    let other = format!("file://{}/staging-b", env.path().display());
    let mut b = env.serve_with(2, &[("SLUICE_STAGING", &other), ("HOSTNAME", "machine-b")]);
    let run = run_finished(&store, "split", &run_id).await;
    assert_eq!(stop(&mut b, "-TERM").code(), Some(0), "{}", env.log(2));
    assert_eq!(run.state.as_str(), "failed", "{}", env.log(2));
    let busy = ti(&store, "split", &run_id, "busy").await.unwrap();
    let error = busy.error.unwrap_or_default();
    for part in [
        "the output of task \"events\" is not in the staging store",
        "staging-b",
        "written by replica machine-a-",
        "this attempt ran on machine-b-",
        "every replica must reach the staging store",
    ] {
        assert!(error.contains(part), "{part:?} not in {error:?}");
    }
}
