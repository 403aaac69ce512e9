//! `sluice serve`'s HTTP server: health checks, readiness while draining,
//! and `/metrics` as promtool and a real Prometheus server read it.

mod common;

use common::{http_get, listen_address, promtool};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon config on a random port, with a job that runs at once when
/// triggered and one that runs for a few seconds (a PostgreSQL sleep).
fn setup(dir: &Path) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "jobs = \"{d}/jobs\"\nstate = \"sqlite://{d}/state.db\"\nstaging = \"file://{d}/staging\"\n\
             listen = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"\n\n\
             [connections.pg]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n"
        ),
    )
    .unwrap();
    let mut lines = String::new();
    for i in 0..50 {
        lines.push_str(&format!("{{\"name\": \"u{}\", \"bytes\": {i}}}\n", i % 7));
    }
    lines.push_str("not json\n");
    std::fs::write(dir.join("data/events.jsonl"), lines).unwrap();
    std::fs::write(
        dir.join("jobs/quick.toml"),
        format!(
            r#"[tasks.events]
extract = "logs"
path = "{d}/data/events.jsonl"
format = "jsonl"
schema = {{ name = "string", bytes = "int64" }}
on_error = "skip"

[tasks.per_user]
transform = "SELECT name, sum(bytes) AS bytes FROM events GROUP BY name"

[tasks.out]
load = "parquet"
input = "per_user"
url = "file://{d}/out/"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/slow.toml"),
        r#"[tasks.nap]
extract = "sql"
connection = "pg"
query = "SELECT 1 AS x FROM pg_sleep(4)"

[tasks.out]
load = "parquet"
input = "nap"
url = "file://$DIR/slow/"
"#
        .replace("$DIR", &d.to_string()),
    )
    .unwrap();
}

fn sluice(dir: &Path) -> Command {
    let mut c = common::sluice(dir);
    c.arg("--config").arg(dir.join("sluice.toml"));
    c
}

