//! The README's first command runs the example job on a fresh clone, and an
//! independent reader (pyarrow) finds the expected schema, rows and sums.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn readme_first_command_serves_the_example_job() {
    let command = readme_run_command();
    // `cargo run -- serve`: everything after `--` goes to sluice.
    let (cargo, args) = command
        .split_once(" -- ")
        .expect("README command runs sluice through cargo run");
    assert!(cargo.starts_with("cargo run"), "{command}");
    let args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args, ["serve"], "{command}");

    let dir = scratch_with_configs();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut daemon = sluice(dir.path())
        .args(&args)
        .env("SLUICE_LOG", "info")
        .stderr(log)
        .spawn()
        .expect("start sluice serve");
    let store = sluice_daemon::state::StateStore::connect(&format!(
        "sqlite://{}/sluice-state.db",
        dir.path().display()
    ))
    .await
    .expect("the default state store");
    let t0 = std::time::Instant::now();
    let run = loop {
        let runs = store.recent_runs("web_traffic_daily", 10).await.unwrap();
        if let Some(r) = runs
            .iter()
            .find(|r| r.state.as_str() == "success" || r.state.as_str() == "failed")
        {
            break r.clone();
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "no finished run: {runs:?}\n{}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let status = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(run.state.as_str(), "success", "{serve_log}");
    assert_eq!(run.run_id, "scheduled__2026-11-24T02:00:00+00:00");
    // The schedule's only complete interval with data: exactly one run.
    assert_eq!(
        store
            .recent_runs("web_traffic_daily", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let access = store
        .task_instances("web_traffic_daily", &run.run_id)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.task == "access")
        .unwrap();
    assert_eq!(
        (access.rows_in, access.rows_out, access.bad_records),
        (Some(602), Some(600), Some(2))
    );
    check_example_output(dir.path());
}

#[test]
fn run_command_runs_the_example_job_once() {
    let dir = scratch_with_configs();
    let out = run(sluice(dir.path()).args(["run", "web_traffic_daily", "--date", "2026-11-24"]));
    assert!(out.status.success(), "example job failed");
    let table = stdout(&out);
    assert!(
        table.contains("web_traffic_daily manual__2026-11-24T02:00:00+00:00 succeeded"),
        "{table}"
    );
    // The two malformed access-log lines are dead-lettered, the truncated app line skipped.
    let access = table
        .lines()
        .find(|l| l.starts_with("access "))
        .expect("access row");
    let cols: Vec<&str> = access.split_whitespace().collect();
    assert_eq!(cols[2..6], ["success", "602", "600", "2"], "{access}");
    let app = table
        .lines()
        .find(|l| l.starts_with("app "))
        .expect("app row");
    let cols: Vec<&str> = app.split_whitespace().collect();
    assert_eq!(cols[2..6], ["success", "401", "400", "1"], "{app}");
    check_example_output(dir.path());
}

/// The example job's output, read back by pyarrow and checked against
/// sums recomputed from the raw logs; its dead letters; no staging left.
fn check_example_output(dir: &std::path::Path) {
    let lake = dir.join("data/lake/web_traffic_daily");
    let files = files_under(&lake);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("dt=2026-11-24/part-web_traffic_daily-publish-20261124T020000Z-"),
        "{files:?}"
    );

    // pyarrow reads the output; plain Python recomputes the sums from the raw logs.
    let script = r#"
import gzip, json, re, sys
import pyarrow.dataset as ds
lake, data = sys.argv[1], sys.argv[2]
t = ds.dataset(lake, format="parquet", partitioning="hive").to_table().sort_by("service")
schema = {f.name: str(f.type) for f in t.schema}
req, bytes_, err = {}, {}, {}
pat = re.compile(r'^\S+ \S+ \S+ \[24/Nov/2026:(\d\d):(\d\d):(\d\d) \+0000\] "\S+ (\S+) \S+" (\d{3}) (\d+) "[^"]*" "[^"]*"$')
for line in gzip.open(data + "/nginx/access-20261124.log.gz", "rt"):
    m = pat.match(line.rstrip("\n"))
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        continue
    path = m.group(4)
    if not path.startswith("/api/v1/"):
        continue
    svc = path.split("/")[3]
    req[svc] = req.get(svc, 0) + 1
    bytes_[svc] = bytes_.get(svc, 0) + int(m.group(6))
    err[svc] = err.get(svc, 0) + (int(m.group(5)) >= 500)
app = {}
for line in open(data + "/app/app-2026-11-24.jsonl"):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    app.setdefault(r["service"], []).append(r["latency_ms"])
rows = t.to_pylist()
assert [r["service"] for r in rows] == sorted(req), (rows, req)
for r in rows:
    s = r["service"]
    assert r["requests"] == req[s], (s, r, req[s])
    assert r["bytes_sent"] == bytes_[s], (s, r)
    assert r["server_errors"] == err[s], (s, r)
    assert r["app_log_lines"] == len(app[s]), (s, r)
    assert abs(r["avg_latency_ms"] - sum(app[s]) / len(app[s])) < 1e-9, (s, r)
    assert r["max_latency_ms"] == max(app[s]), (s, r)
    assert str(r["dt"]) == "2026-11-24", r
print(json.dumps({"rows": t.num_rows, "schema": schema, "requests": sum(req.values())}))
"#;
    let out = python_script(
        script,
        &[
            lake.to_str().unwrap(),
            dir.join("configs/data").to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["rows"], 5, "{v}");
    assert_eq!(v["schema"]["requests"], "int64", "{v}");
    assert_eq!(v["schema"]["bytes_sent"], "int64", "{v}");
    assert_eq!(v["schema"]["avg_latency_ms"], "double", "{v}");
    assert_eq!(v["schema"]["service"], "string", "{v}");

    // Dead letters sit beside, with the file and line of each bad record.
    let dl = std::fs::read_to_string(
        dir.join("data/dead_letter/web_traffic_daily/access/20261124T020000Z/bad_records.jsonl"),
    )
    .expect("dead letters");
    let lines: Vec<serde_json::Value> = dl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 101);
    assert_eq!(lines[0]["record"], "this line is not an access log entry");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("invalid time"),
        "{}",
        lines[1]
    );

    // Staged intermediates are gone after the successful run.
    assert!(
        files_under(&dir.join("data/staging")).is_empty(),
        "{:?}",
        files_under(&dir.join("data/staging"))
    );
}

#[test]
fn every_shipped_config_validates() {
    let root = workspace_root();
    let out = run(sluice(&root).args(["validate", "configs/jobs"]));
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
}
