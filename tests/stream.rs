//! A stream job under fire: a writer appends 1,000,000 numbered lines
//! across a rotation by rename and one by copytruncate while `sluice
//! serve` follows them; the daemon is killed with SIGKILL at three random
//! moments and started again. Every line must be in the Parquet output
//! exactly once, as an independent reader (pyarrow) counts them.

#[path = "../crates/sluice/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LINES: u64 = 1_000_000;
/// Lines per write; the writer sleeps a little between writes, so that
/// the run spans the kills.
const BATCH: u64 = 5_000;

fn job(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
mode = "stream"
[tasks.lines]
extract = "logs"
path = "{d}/logs/app.log*"
format = "jsonl"
schema = {{ n = "int64", ts = "timestamp", msg = "string" }}
on_error = "fail"
[tasks.lake]
load = "parquet"
input = "lines"
url = "file://{d}/out/"
partition_by = ["dt", "hour"]
target_file_size = "2MiB"
max_file_age = "1s"
"#
    )
}

/// `sluice serve` on the stream job, its log going to `log`.
fn serve(dir: &Path, log: &Path) -> Child {
    serve_as(dir, log, "replica")
}

/// `sluice serve` with `host` for its replica id (which adds its pid).
fn serve_as(dir: &Path, log: &Path, host: &str) -> Child {
    common::sluice(dir)
        .arg("--config")
        .arg(dir.join("sluice.toml"))
        .arg("serve")
        .env("HOSTNAME", host)
        .env("SLUICE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start sluice serve")
}

fn append(path: &Path, from: u64, to: u64) {
    let mut text = String::with_capacity(((to - from) * 80) as usize);
    for n in from..to {
        // A second a line from 2026-12-03T00:00Z: the hours roll by.
        let secs = 1_796_256_000 + n as i64;
        let ts = chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .to_rfc3339();
        text.push_str(&format!(r#"{{"n":{n},"ts":"{ts}","msg":"line {n}"}}"#));
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Rows in the published Parquet files, and how many distinct numbers,
/// by pyarrow.
fn published(out: &Path) -> (u64, u64, i64, i64) {
    let script = r#"
import sys, pathlib
import pyarrow.parquet as pq
import pyarrow.compute as pc
import pyarrow as pa
files = sorted(p for p in pathlib.Path(sys.argv[1]).rglob("*.parquet"))
if not files:
    print(0, 0, -1, -1); sys.exit(0)
cols = [pq.read_table(f, columns=["n"]).column("n") for f in files]
n = pa.chunked_array([c for col in cols for c in col.chunks], type=pa.int64())
print(len(n), len(pc.unique(n)), pc.min(n).as_py(), pc.max(n).as_py())
"#;
    let text = common::python_script(script, &[&out.display().to_string()]);
    let v: Vec<i64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0] as u64, v[1] as u64, v[2], v[3])
}

fn hidden_files(out: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".sluice-stream-"))
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(out, &mut found);
    found
}