fn serve(dir: &Path) -> (Child, String) {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = sluice(dir)
        .arg("serve")
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sluice serve");
    let addr = wait_for("the start line", Duration::from_secs(30), || {
        listen_address(&read_log(dir))
    });
    (child, addr)
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn trigger(dir: &Path, job: &str) {
    let out = common::run(sluice(dir).args(["trigger", job, "--date", "2026-11-24", "--local"]));
    assert!(out.status.success());
}

/// A sample line of the scrape, e.g. `sluice_tasks_running{dag="slow"}`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    trigger(dir.path(), "quick");
    let (mut daemon, addr) = serve(dir.path());

    assert_eq!(http_get(&addr, "/healthz").0, 200);
    wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        (http_get(&addr, "/readyz").0 == 200).then_some(())
    });
    let scrape = wait_for("the quick run's metrics", Duration::from_secs(60), || {
        let (_, body) = http_get(&addr, "/metrics");
        sample(
            &body,
            r#"sluice_dag_runs_total{dag="quick",state="success"}"#,
        )
        // Every series starts at 0 when the job loads: wait for the 1.
        .filter(|n| *n >= 1.0)
        .map(|_| body)
    });
    for (series, want) in [
        (
            r#"sluice_task_runs_total{dag="quick",state="success",task="events"}"#,
            1.0,
        ),
        (
            r#"sluice_task_runs_total{dag="quick",state="success",task="out"}"#,
            1.0,
        ),
        (r#"sluice_rows_read_total{dag="quick",task="events"}"#, 51.0),
        (
            r#"sluice_rows_written_total{dag="quick",task="events"}"#,
            50.0,
        ),
        (
            r#"sluice_bad_records_total{dag="quick",task="events"}"#,
            1.0,
        ),
        (r#"sluice_rows_written_total{dag="quick",task="out"}"#, 7.0),
        (
            r#"sluice_task_duration_seconds_count{dag="quick",task="out"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&scrape, series), Some(want), "{series}\n{scrape}");
    }
    assert!(
        sample(
            &scrape,
            r#"sluice_last_success_timestamp_seconds{dag="quick"}"#
        )
        .is_some_and(|t| t > 1.7e9),
        "{scrape}"
    );
    assert!(scrape.contains("sluice_build_info{version=\""), "{scrape}");
    assert!(
        scrape.contains("process_resident_memory_bytes "),
        "{scrape}"
    );
    dashboard_metrics_are_exported(&scrape);
    // The text format as Prometheus's own linter reads it.
    common::assert_promtool_accepts(&scrape, &dir.path().join("scrape.txt"));

    // A task that runs for a few seconds; SIGTERM while it runs: not
    // ready at once, alive until it has finished, then gone.
    trigger(dir.path(), "slow");
    wait_for("the slow task to run", Duration::from_secs(30), || {
        let (_, body) = http_get(&addr, "/metrics");
        (sample(&body, r#"sluice_tasks_running{dag="slow"}"#) == Some(1.0)).then_some(())
    });
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, body) = wait_for("/readyz to turn 503", Duration::from_secs(3), || {
        let r = http_get(&addr, "/readyz");
        (r.0 == 503).then_some(r)
    });
    assert_eq!((code, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(http_get(&addr, "/healthz").0, 200, "alive while draining");
    assert_eq!(
        daemon.wait().unwrap().code(),
        Some(0),
        "{}",
        read_log(dir.path())
    );
    let log = read_log(dir.path());
    assert!(
        std::fs::read_dir(dir.path().join("slow")).is_ok_and(|mut d| d.next().is_some()),
        "the running task finished within the grace period\n{log}"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the listener closed with the daemon"
    );
}

/// A real Prometheus server scrapes the daemon; its query API returns
/// the task counter.
#[test]
fn prometheus_scrapes_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    trigger(dir.path(), "quick");
    let (mut daemon, addr) = serve(dir.path());
    let prom_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let prometheus = Path::new("/usr/bin/prometheus");
    assert!(
        prometheus.exists(),
        "prometheus is missing: scripts/test-env.sh installs Debian's prometheus package"
    );
    let mut server = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let prom = format!("127.0.0.1:{prom_port}");
    let query = "/api/v1/query?query=sluice_task_runs_total%7Bdag%3D%22quick%22%2Ctask%3D%22out%22%2Cstate%3D%22success%22%7D";
    let result = wait_for(
        "Prometheus to have scraped the task counter",
        Duration::from_secs(90),
        || {
            let (status, body) = common::try_http("GET", &prom, query, &[], "").ok()?;
            if status != 200 {
                return None;
            }
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let first = v["data"]["result"].as_array()?.first()?.clone();
            (first["value"][1].as_str()? == "1").then_some(first)
        },
    );
    assert_eq!(result["metric"]["job"], "sluice");
    let _ = server.kill();
    let _ = server.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The alert rules and the example Prometheus config pass promtool, and
/// the rules' unit tests fire every alert.
#[test]
fn alert_rules_pass_promtool() {
    let root = common::workspace_root().join("monitoring/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new(promtool())
            .args(&args)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a test that fires it.
    let rules = std::fs::read_to_string(root.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(root.join("alerts_test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no test fires {alert}"
        );
    }
}

/// Every metric the Grafana dashboard queries is one the daemon exports.
fn dashboard_metrics_are_exported(scrape: &str) {
    let file = common::workspace_root().join("monitoring/grafana/sluice-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap())
            .expect("the dashboard parses");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has queries: {exprs:?}");
    let families: std::collections::HashSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut checked = 0;
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("sluice_") || w.starts_with("process_"))
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
                .unwrap_or(name);
            assert!(
                families.contains(family),
                "the dashboard queries {name}, which the daemon does not export: {expr}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10);
}

/// SQLite serves one replica: a second `serve` (or a `backfill`) on the
/// same state store is refused with a message that says why and what to
/// use instead, while the first keeps serving; once it stops, another
/// may start.
#[test]
fn a_second_replica_on_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (mut first, addr) = serve(dir.path());
    for args in [
        &["serve"][..],
        &[
            "backfill",
            "quick",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-20",
        ][..],
    ] {
        let out = common::run(sluice(dir.path()).args(args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = common::stderr(&out);
        assert!(
            err.contains("is in use by another sluice serve or backfill")
                && err.contains(&format!("(pid {})", first.id()))
                && err.contains("point `state` at PostgreSQL"),
            "{args:?}: {err}"
        );
    }
    wait_for("the first to stay ready", Duration::from_secs(30), || {
        (http_get(&addr, "/readyz").0 == 200).then_some(())
    });
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let (mut second, _) = serve(dir.path());
    second.kill().unwrap();
    second.wait().unwrap();
}
