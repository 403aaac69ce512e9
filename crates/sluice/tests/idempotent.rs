//! A run's output is replaced, never duplicated, by a re-run; a load that
//! fails or is killed midway leaves nothing half-written visible.

mod common;
use common::*;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn job(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/events.toml"),
        format!(
            r#"
[tasks.events]
extract = "logs"
path = "in/events-{{{{ ds_nodash }}}}.jsonl"
format = "jsonl"
schema = {{ id = "int64", kind = "string", ts = "timestamp" }}

[tasks.publish]
load = "parquet"
input = "events"
url = "file://./lake/events/"
{extra}
"#
        ),
    )
    .unwrap();
}

/// Writes `n` event lines for 2026-11-24, and `tail` after them.
fn events(dir: &Path, n: usize, tail: &str) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.join("in/events-20261124.jsonl")).unwrap(),
    );
    for i in 0..n {
        writeln!(
            f,
            r#"{{"id":{i},"kind":"{}","ts":"2026-11-24T{:02}:{:02}:00Z","pad":"{}"}}"#,
            ["view", "click", "buy"][i % 3],
            i / 60 % 24,
            i % 60,
            "p".repeat(40)
        )
        .unwrap();
    }
    f.write_all(tail.as_bytes()).unwrap();
}

fn visible(dir: &Path) -> Vec<String> {
    files_under(&dir.join("lake/events"))
        .into_iter()
        .filter(|f| !f.rsplit('/').next().unwrap().starts_with('.'))
        .collect()
}

fn count_rows(dir: &Path) -> (u64, u64) {
    // Python's glob skips dot-files, as readers of a lake do.
    let script = r#"
import glob, sys, duckdb
files = glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True)
if not files:
    print(0, 0)
else:
    print(*duckdb.connect().execute(f"select count(*), count(distinct id) from read_parquet({files!r})").fetchone())
"#;
    let out = python_script(script, &[dir.join("lake/events").to_str().unwrap()]);
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn rerunning_a_date_replaces_its_output() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "partition_by = [\"kind\"]\nmax_file_size = \"16KiB\"\nrow_group_size = 500",
    );
    events(dir.path(), 30_000, "");
    let first = run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]));
    assert!(first.status.success());
    let files_first = visible(dir.path());
    assert!(
        files_first.len() > 3,
        "small files should roll: {files_first:?}"
    );
    assert_eq!(count_rows(dir.path()), (30_000, 30_000));

    let second = run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]));
    assert!(second.status.success());
    assert_eq!(
        count_rows(dir.path()),
        (30_000, 30_000),
        "a re-run must not duplicate rows"
    );

    // Fewer rows on the re-run: the extra files of the first run are gone too.
    events(dir.path(), 100, "");
    let third = run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]));
    assert!(third.status.success());
    assert_eq!(count_rows(dir.path()), (100, 100));
    assert_eq!(visible(dir.path()).len(), 3, "{:?}", visible(dir.path()));
}

#[test]
fn a_load_that_fails_midway_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "max_file_size = \"64KiB\"\nrow_group_size = 1000",
    );
    events(dir.path(), 1000, "");
    assert!(
        run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]))
            .status
            .success()
    );
    let before = visible(dir.path());

    // ~12 MB: several chunks are written (and files rolled) before the bad
    // last line fails the extract.
    events(dir.path(), 120_000, "{\"id\": 1, \"kind\": \"trunc\n");
    let out = run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(":120001: "), "{}", stdout(&out));
    assert_eq!(
        visible(dir.path()),
        before,
        "the earlier output stays, untouched"
    );
    assert_eq!(count_rows(dir.path()), (1000, 1000));
    let leftovers: Vec<String> = files_under(&dir.path().join("lake/events"))
        .into_iter()
        .filter(|f| f.contains(".sluice-tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files are cleaned up: {leftovers:?}"
    );
}

#[test]
fn a_killed_load_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "max_file_size = \"256KiB\"\nrow_group_size = 2000",
    );
    events(dir.path(), 600_000, "");
    let mut child = sluice(dir.path())
        .args(["run", "jobs/events.toml", "--date", "2026-11-24"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the load has written some (temporary) files, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tmp = files_under(&dir.path().join("lake/events"))
            .iter()
            .any(|f| f.contains(".sluice-tmp-"));
        if tmp {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed; make the input bigger"
        );
        assert!(Instant::now() < deadline, "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(visible(dir.path()).is_empty(), "{:?}", visible(dir.path()));
    assert_eq!(count_rows(dir.path()), (0, 0));

    // The next run cleans up and publishes everything once.
    assert!(
        run(sluice(dir.path()).args(["run", "jobs/events.toml", "--date", "2026-11-24"]))
            .status
            .success()
    );
    assert_eq!(count_rows(dir.path()), (600_000, 600_000));
    let leftovers: Vec<String> = files_under(&dir.path().join("lake/events"))
        .into_iter()
        .filter(|f| f.contains(".sluice-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