#[test]
fn every_line_once_across_rotations_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("jobs")).unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(d.join("jobs/tail.toml"), job(d)).unwrap();
    std::fs::write(
        d.join("sluice.toml"),
        format!(
            "jobs = \"{0}/jobs\"\nstate = \"sqlite://{0}/state.db\"\nstaging = \"file://{0}/staging\"\n\
             dead_letter = \"file://{0}/dead\"\nlisten = \"127.0.0.1:0\"\n",
            d.display()
        ),
    )
    .unwrap();
    let log = d.join("logs/app.log");
    let written = Arc::new(AtomicU64::new(0));
    let (mut daemon, kills) = std::thread::scope(|scope| {
        let writer = scope.spawn({
            let (log, written, d) = (log.clone(), written.clone(), d.to_path_buf());
            move || {
                let mut n = 0;
                let (mut renamed, mut copied) = (false, false);
                while n < LINES {
                    if n >= LINES / 3 && !renamed {
                        renamed = true;
                        // logrotate's default: rename, and the writer opens a
                        // new file at the old path.
                        std::fs::rename(&log, d.join("logs/app.log.1")).unwrap();
                    }
                    if n >= 2 * LINES / 3 && !copied {
                        copied = true;
                        // copytruncate: the writer pauses while the copy is
                        // taken (lines written between the copy and the
                        // truncation are lost by copytruncate itself).
                        std::fs::copy(&log, d.join("logs/app.log.2")).unwrap();
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&log)
                            .unwrap()
                            .set_len(0)
                            .unwrap();
                    }
                    append(&log, n, n + BATCH);
                    n += BATCH;
                    written.store(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        });

        // Three kills at random moments while the writer writes.
        let mut daemon = serve(d, &d.join("serve-0.log"));
        let mut kills = Vec::new();
        for k in 1..=3u64 {
            let at = (k * LINES / 4) + fastrand::u64(0..LINES / 8);
            while written.load(Ordering::SeqCst) < at {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..400)));
            daemon.kill().unwrap(); // SIGKILL
            daemon.wait().unwrap();
            kills.push(written.load(Ordering::SeqCst));
            daemon = serve(d, &d.join(format!("serve-{k}.log")));
        }
        writer.join().unwrap();
        (daemon, kills)
    });

    // Everything is published within a while of the last line.
    let out = d.join("out");
    let t0 = Instant::now();
    let counts = loop {
        let c = published(&out);
        if c.0 >= LINES || t0.elapsed() > Duration::from_secs(120) {
            break c;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The API shows the stream, its owner and its three files.
    let log3 = std::fs::read_to_string(d.join("serve-3.log")).unwrap();
    let addr = common::listen_address(&log3).expect("start line");
    let (status, body) = common::http_get(&addr, "/api/v1/streams");
    assert_eq!(status, 200, "{body}");
    let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(streams[0]["dag"], "tail", "{body}");
    assert!(
        streams[0]["owner"]
            .as_str()
            .is_some_and(|o| o.starts_with("replica-")),
        "{body}"
    );
    assert_eq!(
        streams[0]["files"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
    // So does the UI's job list: the job marked as a stream (no trigger
    // button), and a row per file with its offset and lag.
    let (status, page) = common::http_get(&addr, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"<span class="badge">stream</span>"#),
        "{page}"
    );
    assert!(!page.contains("/ui/dags/tail/trigger"), "{page}");
    assert_eq!(
        page.matches(r#"<tr data-stream="tail">"#).count(),
        3,
        "{page}"
    );
    assert!(page.contains("app.log.2</code>"), "{page}");
    // The stream's metrics, in a scrape promtool accepts.
    // (The daemon exports them at each scan, a second apart: the last
    // restart may be younger than that.)
    let series = [
        "sluice_stream_lines_total{dag=\"tail\"}",
        "sluice_stream_read_bytes_total{dag=\"tail\"}",
        "sluice_stream_files_rolled_total{dag=\"tail\"}",
        "sluice_stream_checkpoint_age_seconds{dag=\"tail\"}",
        "sluice_stream_latency_seconds_count{dag=\"tail\"}",
        "sluice_stream_lag_bytes{dag=\"tail\",file=",
    ];
    let t0 = Instant::now();
    let scrape = loop {
        let (status, scrape) = common::http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<&str> = series
            .iter()
            .copied()
            .filter(|s| !scrape.contains(s))
            .collect();
        if missing.is_empty() {
            break scrape;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{missing:?} missing from:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    common::assert_promtool_accepts(&scrape, &d.join("scrape.txt"));
    // A clean stop (SIGTERM) commits what is left and leaves no hidden file.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap();
    let logs: String = (0..=3)
        .map(|k| std::fs::read_to_string(d.join(format!("serve-{k}.log"))).unwrap_or_default())
        .collect();
    assert!(status.success(), "sluice serve failed: {logs}");
    assert_eq!(
        counts,
        (LINES, LINES, 0, LINES as i64 - 1),
        "rows, distinct numbers, min, max (kills after {kills:?} lines written); logs:\n{}",
        logs.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(published(&out), counts, "the stop published nothing more");
    assert_eq!(hidden_files(&out), Vec::<PathBuf>::new());
    assert!(
        !logs.contains("\"ERROR\""),
        "errors in the daemon's logs:\n{}",
        logs.lines()
            .filter(|l| l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // `sluice validate` checks the stream job; a stream has no runs to
    // run, backfill or trigger.
    let cli = |args: &[&str]| {
        common::run(
            common::sluice(d)
                .arg("--config")
                .arg(d.join("sluice.toml"))
                .args(args),
        )
    };
    let valid = cli(&["validate", &d.join("jobs/tail.toml").display().to_string()]);
    assert!(valid.status.success(), "{}", common::stderr(&valid));
    for args in [
        &["run", "tail"][..],
        &[
            "backfill",
            "tail",
            "--from",
            "2026-12-01",
            "--to",
            "2026-12-02",
        ],
        &["trigger", "tail", "--local"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            common::stderr(&out).contains("tail is a stream job"),
            "{args:?}: {}",
            common::stderr(&out)
        );
    }

    // `sluice streams` shows the three files and where each stands.
    let listing = common::run(
        common::sluice(d)
            .arg("--config")
            .arg(d.join("sluice.toml"))
            .arg("streams"),
    );
    let text = common::stdout(&listing);
    assert!(listing.status.success());
    for file in ["app.log ", "app.log.1 ", "app.log.2 "] {
        assert!(text.contains(file), "{file} missing from:\n{text}");
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// The replica that holds the stream's lease, by the state store.
fn owner(db: &str) -> String {
    // Until the first replica has made its schema (committed, not just
    // begun), the query fails: nobody owns the stream yet.
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atq", "-c"])
        .arg("SELECT coalesce(owner, '') FROM streams WHERE job = 'tail'")
        .output()
        .expect("psql");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("does not exist"), "{err}");
        return String::new();
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `pred` holds of the stream's owner; how long it took.
fn wait_owner(db: &str, pred: impl Fn(&str) -> bool, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let o = owner(db);
        if pred(&o) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "owner is still {o:?} after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two replicas on PostgreSQL: the stream runs on one. Frozen (SIGSTOP)
/// past its lease, it loses the stream to the other, which goes on from
/// the last checkpoint; resumed, it commits nothing. Then the new owner is
/// killed, and the first takes the stream back. Every line once.
#[test]
fn a_stream_moves_to_another_replica_when_its_owner_freezes_or_dies() {
    const TOTAL: u64 = 300_000;
    /// Five heartbeats of the default 2 s.
    const LEASE: Duration = Duration::from_secs(10);
    let state = common::fresh_postgres_database();
    let db = common::database_of(&state).to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("jobs")).unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::write(d.join("jobs/tail.toml"), job(d)).unwrap();
    std::fs::write(
        d.join("sluice.toml"),
        format!(
            "jobs = \"{0}/jobs\"\nstate = \"{state}\"\nstaging = \"file://{0}/staging\"\n\
             dead_letter = \"file://{0}/dead\"\nlisten = \"127.0.0.1:0\"\n",
            d.display()
        ),
    )
    .unwrap();
    let log = d.join("logs/app.log");
    let written = Arc::new(AtomicU64::new(0));
    let mut a = serve_as(d, &d.join("a.log"), "replica-a");
    wait_owner(
        &db,
        |o| o.starts_with("replica-a-"),
        Duration::from_secs(30),
    );
    let mut b = serve_as(d, &d.join("b.log"), "replica-b");
    let (frozen_for, takeback) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0;
            while n < TOTAL {
                append(&log, n, n + BATCH);
                n += BATCH;
                written.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        while written.load(Ordering::SeqCst) < TOTAL / 6 {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(&a, "STOP");
        let frozen_for = wait_owner(&db, |o| o.starts_with("replica-b-"), LEASE * 3);
        std::thread::sleep(Duration::from_secs(2));
        signal(&a, "CONT");
        while written.load(Ordering::SeqCst) < TOTAL * 2 / 3 {
            std::thread::sleep(Duration::from_millis(50));
        }
        b.kill().unwrap(); // SIGKILL
        b.wait().unwrap();
        let takeback = wait_owner(&db, |o| o.starts_with("replica-a-"), LEASE * 3);
        writer.join().unwrap();
        (frozen_for, takeback)
    });
    let out = d.join("out");
    let t0 = Instant::now();
    let counts = loop {
        let c = published(&out);
        if c.0 >= TOTAL || t0.elapsed() > Duration::from_secs(60) {
            break c;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    signal(&a, "TERM");
    let status = a.wait().unwrap();
    let logs = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    assert!(status.success(), "replica a failed: {}", logs("a.log"));
    assert_eq!(
        counts,
        (TOTAL, TOTAL, 0, TOTAL as i64 - 1),
        "rows, distinct, min, max; a:\n{}\nb:\n{}",
        logs("a.log"),
        logs("b.log")
    );
    assert_eq!(hidden_files(&out), Vec::<PathBuf>::new());
    // Each takeover within the lease and a few scans (a second each).
    for took in [frozen_for, takeback] {
        assert!(took <= LEASE + Duration::from_secs(4), "took {took:?}");
    }
    // The frozen replica woke up to a stream that was no longer its own.
    let a_log = logs("a.log");
    assert!(
        a_log.contains("stream lease lost to another replica")
            || a_log.contains("no longer holds its lease"),
        "{a_log}"
    );
}
